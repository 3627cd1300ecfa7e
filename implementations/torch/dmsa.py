"""Binary and ternary MSA in PyTorch eager (rules: ``implementations.reference.dmsa`` and
``ops.dmsa_update``).

One forward pass and one backward pass per iteration. The backward pass gives, for every
quantized layer, ``M_t = ∂/∂W Σ p_{t+1}·f_t(x_t; W) = -∂J/∂W`` (ALGORITHMS.md §1: the two
are the same numbers, and autograd computes them without materialising each p_t); M_t
feeds ``ops.dmsa_update`` and is never applied as a gradient step. BN's γ, β take one
``torch.optim.Adam(bn_lr)`` step on ``-H``, whose gradient is ``∂J/∂θ``. α decays after
every epoch (or ``alpha_decay_steps``): ``1 - α ← d (1 - α)``.
"""

from __future__ import annotations

import torch

from implementations.draws import initial_m_bar
from implementations.torch import common, ops


def make(problem, hp, *, dtype="float32", device="cpu", seed=0, kernels=ops):
    """``kernels``: the module whose ``dmsa_update`` runs the discrete update (the plain
    torch ops here; the triton and cuda backends pass theirs)."""
    place = common.Placement(dtype, device)
    layers = problem.layers
    quantized = [t for t, layer in enumerate(layers) if layer.quantized]

    def init(params):
        per_layer = common.per_layer(layers, params)
        theta = []
        for t, th in enumerate(per_layer):
            if layers[t].quantized:
                theta.append((ops.quantize_init(place.tensor(th[0]), hp.levels).requires_grad_(True),))
            else:
                theta.append(tuple(place.tensor(v).requires_grad_(True) for v in th))
        others = [v for t, th in enumerate(theta) if not layers[t].quantized for v in th]
        m_bar = [place.tensor(m) for m in initial_m_bar([theta[t][0].shape for t in quantized], seed)]
        return {
            "params": theta,
            "m_bar": m_bar,
            "bn_opt": torch.optim.Adam(others, lr=hp.bn_lr) if others else None,
            "alpha": hp.alpha0,
            "k": 0,
            "running": common.init_running(layers, place),
        }

    def step(state, batch):
        x, y = batch
        params = state["params"]
        xs = common.forward(layers, params, x)
        loss = ops.terminal_loss(problem.loss, xs[-1], y)
        flat = [v for th in params for v in th]
        grads = dict(zip(map(id, flat), torch.autograd.grad(loss, flat)))
        flips = torch.zeros((), dtype=torch.int64, device=place.device)
        with torch.no_grad():
            for i, t in enumerate(quantized):
                w = params[t][0]
                m = -grads[id(w)]
                m_bar, w_new, f = kernels.dmsa_update(
                    state["m_bar"][i], m, w, alpha=state["alpha"], rho=hp.rho, levels=hp.levels, lam=hp.lam
                )
                state["m_bar"][i] = m_bar
                w.copy_(w_new)
                flips = flips + f
        if state["bn_opt"] is not None:
            for group in state["bn_opt"].param_groups:
                for v in group["params"]:
                    v.grad = grads[id(v)]
            state["bn_opt"].step()
        common.update_running(layers, state["running"], xs)
        state["k"] += 1
        if state["k"] % hp.decay_period(problem.steps_per_epoch) == 0:
            state["alpha"] = 1.0 - hp.alpha_decay * (1.0 - state["alpha"])
        return state, {"loss": loss.detach(), "flips": flips}

    return common.trainer(layers, place, init, step)
