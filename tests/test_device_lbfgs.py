"""``lbfgs-device`` (``spec.DeviceLBFGS``): the backends' batched compact representation
of the L-BFGS matrix against the reference's two-loop recursion, and the whole solver,
torch and jax, against the reference's one-layer-at-a-time loop on a batch of Rosenbrock
problems, float64; plus the rules that make it device-resident: exactly ``iters`` + 1
evaluations, F never increases, a non-finite trial is rejected.

Tolerances: the compact and two-loop forms are the same H in another order of operations
(measured ≤ 5e-16 relative), and 10 iterations on Rosenbrock amplify that to ≤ 2e-15;
``RTOL = 1e-10`` leaves 10⁴× headroom, while a wrong H (a transposed R, a wrong γ) moves
the iterates at O(1).
"""

from __future__ import annotations

import numpy as np
import pytest

from implementations.reference import device_lbfgs as reference

RTOL = 1e-10  # see module docstring
N_LAYERS, MEMORY, N = 3, 5, 7


def _pairs(rng):
    """Per layer, pairs (s, y = A s) of a positive definite A, oldest first; layer 0 has
    only 3 of its 5 slots filled (the empty slots first, as after 3 accepted steps)."""
    s_all, y_all = np.zeros((N_LAYERS, MEMORY, N)), np.zeros((N_LAYERS, MEMORY, N))
    for layer in range(N_LAYERS):
        m = rng.normal(size=(N, N))
        a = m @ m.T + np.eye(N)
        filled = 3 if layer == 0 else MEMORY
        for i in range(MEMORY - filled, MEMORY):
            s_all[layer, i] = rng.normal(size=N)
            y_all[layer, i] = a @ s_all[layer, i]
    return s_all, y_all


def _two_loop(g, s_all, y_all):
    return np.stack(
        [reference.two_loop(g[l], [(s, y) for s, y in zip(s_all[l], y_all[l]) if s.any()]) for l in range(N_LAYERS)]
    )


def _rosenbrock(x):
    """Σ 100 (x_{i+1} - x_i²)² + (1 - x_i)² and its gradient, per row."""
    a, b = x[..., :-1], x[..., 1:]
    value = (100 * (b - a * a) ** 2 + (1 - a) ** 2).sum(-1)
    grad = np.zeros_like(x)
    grad[..., :-1] = -400 * a * (b - a * a) - 2 * (1 - a)
    grad[..., 1:] += 200 * (b - a * a)
    return value, grad


def _close(got, want):
    assert np.max(np.abs(got - want)) <= RTOL * np.max(np.abs(want))


def test_torch_compact_form_equals_the_two_loop_recursion():
    torch = pytest.importorskip("torch")
    from implementations.torch import device_lbfgs

    rng = np.random.default_rng(0)
    s_all, y_all = _pairs(rng)
    g = rng.normal(size=(N_LAYERS, N))
    pairs = torch.tensor(np.concatenate([s_all, y_all], axis=1))
    _close(device_lbfgs.apply_inverse_hessian(torch.tensor(g), pairs).numpy(), _two_loop(g, s_all, y_all))


def test_jax_compact_form_equals_the_two_loop_recursion():
    pytest.importorskip("jax")
    import jax.numpy as jnp

    from implementations.jax import device_lbfgs
    from implementations.reference import pmp  # noqa: F401  (float64 in JAX, as every jax test)

    rng = np.random.default_rng(1)
    s_all, y_all = _pairs(rng)
    g = rng.normal(size=(N_LAYERS, N))
    got = device_lbfgs.apply_inverse_hessian(jnp.asarray(g), jnp.asarray(s_all), jnp.asarray(y_all))
    _close(np.asarray(got), _two_loop(g, s_all, y_all))


def test_without_pairs_the_direction_is_the_gradient():
    g = np.arange(1.0, 4.0)
    assert np.array_equal(reference.two_loop(g, []), g)


def _reference_solutions(start, iters):
    return np.stack([reference.minimise(_rosenbrock, start[l], iters) for l in range(N_LAYERS)])


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_batched_solver_equals_the_reference_layer_by_layer(backend):
    """Three Rosenbrock problems as one batch, 10 iterations: each row equals the
    reference solving that problem alone (each keeps its own step length, pairs and
    acceptances), and every one of them descended."""
    rng = np.random.default_rng(2)
    start = rng.normal(size=(N_LAYERS, N))
    want = _reference_solutions(start, 10)
    if backend == "torch":
        torch = pytest.importorskip("torch")
        from implementations.torch import device_lbfgs

        def vag(theta):
            value, grad = _rosenbrock(theta.numpy())
            return torch.tensor(value), torch.tensor(grad)

        got = device_lbfgs.minimise(vag, torch.tensor(start), 10).numpy()
    else:
        jax = pytest.importorskip("jax")
        import jax.numpy as jnp

        from implementations.jax import device_lbfgs
        from implementations.reference import pmp  # noqa: F401  (float64 in JAX)

        def f(x):
            a, b = x[:-1], x[1:]
            return jnp.sum(100 * (b - a * a) ** 2 + (1 - a) ** 2)

        vag = jax.vmap(jax.value_and_grad(f))
        got = np.asarray(jax.jit(lambda t: device_lbfgs.minimise(vag, t, 10))(jnp.asarray(start)))
    _close(got, want)
    assert (_rosenbrock(got)[0] < _rosenbrock(start)[0]).all()


def test_budget_monotonicity_and_rejected_nan():
    """Exactly iters + 1 evaluations; F never goes up along the accepted iterates; a trial
    whose value is NaN is rejected and the next one retried shorter."""
    calls, accepted = [], []

    def vag(x):
        calls.append(x.copy())
        if len(calls) == 2:  # the first trial: poisoned
            return float("nan"), np.full_like(x, np.nan)
        value, grad = _rosenbrock(x)
        return float(value), grad

    start = np.array([-1.2, 1.0, 0.5])
    result = reference.minimise(vag, start, 8)
    assert len(calls) == 9
    values = [float(_rosenbrock(c)[0]) for c in calls[2:]]
    for x in calls:
        if np.array_equal(x, result):
            accepted.append(x)
    assert accepted and _rosenbrock(result)[0] <= min(_rosenbrock(start)[0], *values)
    # the retried first step points the same way, 4x shorter
    first, second = calls[1] - start, calls[2] - start
    np.testing.assert_allclose(second, first / 4, rtol=1e-12)
