"""RMSprop (torch.optim.RMSprop, no momentum, not centred): ``v ← α v + (1-α) g²``,
``θ ← θ - lr g / (√v + eps)``."""

import torch

from implementations.torch.firstorder import make_first_order


def make(problem, hp, *, dtype="float32", device="cpu", seed=0):
    return make_first_order(
        problem,
        lambda p: torch.optim.RMSprop(p, lr=hp.lr, alpha=hp.alpha, eps=hp.eps, weight_decay=hp.reg),
        dtype=dtype,
        device=device,
    )
