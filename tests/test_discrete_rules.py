"""The discrete-weight rules, by hand and by brute force (implementations/README.md §3.4,
§4.2, §4.3).

Every test runs on each implementation of ``dmsa_update(m_bar, m, w, *, alpha,
one_minus_alpha, rho, levels, lam) -> (m_bar_new, w_new, flips)``: the reference (JAX
arrays), the torch backend's ``implementations.torch.ops`` (float64 tensors), the jax
backend's ``implementations.jax.ops`` (float64 arrays, the op its compiled step traces)
and the triton backend's kernel (float64, through Triton's interpreter when no GPU is
visible; it has only ``dmsa_update``, so the quantizer tests skip it). The CUDA kernel
runs on a GPU only: ``tests/test_gpu_kernels.py`` holds it to torch's op there.

Hand-worked cases run at α = 0 (M̄ = 0, so M̄' = M) and at a production-like α = 1 - 2⁻¹⁰
with M̄ = M, so that M̄' = αM + 2⁻¹⁰M = M exactly in either formula (α has 10 significant
bits, so both products are exact and their sum is M). The numbers are exact in binary
floating point (sums of a few powers of two, λ = 0 or 2^-20): every threshold comparison
is then decided in exact arithmetic, so ties *at* a threshold are real ties and the
expected outputs are exact (``np.array_equal``).

A note on the objective. The project's first specification wrote the binary rule as
"argmax_w [M̄ w - (ρ_k/4)(w - w_k)²]"; that objective flips a wrong-signed entry when
|M̄| > ρ_k/2, not ρ_k (implementations/README.md §3.4). The rule itself (|M̄| > ρ_k, as in the
authors' code, ``layers.py``: ``magnitudes > rho * max_magnitudes``) is what the reference
and torch implement and what is tested here; the equivalent proximal weight is ρ_k/2, which
the brute-force test uses. ``test_binary_rule_is_not_the_rho_over_4_argmax`` pins an entry
between the two thresholds.
"""

from __future__ import annotations

import importlib
import os

import jax.numpy as jnp
import numpy as np
import pytest

from implementations.reference import dmsa as ref_dmsa
from implementations.reference import ste as ref_ste

LAM = 2.0**-20  # a representable λ, small against every M̄ in the hand cases
#: the hand cases' α: zero, and one as close to 1 as the ICML schedule runs with 10 bits
HAND_ALPHAS = (0.0, 1 - 2.0**-10)


# ---------------------------------------------------------------------------------------
# the implementations under test, behind one NumPy-in / NumPy-out adapter
# ---------------------------------------------------------------------------------------


class Reference:
    name = "reference"

    def dmsa_update(self, m_bar, m, w, **kw):
        mb, wn, f = ref_dmsa.dmsa_update(jnp.asarray(m_bar), jnp.asarray(m), jnp.asarray(w), **kw)
        return np.asarray(mb), np.asarray(wn), int(f)

    def sgn(self, x):
        return np.asarray(ref_dmsa.sgn(jnp.asarray(x)))

    def quantize_init(self, w, levels):
        return np.asarray(ref_dmsa.quantize_init(jnp.asarray(w), levels))

    def ste_quantize(self, w, kind, u=None):
        return np.asarray(ref_ste.quantize(jnp.asarray(w), kind, None if u is None else jnp.asarray(u)))


class Torch:
    name = "torch"

    def __init__(self):
        torch = pytest.importorskip("torch")
        self.ops = importlib.import_module("implementations.torch.ops")
        self.torch = torch

    def _t(self, a):
        return self.torch.tensor(np.asarray(a, dtype=np.float64), dtype=self.torch.float64)

    def dmsa_update(self, m_bar, m, w, **kw):
        mb, wn, f = self.ops.dmsa_update(self._t(m_bar), self._t(m), self._t(w), **kw)
        assert isinstance(f, self.torch.Tensor) and f.ndim == 0, "flips must be a 0-d tensor"
        assert mb.dtype == wn.dtype == self.torch.float64
        return mb.numpy(), wn.numpy(), int(f)

    def sgn(self, x):
        return self.ops.sgn(self._t(x)).numpy()

    def quantize_init(self, w, levels):
        return self.ops.quantize_init(self._t(w), levels).numpy()

    def ste_quantize(self, w, kind, u=None):
        return self.ops.ste_quantize(self._t(w), kind, None if u is None else self._t(u)).numpy()


class Jax:
    """The jax backend's compiled-step op (``implementations.jax.ops``), float64 arrays."""

    name = "jax"

    def __init__(self):
        import jax.numpy as jnp

        from implementations.jax import ops

        self.ops, self.jnp = ops, jnp

    def _a(self, a):
        return self.jnp.asarray(np.asarray(a, dtype=np.float64))

    def dmsa_update(self, m_bar, m, w, **kw):
        mb, wn, f = self.ops.dmsa_update(self._a(m_bar), self._a(m), self._a(w), **kw)
        assert mb.dtype == wn.dtype == self.jnp.float64
        return np.asarray(mb), np.asarray(wn), int(f)

    def sgn(self, x):
        return np.asarray(self.ops.sgn(self._a(x)))

    def quantize_init(self, w, levels):
        return np.asarray(self.ops.quantize_init(self._a(w), levels))

    def ste_quantize(self, w, kind, u=None):
        return np.asarray(self.ops.ste_quantize(self._a(w), kind, None if u is None else self._a(u)))


class Triton:
    """The triton backend's fused ``dmsa_update`` kernel on float64 tensors (on the CPU
    through Triton's interpreter). Its other rules are torch's ops."""

    name = "triton"

    def __init__(self):
        torch = pytest.importorskip("torch")
        if not torch.cuda.is_available():
            os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported
        pytest.importorskip("triton")
        self.ops = importlib.import_module("implementations.triton.ops")
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.torch = torch

    def dmsa_update(self, m_bar, m, w, **kw):
        t = [self.torch.tensor(np.asarray(a, dtype=np.float64), device=self.device) for a in (m_bar, m, w)]
        mb, wn, f = self.ops.dmsa_update(*t, **kw)
        assert f.ndim == 0 and mb.dtype == wn.dtype == self.torch.float64
        return mb.cpu().numpy(), wn.cpu().numpy(), int(f)

    def _torch_op(self, *_args, **_kw):
        pytest.skip("the triton backend implements dmsa_update only; its quantizers are torch's")

    sgn = quantize_init = ste_quantize = _torch_op


IMPLEMENTATIONS = {"reference": Reference, "torch": Torch, "jax": Jax, "triton": Triton}


@pytest.fixture(params=list(IMPLEMENTATIONS))
def impl(request):
    return IMPLEMENTATIONS[request.param]()


@pytest.fixture(params=HAND_ALPHAS, ids=["alpha0", "alpha1-2^-10"])
def alpha(request):
    return request.param


def run(impl, m, w, *, levels, rho, alpha, lam=0.0):
    """``dmsa_update`` on 2-D inputs (rows of a weight matrix) with M̄ chosen so that
    M̄' = M exactly (0 at α = 0, M itself otherwise); returns NumPy results."""
    m = np.asarray(m, dtype=np.float64).reshape(1, -1)
    w = np.asarray(w, dtype=np.float64).reshape(1, -1)
    m_bar = np.zeros_like(m) if alpha == 0.0 else m.copy()
    mb, wn, flips = impl.dmsa_update(
        m_bar, m, w, alpha=alpha, one_minus_alpha=1 - alpha, rho=rho, levels=levels, lam=lam
    )
    assert mb.shape == wn.shape == m.shape
    assert np.array_equal(mb, m), f"M̄' must equal M exactly at α = {alpha}"
    return wn[0], flips


# ---------------------------------------------------------------------------------------
# binary, by hand (ρ = 0.5 as in the ICML code)
# ---------------------------------------------------------------------------------------


def test_binary_flips_only_large_wrong_signed(impl, alpha):
    """sgn(M) = [+ - + - - + -]; wrong-signed entries 1, 2, 4, 5, 6 with |M| 0.5, 0.25,
    0.125, 0.375, 0.1875 → ρ_k = 0.5 · 0.5 = 0.25. Flips: entries 1 (0.5) and 5 (0.375).
    Entry 2 sits exactly at ρ_k (|M| = ρ_k does not flip); entries 0 and 3 are large but
    already correct; entry 3's |M| = 1 is the overall max, and using it for ρ_k (instead of
    the max over wrong-signed entries only) would stop entry 5 from flipping."""
    w = [1, 1, -1, -1, 1, -1, 1]
    m = [0.5, -0.5, 0.25, -1.0, -0.125, 0.375, -0.1875]
    w_new, flips = run(impl, m, w, levels=2, rho=0.5, alpha=alpha)
    assert np.array_equal(w_new, [1, -1, -1, -1, 1, 1, 1])
    assert flips == 2


def test_binary_tie_at_threshold(impl, alpha):
    """Anchor: W = 1, M = -1 (wrong, the largest) → ρ_k = 0.5. |M| == ρ_k keeps W (entries
    1 and 3); |M| = ρ_k + 2^-20 flips (entry 2); the anchor flips."""
    w = [1, 1, -1, -1]
    m = [-1.0, -0.5, 0.5 + LAM, 0.5]
    w_new, flips = run(impl, m, w, levels=2, rho=0.5, alpha=alpha)
    assert np.array_equal(w_new, [-1, 1, 1, -1])
    assert flips == 2


def test_binary_sgn_zero_is_plus_one(impl, alpha):
    """sgn(0) = +1: an M̄ entry exactly 0 is wrong-signed against W = -1 and not against
    W = +1. Through the binary rule's *output* the convention is invisible (a zero entry
    adds 0 to the max defining ρ_k ≥ 0, and never passes |M̄| > ρ_k), so the test checks
    what is observable: both zero entries keep their W, no 0 appears (a plain
    ``torch.sign`` target would write 0s wherever the rule fires with ρ_k = 0), and the
    entry that does flip goes to ±1. The convention itself is checked on ``sgn`` and the
    quantizers below."""
    w = [-1, 1, 1, -1]
    m = [0.0, 0.0, -0.5, -0.25]  # wrong: 0 (sgn 0 = +1 ≠ -1) and 2 → ρ_k = 0.25
    w_new, flips = run(impl, m, w, levels=2, rho=0.5, alpha=alpha)
    assert np.array_equal(w_new, [-1, 1, -1, -1])
    assert flips == 1
    # ρ = 0: ρ_k = 0, every nonzero wrong-signed entry flips, zero entries still stay ±1
    w_new, flips = run(impl, [0.0, 0.0, -0.5, 0.25], [-1, 1, 1, -1], levels=2, rho=0.0, alpha=alpha)
    assert np.array_equal(w_new, [-1, 1, -1, 1])
    assert flips == 2


def test_binary_rule_is_not_the_rho_over_4_argmax(impl, alpha):
    """|M̄| = 0.1875 with ρ_k = 0.25 lies between ρ_k/2 and ρ_k: the rule (and the authors'
    code) keeps W; argmax_w M̄w - (ρ_k/4)(w - W)², as the first specification wrote
    it, would flip it. See the module docstring."""
    w = [1, 1]
    m = [-0.5, -0.1875]  # anchor 0.5 → ρ_k = 0.25
    w_new, _ = run(impl, m, w, levels=2, rho=0.5, alpha=alpha)
    assert np.array_equal(w_new, [-1, 1])  # ρ_k/2 = 0.125 < |M̄| = 0.1875 < ρ_k = 0.25


def test_binary_no_wrong_signed_keeps_w(impl, alpha):
    """Every W already equals sgn(M̄): W is returned unchanged, flips = 0."""
    w = [1, -1, 1, 1]
    m = [0.5, -0.25, 2.0**-30, 0.0]
    w_new, flips = run(impl, m, w, levels=2, rho=0.5, alpha=alpha)
    assert np.array_equal(w_new, w)
    assert flips == 0


# ---------------------------------------------------------------------------------------
# ternary, by hand (ρ = 0.25 as in the ICML code)
# ---------------------------------------------------------------------------------------

#: anchor entry: W = -1, M = 1 (wrong-signed, the largest |M| of all) → ρ_k = 0.25·1 and
#: the anchor itself goes to +1 (1 > ρ_k·3 + λ). Thresholds with ρ_k = 0.25:
#:   W = -1: +1 if M > 0.75 + λ,  -1 if M < 0.25 - λ
#:   W =  0: +1 if M > 0.25 + λ,  -1 if M < -0.25 - λ
#:   W = +1: +1 if M > -0.25 + λ, -1 if M < -0.75 - λ
ANCHOR_W, ANCHOR_M = -1.0, 1.0

TERNARY_BRANCHES = [
    # (W, M, expected W') with λ = 0, each well inside its branch
    (-1, 0.875, 1),
    (-1, 0.5, 0),
    (-1, 0.125, -1),  # wrong-signed but stays: moving costs ρ_k(w - W)²
    (-1, -0.5, -1),
    (0, 0.5, 1),
    (0, 0.125, 0),
    (0, -0.125, 0),
    (0, -0.5, -1),
    (1, 0.125, 1),
    (1, -0.125, 1),  # wrong-signed but stays
    (1, -0.5, 0),
    (1, -0.875, -1),
]

TERNARY_TIES = [
    # (W, M, expected W') with λ = 2^-20: exactly at a threshold (strict inequalities → 0)
    # and just past it
    (0, 0.25 + LAM, 0),
    (0, 0.25 + 2 * LAM, 1),
    (0, -(0.25 + LAM), 0),
    (0, -(0.25 + 2 * LAM), -1),
    (-1, 0.75 + LAM, 0),
    (-1, 0.75 + 2 * LAM, 1),
    (-1, 0.25 - LAM, 0),
    (-1, 0.25 - 2 * LAM, -1),
    (1, -0.25 + LAM, 0),
    (1, -0.25 + 2 * LAM, 1),
    (1, -0.75 - LAM, 0),
    (1, -0.75 - 2 * LAM, -1),
]


@pytest.mark.parametrize("cases, lam", [(TERNARY_BRANCHES, 0.0), (TERNARY_TIES, LAM)], ids=["branches", "ties"])
def test_ternary_by_hand(impl, alpha, cases, lam):
    """Each branch (+1, 0, -1) from each W ∈ {-1, 0, 1}, and every threshold hit exactly:
    ``M̄ == ρ_k(1 - 2W) + λ`` is not +1, ``M̄ == -ρ_k(1 + 2W) - λ`` is not -1."""
    w = [ANCHOR_W] + [c[0] for c in cases]
    m = [ANCHOR_M] + [c[1] for c in cases]
    expected = np.array([1.0] + [c[2] for c in cases])
    w_new, flips = run(impl, m, w, levels=3, rho=0.25, lam=lam, alpha=alpha)
    bad = [(c, got) for c, got in zip(cases, w_new[1:]) if got != c[2]]
    assert not bad, f"(W, M̄, expected) -> got: {bad}"
    assert np.array_equal(w_new, expected)
    assert flips == int(np.sum(expected != np.array(w)))


def test_ternary_sign_zero_is_zero_and_no_wrong_keeps_w(impl, alpha):
    """Ternary wrong-signed means W ≠ sign(M̄) with sign(0) = 0, so W = 0 against M̄ = 0 is
    *not* wrong. Here no entry is wrong-signed, so W must come back unchanged with
    flips = 0. This is observable: had sgn(0) = +1 been used, entry 0 would be wrong,
    ρ_k = 0, and entries 1 and 2 (|M̄| < λ) would drop to 0."""
    w = [0, 1, -1, 1]
    m = [0.0, 2.0**-22, -(2.0**-22), 0.5]
    w_new, flips = run(impl, m, w, levels=3, rho=0.25, lam=LAM, alpha=alpha)
    assert np.array_equal(w_new, w)
    assert flips == 0


def test_ternary_zero_weight_against_zero_m_with_other_wrong(impl, alpha):
    """W = 0 with M̄ = 0 among wrong-signed entries: ρ_k comes from the others only
    (ρ_k = 0.25·0.5), and the W = 0 entry stays 0 (0 > ρ_k + λ is false)."""
    w = [0, 1, 1]
    m = [0.0, -0.5, -0.0625]
    w_new, flips = run(impl, m, w, levels=3, rho=0.25, lam=LAM, alpha=alpha)
    # ρ_k = 0.125: entry 1: -0.5 < -0.375 - λ → -1; entry 2: -0.0625 > -0.125 + λ → +1
    assert np.array_equal(w_new, [0, -1, 1])
    assert flips == 1


# ---------------------------------------------------------------------------------------
# the moving average
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [2, 3])
def test_ema_by_hand(impl, levels):
    """M̄' = α M̄ + (1 - α) M with α = 0.75 on dyadic numbers: exact in any op order."""
    m_bar = np.array([[1.0, -0.5, 0.25, 2.0]])
    m = np.array([[-1.0, 0.5, 4.0, 2.0]])
    w = np.ones_like(m)
    mb, _, _ = impl.dmsa_update(m_bar, m, w, alpha=0.75, one_minus_alpha=0.25, rho=0.5, levels=levels, lam=0.0)
    assert np.array_equal(mb, [[0.5, -0.25, 1.1875, 2.0]])


def test_ema_random(impl):
    """α = 0.999 on random inputs, against NumPy. Different but equivalent formulas
    (α M̄ + (1-α) M, or M̄ - (1-α)(M̄ - M) as in the authors' code) differ by a few ulp of
    the terms; 4ε·(|M̄| + |M|) bounds that."""
    rng = np.random.default_rng(0)
    m_bar, m = rng.uniform(-1e-6, 1e-6, (8, 5)), rng.normal(size=(8, 5))
    w = rng.choice([-1.0, 1.0], size=m.shape)
    mb, _, _ = impl.dmsa_update(m_bar, m, w, alpha=0.999, one_minus_alpha=1 - 0.999, rho=0.5, levels=2, lam=0.0)
    expected = 0.999 * m_bar + (1 - 0.999) * m
    assert np.all(np.abs(mb - expected) <= 4 * np.finfo(float).eps * (np.abs(m_bar) + np.abs(m)))


# ---------------------------------------------------------------------------------------
# random inputs: allowed set, flips, and the argmax characterisation
# ---------------------------------------------------------------------------------------


def _brute_force(m_bar, w, *, levels, rho, lam):
    """The expected W' as an argmax over the allowed set, and a mask of entries whose best
    two candidates are within 1e-9 (relative) of each other (ties: not asserted)."""
    target = np.where(m_bar >= 0, 1.0, -1.0) if levels == 2 else np.sign(m_bar)
    wrong = w != target
    if not wrong.any():
        return w.copy(), np.zeros(w.shape, bool)
    rho_k = rho * np.max(np.abs(m_bar[wrong]))
    cands = np.array([-1.0, 1.0]) if levels == 2 else np.array([-1.0, 0.0, 1.0])
    if levels == 2:  # proximal weight ρ_k/2 ⇔ flip iff |M̄| > ρ_k (see module docstring)
        obj = [m_bar * c - 0.5 * rho_k * (c - w) ** 2 for c in cands]
    else:
        obj = [m_bar * c - lam * abs(c) - rho_k * (c - w) ** 2 for c in cands]
    obj = np.stack(obj)
    best = cands[np.argmax(obj, axis=0)]
    top2 = np.sort(obj, axis=0)[-2:]
    scale = np.abs(m_bar) + rho_k + lam + 1e-300
    return best, (top2[1] - top2[0]) <= 1e-9 * scale


def _random_case(rng, levels):
    shape = [(4, 5), (3, 2, 3, 3), (1, 7), (6, 1)][rng.integers(4)]
    scale = 10.0 ** rng.integers(-6, 3)
    m_bar = rng.uniform(-1, 1, shape) * scale
    m = rng.normal(size=shape) * scale
    alpha = [0.0, 0.5, 0.999, float(rng.uniform())][rng.integers(4)]
    rho = [0.5 if levels == 2 else 0.25, float(rng.uniform(0.01, 1.0))][rng.integers(2)]
    lam = [0.0, 1e-7 * scale, 0.05 * scale][rng.integers(3)] if levels == 3 else 0.0
    values = [-1.0, 1.0] if levels == 2 else [-1.0, 0.0, 1.0]
    w = rng.choice(values, size=shape)
    if rng.uniform() < 0.1:  # sometimes no wrong-signed entry at all
        ema = alpha * m_bar + (1 - alpha) * m
        w = np.where(ema >= 0, 1.0, -1.0) if levels == 2 else np.sign(ema)
    return m_bar, m, w, {"alpha": alpha, "one_minus_alpha": 1 - alpha, "rho": rho, "levels": levels, "lam": lam}


@pytest.mark.parametrize("levels", [2, 3], ids=["binary", "ternary"])
def test_random_inputs_match_argmax(impl, levels):
    """On 60 seeded random layers (2-D and conv-shaped, scales 1e-6..1e2, random α, ρ, λ):
    outputs lie in the allowed set, ``flips`` counts the changed entries, and W' equals
    the brute-force argmax over the allowed set of M̄'w - λ|w| - ρ_k(w - W)² (ternary) or
    M̄'w - (ρ_k/2)(w - W)² (binary), away from ties (the argmax is evaluated on the M̄'
    the implementation returns, so EMA rounding cannot move an entry across a
    threshold)."""
    rng = np.random.default_rng(1234 + levels)
    allowed = [-1.0, 1.0] if levels == 2 else [-1.0, 0.0, 1.0]
    asserted = 0
    for trial in range(60):
        m_bar, m, w, kw = _random_case(rng, levels)
        mb, w_new, flips = impl.dmsa_update(m_bar, m, w, **kw)
        assert w_new.shape == w.shape, trial
        assert np.isin(w_new, allowed).all(), f"trial {trial}: values {np.unique(w_new)}"
        assert flips == int(np.sum(w_new != w)), trial
        expected, tie = _brute_force(mb, w, levels=levels, rho=kw["rho"], lam=kw["lam"])
        ok = tie | (w_new == expected)
        assert ok.all(), f"trial {trial} {kw}: W' {w_new[~ok]} vs argmax {expected[~ok]}"
        asserted += int((~tie).sum())
    assert asserted > 1000  # the tie mask excludes almost nothing


# ---------------------------------------------------------------------------------------
# quantizers: sign conventions and STE maps
# ---------------------------------------------------------------------------------------


def test_sgn_and_quantize_init(impl):
    """sgn(0) = sgn(-0.0) = +1; binary init = sgn(latent); ternary init =
    clip(round(1.5 W), -1, 1), so U(-1, 1) latents give i.i.d. uniform {-1, 0, 1}."""
    x = np.array([-1.0, -1e-300, -0.0, 0.0, 1e-300, 0.3])
    assert np.array_equal(impl.sgn(x), [-1, -1, 1, 1, 1, 1])
    assert np.array_equal(impl.quantize_init(x, 2), [-1, -1, 1, 1, 1, 1])
    w = np.array([-0.9, -0.6, -0.2, 0.0, 0.2, 0.4, 0.9])
    assert np.array_equal(impl.quantize_init(w, 3), [-1, -1, 0, 0, 0, 1, 1])
    u = np.random.default_rng(0).uniform(-1, 1, 30000)
    q = impl.quantize_init(u, 3)
    assert np.isin(q, [-1, 0, 1]).all()
    np.testing.assert_allclose([np.mean(q == v) for v in (-1, 0, 1)], 1 / 3, atol=0.015)


def test_binaryconnect_quantizer(impl):
    """BC: Q(W) = +1 if W ≥ 0 else -1 (Q(0) = Q(-0.0) = +1); stochastic: +1 iff
    u < clip((W + 1)/2, 0, 1), so W = 1 is always +1 and W = -1 always -1."""
    w = np.array([-1.0, -0.3, -0.0, 0.0, 0.7, 1.0])
    assert np.array_equal(impl.ste_quantize(w, "bc"), [-1, -1, 1, 1, 1, 1])
    w = np.array([0.5, 0.5, -0.5, -0.5, 1.0, -1.0, 2.0])
    u = np.array([0.7, 0.8, 0.2, 0.3, 0.999, 0.0, 0.999])
    # probabilities of +1: .75 .75 .25 .25 1 0 1 (clipped)
    assert np.array_equal(impl.ste_quantize(w, "bc", u), [1, -1, 1, -1, 1, -1, 1])


def test_twn_quantizer(impl):
    """TWN: Δ = 0.7·mean|W| = 0.7·0.5625 = 0.39375; t = [1, -1, 0, 0, 1, 0, -1, 0]
    (0.375 is just under Δ); a = mean of |W| over |W| > Δ = (1 + 0.5 + 0.75 + 1.5)/4
    = 0.9375 (exact)."""
    w = np.array([1.0, -0.5, 0.125, -0.25, 0.75, 0.0, -1.5, 0.375])
    q = impl.ste_quantize(w, "twn")
    assert np.array_equal(q, 0.9375 * np.array([1, -1, 0, 0, 1, 0, -1, 0]))
    # all-zero weights: Δ = 0, nothing is "big", Q = 0 (no division by zero)
    assert np.array_equal(impl.ste_quantize(np.zeros(4), "twn"), np.zeros(4))
