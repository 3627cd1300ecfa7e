"""The ``lbfgs-device`` inner solver (``spec.DeviceLBFGS``), as the oracle runs it: one
layer at a time, plain NumPy on float64 vectors, H g by the textbook two-loop recursion
(Nocedal & Wright, Algorithm 7.4). The torch and jax backends solve every layer at once
with the compact representation of the same H; the parity rows compare the two.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from implementations import spec

RULES = spec.DeviceLBFGS


def two_loop(g: np.ndarray, pairs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """H g for the L-BFGS H from ``pairs`` (oldest first), H₀ = γI with γ = sᵀy/yᵀy of the
    newest pair (1 without pairs)."""
    q, alphas = g.copy(), []
    for s, y in reversed(pairs):
        a = (s @ q) / (s @ y)
        q -= a * y
        alphas.append(a)
    gamma = (pairs[-1][0] @ pairs[-1][1]) / (pairs[-1][1] @ pairs[-1][1]) if pairs else 1.0
    r = gamma * q
    for (s, y), a in zip(pairs, reversed(alphas)):
        r += (a - (y @ r) / (s @ y)) * s
    return r


def minimise(value_and_grad: Callable[[np.ndarray], tuple[float, np.ndarray]], theta: np.ndarray, iters: int):
    """``iters`` iterations of ``spec.DeviceLBFGS`` on F from ``theta``; returns θ."""
    theta = np.asarray(theta, dtype=np.float64)
    value, grad = value_and_grad(theta)
    eps = np.finfo(theta.dtype).eps
    step = 1.0 / max(float(np.linalg.norm(grad)), np.finfo(theta.dtype).tiny)
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    for _ in range(iters):
        direction = -two_loop(grad, pairs)
        slope = float(grad @ direction)
        if not slope < 0:
            direction, slope = -grad, -float(grad @ grad)
        trial = theta + step * direction
        trial_value, trial_grad = value_and_grad(trial)
        if np.isfinite(trial_value) and trial_value <= value + RULES.ARMIJO * step * slope:
            s, y = trial - theta, trial_grad - grad
            if s @ y > eps * (y @ y):
                pairs = (pairs + [(s, y)])[-RULES.MEMORY :]
            theta, value, grad = trial, trial_value, trial_grad
            step = 1.0 if pairs else 1.0 / max(float(np.linalg.norm(grad)), np.finfo(theta.dtype).tiny)
        else:
            step *= RULES.SHRINK
    return theta
