"""Binary/ternary MSA's numerical conventions (``spec.DMSA.numerics``), in one place so
that every backend runs the same arithmetic. NumPy and plain Python only.

Three choices the ICML paper leaves to the implementation decide whether two runs take
the same discrete steps (discrete dynamics amplify any difference: a flip that happens in
one run and not in the other changes every later M):

1. **How 1 - α is formed.** ``M̄' = α M̄ + (1 - α) M`` with α → 1 over training. The
   paper's schedule multiplies 1 - α by d = 0.95 every epoch, so after 250 epochs
   1 - α = 10⁻³ · 0.95²⁵⁰ ≈ 2.7e-9, below float32's resolution near 1 (2⁻²⁴ ≈ 6e-8):
   rounding α to float32 *before* forming 1 - α gives fp32(α) = 1 and freezes M̄ from
   about epoch 204 on. ``standard`` keeps α in float64 on the host and hands the op both
   weights, ``α`` and ``1 - α``, each rounded to the working dtype on its own, so M̄ keeps
   moving. ``authors`` does what the authors' TensorFlow 1 code does: α is a float32
   variable, decayed as ``α ← fp32(1 - d (1 - α))`` in double precision from the float32
   value, and ``1 - α`` is formed from that float32 α (exactly, so M̄ freezes).
2. **The ε of BN's Adam.** ``standard`` is Adam as published (and torch, optax):
   ``θ ← θ - lr m̂ / (√v̂ + ε)``. TensorFlow 1's ``AdamOptimizer`` computes
   ``θ ← θ - lr √(1-β₂ᵏ)/(1-β₁ᵏ) · m / (√v + ε)``, which is the same update with ε
   replaced by ``ε / √(1 - β₂ᵏ)``: about 32 ε at the first step, ε after a few thousand.
   ``authors`` runs the published update with that per-step ε (``bn_adam_eps``).
3. **BN's running variance.** ``standard`` keeps the unbiased batch variance
   (``n/(n-1)`` times the biased one, as torch does); ``authors`` the biased one, as the
   authors' code does (``running_variance_factor``).

The choice is recorded in every result row (the ``hp_numerics`` column).
"""

from __future__ import annotations

import math

import numpy as np

#: BN's Adam, as in every backend's binary/ternary MSA: torch's and optax's defaults,
#: which are also TensorFlow 1's.
BN_ADAM_B1, BN_ADAM_B2, BN_ADAM_EPS = 0.9, 0.999, 1e-8


def _float32(x: float) -> float:
    return float(np.float32(x))


def initial_alpha(hp) -> float:
    """α at step 0: ``hp.alpha0``, or its float32 rounding under the authors' numerics."""
    return _float32(hp.alpha0) if hp.numerics == "authors" else float(hp.alpha0)


def alpha_after_step(hp, alpha: float, k: int, steps_per_epoch: int) -> float:
    """α after step ``k`` (1-based): ``1 - α ← d (1 - α)`` when an epoch (or
    ``hp.alpha_decay_steps``) has just ended, else unchanged; rounded to float32 under the
    authors' numerics (their α is a float32 variable), clipped to [0, 1] as they do."""
    if k % hp.decay_period(steps_per_epoch):
        return alpha
    new = 1.0 - hp.alpha_decay * (1.0 - alpha)
    return _float32(min(max(new, 0.0), 1.0)) if hp.numerics == "authors" else new


def ema_weights(hp, alpha: float) -> tuple[float, float]:
    """``(α, 1 - α)`` as the ops receive them, both formed here in float64 from the α that
    ``initial_alpha``/``alpha_after_step`` keep (a float32 value under the authors'
    numerics, whose 1 - α is then exact)."""
    return alpha, 1.0 - alpha


def bn_adam_eps(hp, k: int) -> float:
    """The ε that BN's Adam adds to √v̂ at step ``k`` (1-based): ``BN_ADAM_EPS``, or
    TensorFlow 1's ``BN_ADAM_EPS / √(1 - β₂ᵏ)`` under the authors' numerics."""
    if hp.numerics == "authors":
        return BN_ADAM_EPS / math.sqrt(1.0 - BN_ADAM_B2**k)
    return BN_ADAM_EPS


def unbiased_running_variance(hp) -> bool:
    """Whether BN's running variance takes the unbiased batch variance (``n/(n-1)`` times
    the biased one, as torch does), or the biased one (the authors' numerics)."""
    return getattr(hp, "numerics", "standard") != "authors"
