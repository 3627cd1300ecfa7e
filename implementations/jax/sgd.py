"""SGD (``optax.sgd``): ``v ← μ v + ∇J`` (v₀ = 0, so v = ∇J at the first step),
``θ ← θ - lr v``."""

import optax

from implementations.jax.firstorder import make_first_order


def make(problem, hp, *, dtype="float32", device="cpu", seed=0):
    transform = optax.sgd(hp.lr, momentum=hp.momentum or None)
    return make_first_order(problem, transform, hp.reg, dtype=dtype, device=device)
