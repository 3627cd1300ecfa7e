"""The ``lbfgs-device`` inner solver (``spec.DeviceLBFGS``) in torch: L problems at once
(a leading layer axis), a fixed number of iterations, no host synchronisation: every
decision (accept the trial, keep the pair, the next step length) is a ``torch.where``.

H g comes from the compact representation of the L-BFGS matrix (Byrd, Nocedal &
Schnabel 1994, Thm 2.2), with the pairs as the rows of S, Y (oldest first), H₀ = γI:

    H g = γ g + Sᵀ R⁻ᵀ ((D + γ Y Yᵀ) R⁻¹ S g - γ Y g) - γ Yᵀ R⁻¹ S g,

R the upper triangle of S Yᵀ (R_ij = s_iᵀy_j, i ≤ j) and D its diagonal: two m × m
triangular solves and four thin products per layer, batched, instead of the two-loop
recursion's 4m dependent steps. Empty slots hold s = y = 0 with R_ii = 1, so they add
nothing. ``tests/test_device_lbfgs.py`` checks it against the reference's two-loop
recursion, and the whole solver against ``reference/device_lbfgs.py``.
"""

from __future__ import annotations

import torch

from implementations import spec

RULES = spec.DeviceLBFGS


def apply_inverse_hessian(g: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """H g per layer: ``g`` (L, n), ``pairs`` (L, 2m, n) the rows s_1..s_m then y_1..y_m,
    newest last."""
    m = pairs.shape[1] // 2
    y = pairs[:, m:]
    products = torch.bmm(pairs, y.transpose(1, 2))  # rows: S Yᵀ, then Y Yᵀ
    sy, yy = products[:, :m], products[:, m:]
    d = torch.diagonal(sy, dim1=1, dim2=2)
    empty = d <= 0  # a kept pair has sᵀy > 0
    r = torch.triu(sy) + torch.diag_embed(empty.to(g.dtype))
    last, fresh = d[:, -1], empty[:, -1]
    gamma = torch.where(fresh, torch.ones_like(last), last / torch.where(fresh, 1, yy[:, -1, -1]))[:, None, None]
    pg = torch.bmm(pairs, g[:, :, None])  # S g, then Y g
    p = torch.linalg.solve_triangular(r, pg[:, :m], upper=True)
    rhs = torch.baddbmm(-gamma * pg[:, m:], torch.diag_embed(d) + gamma * yy, p)
    q = torch.linalg.solve_triangular(r.transpose(1, 2), rhs, upper=False)
    back = torch.bmm(pairs.transpose(1, 2), torch.cat([q, -gamma * p], dim=1))
    return gamma[:, :, 0] * g + back[:, :, 0]


def minimise(value_and_grad, theta: torch.Tensor, iters: int) -> torch.Tensor:
    """``iters`` iterations of ``spec.DeviceLBFGS`` on F for every row of ``theta`` (L, n);
    ``value_and_grad(θ) -> (F (L,), ∇F (L, n))``."""
    value, grad = value_and_grad(theta)
    info = torch.finfo(theta.dtype)
    memory = max(1, min(RULES.MEMORY, iters))
    pairs = theta.new_zeros(theta.shape[0], 2 * memory, theta.shape[1])
    kept = torch.zeros(theta.shape[0], dtype=torch.bool, device=theta.device)
    step = 1 / grad.norm(dim=1).clamp_min(info.tiny)
    for _ in range(iters):
        direction = -apply_inverse_hessian(grad, pairs)
        slope = (grad * direction).sum(dim=1)
        steepest = ~(slope < 0)
        direction = torch.where(steepest[:, None], -grad, direction)
        slope = torch.where(steepest, -(grad * grad).sum(dim=1), slope)
        trial = theta + step[:, None] * direction
        trial_value, trial_grad = value_and_grad(trial)
        accept = trial_value <= value + RULES.ARMIJO * step * slope  # False for NaN
        ds, dy = trial - theta, trial_grad - grad
        keep = accept & ((ds * dy).sum(dim=1) > info.eps * (dy * dy).sum(dim=1))
        shifted = torch.cat([pairs[:, 1:memory], ds[:, None], pairs[:, memory + 1 :], dy[:, None]], dim=1)
        pairs = torch.where(keep[:, None, None], shifted, pairs)
        kept = kept | keep
        theta = torch.where(accept[:, None], trial, theta)
        value = torch.where(accept, trial_value, value)
        grad = torch.where(accept[:, None], trial_grad, grad)
        unit = torch.where(kept, torch.ones_like(step), 1 / grad.norm(dim=1).clamp_min(info.tiny))
        step = torch.where(accept, unit, step * RULES.SHRINK)
    return theta
