"""The closed-form E-MSA gradient (``torch.ops.emsa_dense_grad``, the reference of the fused
kernels) against autograd of the augmented Hamiltonian, in float64."""

from __future__ import annotations

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
