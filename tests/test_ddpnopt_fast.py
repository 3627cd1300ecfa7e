"""DDPNOpt's closed forms against autodiff: every product of ``torch/linearised.py`` (A δx,
Aᵀc, BatchNorm's live Aᵀc, B dθ, Σ_s B_sᵀc_s, the per-sample norms ‖B_sᵀ z_s‖²_D) and
``jax/persample.py``'s norms, on every layer kind the problems use, float64, random
inputs. The whole sweep built on them agrees with the oracle step by step in
``tests/test_parity.py``'s DDPNOpt rows; these tests name the layer and the product
when one is wrong, and reach the layer kinds no parity row has (AvgPool2 at an odd size,
SumFeatures before a controlled layer, bias-free dense and conv maps).

Tolerance: each closed form is the same sum as autodiff's in another order (a GEMM
instead of a per-sample loop, a conv transpose instead of a vjp), so entries differ by a
few ulp of the largest term; ``RTOL = 1e-12`` relative to the largest entry leaves 1000×
headroom over the ~1e-15 measured, and a wrong term (a missing δ, the tanh derivative at
the wrong point, a transposed weight) is of the size of the value itself.
"""

from __future__ import annotations

import numpy as np
import pytest

from implementations import spec

torch = pytest.importorskip("torch")
from torch import func

from implementations.torch import linearised, ops

RTOL = 1e-12  # see module docstring
S = 5

# (layer, input shape without the batch axis)
CONTROLLED = [
    (spec.Dense(6, 4), (6,)),
    (spec.Dense(6, 4, bias=False), (6,)),
    (spec.ResDense(5, 0.25), (5,)),
    (spec.Conv(2, 3), (2, 6, 6)),
    (spec.Conv(2, 3, bias=False), (2, 5, 5)),
    (spec.ResConv(3, 0.5), (3, 6, 6)),
    (spec.BatchNorm(4), (4,)),
    (spec.BatchNorm(3), (3, 4, 4)),
]
FREE = [
    (spec.ReLU(), (3, 4, 4)),
    (spec.Tanh(), (7,)),
    (spec.MaxPool2(), (2, 6, 6)),
    (spec.MaxPool2(), (2, 7, 7)),
    (spec.AvgPool2(), (2, 6, 6)),
    (spec.AvgPool2(), (2, 7, 7)),
    (spec.Flatten(), (2, 3, 3)),
    (spec.SumFeatures(), (5,)),
]


def _ids(cases):
    return [f"{type(layer).__name__}-{'x'.join(map(str, shape))}" for layer, shape in cases]


def _draw(shape, rng, scale=1.0):
    return torch.tensor(rng.normal(scale=scale, size=shape), dtype=torch.float64)


def _theta(layer, rng):
    return tuple(_draw(s, rng, 0.5) for s in layer.param_shapes())


def _close(got, want):
    scale = max(float(want.abs().max()), 1e-300)
    assert float((got - want).abs().max()) <= RTOL * scale, float((got - want).abs().max()) / scale


@pytest.mark.parametrize(("layer", "shape"), CONTROLLED + FREE, ids=_ids(CONTROLLED + FREE))
def test_state_products_equal_autodiff(layer, shape):
    """out = f(h), A δh and Aᵀc with BatchNorm's statistics held, and (for BatchNorm)
    backprop's Aᵀc through them."""
    rng = np.random.default_rng(7)
    theta = _theta(layer, rng) if layer.param_names else ()
    h = _draw((S, *shape), rng)
    lin = linearised.linearise(layer, theta, h)
    _close(lin.out, ops.apply(layer, theta, h))
    stats = ops.batch_stats(h) if isinstance(layer, spec.BatchNorm) else None
    held = lambda x: ops.apply(layer, theta, x, stats)
    out, pull = func.vjp(held, h)
    dh, c = _draw(h.shape, rng), _draw(out.shape, rng)
    _close(lin.push(dh), func.jvp(held, (h,), (dh,))[1])
    _close(lin.pull(c), pull(c)[0])
    if layer.param_names:
        _close(lin.pull_live(c), func.vjp(lambda x: ops.apply(layer, theta, x), h)[1](c)[0])


@pytest.mark.parametrize(("layer", "shape"), CONTROLLED, ids=_ids(CONTROLLED))
def test_parameter_products_equal_autodiff(layer, shape):
    """B dθ, Σ_s B_sᵀ c_s, and ‖B_sᵀ z_s‖²_D per sample against a loop of one-sample vjps."""
    rng = np.random.default_rng(11)
    theta, h = _theta(layer, rng), _draw((S, *shape), rng)
    lin = linearised.linearise(layer, theta, h)
    stats = ops.batch_stats(h) if isinstance(layer, spec.BatchNorm) else None

    def f(th, x):
        return ops.apply(layer, th, x, stats)

    d_theta = tuple(_draw(v.shape, rng) for v in theta)
    _close(lin.push_w(d_theta), func.jvp(lambda th: f(th, h), (theta,), (d_theta,))[1])
    c = _draw(lin.out.shape, rng)
    for got, want in zip(lin.pull_w(c), func.vjp(lambda th: f(th, h), theta)[1](c)[0]):
        _close(got, want)
    diag = tuple(torch.tensor(rng.uniform(0.1, 2.0, v.shape), dtype=torch.float64) for v in theta)
    per_sample = [func.vjp(lambda th, s=s: f(th, h[s : s + 1]), theta)[1](c[s : s + 1])[0] for s in range(S)]
    want = torch.stack([sum((d * q * q).sum() for d, q in zip(diag, qs)) for qs in per_sample])
    _close(lin.sqnorms(c, diag), want)


@pytest.mark.parametrize(("layer", "shape"), CONTROLLED, ids=_ids(CONTROLLED))
def test_jax_sqnorms_equal_autodiff(layer, shape):
    """The jax backend's per-sample norms against a loop of one-sample vjps."""
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    from implementations.jax import ops as jops
    from implementations.jax import persample

    rng = np.random.default_rng(13)
    theta = tuple(jnp.asarray(rng.normal(scale=0.5, size=s)) for s in layer.param_shapes())
    h = jnp.asarray(rng.normal(size=(S, *shape)))
    stats = jops.batch_stats(h) if isinstance(layer, spec.BatchNorm) else None
    z = jnp.asarray(rng.normal(size=jops.apply(layer, theta, h).shape))
    diag = tuple(jnp.asarray(rng.uniform(0.1, 2.0, v.shape)) for v in theta)

    def one(s):
        q = jax.vjp(lambda th: jops.apply(layer, th, h[s : s + 1], stats), theta)[1](z[s : s + 1])[0]
        return sum(jnp.sum(d * v * v) for d, v in zip(diag, q))

    want = torch.tensor(np.array([one(s) for s in range(S)]))
    got = torch.tensor(np.asarray(persample.weighted_sqnorms(layer, theta, h, z, diag, stats)))
    _close(got, want)


def test_stage_chains_folded_layers():
    """A stage of folded parameter-free layers before its controlled layer pulls and
    pushes through all of them (ReLU, max pooling, Flatten before a dense map)."""
    rng = np.random.default_rng(17)
    layers = (spec.ReLU(), spec.MaxPool2(), spec.Flatten(), spec.Dense(8, 3))
    theta = _theta(layers[-1], rng)
    params = [(), (), (), theta]
    x = _draw((S, 2, 4, 4), rng)
    lins = linearised.forward(layers, params, x)
    stage = linearised.stage(lins, spec.DDPStage(0, 4), [v.shape for v in theta])

    def f(x_):
        for layer, th in zip(layers, params):
            x_ = ops.apply(layer, th, x_)
        return x_

    dx, c = _draw(x.shape, rng), _draw((S, 3), rng)
    _close(stage.push_x(dx), func.jvp(f, (x,), (dx,))[1])
    _close(stage.pull_x(c), func.vjp(f, x)[1](c)[0])
    _close(lins[-1].out, f(x))
