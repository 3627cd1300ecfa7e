"""Binary and ternary MSA in PyTorch eager (rules: ``implementations.reference.dmsa`` and
``ops.dmsa_update``).

One forward pass and one backward pass per iteration. The backward pass gives, for every
quantized layer, ``M_t = ∂/∂W Σ p_{t+1}·f_t(x_t; W) = -∂J/∂W`` (implementations/README.md
§3.2: the two are the same numbers, and autograd computes them without materialising each
p_t); M_t feeds ``ops.dmsa_update`` and is never applied as a gradient step. BN's γ, β take
one ``torch.optim.Adam(bn_lr)`` step on ``-H``, whose gradient is ``∂J/∂θ``. α decays after
every epoch (or ``alpha_decay_steps``): ``1 - α ← d (1 - α)``. How α is rounded, which ε the
BN Adam adds and which running variance BN keeps follow ``hp.numerics``
(``implementations.conventions``); TensorFlow 1's ε is torch's Adam with the group's ``eps``
set to ``conventions.bn_adam_eps`` before each step (the module docstring there shows the
two updates are then the same).
"""

from __future__ import annotations

import torch

from implementations import conventions
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
            "bn_opt": bn_adam(others) if others else None,
            "alpha": conventions.initial_alpha(hp),
            "k": 0,
            "running": common.init_running(layers, place),
        }

    def bn_adam(others):
        betas = (conventions.BN_ADAM_B1, conventions.BN_ADAM_B2)
        return torch.optim.Adam(others, lr=hp.bn_lr, betas=betas, eps=conventions.BN_ADAM_EPS)

    def step(state, batch):
        x, y = batch
        params = state["params"]
        xs = common.forward(layers, params, x)
        loss = ops.terminal_loss(problem.loss, xs[-1], y)
        flat = [v for th in params for v in th]
        grads = dict(zip(map(id, flat), torch.autograd.grad(loss, flat)))
        flips = torch.zeros((), dtype=torch.int64, device=place.device)
        alpha, one_minus_alpha = conventions.ema_weights(hp, state["alpha"])
        with torch.no_grad():
            for i, t in enumerate(quantized):
                w = params[t][0]
                m = -grads[id(w)]
                m_bar, w_new, f = kernels.dmsa_update(
                    state["m_bar"][i],
                    m,
                    w,
                    alpha=alpha,
                    one_minus_alpha=one_minus_alpha,
                    rho=hp.rho,
                    levels=hp.levels,
                    lam=hp.lam,
                )
                state["m_bar"][i] = m_bar
                w.copy_(w_new)
                flips = flips + f
        if state["bn_opt"] is not None:
            for group in state["bn_opt"].param_groups:
                group["eps"] = conventions.bn_adam_eps(hp, state["k"] + 1)
                for v in group["params"]:
                    v.grad = grads[id(v)]
            state["bn_opt"].step()
        common.update_running(layers, state["running"], xs, unbiased=conventions.unbiased_running_variance(hp))
        state["k"] += 1
        state["alpha"] = conventions.alpha_after_step(hp, state["alpha"], state["k"], problem.steps_per_epoch)
        return state, {"loss": loss.detach(), "flips": flips}

    return common.trainer(layers, place, init, step)
