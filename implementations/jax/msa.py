"""Basic MSA (JAX): ``θ_t ← argmax_θ H_t(x_t, p_{t+1}, θ)``, i.e. E-MSA with ρ = 0."""

from implementations.jax import emsa


def make(problem, hp, *, dtype="float32", device="cpu", seed=0):
    return emsa.make(problem, hp, dtype=dtype, device=device, seed=seed, rho=0.0)
