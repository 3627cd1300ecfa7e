"""Adam (oracle): bias-corrected moments, ``θ ← θ - lr m̂ / (√v̂ + eps)``."""

import jax.numpy as jnp

from implementations.reference import common, optim
from implementations.reference.firstorder import make_first_order


def make(problem, hp, *, dtype="float64", device="cpu", seed=0):
    def init_opt(params):
        return ([jnp.zeros_like(p) for p in params], [jnp.zeros_like(p) for p in params])

    def update(params, grads, mv, k):
        new, m, v = optim.adam(params, grads, mv[0], mv[1], k, lr=hp.lr, b1=hp.b1, b2=hp.b2, eps=hp.eps)
        return new, (m, v)

    def opt_slots(mv, k):
        return {"m": mv[0], "v": mv[1], "step": k}

    def load_opt(mv, arrays):
        index = range(len(mv[0]))
        if "opt/m/0" not in arrays:  # saved before the first step: the moments are still zero
            return mv
        return common.load_slots(arrays, "m", index), common.load_slots(arrays, "v", index)

    return make_first_order(problem, hp.reg, init_opt, update, dtype, opt_slots, load_opt)
