"""Basic MSA in PyTorch eager: E-MSA with ρ = 0 (``θ_t ← argmax H_t``)."""

from implementations.torch import emsa


def make(problem, hp, *, dtype="float32", device="cpu", seed=0):
    return emsa.make(problem, hp, dtype=dtype, device=device, seed=seed, rho=0.0)
