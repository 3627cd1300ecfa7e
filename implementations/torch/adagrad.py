"""Adagrad (torch.optim.Adagrad): ``G ← G + g²``, ``θ ← θ - lr g / (√G + eps)``."""

import torch

from implementations.torch.firstorder import make_first_order


def make(problem, hp, *, dtype="float32", device="cpu", seed=0):
    return make_first_order(
        problem,
        lambda p: torch.optim.Adagrad(
            p, lr=hp.lr, initial_accumulator_value=hp.initial_accumulator, eps=hp.eps, weight_decay=hp.reg
        ),
        dtype=dtype,
        device=device,
    )
