"""Maximum-principle identities of the reference oracle (implementations/README.md §1.2,
§2.2).

These are the cheapest strong checks of ``implementations.reference.pmp``: each
identity holds exactly in real arithmetic, and both sides are float64 JAX autodiff of
the same graph, so any disagreement beyond rounding is a bug in the oracle (a lost 1/S,
a sign, BN's batch-statistics term, a regulariser in the wrong place), not noise.

Tolerances: float64 has ε ≈ 2.2e-16. The tiny nets have at most 8 layers and modest
condition numbers, so the two sides agree to ~1e-15 relative; we assert 1e-10 relative
(to the largest entry of the array compared), five orders of magnitude above rounding
and ten below the O(1) relative error any of the bugs above would cause.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from implementations import spec
from implementations.reference import common, dmsa, emsa, msa, pmp, sgd
from tests import tiny

#: relative tolerance for "both sides are float64 autodiff of the same graph" (see above)
RTOL = 1e-10

#: problems covering every layer kind with parameters: residual dense (sine), conv +
#: tanh + max-pool + residual conv + dense with bias (cnn), no-bias dense + BN + ReLU
#: (bn-real), and the same with discrete ±1 weights (bn-binary).
PROBLEMS = [tiny.SINE, tiny.CNN, tiny.BN_REAL, tiny.BN_BINARY]
IDS = [p.name for p in PROBLEMS]


def close(actual, desired, rtol=RTOL):
    """``actual == desired`` up to ``rtol`` relative to the largest |desired| entry."""
    actual, desired = np.asarray(actual), np.asarray(desired)
    scale = max(float(np.max(np.abs(desired))), 1e-300)
    np.testing.assert_allclose(actual, desired, rtol=0, atol=rtol * scale)


def effective_init(problem, seed=0) -> list[np.ndarray]:
    """``init_params``, with the quantized layers' W replaced by the discrete init."""
    flat = problem.init_params(seed)
    if problem.weights == "real":
        return flat
    levels = 2 if problem.weights == "binary" else 3
    out, i = [], 0
    for layer in problem.layers:
        for name in layer.param_names:
            w = flat[i]
            out.append(np.asarray(dmsa.quantize_init(w, levels)) if layer.quantized and name == "W" else w)
            i += 1
    return out


def setup(problem, seed=0):
    """θ (one tuple per layer), one minibatch (x, y), states x_0..x_T, costates p_0..p_T."""
    params = pmp.per_layer(problem.layers, common.to_jax(effective_init(problem, seed)))
    x, y = common.put(tiny.first_batches(problem, 1, seed)[0])
    xs = pmp.forward(problem.layers, params, x)
    ps = pmp.costates(problem.layers, params, xs, y, problem.loss)
    return params, x, y, xs, ps


def perturbed(theta, seed, scale=0.1):
    """θ + small noise: a point off the stored trajectory."""
    rng = np.random.default_rng(seed)
    return tuple(v + scale * jnp.asarray(rng.normal(size=v.shape)) for v in theta)


# ---------------------------------------------------------------------------------------
# costates and Hamiltonian gradients
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("problem", PROBLEMS, ids=IDS)
def test_costates_are_negative_activation_gradients(problem):
    """p_t = -∂J/∂x_t for every t = 0..T.

    ∂J/∂x_t is computed independently: ``jax.grad`` of the loss of the remaining layers
    t..T-1 applied to x_t (the whole batch tensor, so BN's batch statistics depend on
    x_t as they do in training). The costates come from the backward recursion
    p_t = ∇_x H_t(x_t, p_{t+1}, θ_t) with p_T = -∇(1/S)ΣΦ; the 1/S lives inside p."""
    params, _, y, xs, ps = setup(problem)
    layers = problem.layers
    assert len(xs) == len(ps) == len(layers) + 1

    for t in range(len(layers) + 1):

        def remaining_loss(x_t, t=t):
            z = pmp.forward(layers[t:], params[t:], x_t)[-1]
            return pmp.terminal_loss(problem.loss, z, y)

        grad = jax.grad(remaining_loss)(xs[t])
        assert ps[t].shape == xs[t].shape
        assert float(jnp.max(jnp.abs(grad))) > 0.0, f"degenerate test: ∂J/∂x_{t} = 0"
        close(ps[t], -grad)


@pytest.mark.parametrize("reg", [0.0, 0.05])
@pytest.mark.parametrize("problem", PROBLEMS, ids=IDS)
def test_hamiltonian_gradient_is_negative_loss_gradient(problem, reg):
    """Σ_s ∂H_t/∂θ_t = -∂J/∂θ_t for every layer with parameters.

    With reg > 0 the regulariser L_t = reg·½‖θ_t‖² is part of both sides: H_t subtracts
    it (``pmp.hamiltonian(..., reg)``) and J adds it (``pmp.objective(..., reg)``); reg =
    0.05 makes its term a visible part of the gradient. For the binary problem θ holds
    the discrete W, so this also checks implementations/README.md §3.2
    (M_t = -∂J/∂W)."""
    params, x, y, xs, ps = setup(problem)
    layers = problem.layers
    grad_j = jax.grad(lambda ps_: pmp.objective(layers, ps_, x, y, problem.loss, reg))(params)
    checked = 0
    for t, (layer, theta) in enumerate(zip(layers, params)):
        if not theta:
            continue
        grad_h = jax.grad(pmp.hamiltonian, argnums=1)(layer, theta, xs[t], ps[t + 1], reg)
        for name, gh, gj in zip(layer.param_names, grad_h, grad_j[t]):
            assert gh.shape == gj.shape, (t, name)
            close(gh, -gj)
            checked += 1
    assert checked == sum(len(layer.param_names) for layer in layers)


# ---------------------------------------------------------------------------------------
# the augmented Hamiltonian (E-MSA)
# ---------------------------------------------------------------------------------------


def _layers_with_params(problem):
    return [t for t, layer in enumerate(problem.layers) if layer.param_names]


@pytest.mark.parametrize("problem", PROBLEMS, ids=IDS)
def test_augmented_hamiltonian_with_rho_zero_is_hamiltonian(problem):
    """H̃_t with ρ = 0 equals H_t, value and θ-gradient, at any θ (here θ_t + noise, off
    the stored trajectory, where the penalty terms themselves are non-zero). The same
    expression is evaluated on both sides, so 1e-12 relative is ample."""
    params, _, _, xs, ps = setup(problem)
    reg = 1e-3
    for t in _layers_with_params(problem):
        layer, theta = problem.layers[t], perturbed(params[t], seed=t)

        def h(th, t=t, layer=layer):
            return pmp.hamiltonian(layer, th, xs[t], ps[t + 1], reg)

        def h_aug(th, t=t, layer=layer):
            return pmp.augmented_hamiltonian(layer, th, xs[t], xs[t + 1], ps[t], ps[t + 1], 0.0, reg)

        (v, g), (va, ga) = jax.value_and_grad(h)(theta), jax.value_and_grad(h_aug)(theta)
        close(va, v, rtol=1e-12)
        for a, b in zip(ga, g):
            close(a, b, rtol=1e-12)


@pytest.mark.parametrize("rho", [0.5, 10.0, 1000.0])
@pytest.mark.parametrize("problem", PROBLEMS, ids=IDS)
def test_augmented_penalties_vanish_on_trajectory(problem, rho):
    """At the current θ_t the two penalties of H̃_t vanish: x_{t+1} = f_t(x_t, θ_t) and
    p_t = ∇_x H_t(x_t, p_{t+1}, θ_t) by construction of the forward and backward passes.
    So H̃_t(θ_t) = H_t(θ_t) for any ρ, and ∇_θ H̃_t(θ_t) = ∇_θ H_t(θ_t) (each penalty's
    gradient is ρ·residual·∂residual/∂θ with a zero residual). This is why one ascent step
    of E-MSA from θ_t is a gradient step whatever ρ is."""
    params, _, _, xs, ps = setup(problem)
    reg = 1e-3
    for t in _layers_with_params(problem):
        layer, theta = problem.layers[t], params[t]

        def h(th, t=t, layer=layer):
            return pmp.hamiltonian(layer, th, xs[t], ps[t + 1], reg)

        def h_aug(th, t=t, layer=layer):
            return pmp.augmented_hamiltonian(layer, th, xs[t], xs[t + 1], ps[t], ps[t + 1], rho, reg)

        (v, g), (va, ga) = jax.value_and_grad(h)(theta), jax.value_and_grad(h_aug)(theta)
        close(va, v, rtol=1e-12)
        for a, b in zip(ga, g):
            close(a, b, rtol=1e-12)


@pytest.mark.parametrize("problem", [tiny.SINE, tiny.CNN], ids=["tiny-sine", "tiny-cnn"])
def test_augmented_penalty_off_trajectory(problem):
    """Off the trajectory the penalty H_t - H̃_t is positive and exactly linear in ρ, and
    equals ρ/2‖x_{t+1} - f_t(x_t, θ)‖² + ρ/2‖p_t - ∇_x H_t(x_t, p_{t+1}, θ)‖² computed
    here from ``apply`` and ``jax.grad`` (norms summed over the whole batch tensor)."""
    params, _, _, xs, ps = setup(problem)
    for t in _layers_with_params(problem):
        layer, theta = problem.layers[t], perturbed(params[t], seed=10 + t)
        h = pmp.hamiltonian(layer, theta, xs[t], ps[t + 1])
        gaps = [
            h - pmp.augmented_hamiltonian(layer, theta, xs[t], xs[t + 1], ps[t], ps[t + 1], rho) for rho in (1.0, 3.0)
        ]
        f = pmp.apply(layer, theta, xs[t])
        dhdx = jax.grad(pmp.hamiltonian, argnums=2)(layer, theta, xs[t], ps[t + 1])
        expected = 0.5 * jnp.sum((xs[t + 1] - f) ** 2) + 0.5 * jnp.sum((ps[t] - dhdx) ** 2)
        assert float(expected) > 0.0
        close(gaps[0], expected, rtol=1e-12)
        close(gaps[1], 3.0 * expected, rtol=1e-12)


# ---------------------------------------------------------------------------------------
# JMLR Prop. 5: one ascent step on H is gradient descent
# ---------------------------------------------------------------------------------------

PROP5_CASES = [
    # (problem, reg, which MSA): basic MSA and E-MSA (ρ > 0: its penalties' gradients
    # vanish at the current θ, see above) with one gd ascent step of size lr.
    pytest.param(tiny.SINE, 0.0, "msa", id="resdense-msa"),
    pytest.param(tiny.CNN, 0.0, "msa", id="resconv-msa"),
    pytest.param(tiny.BN_REAL, 0.0, "msa", id="bn-mlp-msa"),
    pytest.param(tiny.SINE, 1e-2, "msa", id="resdense-msa-reg"),
    pytest.param(tiny.CNN, 0.0, "emsa", id="resconv-emsa-rho5"),
    pytest.param(tiny.BN_REAL, 1e-2, "emsa", id="bn-mlp-emsa-rho5-reg"),
]


@pytest.mark.parametrize("problem, reg, which", PROP5_CASES)
def test_msa_one_gd_step_is_sgd(problem, reg, which):
    """JMLR Prop. 5: basic MSA whose argmax is replaced by one gradient-ascent step of
    size lr on Σ_s H_t is exactly SGD(lr) on J (reg included in both when reg > 0),
    because ∇_θ H_t = -∇_θ J. Checked on the reference trainers for two outer steps (each
    starts from the same parameters up to rounding), every parameter to 1e-12 absolute
    (parameters are O(1); the two sides differ only in float64 rounding of the same
    gradient, ~1e-16), and BN running statistics through ``predict``."""
    lr = 0.05
    if which == "msa":
        hp = spec.MSA(inner="gd", inner_steps=1, inner_lr=lr, reg=reg)
        a = msa.make(problem, hp, dtype="float64")
    else:
        hp = spec.EMSA(rho=5.0, inner="gd", inner_steps=1, inner_lr=lr, reg=reg)
        a = emsa.make(problem, hp, dtype="float64")
    b = sgd.make(problem, spec.SGD(lr=lr, reg=reg), dtype="float64")
    init = problem.init_params(0)
    sa, sb = a.init(init), b.init(init)
    for k, batch in enumerate(tiny.first_batches(problem, 2)):
        sa, ma = a.step(sa, a.put(batch))
        sb, mb = b.step(sb, b.put(batch))
        np.testing.assert_allclose(float(ma["loss"]), float(mb["loss"]), rtol=1e-12)
        for i, (pa, pb, p0) in enumerate(zip(a.get(sa), b.get(sb), init)):
            assert not np.array_equal(pb, p0) or k > 0, f"param {i} did not move: vacuous test"
            np.testing.assert_allclose(pa, pb, rtol=0, atol=1e-12, err_msg=f"step {k + 1}, param {i}")
    x = problem.arrays("test")[0]
    np.testing.assert_allclose(a.predict(sa, x), b.predict(sb, x), rtol=0, atol=1e-12)
