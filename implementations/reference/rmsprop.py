"""RMSprop (oracle): ``v ← α v + (1-α) g²``, ``θ ← θ - lr g / (√v + eps)``."""

import jax.numpy as jnp

from implementations.reference import common, optim
from implementations.reference.firstorder import make_first_order


def make(problem, hp, *, dtype="float64", device="cpu", seed=0):
    def init_opt(params):
        return [jnp.zeros_like(p) for p in params]

    def update(params, grads, sq, k):
        return optim.rmsprop(params, grads, sq, lr=hp.lr, alpha=hp.alpha, eps=hp.eps)

    def opt_slots(sq, k):
        return {"v": sq}

    def load_opt(sq, arrays):
        # a torch checkpoint taken before the first step holds no mean square: still zero
        return common.load_slots(arrays, "v", range(len(sq))) if "opt/v/0" in arrays else sq

    return make_first_order(problem, hp.reg, init_opt, update, dtype, opt_slots, load_opt)
