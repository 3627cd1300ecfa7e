"""The ``lbfgs-device`` inner solver (``spec.DeviceLBFGS``) in JAX: L problems at once (a
leading layer axis), ``inner_steps`` iterations unrolled inside the compiled step; every
decision is a ``jnp.where``. H g is the compact representation
(``implementations/torch/device_lbfgs.py`` writes it out), as batched small products.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from implementations import spec

RULES = spec.DeviceLBFGS


def apply_inverse_hessian(g, s, y):
    """H g per layer: ``g`` (L, n), the pairs ``s``, ``y`` (L, m, n), newest last."""
    sy = jnp.einsum("lin,ljn->lij", s, y)
    d = jnp.diagonal(sy, axis1=1, axis2=2)
    empty = d <= 0  # a kept pair has sᵀy > 0
    r = jnp.triu(sy) + jax.vmap(jnp.diag)(empty.astype(g.dtype))
    yy = jnp.einsum("lin,ljn->lij", y, y)
    last = d[:, -1]
    gamma = jnp.where(empty[:, -1], jnp.ones_like(last), last / jnp.where(empty[:, -1], 1, yy[:, -1, -1]))
    sg, yg = jnp.einsum("lmn,ln->lm", s, g)[..., None], jnp.einsum("lmn,ln->lm", y, g)[..., None]
    p = lax.linalg.triangular_solve(r, sg, left_side=True, lower=False)
    rhs = (jax.vmap(jnp.diag)(d) + gamma[:, None, None] * yy) @ p - gamma[:, None, None] * yg
    q = lax.linalg.triangular_solve(r, rhs, left_side=True, lower=False, transpose_a=True)
    back = jnp.einsum("lmn,lm->ln", s, q[..., 0]) - gamma[:, None] * jnp.einsum("lmn,lm->ln", y, p[..., 0])
    return gamma[:, None] * g + back


def minimise(value_and_grad, theta, iters: int):
    """``iters`` iterations of ``spec.DeviceLBFGS`` on F for every row of ``theta`` (L, n);
    ``value_and_grad(θ) -> (F (L,), ∇F (L, n))``, traceable."""
    value, grad = value_and_grad(theta)
    info = jnp.finfo(theta.dtype)
    memory = max(1, min(RULES.MEMORY, iters))
    s = jnp.zeros((theta.shape[0], memory, theta.shape[1]), theta.dtype)
    kept = jnp.zeros(theta.shape[0], bool)
    step = 1 / jnp.maximum(jnp.linalg.norm(grad, axis=1), info.tiny)

    def iteration(_, carry):
        theta, value, grad, s, y, kept, step = carry
        direction = -apply_inverse_hessian(grad, s, y)
        slope = jnp.sum(grad * direction, axis=1)
        steepest = ~(slope < 0)
        direction = jnp.where(steepest[:, None], -grad, direction)
        slope = jnp.where(steepest, -jnp.sum(grad * grad, axis=1), slope)
        trial = theta + step[:, None] * direction
        trial_value, trial_grad = value_and_grad(trial)
        accept = trial_value <= value + RULES.ARMIJO * step * slope  # False for NaN
        ds, dy = trial - theta, trial_grad - grad
        keep = accept & (jnp.sum(ds * dy, axis=1) > info.eps * jnp.sum(dy * dy, axis=1))
        s = jnp.where(keep[:, None, None], jnp.concatenate([s[:, 1:], ds[:, None]], axis=1), s)
        y = jnp.where(keep[:, None, None], jnp.concatenate([y[:, 1:], dy[:, None]], axis=1), y)
        kept = kept | keep
        theta = jnp.where(accept[:, None], trial, theta)
        value = jnp.where(accept, trial_value, value)
        grad = jnp.where(accept[:, None], trial_grad, grad)
        unit = jnp.where(kept, jnp.ones_like(step), 1 / jnp.maximum(jnp.linalg.norm(grad, axis=1), info.tiny))
        step = jnp.where(accept, unit, step * RULES.SHRINK)
        return theta, value, grad, s, y, kept, step

    carry = (theta, value, grad, s, jnp.zeros_like(s), kept, step)
    # unrolled, not a lax.fori_loop: XLA's CPU backend optimises across the iterations of
    # straight-line code and not inside a while loop (the CNN's step: 1.1 s rolled, 0.29 s
    # unrolled); ``inner_steps`` is 10, so the trace stays short
    for i in range(iters):
        carry = iteration(i, carry)
    return carry[0]
