"""The closed-form E-MSA gradients against autodiff of the augmented Hamiltonian, in
float64: ``torch.ops.emsa_dense_grad`` (the reference of the fused kernels) against torch
autograd, and the value-and-gradient of dense and conv residual stacks, torch and jax,
against the oracle's ``pmp.augmented_hamiltonian``."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from implementations import spec
from implementations.torch import emsa, ops


@pytest.mark.parametrize("rho", [0.0, 1.3])
@pytest.mark.parametrize(("layers", "samples", "width"), [(4, 9, 5), (1, 1, 1), (2, 16, 8)])
def test_closed_form_equals_autograd(layers, samples, width, rho):
    """Agreement to 1e-12 relative: the two evaluate the same formula in another order
    (measured: ≤ 2e-15 on O(1) inputs); a missing term would differ at O(1)."""
    g = torch.Generator().manual_seed(layers + 10 * width)
    w = torch.randn(layers, width, width, generator=g, dtype=torch.float64) * 0.5
    b = torch.randn(layers, width, generator=g, dtype=torch.float64) * 0.3
    x, x_next, p, p_next = (torch.randn(layers, samples, width, generator=g, dtype=torch.float64) for _ in range(4))
    delta, reg = 0.25, 1e-3
    grad_w, grad_b = ops.emsa_dense_grad(w, b, x, x_next, p, p_next, delta=delta, rho=rho, reg=reg)
    layer = spec.ResDense(width, delta)
    for i in range(layers):
        theta = (w[i].clone().requires_grad_(True), b[i].clone().requires_grad_(True))
        h = emsa.augmented_hamiltonian(layer, theta, x[i], x_next[i], p[i], p_next[i], rho, reg)
        auto_w, auto_b = torch.autograd.grad(h, theta)
        torch.testing.assert_close(grad_w[i], auto_w, rtol=1e-12, atol=1e-12 * float(auto_w.abs().max()))
        torch.testing.assert_close(grad_b[i], auto_b, rtol=1e-12, atol=1e-12 * float(auto_b.abs().max()))


STACKS = [
    ("dense", spec.ResDense(5, 0.25), (9, 5)),
    ("dense", spec.ResDense(3, 0.5), (1, 3)),
    ("conv", spec.ResConv(3, 0.5), (4, 3, 6, 6)),
    ("conv", spec.ResConv(2, 0.25), (2, 2, 5, 5)),
]


def _stack_inputs(layer, state_shape, n_layers: int, seed: int):
    """Random (W, b) of ``n_layers`` layers and stored (x, x', p, p') (float64 NumPy)."""
    rng = np.random.default_rng(seed)
    w_shape, b_shape = layer.param_shapes()
    w = rng.normal(scale=0.5, size=(n_layers, *w_shape))
    b = rng.normal(scale=0.3, size=(n_layers, *b_shape))
    stored = [rng.normal(size=(n_layers, *state_shape)) for _ in range(4)]
    return w, b, stored


@pytest.mark.parametrize("backend", ["torch", "jax"])
@pytest.mark.parametrize("rho", [0.0, 1.3])
@pytest.mark.parametrize(("kind", "layer", "state_shape"), STACKS, ids=[f"{k}-{s[-1]}" for k, _, s in STACKS])
def test_stack_value_and_grad_equal_autodiff(backend, kind, layer, state_shape, rho):
    """The closed-form (H̃, ∇_W, ∇_b) of a stack of 3 residual layers in torch and jax
    against the oracle's second-order autodiff of ``pmp.augmented_hamiltonian``, layer by
    layer, random stored states. Tolerance 1e-11 relative to the largest entry: the same
    sums in another order (measured ≤ 1e-14); a missing or mis-signed term is O(1)."""
    jax = pytest.importorskip("jax")
    from implementations.reference import pmp

    w, b, stored = _stack_inputs(layer, state_shape, 3, seed=len(state_shape) + int(10 * rho))
    delta, reg = layer.delta, 1e-3
    if backend == "torch":
        fn = ops.emsa_dense_value_and_grad if kind == "dense" else ops.emsa_conv_value_and_grad
        got = [v.numpy() for v in fn(*(torch.tensor(a) for a in (w, b, *stored)), delta=delta, rho=rho, reg=reg)]
    else:
        from implementations.jax import ops as jops

        fn = jops.emsa_dense_value_and_grad if kind == "dense" else jops.emsa_conv_value_and_grad
        got = [
            np.asarray(v) for v in fn(*(jax.numpy.asarray(a) for a in (w, b, *stored)), delta=delta, rho=rho, reg=reg)
        ]
    for i in range(3):
        one = [jax.numpy.asarray(a[i]) for a in stored]
        value, grads = jax.value_and_grad(lambda th, one=one: pmp.augmented_hamiltonian(layer, th, *one, rho, reg))(
            (jax.numpy.asarray(w[i]), jax.numpy.asarray(b[i]))
        )
        for mine, want in zip((got[0][i], got[1][i], got[2][i]), (value, *grads)):
            want = np.asarray(want)
            assert np.max(np.abs(mine - want)) <= 1e-11 * max(np.max(np.abs(want)), 1.0)
