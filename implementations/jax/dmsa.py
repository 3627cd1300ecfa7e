"""Binary and ternary MSA in JAX (rules: ``implementations.reference.dmsa`` and
``ops.dmsa_update``), one compiled step with the state donated.

One ``value_and_grad`` gives, for every quantized layer, ``M_t = -∂J/∂W``
(implementations/README.md §3.2: the same numbers as ``∂/∂W Σ p_{t+1}·f_t(x_t; W)``), which
feeds ``ops.dmsa_update`` and is never applied as a gradient step; BN's γ, β take one
``optax.adam(bn_lr)`` step on ``-H``, whose gradient is ``∂J/∂θ``. α and the step count
live on the host (α changes once an epoch, ``1 - α ← d (1 - α)``); the EMA's two weights
(α, 1 - α) and BN Adam's ε enter the compiled step as arguments, formed on the host by
``implementations.conventions`` after ``hp.numerics``, so neither the decay nor
TensorFlow 1's per-step ε ever recompiles (the ε reaches optax through
``optax.inject_hyperparams``).
"""

from __future__ import annotations

import jax
import numpy as np
import optax

from implementations import conventions
from implementations.draws import initial_m_bar
from implementations.jax import common, ops


def make(problem, hp, *, dtype="float32", device="cpu", seed=0):
    place = common.Placement(dtype, device)
    layers = problem.layers
    segs = common.segments(layers)
    quantized = [s for s, seg in enumerate(segs) if seg.layer.quantized]
    others = [s for s, seg in enumerate(segs) if seg.layer.param_names and not seg.layer.quantized]
    bn_adam = optax.inject_hyperparams(optax.adam, hyperparam_dtype=place.dtype)(
        learning_rate=hp.bn_lr, b1=conventions.BN_ADAM_B1, b2=conventions.BN_ADAM_B2, eps=conventions.BN_ADAM_EPS
    )
    unbiased = conventions.unbiased_running_variance(hp)

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
        return {"arrays": place.commit(arrays), "alpha": conventions.initial_alpha(hp), "k": 0}

    def _step(arrays, x, y, alpha, one_minus_alpha, bn_eps):
        params = arrays["params"]
        loss, states, grads = common.loss_and_grads(segs, problem.loss, params, x, y)
        new = list(params)
        m_bars, flips = [], 0
        for i, s in enumerate(quantized):
            m_bar, w, f = ops.dmsa_update(
                arrays["m_bar"][i],
                -grads[s][0],
                params[s][0],
                alpha=alpha,
                one_minus_alpha=one_minus_alpha,
                rho=hp.rho,
                levels=hp.levels,
                lam=hp.lam,
            )
            m_bars.append(m_bar)
            new[s] = (w,) + params[s][1:]
            flips = flips + f
        adam = arrays["adam"]
        adam.hyperparams["eps"] = bn_eps
        updates, adam = bn_adam.update([grads[s] for s in others], adam)
        for s, theta in zip(others, optax.apply_updates([params[s] for s in others], updates)):
            new[s] = theta
        running = common.update_running(segs, arrays["running"], states, unbiased)
        return {"params": new, "m_bar": m_bars, "adam": adam, "running": running}, {"loss": loss, "flips": flips}

    compiled = jax.jit(_step, donate_argnums=0)

    def step(state, batch):
        k = state["k"] + 1
        scalars = (*conventions.ema_weights(hp, state["alpha"]), conventions.bn_adam_eps(hp, k))
        arrays, metrics = compiled(state["arrays"], *batch, *(np.asarray(v, place.dtype) for v in scalars))
        alpha = conventions.alpha_after_step(hp, state["alpha"], k, problem.steps_per_epoch)
        return {"arrays": arrays, "alpha": alpha, "k": k}, metrics

    def state_arrays(state):
        out = common.arrays_of(segs, state["arrays"], opt="adam", opt_segments=others)
        return out | {"alpha": np.asarray(state["alpha"], np.float64), "step": np.asarray(state["k"], np.int64)}

    def load(state, arrays):
        loaded = common.load_arrays(segs, place, state["arrays"], arrays, opt="adam", opt_segments=others)
        return {"arrays": loaded, "alpha": type(state["alpha"])(arrays["alpha"]), "k": int(arrays["step"])}

    return common.trainer(
        layers,
        segs,
        place,
        init,
        step,
        params_of=lambda s: s["arrays"]["params"],
        running_of=lambda s: s["arrays"]["running"],
        state_arrays=state_arrays,
        load=load,
    )
