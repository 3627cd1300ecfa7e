"""Adam (torch.optim.Adam): bias-corrected moments, ``θ ← θ - lr m̂ / (√v̂ + eps)``."""

import torch

from implementations.torch.firstorder import make_first_order


def make(problem, hp, *, dtype="float32", device="cpu", seed=0):
    return make_first_order(
        problem,
        lambda p: torch.optim.Adam(p, lr=hp.lr, betas=(hp.b1, hp.b2), eps=hp.eps, weight_decay=hp.reg),
        dtype=dtype,
        device=device,
    )
