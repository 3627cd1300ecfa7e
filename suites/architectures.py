"""Layer stacks of the problems: the papers' architectures and the embedded stand-ins.

Each builder returns a tuple of ``spec`` layers (one operation per layer:
implementations/README.md §1.1), so every backend builds the same network from it.

Parameter counts of the ICML paper's networks (BinaryConnect's architectures), counting
the discrete weights only (no bias; BN's γ, β are extra):

| network | discrete weights |
|---|---|
| MNIST MLP 784-[2048]×3-10 | 10,014,720 |
| CIFAR-10 CNN 2×128C3-MP2-2×256C3-MP2-2×512C3-MP2-1024FC-1024FC-10 | 14,022,016 |
| SVHN CNN, the same with half the conv channels (FC stays 1024) | 6,397,632 |
"""

from __future__ import annotations

import itertools
import math

from implementations import spec


def residual_sine(depth: int = 20, width: int = 5, delta: float = 0.25) -> tuple:
    """The JMLR toy: ``depth`` residual dense tanh layers, then Σᵢ xᵢ."""
    return tuple(spec.ResDense(width, delta) for _ in range(depth)) + (spec.SumFeatures(),)


def bn_mlp(sizes: list[int], quantized: bool) -> tuple:
    """ICML-style MLP: [Dense(no bias) - BN - ReLU]... - Dense(no bias) - BN."""
    layers: list = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers += [spec.Dense(a, b, bias=False, quantized=quantized), spec.BatchNorm(b)]
        if i < len(sizes) - 2:
            layers.append(spec.ReLU())
    return tuple(layers)


def bc_mlp(quantized: bool) -> tuple:
    """BinaryConnect's MNIST MLP, 784-[2048-BN-ReLU]×3-10-BN."""
    return bn_mlp([784, 2048, 2048, 2048, 10], quantized)


def bc_cnn(
    quantized: bool, in_channels: int = 3, widths: tuple[int, int, int] = (128, 256, 512), fc: int = 1024
) -> tuple:
    """BinaryConnect's CIFAR-10 CNN on 32×32 images: for each width c, conv3×3(c) - BN -
    ReLU - conv3×3(c) - MaxPool2 - BN - ReLU ('same' padding, no bias; the pool comes
    before BN, as in the ICML code); then Dense(fc) - BN - ReLU twice and Dense(10) - BN.
    ``widths=(64, 128, 256)`` is the SVHN net (half width)."""
    layers: list = []
    c_in = in_channels
    for c in widths:
        layers += [spec.Conv(c_in, c, bias=False, quantized=quantized), spec.BatchNorm(c), spec.ReLU()]
        layers += [spec.Conv(c, c, bias=False, quantized=quantized), spec.MaxPool2(), spec.BatchNorm(c), spec.ReLU()]
        c_in = c
    layers.append(spec.Flatten())
    return tuple(layers) + bn_mlp([c_in * 4 * 4, fc, fc, 10], quantized)


def rescnn(
    channels: int, n_residual: int, delta: float = 0.5, pool: type = spec.MaxPool2, projections_first: bool = False
) -> tuple:
    """JMLR residual CNN on 28×28 images: two projection layers conv3×3 - tanh - 2×2 pool,
    ``n_residual`` layers ``x + δ tanh(conv3×3(x) + b)``, one dense classifier.

    ``projections_first``: both projections before the residual layers (the JMLR code:
    the residual layers then run at 7×7); else the residual layers sit between them (the
    embedded ``mnist5k-rescnn``, at 14×14)."""
    c = channels
    project = lambda c_in: (spec.Conv(c_in, c), spec.Tanh(), pool())
    residual = tuple(spec.ResConv(c, delta) for _ in range(n_residual))
    body = project(1) + project(c) + residual if projections_first else project(1) + residual + project(c)
    return body + (spec.Flatten(), spec.Dense(c * 7 * 7, 10))


def jmlr_rescnn() -> tuple:
    """The JMLR paper's MNIST / Fashion-MNIST net: 32 channels, 7 residual layers (δ = 0.5),
    projections first and average pooling, as the authors' code builds it."""
    return rescnn(32, 7, pool=spec.AvgPool2, projections_first=True)


def discrete_weights(layers: tuple) -> int:
    """How many weights a discrete algorithm quantizes (the W of the quantized layers)."""
    return sum(math.prod(layer.param_shapes()[0]) for layer in layers if layer.quantized)
