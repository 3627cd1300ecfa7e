"""Framework-neutral inner solver: SciPy's L-BFGS-B, as the JMLR authors ran it.

The E-MSA paper maximises each layer's (augmented) Hamiltonian with 10 iterations of
L-BFGS from the current θ; the official code hands the layer's objective and gradient to
``scipy.optimize.minimize(method="L-BFGS-B", options={"maxiter": 10})``. Every backend
uses this one wrapper with its own value-and-gradient, so backends that compute the same
numbers take the same inner steps.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.optimize import minimize


def lbfgs_maximise(
    value_and_grad: Callable[[np.ndarray], tuple[float, np.ndarray]], theta0: np.ndarray, maxiter: int
) -> np.ndarray:
    """Approximate ``argmax_θ h(θ)`` from ``theta0`` (a flat float64 vector) with
    ``maxiter`` L-BFGS-B iterations on ``-h``. ``value_and_grad(θ) -> (h, ∇h)``."""

    def negated(theta: np.ndarray) -> tuple[float, np.ndarray]:
        h, g = value_and_grad(theta)
        return -float(h), -np.asarray(g, dtype=np.float64)

    result = minimize(
        negated, np.asarray(theta0, dtype=np.float64), jac=True, method="L-BFGS-B", options={"maxiter": int(maxiter)}
    )
    return result.x
