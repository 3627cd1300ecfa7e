"""Binary and ternary MSA with the cuda ``dmsa_update``: the torch algorithm
(``implementations.torch.dmsa``), these kernels."""

from implementations.cuda import device as placement
from implementations.cuda import ops
from implementations.torch import dmsa


def make(problem, hp, *, dtype="float32", device="cuda", seed=0):
    placement.require_device(device)
    return dmsa.make(problem, hp, dtype=dtype, device=device, seed=seed, kernels=ops)
