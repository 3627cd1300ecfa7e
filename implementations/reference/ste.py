"""Straight-through-estimator baselines (oracle): BinaryConnect and TWN
(implementations/README.md §4.2, §4.3).

Latent real weights W of the quantized layers; the forward and backward passes use
``Q(W)``, and the gradient with respect to ``Q(W)`` updates W (straight through):

- ``kind="bc"``: ``Q(W) = +1 if W ≥ 0 else -1``; stochastic: +1 with probability
  ``clip((W + 1)/2, 0, 1)``, the uniforms drawn from NumPy's generator seeded with
  ``[seed, step, layer]`` (the same in every backend). Adam on W with lr scaled per layer by
  ``1/sqrt(1.5/(fan_in + fan_out))`` (``glorot_lr_scale``), then W clipped to [-1, 1].
  Evaluation uses the deterministic Q.
- ``kind="twn"``: ``Δ = 0.7 mean|W|``, ``t = +1 (W > Δ), -1 (W < -Δ), else 0``,
  ``a = mean{|W_i| : |W_i| > Δ}``, ``Q(W) = a t``; Adam on W, no clipping.

Every other parameter (BN's γ, β) is trained by Adam(lr) on the loss directly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from implementations.draws import glorot_scale, stochastic_uniforms
from implementations.reference import common, optim, pmp


def quantize(w, kind: str, u=None):
    """``Q(W)`` for BinaryConnect (``u``: the stochastic uniforms, or None) and TWN."""
    if kind == "bc":
        if u is None:
            return jnp.where(w >= 0, 1.0, -1.0)
        return jnp.where(u < jnp.clip((w + 1) / 2, 0, 1), 1.0, -1.0)
    if kind == "twn":
        delta = 0.7 * jnp.mean(jnp.abs(w))
        big = jnp.abs(w) > delta
        a = jnp.sum(jnp.where(big, jnp.abs(w), 0.0)) / jnp.maximum(jnp.sum(big), 1)
        return a * jnp.where(w > delta, 1.0, jnp.where(w < -delta, -1.0, 0.0))
    raise ValueError(f"unknown STE kind {kind!r} (known: bc, twn)")


def make(problem, hp, *, dtype="float64", device="cpu", seed=0):
    common.check_dtype(dtype)
    layers = problem.layers
    is_latent = [layer.quantized and name == "W" for t, layer in enumerate(layers) for name in layer.param_names]
    layer_of = [t for t, layer in enumerate(layers) for _ in layer.param_names]

    def effective(latent, k, stochastic):
        out = []
        for i, w in enumerate(latent):
            if not is_latent[i]:
                out.append(w)
                continue
            u = stochastic_uniforms(seed, k, layer_of[i], w.shape) if stochastic else None
            out.append(quantize(w, hp.kind, u))
        return out

    def loss_of(eff, x, y):
        return pmp.objective(layers, pmp.per_layer(layers, eff), x, y, problem.loss)

    lrs = None

    def init(params):
        nonlocal lrs
        latent = common.to_jax(params)
        lrs = [
            hp.lr * (glorot_scale(w.shape) if is_latent[i] and hp.kind == "bc" and hp.glorot_lr_scale else 1.0)
            for i, w in enumerate(latent)
        ]
        zeros = [jnp.zeros_like(w) for w in latent]
        return {"latent": latent, "adam": (zeros, list(zeros)), "k": 0, "running": common.init_running(layers)}

    def step(state, batch):
        x, y = batch
        k = state["k"] + 1
        eff = effective(state["latent"], k, hp.stochastic)
        xs = pmp.forward(layers, pmp.per_layer(layers, eff), x)
        grads = jax.grad(loss_of)(eff, x, y)  # ∂J/∂Q(W), applied to W straight through
        latent, m, v = optim.adam(state["latent"], grads, *state["adam"], k, lr=lrs)
        if hp.kind == "bc":
            latent = [jnp.clip(w, -1, 1) if is_latent[i] else w for i, w in enumerate(latent)]
        new = {"latent": latent, "adam": (m, v), "k": k, "running": common.update_running(layers, state["running"], xs)}
        return new, {"loss": pmp.terminal_loss(problem.loss, xs[-1], y)}

    def evaluated(state):
        """The deterministic quantized weights, per layer (for ``get`` and ``predict``)."""
        return pmp.per_layer(layers, effective(state["latent"], 0, False))

    def state_arrays(state):
        m, v = state["adam"]
        out = common.base_arrays(state, "latent") | common.optimizer_slots({"m": m, "v": v})
        return out | {"opt/step": np.asarray(state["k"], np.int64), "step": np.asarray(state["k"], np.int64)}

    def load(state, arrays):
        state = common.load_base(state, arrays, "latent")
        index = range(len(state["latent"]))
        adam = (common.load_slots(arrays, "m", index), common.load_slots(arrays, "v", index))
        return {**state, "adam": adam, "k": int(arrays["step"])}

    return common.trainer(layers, init, step, params_of=evaluated, state_arrays=state_arrays, load=load)
