"""Binary and ternary MSA in JAX (rules: ``implementations.reference.dmsa`` and
``ops.dmsa_update``), one compiled step with the state donated.

One ``value_and_grad`` gives, for every quantized layer, ``M_t = -∂J/∂W`` (ALGORITHMS.md
§1: the same numbers as ``∂/∂W Σ p_{t+1}·f_t(x_t; W)``), which feeds ``ops.dmsa_update``
and is never applied as a gradient step; BN's γ, β take one ``optax.adam(bn_lr)`` step on
``-H``, whose gradient is ``∂J/∂θ``. α and the step count live on the host (α changes
once an epoch, ``1 - α ← d (1 - α)``) and α enters the compiled step as an argument, so
its decay never recompiles.
"""

from __future__ import annotations

import jax
import numpy as np
import optax

from implementations.draws import initial_m_bar
from implementations.jax import common, ops


def make(problem, hp, *, dtype="float32", device="cpu", seed=0):
    place = common.Placement(dtype, device)
    layers = problem.layers
    segs = common.segments(layers)
    quantized = [s for s, seg in enumerate(segs) if seg.layer.quantized]
    others = [s for s, seg in enumerate(segs) if seg.layer.param_names and not seg.layer.quantized]
    bn_adam = optax.adam(hp.bn_lr)

    def init(params):
        theta = common.to_segments(segs, params, place)
        for s in quantized:
            theta[s] = (ops.quantize_init(theta[s][0], hp.levels),) + theta[s][1:]
        m_bar = initial_m_bar([theta[s][0].shape for s in quantized], seed)
        arrays = {
            "params": theta,
            "m_bar": [place.array(m) for m in m_bar],
            "adam": bn_adam.init([theta[s] for s in others]),
            "running": common.init_running(layers, place),
        }
        return {"arrays": place.commit(arrays), "alpha": hp.alpha0, "k": 0}

    def _step(arrays, x, y, alpha):
        params = arrays["params"]
        loss, states, grads = common.loss_and_grads(segs, problem.loss, params, x, y)
        new = list(params)
        m_bars, flips = [], 0
        for i, s in enumerate(quantized):
            m_bar, w, f = ops.dmsa_update(
                arrays["m_bar"][i], -grads[s][0], params[s][0], alpha=alpha, rho=hp.rho, levels=hp.levels, lam=hp.lam
            )
            m_bars.append(m_bar)
            new[s] = (w,) + params[s][1:]
            flips = flips + f
        updates, adam = bn_adam.update([grads[s] for s in others], arrays["adam"])
        for s, theta in zip(others, optax.apply_updates([params[s] for s in others], updates)):
            new[s] = theta
        running = common.update_running(segs, arrays["running"], states)
        return {"params": new, "m_bar": m_bars, "adam": adam, "running": running}, {"loss": loss, "flips": flips}

    compiled = jax.jit(_step, donate_argnums=0)
    period = hp.decay_period(problem.steps_per_epoch)

    def step(state, batch):
        arrays, metrics = compiled(state["arrays"], *batch, np.asarray(state["alpha"], place.dtype))
        k, alpha = state["k"] + 1, state["alpha"]
        if k % period == 0:
            alpha = 1.0 - hp.alpha_decay * (1.0 - alpha)
        return {"arrays": arrays, "alpha": alpha, "k": k}, metrics

    return common.trainer(
        layers,
        segs,
        place,
        init,
        step,
        params_of=lambda s: s["arrays"]["params"],
        running_of=lambda s: s["arrays"]["running"],
    )
