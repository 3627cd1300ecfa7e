"""BinaryConnect and TWN in PyTorch eager (rules: ``implementations.reference.ste``).

The forward pass uses ``Q(W)`` of the latent weights; the gradient with respect to
``Q(W)`` is handed to W (straight through) and ``torch.optim.Adam`` steps W, with
BinaryConnect's per-layer Glorot lr scale as a parameter group and W clipped to [-1, 1]
afterwards. Stochastic BinaryConnect draws its uniforms on the host from NumPy (seeded with
``[seed, step, layer]``), so every backend samples the same binary weights.
"""

from __future__ import annotations

import torch

from implementations.draws import glorot_scale, stochastic_uniforms
from implementations.torch import common, ops


def make(problem, hp, *, dtype="float32", device="cpu", seed=0):
    if hp.kind not in ("bc", "twn"):
        raise ValueError(f"unknown STE kind {hp.kind!r} (known: bc, twn)")
    place = common.Placement(dtype, device)
    layers = problem.layers

    def effective(latent, k: int, stochastic: bool) -> list[tuple]:
        out = []
        for t, th in enumerate(latent):
            if not layers[t].quantized:
                out.append(th)
                continue
            w = th[0].detach()
            u = place.tensor(stochastic_uniforms(seed, k, t, tuple(w.shape))) if stochastic else None
            out.append((ops.ste_quantize(w, hp.kind, u).requires_grad_(True),) + th[1:])
        return out

    def init(params):
        latent = common.leaf_params(common.per_layer(layers, params), place)
        groups = []
        for t, th in enumerate(latent):
            for name, v in zip(layers[t].param_names, th):
                scaled = layers[t].quantized and name == "W" and hp.kind == "bc" and hp.glorot_lr_scale
                groups.append({"params": [v], "lr": hp.lr * (glorot_scale(tuple(v.shape)) if scaled else 1.0)})
        return {
            "latent": latent,
            "opt": torch.optim.Adam(groups, lr=hp.lr),
            "k": 0,
            "running": common.init_running(layers, place),
        }

    def step(state, batch):
        x, y = batch
        state["k"] += 1
        latent = state["latent"]
        eff = effective(latent, state["k"], hp.stochastic)
        xs = common.forward(layers, eff, x)
        loss = ops.terminal_loss(problem.loss, xs[-1], y)
        eff_flat = [v for th in eff for v in th]
        grads = torch.autograd.grad(loss, eff_flat)
        for v, g in zip([v for th in latent for v in th], grads):
            v.grad = g  # straight through: ∂J/∂Q(W) updates W
        state["opt"].step()
        if hp.kind == "bc":
            with torch.no_grad():
                for t, th in enumerate(latent):
                    if layers[t].quantized:
                        th[0].clamp_(-1.0, 1.0)
        common.update_running(layers, state["running"], xs)
        return state, {"loss": loss.detach()}

    def evaluated(state):
        return effective(state["latent"], 0, False)

    return common.trainer(layers, place, init, step, params_of=evaluated)
