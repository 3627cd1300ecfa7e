"""Binary and ternary MSA with the triton ``dmsa_update``: the torch algorithm
(``implementations.torch.dmsa``), these kernels."""

from implementations.torch import dmsa
from implementations.triton import device as placement
from implementations.triton import ops


def make(problem, hp, *, dtype="float32", device="cuda", seed=0):
    placement.require_device(device)
    return dmsa.make(problem, hp, dtype=dtype, device=device, seed=seed, kernels=ops)
