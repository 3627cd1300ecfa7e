"""Adagrad (oracle): ``G ← G + g²``, ``θ ← θ - lr g / (√G + eps)``."""

import jax.numpy as jnp

from implementations.reference import common, optim
from implementations.reference.firstorder import make_first_order


def make(problem, hp, *, dtype="float64", device="cpu", seed=0):
    def init_opt(params):
        return [jnp.full_like(p, hp.initial_accumulator) for p in params]

    def update(params, grads, acc, k):
        return optim.adagrad(params, grads, acc, lr=hp.lr, eps=hp.eps)

    def load_opt(acc, arrays):
        return common.load_slots(arrays, "sum", range(len(acc)))

    return make_first_order(problem, hp.reg, init_opt, update, dtype, lambda acc, k: {"sum": acc}, load_opt)
