"""SGD (torch.optim.SGD): ``v ← μ v + ∇J``, ``θ ← θ - lr v``."""

import torch

from implementations.torch.firstorder import make_first_order


def make(problem, hp, *, dtype="float32", device="cpu", seed=0):
    return make_first_order(
        problem,
        lambda p: torch.optim.SGD(p, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.reg),
        dtype=dtype,
        device=device,
    )
