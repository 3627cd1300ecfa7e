"""Adam (``optax.adam``): bias-corrected moments, ``θ ← θ - lr m̂ / (√v̂ + eps)``."""

import optax

from implementations.jax.firstorder import make_first_order


def make(problem, hp, *, dtype="float32", device="cpu", seed=0):
    transform = optax.adam(hp.lr, b1=hp.b1, b2=hp.b2, eps=hp.eps)
    return make_first_order(problem, transform, hp.reg, dtype=dtype, device=device)
