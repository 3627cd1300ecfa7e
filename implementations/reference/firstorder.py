"""Shared body of the full-precision baselines: the gradient of J, then an update rule."""

from __future__ import annotations

import jax
import numpy as np

from implementations import spec
from implementations.reference import common, pmp


def make_first_order(problem, reg: float, init_opt, update, dtype: str, opt_slots, load_opt) -> spec.Trainer:
    """``update(params_flat, grads_flat, opt, k) -> (params_flat, opt)`` with ``grads`` the
    gradient of ``J = (1/S) Σ Φ + Σ reg·½‖θ‖²`` on the batch; ``opt_slots(opt, k)`` names
    the optimizer's state for ``state_arrays`` (``{slot: per-parameter list}``, and Adam's
    ``"step"``), and ``load_opt(opt, arrays) -> opt`` is its inverse (``restore``). The step
    count k is restored from ``opt/step`` where the optimizer records one (Adam's bias
    correction); SGD's and Adagrad's updates do not read it."""
    common.check_dtype(dtype)
    layers = problem.layers

    def loss_of(flat_params, x, y):
        return pmp.objective(layers, pmp.per_layer(layers, flat_params), x, y, problem.loss, reg)

    def init(params):
        flat = common.to_jax(params)
        return {"params": flat, "running": common.init_running(layers), "opt": init_opt(flat), "k": 0}

    def step(state, batch):
        x, y = batch
        per_layer = pmp.per_layer(layers, state["params"])
        xs = pmp.forward(layers, per_layer, x)
        grads = jax.grad(loss_of)(state["params"], x, y)
        k = state["k"] + 1
        params, opt = update(state["params"], grads, state["opt"], k)
        running = common.update_running(layers, state["running"], xs)
        loss = pmp.terminal_loss(problem.loss, xs[-1], y)
        return {"params": params, "running": running, "opt": opt, "k": k}, {"loss": loss}

    def state_arrays(state):
        slots = dict(opt_slots(state["opt"], state["k"]))
        step_count = slots.pop("step", None)
        out = common.base_arrays(state) | common.optimizer_slots(slots)
        return out if step_count is None else out | {"opt/step": np.asarray(step_count, np.int64)}

    def load(state, arrays):
        state = common.load_base(state, arrays)
        k = int(arrays["opt/step"]) if "opt/step" in arrays else 0
        return {**state, "opt": load_opt(state["opt"], arrays), "k": k}

    return common.trainer(
        layers,
        init,
        step,
        params_of=lambda s: pmp.per_layer(layers, s["params"]),
        state_arrays=state_arrays,
        load=load,
    )
