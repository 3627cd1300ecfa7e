"""DDPNOpt (oracle): differential dynamic programming on the layer chain, float64.

The math and every choice are in ``spec.DDPNOpt``'s docstring; ``ddp.step`` is the
iteration. This module cuts the layers into controlled stages (a layer with parameters
ends a stage; parameter-free layers join the next stage, or Φ after the last one), keeps
the base optimizer's state, and is the Trainer.

State: ``params`` (flat list), BN ``running`` statistics (updated from the nominal pass,
as the baselines do), ``opt`` (``{"m": [...], "v": [...]}`` per flat parameter, the
slots the preconditioner keeps: none for SGD, ``v`` for RMSprop, ``m``, ``v`` for Adam)
and ``k``, the steps taken (Adam's bias correction, saved as ``opt/step``).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from implementations import spec
from implementations.reference import common, ddp, pmp

#: the preconditioner's slots, per ``spec.DDPNOpt.precond``
SLOTS = spec.DDP_SLOTS


#: layers ``start .. stop-1``; the last one is the controlled layer
Stage = spec.DDPStage

#: the controlled stages, and the index where the layers folded into Φ begin
stages_of = spec.ddp_stages


def ravel(arrays) -> jnp.ndarray:
    return jnp.concatenate([jnp.ravel(a) for a in arrays])


def unravel(w, like) -> list:
    out, start = [], 0
    for a in like:
        out.append(w[start : start + a.size].reshape(a.shape))
        start += a.size
    return out


def _run(layers, x, stats=None):
    """Parameter-free ``layers`` on x; ``layers[-1]`` may be a controlled (layer, θ) pair."""
    for layer in layers:
        x = pmp.apply(layer, (), x) if not isinstance(layer, tuple) else pmp.apply(layer[0], layer[1], x, stats)
    return x


def layer_dynamics(layers, stage: Stage, shapes) -> ddp.Dynamics:
    """f_t of a stage over its parameter vector; BN's frozen map uses the nominal batch's
    statistics of its own input."""
    folded, controlled = layers[stage.start : stage.stop - 1], layers[stage.stop - 1]

    def batch(w, x, stats=None):
        return _run((*folded, (controlled, tuple(unravel(w, shapes)))), x, stats)

    def frozen(x_nominal):
        stats = pmp.batch_stats(_run(folded, x_nominal)) if isinstance(controlled, spec.BatchNorm) else None
        return lambda w, x: batch(w, x[None], stats)[0]

    return ddp.Dynamics(batch, frozen)


def base_precondition(hp: spec.DDPNOpt, slots: dict, k: int):
    """``ddp.Precondition`` of the base optimizer at step k, updating ``slots`` (stage t's
    raveled slots under ``slots[name][t]``) in place: the same formulas as
    ``reference.optim`` (and torch.optim) on the gradient g."""

    def precondition(t, g, curvature=None):
        if hp.precond == "sgd":
            u, denom = g, 1.0
        elif hp.precond == "rmsprop":
            slots["v"][t] = hp.rms_alpha * slots["v"][t] + (1 - hp.rms_alpha) * g**2
            u, denom = g, jnp.sqrt(slots["v"][t]) + hp.eps
        else:
            slots["m"][t] = hp.b1 * slots["m"][t] + (1 - hp.b1) * g
            slots["v"][t] = hp.b2 * slots["v"][t] + (1 - hp.b2) * g**2
            u = slots["m"][t] / (1 - hp.b1**k)
            denom = jnp.sqrt(slots["v"][t] / (1 - hp.b2**k)) + hp.eps
        return u, lambda r: hp.lr * r / denom

    return precondition


def make(problem, hp, *, dtype="float64", device="cpu", seed=0, dense_terminal="hessian"):
    """``dense_terminal="outer"`` (tests only) makes dense mode's V_T = ∇Φ∇Φᵀ, the
    curvature the factored mode keeps, so the two can be compared."""
    common.check_dtype(dtype)
    layers = problem.layers
    stages, tail = stages_of(layers)
    slices = spec.layer_slices(layers)
    opts = ddp.Options(hp.weight_decay, hp.feedback, hp.vxx, hp.vxx_reg, dense_terminal)

    def phi(x, y):
        return pmp.terminal_loss(problem.loss, _run(layers[tail:], x[None]), y[None])

    def stage_params(flat):
        return [flat[slices[s.stop - 1]] for s in stages]

    def init(params):
        flat = common.to_jax(params)
        opt = {name: [jnp.zeros_like(p) for p in flat] for name in SLOTS[hp.precond]}
        return {"params": flat, "running": common.init_running(layers), "opt": opt, "k": 0}

    def step(state, batch):
        x, y = batch
        k = state["k"] + 1
        xs = pmp.forward(layers, pmp.per_layer(layers, state["params"]), x)
        per_stage = stage_params(state["params"])
        dynamics = [layer_dynamics(layers, s, p) for s, p in zip(stages, per_stage)]
        slots = {name: [ravel(p) for p in stage_params(v)] for name, v in state["opt"].items()}
        ws, info = ddp.step(dynamics, [ravel(p) for p in per_stage], x, y, phi, base_precondition(hp, slots, k), opts)
        new = {
            "params": _flat_from_stages(state["params"], ws),
            "running": common.update_running(layers, state["running"], xs),
            "opt": {name: _flat_from_stages(state["opt"][name], vs) for name, vs in slots.items()},
            "k": k,
        }
        return new, {"loss": pmp.terminal_loss(problem.loss, xs[-1], y), "clamps": info["clamps"]}

    def _flat_from_stages(flat, stage_vectors):
        out = list(flat)
        for s, w in zip(stages, stage_vectors):
            sl = slices[s.stop - 1]
            out[sl] = unravel(w, flat[sl])
        return out

    def state_arrays(state):
        out = common.base_arrays(state) | common.optimizer_slots(state["opt"])
        return out | ({"opt/step": np.asarray(state["k"], np.int64)} if hp.precond == "adam" else {})

    def load(state, arrays):
        state = common.load_base(state, arrays)
        opt = {name: common.load_slots(arrays, name, range(len(v))) for name, v in state["opt"].items()}
        return {**state, "opt": opt, "k": int(arrays.get("opt/step", 0))}

    return common.trainer(
        layers,
        init,
        step,
        params_of=lambda s: pmp.per_layer(layers, s["params"]),
        state_arrays=state_arrays,
        load=load,
    )
