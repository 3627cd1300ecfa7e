"""Adam (oracle): bias-corrected moments, ``θ ← θ - lr m̂ / (√v̂ + eps)``."""

import jax.numpy as jnp

from implementations.reference import optim
from implementations.reference.firstorder import make_first_order


def make(problem, hp, *, dtype="float64", device="cpu", seed=0):
    def init_opt(params):
        return ([jnp.zeros_like(p) for p in params], [jnp.zeros_like(p) for p in params])

    def update(params, grads, mv, k):
        new, m, v = optim.adam(params, grads, mv[0], mv[1], k, lr=hp.lr, b1=hp.b1, b2=hp.b2, eps=hp.eps)
        return new, (m, v)

    def opt_slots(mv, k):
        return {"m": mv[0], "v": mv[1], "step": k}

    return make_first_order(problem, hp.reg, init_opt, update, dtype, opt_slots)
