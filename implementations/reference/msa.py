"""Basic MSA (oracle): ``θ_t ← argmax_θ H_t(x_t, p_{t+1}, θ)``, i.e. E-MSA with ρ = 0.

The JMLR paper shows it generally diverges; the runner records that as ``diverged``."""

from implementations.reference import emsa


def make(problem, hp, *, dtype="float64", device="cpu", seed=0):
    return emsa.make(problem, hp, dtype=dtype, device=device, seed=seed, rho=0.0)
