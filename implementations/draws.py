"""NumPy-only pieces every backend shares, so that backends draw and scale identically:
the algorithms' own random numbers and BinaryConnect's per-layer learning-rate scale."""

from __future__ import annotations

import numpy as np


def initial_m_bar(shapes, seed: int) -> list[np.ndarray]:
    """Binary/ternary MSA's M̄₀ ~ U(-1e-6, 1e-6) i.i.d., one array per quantized layer, in
    layer order, from NumPy's generator seeded with ``[seed, 1]``."""
    rng = np.random.default_rng([seed, 1])
    return [rng.uniform(-1e-6, 1e-6, shape) for shape in shapes]


def stochastic_uniforms(seed: int, step: int, layer: int, shape) -> np.ndarray:
    """The uniforms stochastic BinaryConnect compares against at ``step`` for ``layer``."""
    return np.random.default_rng([seed, step, layer]).random(shape)


def glorot_scale(shape) -> float:
    """BinaryConnect's per-layer lr scale ``1/sqrt(1.5/(fan_in + fan_out))`` for a dense
    (n_in, n_out) or conv (c_out, c_in, k, k) weight."""
    if len(shape) == 4:
        fan_in, fan_out = shape[1] * shape[2] * shape[3], shape[0] * shape[2] * shape[3]
    else:
        fan_in, fan_out = shape
    return float(1.0 / np.sqrt(1.5 / (fan_in + fan_out)))
