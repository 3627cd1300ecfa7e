"""JAX hot operations, jit-compatible, with the signatures of ``implementations.torch.ops``.

The layer maps ``f_t`` and the losses are the oracle's own pure functions
(``implementations.reference.pmp``): they are plain ``jax.numpy`` and trace under ``jit``,
``vmap`` and ``scan`` as they are, and one definition of the math is easier to trust than
two. What this backend adds is how they are compiled and batched (``common.py``), and the
discrete rules below, written without host synchronisation so that they trace.

Every function keeps its inputs' dtype: with x64 enabled (the reference enables it on
import, and float64 parity needs it), a bare Python constant in ``jnp.where`` would
otherwise promote a float32 result to float64.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from implementations.reference.pmp import (
    apply,
    augmented_hamiltonian,
    batch_stats,
    conv_same,
    hamiltonian,
    terminal_loss,
)

__all__ = [
    "apply",
    "augmented_hamiltonian",
    "batch_stats",
    "dmsa_update",
    "emsa_conv_value_and_grad",
    "emsa_dense_value_and_grad",
    "hamiltonian",
    "quantize_init",
    "sgn",
    "ste_quantize",
    "terminal_loss",
]


def sgn(x):
    """Binary sign with sgn(0) = +1, in x's dtype."""
    return jnp.where(x >= 0, 1, -1).astype(x.dtype)


def quantize_init(w, levels: int):
    """Discrete initial weights from a latent U(-1, 1) init: sgn(W), or clip(round(1.5 W))."""
    return sgn(w) if levels == 2 else jnp.clip(jnp.round(1.5 * w), -1, 1)


def dmsa_update(m_bar, m, w, *, alpha, one_minus_alpha, rho: float, levels: int, lam: float):
    """One layer's binary (``levels=2``) or ternary (``levels=3``) MSA update; the rules are
    ``implementations.torch.ops.dmsa_update``'s docstring. ``alpha`` and
    ``one_minus_alpha`` (both formed on the host, ``conventions.ema_weights``) may be traced.

    Returns ``(M̄', W', flips)``, ``flips`` a 0-d int32 array. The "no wrong-signed entry"
    case is a ``where``, not a Python branch, so the function traces once."""
    if levels not in (2, 3):
        raise ValueError(f"levels must be 2 (binary) or 3 (ternary), not {levels}")
    m_bar = alpha * m_bar + one_minus_alpha * m
    target = sgn(m_bar) if levels == 2 else jnp.sign(m_bar)
    wrong = w != target
    rho_k = rho * jnp.max(jnp.where(wrong, jnp.abs(m_bar), 0))
    if levels == 2:
        w_new = jnp.where(jnp.abs(m_bar) > rho_k, target, w)
    else:
        up = m_bar > rho_k * (1 - 2 * w) + lam
        down = m_bar < -rho_k * (1 + 2 * w) - lam
        w_new = jnp.where(up, 1, jnp.where(down, -1, 0)).astype(w.dtype)
    w_new = jnp.where(jnp.any(wrong), w_new, w)
    return m_bar, w_new, jnp.sum(w_new != w, dtype=jnp.int32)


def ste_quantize(w, kind: str, u=None):
    """STE forward weights: BinaryConnect ``sgn(W)`` (stochastic: +1 where
    ``u < clip((W+1)/2, 0, 1)``) or TWN ``a·t``, ``Δ = 0.7 mean|W|``,
    ``a = mean{|W_i| : |W_i| > Δ}``."""
    if kind == "bc":
        if u is None:
            return sgn(w)
        return jnp.where(u < jnp.clip((w + 1) / 2, 0, 1), 1, -1).astype(w.dtype)
    if kind == "twn":
        delta = 0.7 * jnp.mean(jnp.abs(w))
        big = jnp.abs(w) > delta
        a = jnp.sum(jnp.where(big, jnp.abs(w), 0)) / jnp.maximum(jnp.sum(big), 1).astype(w.dtype)
        return a * jnp.where(w > delta, 1, jnp.where(w < -delta, -1, 0)).astype(w.dtype)
    raise ValueError(f"unknown STE kind {kind!r} (known: bc, twn)")


def emsa_dense_value_and_grad(w, b, x, x_next, p, p_next, *, delta: float, rho: float, reg: float):
    """E-MSA's augmented Hamiltonian H̃ and its (W, b)-gradient for every layer of a stack
    of ``x + δ tanh(x W + b)``, in closed form: ``implementations.torch.ops``' function of
    the same name states the formulas. Shapes: ``w`` (L, d, d), ``b`` (L, d), the stored
    values (L, S, d); returns ``(H̃ (L,), ∇_W, ∇_b)``."""
    a = jnp.tanh(jnp.einsum("lsi,lio->lso", x, w) + b[:, None, :])
    s = 1 - a * a
    r1 = x_next - (x + delta * a)
    g = p_next * s
    r2 = p - p_next - delta * jnp.einsum("lso,lio->lsi", g, w)
    u = (rho * delta) * r2
    v = jnp.einsum("lsi,lio->lso", u, w)
    dz = delta * (p_next + rho * r1) * s - 2 * v * p_next * a * s
    grad_w = jnp.einsum("lsi,lso->lio", x, dz) + jnp.einsum("lsi,lso->lio", u, g) - reg * w
    grad_b = jnp.sum(dz, axis=1) - reg * b
    return _augmented_value(p_next, x + delta * a, r1, r2, (w, b), rho, reg), grad_w, grad_b


def emsa_conv_value_and_grad(w, b, x, x_next, p, p_next, *, delta: float, rho: float, reg: float):
    """``emsa_dense_value_and_grad`` for a stack of ``x + δ tanh(conv(x, W) + b)``: x W is
    conv(x, W), g Wᵀ its transpose and xᵀ dz the conv's weight gradient (both transposes
    of the linear map, by ``jax.linear_transpose``; nothing differentiates H̃). Shapes:
    ``w`` (L, C, C, k, k), ``b`` (L, C), the stored values (L, S, C, H, W); the layers are
    traced one by one (L is a stack's length, 3 to 7)."""

    def one(w, b, x, x_next, p, p_next):
        conv = lambda v: conv_same(v, w)
        a = jnp.tanh(conv(x) + b[None, :, None, None])
        s = 1 - a * a
        r1 = x_next - (x + delta * a)
        g = p_next * s
        conv_t = jax.linear_transpose(conv, x)
        r2 = p - p_next - delta * conv_t(g)[0]
        u = (rho * delta) * r2
        dz = delta * (p_next + rho * r1) * s - 2 * conv(u) * p_next * a * s
        weight_grad = jax.linear_transpose(lambda w_: conv_same(jnp.concatenate([x, u]), w_), w)
        grad_w = weight_grad(jnp.concatenate([dz, g]))[0] - reg * w
        grad_b = jnp.sum(dz, axis=(0, 2, 3)) - reg * b
        value = _augmented_value(*(v[None] for v in (p_next, x + delta * a, r1, r2)), (w[None], b[None]), rho, reg)
        return value[0], grad_w, grad_b

    # one layer after another, unrolled: under vmap XLA makes the L layers one grouped
    # convolution, which its CPU backend runs 3-5× slower than L plain ones
    per_layer = [one(*(a[i] for a in (w, b, x, x_next, p, p_next))) for i in range(w.shape[0])]
    return tuple(jnp.stack(parts) for parts in zip(*per_layer))


def _augmented_value(q, f, r1, r2, theta, rho: float, reg: float):
    """Per layer (leading axis): Σ q·f - reg/2 ‖θ‖² - ρ/2 ‖r₁‖² - ρ/2 ‖r₂‖²."""
    per_layer = lambda v: jnp.sum(v.reshape(v.shape[0], -1), axis=1)
    return per_layer(q * f - (0.5 * rho) * (r1 * r1 + r2 * r2)) - (0.5 * reg) * sum(per_layer(t * t) for t in theta)
