"""Adagrad as the suite defines it (``spec.Adagrad``):

    G ← G + g²   (G₀ = initial_accumulator),      θ ← θ - lr · g / (√G + eps)

``optax.adagrad`` divides by ``√(G + eps)`` instead, a different formula for the same
name, so the rule is written here as an optax ``GradientTransformation`` (init/update
over a small NamedTuple state, as optax's own transforms are)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from implementations.jax.firstorder import make_first_order


class AccumulatorState(NamedTuple):
    sum_of_squares: optax.Updates


def scale_by_accumulated_rss(initial_accumulator: float, eps: float) -> optax.GradientTransformation:
    """``u = g / (√G + eps)`` with ``G ← G + g²``, G₀ = ``initial_accumulator``."""

    def init(params):
        return AccumulatorState(jax.tree.map(lambda p: jnp.full_like(p, initial_accumulator), params))

    def update(grads, state, params=None):
        acc = jax.tree.map(lambda a, g: a + g * g, state.sum_of_squares, grads)
        return jax.tree.map(lambda g, a: g / (jnp.sqrt(a) + eps), grads, acc), AccumulatorState(acc)

    return optax.GradientTransformation(init, update)


def make(problem, hp, *, dtype="float32", device="cpu", seed=0):
    transform = optax.chain(scale_by_accumulated_rss(hp.initial_accumulator, hp.eps), optax.scale(-hp.lr))
    return make_first_order(problem, transform, hp.reg, dtype=dtype, device=device)
