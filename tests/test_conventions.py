"""Binary/ternary MSA's numerical conventions (``implementations.conventions``): the α
schedule under both rules, the same moving average in every op, TensorFlow 1's Adam
against a hand-written TF1 step in every backend, and the running variance."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

import implementations
from implementations import conventions, spec
from implementations.reference import pmp
from tests import tiny

ICML = {"levels": 3, "rho": 0.25, "alpha0": 0.999, "alpha_decay": 0.95}


def _alphas(numerics: str, epochs: int, steps_per_epoch: int = 1) -> list[float]:
    """α after each epoch (one step an epoch) under ``numerics``."""
    hp = spec.DMSA(**ICML, numerics=numerics)
    alpha, out = conventions.initial_alpha(hp), []
    for k in range(1, epochs * steps_per_epoch + 1):
        alpha = conventions.alpha_after_step(hp, alpha, k, steps_per_epoch)
        if k % steps_per_epoch == 0:
            out.append(alpha)
    return out


def test_unknown_numerics_is_refused():
    with pytest.raises(ValueError, match="unknown DMSA numerics 'tf2'"):
        spec.DMSA(levels=2, rho=0.5, numerics="tf2")


def test_standard_alpha_keeps_one_minus_alpha_to_the_end():
    """Over the ICML ternary MNIST budget (250 epochs, d = 0.95) the standard rule's 1 - α
    follows 10⁻³ · 0.95ᵉ to float64 rounding (1e-12 relative: 250 products of ~1 ulp each)
    and never reaches 0, so M̄ keeps moving."""
    for epoch, alpha in enumerate(_alphas("standard", 250), start=1):
        _, one_minus_alpha = conventions.ema_weights(spec.DMSA(**ICML), alpha)
        assert one_minus_alpha == pytest.approx(1e-3 * 0.95**epoch, rel=1e-12)


def test_authors_alpha_is_float32_and_stops_decaying_at_float32s_last_step():
    """Under the authors' rule α is a float32 value after every decay. Just below 1,
    float32's values are 1 - j·2⁻²⁴; from 1 - α = j·2⁻²⁴ the decay gives 0.95·j·2⁻²⁴,
    rounded to the nearest multiple of 2⁻²⁴, which is j again for every j ≤ 10 (0.05 j ≤
    0.5; 9.5 ties to even, 10). So 1 - α stops decaying at 10·2⁻²⁴ ≈ 6e-7 inside the ICML
    budget, while the exact 1 - α = 10⁻³ · 0.95²⁵⁰ ≈ 2.7e-9 goes on falling."""
    alphas = _alphas("authors", 250)
    assert all(a == float(np.float32(a)) for a in alphas)
    gaps = [1.0 - a for a in alphas]
    floor = max(j for j in range(1, 100) if round(0.95 * j) == j) * 2.0**-24  # round(): ties to even, as float32
    assert gaps[-1] == floor
    stuck = next(e for e, g in enumerate(gaps, start=1) if g == floor)
    assert stuck < 250 and all(g == floor for g in gaps[stuck - 1 :])
    assert gaps[-1] > 10 * (1e-3 * 0.95**250)


def test_alpha_decays_only_at_epoch_ends():
    hp = spec.DMSA(**ICML)
    assert conventions.alpha_after_step(hp, 0.999, 3, 550) == 0.999
    assert conventions.alpha_after_step(hp, 0.999, 550, 550) == pytest.approx(1 - 0.95e-3, rel=1e-14)


# ---------------------------------------------------------------------------------------
# every op runs the same moving average
# ---------------------------------------------------------------------------------------


def _ops():
    """``(name, dmsa_update on float32 NumPy in -> NumPy M̄' out)`` for every op available."""
    torch = pytest.importorskip("torch")
    import jax.numpy as jnp

    from implementations.jax import ops as jax_ops
    from implementations.reference import dmsa as ref_dmsa
    from implementations.torch import ops as torch_ops

    def ref(m_bar, m, w, **kw):
        return np.asarray(ref_dmsa.dmsa_update(jnp.asarray(m_bar), jnp.asarray(m), jnp.asarray(w), **kw)[0])

    def jx(m_bar, m, w, **kw):
        return np.asarray(jax_ops.dmsa_update(jnp.asarray(m_bar), jnp.asarray(m), jnp.asarray(w), **kw)[0])

    def tc(m_bar, m, w, **kw):
        return torch_ops.dmsa_update(*(torch.as_tensor(a) for a in (m_bar, m, w)), **kw)[0].numpy()

    return [("reference", ref), ("jax", jx), ("torch", tc)]


@pytest.mark.parametrize("numerics", spec.DMSA_NUMERICS)
def test_every_op_runs_the_same_moving_average_near_alpha_one(numerics):
    """α = 1 - 10⁻⁹ (epoch ~230 of the ICML schedule) in float32: under the standard rule
    M̄ still moves by (1 - α) M in every op (the old jax and CUDA ops rounded α to float32
    first and froze M̄ here while torch's did not); under the authors' rule α is float32's
    1 and M̄ stays put, in every op alike."""
    hp = spec.DMSA(levels=2, rho=0.5, numerics=numerics)
    alpha = 1 - 1e-9 if numerics == "standard" else float(np.float32(1 - 1e-9))
    weights = conventions.ema_weights(hp, alpha)
    rng = np.random.default_rng(0)
    m_bar = rng.normal(size=(4, 6)).astype(np.float32)
    m = (rng.normal(size=(4, 6)) * 1e3).astype(np.float32)
    w = np.ones((4, 6), np.float32)
    kw = {"alpha": weights[0], "one_minus_alpha": weights[1], "rho": 0.5, "levels": 2, "lam": 0.0}
    results = {name: update(m_bar, m, w, **kw) for name, update in _ops()}
    for name, got in results.items():
        assert got.dtype == np.float32, name
        if numerics == "standard":
            # M̄ + 1e-9·M with |M| ~ 1e3 moves M̄ by ~1e-6, ≥ 8 float32 ulps of |M̄| ≲ 3
            assert np.count_nonzero(got != m_bar) > 20, name
        else:
            assert np.array_equal(got, m_bar), name
        np.testing.assert_array_equal(got, results["torch"], err_msg=name)


# ---------------------------------------------------------------------------------------
# TensorFlow 1's Adam, by hand, against every backend's BN step
# ---------------------------------------------------------------------------------------


def _tf1_adam(theta, grads, m, v, k, lr, b1=0.9, b2=0.999, eps=1e-8):
    """TensorFlow 1's ``AdamOptimizer`` step, as its documentation writes it:
    ``lr_t = lr √(1-β₂ᵏ)/(1-β₁ᵏ)``, ``θ ← θ - lr_t m / (√v + ε)``."""
    m = b1 * m + (1 - b1) * grads
    v = b2 * v + (1 - b2) * grads * grads
    lr_t = lr * math.sqrt(1 - b2**k) / (1 - b1**k)
    return theta - lr_t * m / (np.sqrt(v) + eps), m, v


def _bn_gradients(problem, params: list[np.ndarray], batch) -> list[np.ndarray]:
    """``∂J/∂θ`` of every parameter at ``params`` on ``batch`` (float64, the oracle's map)."""
    layers = problem.layers
    x, y = (np.asarray(a) for a in batch)

    def loss(flat):
        return pmp.terminal_loss(problem.loss, pmp.forward(layers, pmp.per_layer(layers, flat), x)[-1], y)

    return [np.asarray(g) for g in jax.grad(loss)([jax.numpy.asarray(p) for p in params])]


@pytest.mark.parametrize("backend", ["reference", "torch", "jax"])
def test_authors_bn_adam_is_tensorflow1s(backend):
    """Binary MSA with the authors' numerics, 4 steps in float64: BN's γ and β after every
    step equal a hand-written TF1 Adam step on ∂J/∂θ (computed independently by the
    oracle's map at the state before the step). 1e-12 relative: float64 rounding of the
    same formula in another order; the standard ε would differ by up to 30 ε/√v ~ 1e-5
    relative at the first step here (the test with ``numerics="standard"`` below pins
    that it does)."""
    _check_bn_adam(backend, "authors", expect_tf1=True)


def test_standard_bn_adam_is_not_tensorflow1s():
    """The same comparison with the standard numerics fails: the check above can fail."""
    _check_bn_adam("reference", "standard", expect_tf1=False)


def _check_bn_adam(backend: str, numerics: str, *, expect_tf1: bool) -> None:
    problem = tiny.BN_BINARY
    hp = spec.DMSA(levels=2, rho=0.5, bn_lr=0.01, numerics=numerics)
    trainer = tiny.make_trainer(backend, "dmsa", problem, hp, dtype="float64")
    bn = [i for i, q in enumerate(layer.quantized for layer in problem.layers for _ in layer.param_names) if not q]
    state = trainer.init(problem.init_params(0))
    m = {i: 0.0 for i in bn}
    v = {i: 0.0 for i in bn}
    for k, batch in enumerate(tiny.first_batches(problem, 4), start=1):
        before = trainer.state_arrays(state)
        params = [before[f"params/{i}"] for i in range(len(trainer.get(state)))]
        grads = _bn_gradients(problem, params, batch)
        state, _ = trainer.step(state, trainer.put(batch))
        after = trainer.state_arrays(state)
        for i in bn:
            expected, m[i], v[i] = _tf1_adam(params[i], grads[i], m[i], v[i], k, hp.bn_lr)
            same = np.allclose(after[f"params/{i}"], expected, rtol=1e-12, atol=1e-15)
            if not expect_tf1 and not same:
                return
            assert same, f"{backend}: step {k}, parameter {i}"
    assert expect_tf1, "the standard ε gave TF1's update: the comparison cannot tell them apart"


# ---------------------------------------------------------------------------------------
# BN's running variance
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["reference", "torch", "jax"])
def test_authors_running_variance_is_biased(backend):
    """After one step from the same state, ``r = (1 - m)·1 + m·c·var_B`` with c = n/(n-1)
    (standard) or 1 (authors), so (r_std - (1 - m)) / (r_auth - (1 - m)) = n/(n-1) for every
    BN feature (n = the batch size, 15; float64 rounding only)."""
    problem = tiny.BN_BINARY
    batch = tiny.first_batches(problem, 1)[0]
    running = {}
    for numerics in spec.DMSA_NUMERICS:
        hp = spec.DMSA(levels=2, rho=0.5, numerics=numerics)
        trainer = tiny.make_trainer(backend, "dmsa", problem, hp, dtype="float64")
        state, _ = trainer.step(trainer.init(problem.init_params(0)), trainer.put(batch))
        running[numerics] = trainer.state_arrays(state)
    n = len(batch[0])
    keys = [k for k in running["standard"] if k.startswith("running/") and k.endswith("/var")]
    assert keys
    for key in keys:
        t = int(key.split("/")[1])
        keep = 1 - problem.layers[t].momentum
        ratio = (running["standard"][key] - keep) / (running["authors"][key] - keep)
        np.testing.assert_allclose(ratio, n / (n - 1), rtol=1e-10, err_msg=key)


def test_every_dmsa_backend_is_covered():
    """The tests above name every backend that runs binary/ternary MSA on the CPU."""
    # torch-compile runs the torch backend's code, compiled (its parity rows check it)
    others = (*implementations.KERNEL_BACKENDS, "torch-compile")
    cpu = {b for (alg, b) in implementations.REGISTRY if alg == "dmsa" and b not in others}
    assert cpu == {"reference", "torch", "jax"}
