"""E-MSA with the cuda ``emsa_dense_grad``: the torch algorithm
(``implementations.torch.emsa``), each dense residual stack's inner iteration one launch."""

from implementations.cuda import device as placement
from implementations.cuda import ops
from implementations.torch import emsa


def make(problem, hp, *, dtype="float32", device="cuda", seed=0):
    placement.require_device(device)
    return emsa.make(problem, hp, dtype=dtype, device=device, seed=seed, kernels=ops)
