"""E-MSA with the triton ``emsa_dense_grad``: the torch algorithm
(``implementations.torch.emsa``), each dense residual stack's inner iteration one launch."""

from implementations.torch import emsa
from implementations.triton import device as placement
from implementations.triton import ops


def make(problem, hp, *, dtype="float32", device="cuda", seed=0):
    placement.require_device(device)
    return emsa.make(problem, hp, dtype=dtype, device=device, seed=seed, kernels=ops)
