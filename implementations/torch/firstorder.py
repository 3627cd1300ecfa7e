"""Shared body of the full-precision baselines: backprop on J, then a ``torch.optim`` step.

``J = (1/S) Σ Φ + Σ_t reg·½‖θ_t‖²``; the regulariser enters as the optimizers'
``weight_decay = reg`` (which adds ``reg·θ`` to the gradient: the same J)."""

from __future__ import annotations

from implementations import spec
from implementations.torch import common, ops


def make_first_order(problem, make_optimizer, *, dtype: str, device: str) -> spec.Trainer:
    """``make_optimizer(list_of_leaf_tensors) -> torch.optim.Optimizer``."""
    place = common.Placement(dtype, device)
    layers = problem.layers

    def init(params):
        theta = common.leaf_params(common.per_layer(layers, params), place)
        flat = [v for th in theta for v in th]
        return {"params": theta, "opt": make_optimizer(flat), "running": common.init_running(layers, place)}

    def step(state, batch):
        x, y = batch
        opt = state["opt"]
        opt.zero_grad(set_to_none=True)
        xs = common.forward(layers, state["params"], x)
        loss = ops.terminal_loss(problem.loss, xs[-1], y)
        loss.backward()
        opt.step()
        common.update_running(layers, state["running"], xs)
        return state, {"loss": loss.detach()}

    return common.trainer(layers, place, init, step)
