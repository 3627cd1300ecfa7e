"""Shared body of the full-precision baselines: ``∇J`` by ``jax.value_and_grad``, then an
optax update, the whole step one ``jax.jit`` with the state donated.

``J = (1/S) Σ Φ + Σ_t reg·½‖θ_t‖²``: the regulariser enters as
``optax.add_decayed_weights(reg)`` ahead of the update rule (it adds ``reg·θ`` to the
gradient, torch's ``weight_decay``: the same J)."""

from __future__ import annotations

import jax
import optax

from implementations import spec
from implementations.jax import common


def make_first_order(problem, transform: optax.GradientTransformation, reg: float, *, dtype, device) -> spec.Trainer:
    place = common.Placement(dtype, device)
    layers = problem.layers
    segs = common.segments(layers)
    optimizer = optax.chain(optax.add_decayed_weights(reg), transform) if reg else transform

    def init(params):
        theta = common.to_segments(segs, params, place)
        return place.commit(
            {"params": theta, "opt": optimizer.init(theta), "running": common.init_running(layers, place)}
        )

    def _step(state, x, y):
        loss, states, grads = common.loss_and_grads(segs, problem.loss, state["params"], x, y)
        updates, opt = optimizer.update(grads, state["opt"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        running = common.update_running(segs, state["running"], states)
        return {"params": params, "opt": opt, "running": running}, {"loss": loss}

    step = jax.jit(_step, donate_argnums=0)
    return common.trainer(layers, segs, place, init, lambda state, batch: step(state, *batch))
