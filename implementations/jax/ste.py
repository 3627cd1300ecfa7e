"""BinaryConnect and TWN in JAX (rules: ``implementations.reference.ste``), one compiled
step with the state donated.

The forward pass uses ``Q(W)`` of the latent weights; the gradient with respect to
``Q(W)`` goes to W (straight through) through ``optax.scale_by_adam`` and a per-parameter
learning rate (BinaryConnect's Glorot scale on the quantized W), then BinaryConnect clips
W to [-1, 1]. Stochastic BinaryConnect's uniforms are drawn on the host from NumPy
(``[seed, step, layer]``), as in every backend, and enter the compiled step as arguments.
"""

from __future__ import annotations

import jax
import numpy as np
import optax

from implementations.draws import glorot_scale, stochastic_uniforms
from implementations.jax import common, ops


def make(problem, hp, *, dtype="float32", device="cpu", seed=0):
    if hp.kind not in ("bc", "twn"):
        raise ValueError(f"unknown STE kind {hp.kind!r} (known: bc, twn)")
    place = common.Placement(dtype, device)
    layers = problem.layers
    segs = common.segments(layers)
    quantized = [s for s, seg in enumerate(segs) if seg.layer.quantized]
    adam = optax.scale_by_adam()

    def learning_rates(theta):
        """Per parameter: hp.lr, times the Glorot scale for BinaryConnect's quantized W."""
        scaled = hp.kind == "bc" and hp.glorot_lr_scale
        return [
            tuple(
                hp.lr * (glorot_scale(v.shape) if scaled and segs[s].layer.quantized and name == "W" else 1.0)
                for name, v in zip(segs[s].layer.param_names, th)
            )
            for s, th in enumerate(theta)
        ]

    def effective(latent, uniforms):
        """Q(W) in the quantized segments (``uniforms[i]``: the i-th one's, or None)."""
        out = list(latent)
        for i, s in enumerate(quantized):
            out[s] = (ops.ste_quantize(latent[s][0], hp.kind, uniforms[i]),) + latent[s][1:]
        return out

    lrs = None

    def init(params):
        nonlocal lrs
        latent = common.to_segments(segs, params, place)
        lrs = learning_rates(latent)
        arrays = {"latent": latent, "adam": adam.init(latent), "running": common.init_running(layers, place)}
        return {"arrays": place.commit(arrays), "k": 0}

    def _step(arrays, x, y, uniforms, lrs):
        latent = arrays["latent"]
        loss, states, grads = common.loss_and_grads(segs, problem.loss, effective(latent, uniforms), x, y)
        directions, moments = adam.update(grads, arrays["adam"])  # ∂J/∂Q(W) applied to W
        latent = jax.tree.map(lambda w, d, lr: w - lr * d, latent, directions, lrs)
        if hp.kind == "bc":
            for s in quantized:
                latent[s] = (latent[s][0].clip(-1, 1),) + latent[s][1:]
        running = common.update_running(segs, arrays["running"], states)
        return {"latent": latent, "adam": moments, "running": running}, {"loss": loss}

    compiled = jax.jit(_step, donate_argnums=0)

    def step(state, batch):
        k = state["k"] + 1
        uniforms = [
            place.array(stochastic_uniforms(seed, k, segs[s].first, state["arrays"]["latent"][s][0].shape))
            if hp.stochastic
            else None
            for s in quantized
        ]
        arrays, metrics = compiled(state["arrays"], *batch, uniforms, lrs)
        return {"arrays": arrays, "k": k}, metrics

    def evaluated(state):
        return effective(state["arrays"]["latent"], [None] * len(quantized))

    def state_arrays(state):
        return common.arrays_of(segs, state["arrays"], weights="latent", opt="adam") | {
            "step": np.asarray(state["k"], np.int64)
        }

    def load(state, arrays):
        loaded = common.load_arrays(segs, place, state["arrays"], arrays, weights="latent", opt="adam")
        return {"arrays": loaded, "k": int(arrays["step"])}

    return common.trainer(
        layers,
        segs,
        place,
        init,
        step,
        params_of=evaluated,
        running_of=lambda s: s["arrays"]["running"],
        state_arrays=state_arrays,
        load=load,
    )
