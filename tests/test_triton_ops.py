"""Triton ops against the plain-torch ops, on the CPU through Triton's interpreter
(``TRITON_INTERPRET=1``, set here when no GPU is visible), in CI.

Shapes cover a single entry, sizes that are not multiples of the kernels' block (1,024)
and sizes spanning several blocks, as vectors and as layer matrices. Discrete outputs
(W', the flip and non-zero counts) must be equal exactly; as docs/design.md §5 warns, exact
equality only holds away from the rule's thresholds, so every case first checks, in
float64, that each entry's decision is at least ``MARGIN`` (relative) from its threshold.
M̄' (a float) follows the kernels' 2× rule: its error against the float64 computation is
at most twice torch's own float32 error, plus a floor of one float32 ulp of max|M̄'|.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernels are decorated
pytest.importorskip("triton")

from implementations.torch import ops as torch_ops
from implementations.triton import ops as triton_ops
from tests import test_parity, thresholds

SHAPES = [(1,), (7,), (1023,), (1024,), (1025,), (3000,), (64, 48), (100, 100)]
MARGIN, RHO, LAM = thresholds.MARGIN, thresholds.RHO, thresholds.LAM
_inputs, _decision_margin = thresholds.clear_inputs, thresholds.decision_margin


@pytest.mark.parametrize("levels", [2, 3], ids=["binary", "ternary"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_dmsa_update_matches_torch(shape, levels):
    alpha = 0.9
    m_bar, m, w = _inputs(shape, levels, seed=0)
    assert _decision_margin(m_bar, m, w, alpha, levels) > MARGIN, "inputs too close to a threshold"
    args = [torch.as_tensor(a, dtype=torch.float32) for a in (m_bar, m, w)]
    kw = {"alpha": alpha, "one_minus_alpha": 1 - alpha, "rho": RHO[levels], "levels": levels, "lam": LAM}
    ref_m, ref_w, ref_flips = torch_ops.dmsa_update(*args, **kw)
    got_m, got_w, got_flips, got_nonzero = triton_ops.dmsa_update_with_nonzero(*args, **kw)
    assert torch.equal(got_w, ref_w)
    assert got_w.dtype == ref_w.dtype and got_w.shape == ref_w.shape
    assert int(got_flips) == int(ref_flips) and got_flips.dtype == torch.int64
    assert int(got_nonzero) == int((ref_w != 0).sum())
    exact = alpha * m_bar + (1 - alpha) * m  # float64
    err_torch = float(np.max(np.abs(ref_m.double().numpy() - exact)))
    err_triton = float(np.max(np.abs(got_m.double().numpy() - exact)))
    floor = float(np.spacing(np.float32(np.max(np.abs(exact)))))
    assert err_triton <= 2 * err_torch + floor


@pytest.mark.parametrize("levels", [2, 3], ids=["binary", "ternary"])
def test_int8_weights_keep_their_dtype(levels):
    m_bar, m, w = _inputs((2500,), levels, seed=1)
    args32 = [torch.as_tensor(a, dtype=torch.float32) for a in (m_bar, m)]
    w8 = torch.as_tensor(w, dtype=torch.int8)
    kw = {"alpha": 0.9, "one_minus_alpha": 1 - 0.9, "rho": RHO[levels], "levels": levels, "lam": LAM}
    _, ref_w, ref_flips = torch_ops.dmsa_update(*args32, w8.float(), **kw)
    _, got_w, got_flips = triton_ops.dmsa_update(*args32, w8, **kw)
    assert got_w.dtype == torch.int8
    assert torch.equal(got_w.float(), ref_w) and int(got_flips) == int(ref_flips)


@pytest.mark.parametrize("levels", [2, 3], ids=["binary", "ternary"])
def test_no_wrong_signed_entry_leaves_w_unchanged(levels):
    """Every W already equals sgn(M̄') (binary) / sign(M̄') (ternary): ρ_k has no entry to
    take its max over, and W must come back unchanged with zero flips."""
    m_bar = torch.linspace(-1, 1, 2049) * 1e-3 + 1e-9
    w = torch.where(m_bar >= 0, 1.0, -1.0)
    _, got_w, flips = triton_ops.dmsa_update(
        m_bar, m_bar, w, alpha=0.5, one_minus_alpha=0.5, rho=0.5, levels=levels, lam=0.0
    )
    assert torch.equal(got_w, w) and int(flips) == 0


def test_bad_levels_and_shapes_are_refused():
    a = torch.zeros(4)
    with pytest.raises(ValueError, match="levels"):
        triton_ops.dmsa_update(a, a, a, alpha=0.9, one_minus_alpha=1 - 0.9, rho=0.5, levels=4, lam=0.0)
    with pytest.raises(ValueError, match="shapes differ"):
        triton_ops.dmsa_update(a, torch.zeros(5), a, alpha=0.9, one_minus_alpha=1 - 0.9, rho=0.5, levels=2, lam=0.0)


# ---------------------------------------------------------------------------------------
# emsa_dense_grad: one launch for a whole residual stack
# ---------------------------------------------------------------------------------------

STACKS = [(20, 100, 5), (3, 7, 1), (2, 33, 17), (1, 1, 32)]  # (layers, samples, width): the sine net first


@pytest.mark.parametrize(("layers", "samples", "width"), STACKS, ids=lambda v: str(v))
@pytest.mark.parametrize("rho", [0.0, 1.0])
def test_emsa_dense_grad_matches_torch(layers, samples, width, rho):
    """float32 error against the float64 closed form on the same (float32) inputs: at most
    twice torch's float32 error plus 4 float32 ulps of the gradient's scale."""
    g = torch.Generator().manual_seed(layers * 1000 + samples + width)
    shapes = [(layers, width, width), (layers, width)] + [(layers, samples, width)] * 4
    inputs32 = [torch.randn(s, generator=g) * (0.5 if i < 2 else 1.0) for i, s in enumerate(shapes)]
    kw = {"delta": 0.25, "rho": rho, "reg": 1e-3}
    exact = torch_ops.emsa_dense_grad(*(t.double() for t in inputs32), **kw)
    mine = triton_ops.emsa_dense_grad(*inputs32, **kw)
    theirs = torch_ops.emsa_dense_grad(*inputs32, **kw)
    for e, m, t in zip(exact, mine, theirs):
        assert m.shape == e.shape and m.dtype == torch.float32
        err_triton = float((m.double() - e).abs().max())
        err_torch = float((t.double() - e).abs().max())
        floor = 4 * float(np.spacing(np.float32(e.abs().max())))
        assert err_triton <= 2 * err_torch + floor, (err_triton, err_torch, floor)


def test_emsa_dense_grad_refuses_wide_layers():
    big = torch.zeros(1, 33, 33)
    with pytest.raises(ValueError, match="width 33"):
        triton_ops.emsa_dense_grad(big, torch.zeros(1, 33), *(torch.zeros(1, 4, 33),) * 4, delta=0.1, rho=1.0, reg=0.0)


# ---------------------------------------------------------------------------------------
# the triton backend's algorithms, step by step against the reference (interpreter, CPU)
# ---------------------------------------------------------------------------------------

KERNEL_CASES = [
    c for c in test_parity.CASES if c.id in ("dmsa-binary", "dmsa-ternary", "emsa-gd-sine", "emsa-adam-sine")
]


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the kernels run on it: tests/test_gpu_kernels.py")
@pytest.mark.parametrize("case", KERNEL_CASES, ids=lambda c: c.id)
def test_triton_backend_matches_reference(case):
    """The triton backend (the torch algorithms with the Triton ops, kernels run by the
    interpreter on the CPU in float64) against the reference after each of 7 steps, with
    test_parity's tolerances, exact discrete weights and flips, and threshold margins."""
    test_parity.test_backend_matches_reference("triton", case)


class _Recording:
    """A kernel stand-in: records the arguments of every launch, then launches."""

    def __init__(self, kernel, calls: list):
        self.kernel, self.calls = kernel, calls

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.calls.append(args)
            return self.kernel[grid](*args, **kwargs)

        return launch


def test_no_python_float_reaches_a_kernel(monkeypatch):
    """Triton types a Python float argument as float32 (on a GPU; the interpreter keeps
    float64, so only this check can fail here): every float parameter must reach the
    kernels as a tensor of the data's dtype, or a float64 run is not float64. Checked on
    both ops in float64, with an α that float32 cannot hold."""
    calls: list = []
    for name in ("_ema_and_wrong_max", "_apply_rule", "_emsa_dense_grad_kernel"):
        monkeypatch.setattr(triton_ops, name, _Recording(getattr(triton_ops, name), calls))
    g = torch.Generator().manual_seed(0)
    m_bar, m = (torch.randn(3000, generator=g, dtype=torch.float64) for _ in range(2))
    w = torch.sign(torch.randn(3000, generator=g, dtype=torch.float64))
    alpha = 0.9990000123456789  # 1 - α differs in float32 by ~6e-8
    got = triton_ops.dmsa_update(m_bar, m, w, alpha=alpha, one_minus_alpha=1 - alpha, rho=0.25, levels=3, lam=1e-7)
    want = torch_ops.dmsa_update(m_bar, m, w, alpha=alpha, one_minus_alpha=1 - alpha, rho=0.25, levels=3, lam=1e-7)
    torch.testing.assert_close(got[0], want[0], rtol=1e-15, atol=0)
    stack = [torch.randn(s, generator=g, dtype=torch.float64) for s in [(2, 3, 3), (2, 3)] + [(2, 4, 3)] * 4]
    triton_ops.emsa_dense_grad(*stack, delta=0.25, rho=1.0, reg=1e-3)
    assert len(calls) == 3
    floats = [(i, a) for args in calls for i, a in enumerate(args) if isinstance(a, float)]
    assert not floats, f"Python floats passed to kernels: {floats}"
    for args in calls:  # every tensor argument is float64 or an integer/bool buffer
        assert all(a.dtype in (torch.float64, torch.int32, torch.int64) for a in args if isinstance(a, torch.Tensor))
