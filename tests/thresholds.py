"""Inputs for the discrete-update kernels drawn clear of the rule's thresholds.

As docs/design.md §5 warns, two implementations of binary/ternary MSA's rule agree
exactly only where M̄' is not within rounding of a threshold. So the kernel tests (on the
CPU through Triton's interpreter, and on a GPU) draw M̄, M, W, redraw every entry whose
decision falls within ``MARGIN`` of a threshold, and then require exact agreement of every
discrete output: no "one wrong decision allowed".
"""

from __future__ import annotations

import numpy as np

MARGIN = 1e-5  # relative distance of every decision from its threshold: ~80 float32 ulps
RHO = {2: 0.5, 3: 0.25}
LAM = 1e-5


def clear_inputs(shape, levels: int, seed: int, alpha: float = 0.9):
    """Random M̄, M, W, with the entries whose decision falls within ``MARGIN`` of a
    threshold drawn again until none does (a few rounds: ρ_k moves with the redraws)."""
    g = np.random.default_rng([seed, levels, int(np.prod(shape))])
    m_bar = g.normal(size=shape) * 1e-3
    m = g.normal(size=shape) * 1e-3
    w = (g.integers(-1, 2, size=shape) if levels == 3 else 2 * g.integers(0, 2, size=shape) - 1).astype(np.float64)
    for _ in range(100):
        close = entry_margins(m_bar, m, w, alpha, levels) <= MARGIN
        if not close.any():
            return m_bar, m, w
        m_bar[close] = g.normal(size=int(close.sum())) * 1e-3
        m[close] = g.normal(size=int(close.sum())) * 1e-3
    raise AssertionError("could not draw inputs away from the thresholds")


def decision_margin(m_bar, m, w, alpha, levels) -> float:
    return float(np.min(entry_margins(m_bar, m, w, alpha, levels)))


def entry_margins(m_bar, m, w, alpha, levels) -> np.ndarray:
    """Per entry, the distance of M̄' (float64) from every threshold the rule compares it
    with, relative to max|M̄'| (see ``torch.ops.dmsa_update``)."""
    new = alpha * m_bar + (1 - alpha) * m
    target = np.where(new >= 0, 1.0, -1.0) if levels == 2 else np.sign(new)
    wrong = w != target
    scale = float(np.max(np.abs(new)))
    dists = [np.abs(new)]
    if wrong.any():
        rho_k = RHO[levels] * float(np.max(np.abs(new[wrong])))
        if levels == 2:
            dists.append(np.abs(np.abs(new) - rho_k))
        else:
            dists += [np.abs(new - (rho_k * (1 - 2 * w) + LAM)), np.abs(new + rho_k * (1 + 2 * w) + LAM)]
    return np.minimum.reduce(dists) / scale
