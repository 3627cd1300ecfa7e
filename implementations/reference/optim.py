"""First-order updates as plain formulas (the oracle for torch.optim and optax).

Each takes lists of arrays and returns new lists; ``k`` is the 1-based step count.
"""

from __future__ import annotations

import jax.numpy as jnp


def sgd(params, grads, buf, *, lr, momentum):
    """``v ← μ v + g`` (v = g at the first step), ``θ ← θ - lr v``."""
    buf = [g if b is None else momentum * b + g for b, g in zip(buf, grads)]
    return [p - lr * v for p, v in zip(params, buf)], buf


def adagrad(params, grads, acc, *, lr, eps):
    """``G ← G + g²``, ``θ ← θ - lr g / (√G + eps)``."""
    acc = [a + g**2 for a, g in zip(acc, grads)]
    return [p - lr * g / (jnp.sqrt(a) + eps) for p, g, a in zip(params, grads, acc)], acc


def rmsprop(params, grads, sq, *, lr, alpha, eps):
    """``v ← α v + (1-α) g²``, ``θ ← θ - lr g / (√v + eps)`` (torch's RMSprop, no momentum)."""
    sq = [alpha * v + (1 - alpha) * g**2 for v, g in zip(sq, grads)]
    return [p - lr * g / (jnp.sqrt(v) + eps) for p, g, v in zip(params, grads, sq)], sq


def adam(params, grads, m, v, k, *, lr, b1=0.9, b2=0.999, eps=1e-8):
    """Adam with bias correction; ``lr`` may be a list (one per parameter)."""
    lrs = lr if isinstance(lr, (list, tuple)) else [lr] * len(params)
    m = [b1 * mi + (1 - b1) * g for mi, g in zip(m, grads)]
    v = [b2 * vi + (1 - b2) * g**2 for vi, g in zip(v, grads)]
    new = [p - a * (mi / (1 - b1**k)) / (jnp.sqrt(vi / (1 - b2**k)) + eps) for p, a, mi, vi in zip(params, lrs, m, v)]
    return new, m, v
