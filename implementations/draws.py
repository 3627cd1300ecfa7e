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


#: the last entry of the inner-start perturbations' seed, after ``[seed, step, layer]``
#: (stochastic BinaryConnect's): a stream of its own, even for the same step and layer
INNER_START_STREAM = 2


def inner_start_perturbation(scale: float, seed: int, step: int, layer: int, shapes) -> list[np.ndarray]:
    """The MSA family's perturbation of layer ``layer``'s inner-solve start at ``step``
    (1-based; ``spec.EMSA.perturb_init``): ``scale · U(-1, 1)`` i.i.d. over the layer's
    packed variables, i.e. one float64 vector of the total size drawn from NumPy's
    generator seeded with ``[seed, step, layer, INNER_START_STREAM]``, split back into
    ``shapes`` (the layer's parameter shapes, in ``param_names`` order, each C-ordered)."""
    sizes = [int(np.prod(s)) for s in shapes]
    packed = scale * np.random.default_rng([seed, step, layer, INNER_START_STREAM]).uniform(-1.0, 1.0, sum(sizes))
    return [part.reshape(s) for part, s in zip(np.split(packed, np.cumsum(sizes)[:-1]), shapes)]
