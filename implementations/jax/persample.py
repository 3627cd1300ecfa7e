"""Per-sample squared gradient norms under a diagonal metric, for DDPNOpt's factored value
update: for a controlled layer with parameters θ, input h_s and output cotangent z_s,

    ‖q_s‖²_D = Σ_i D_i (q_s)_i²,    q_s = ∂/∂θ (z_s · f(h_s, θ)) = B_sᵀ z_s,

with D = η M⁻¹ the base optimizer's diagonal. The closed forms are the torch backend's
(``implementations/torch/linearised.py`` derives them): the dense maps never form q_s
(Σ_ij h_si² D_ij g_sj² = rowsum(((h ⊙ h) D) ⊙ g ⊙ g), g = z or δ z ⊙ (1 - tanh²)),
BatchNorm's are (Σ_positions z ⊙ x̂)² and (Σ_positions z)² with its statistics held;
the conv maps form each sample's weight gradient q^W_s from k² batched matmuls.
"""

from __future__ import annotations

import jax.numpy as jnp

from implementations import spec
from implementations.jax import ops


def weighted_sqnorms(layer: spec.Layer, theta: tuple, h, z, diag: tuple, stats=None):
    """``‖B_sᵀ z_s‖²_D`` for every sample s (shape (S,)), ``diag`` shaped like ``theta``;
    ``stats`` are BatchNorm's (mean, var), held fixed."""
    if isinstance(layer, (spec.Dense, spec.ResDense)):
        g = z if isinstance(layer, spec.Dense) else _tanh_cotangent(layer, h @ theta[0] + theta[1], z)
        g2 = g * g
        out = jnp.sum(((h * h) @ diag[0]) * g2, axis=1)
        return out + g2 @ diag[1] if len(theta) > 1 else out
    if isinstance(layer, (spec.Conv, spec.ResConv)):
        if isinstance(layer, spec.ResConv):
            g = _tanh_cotangent(layer, ops.apply(spec.Conv(layer.channels, layer.channels, layer.k), theta, h), z)
        else:
            g = z
        q_w = _per_sample_conv_weight_grads(h, g, layer.k)
        out = jnp.sum((q_w * q_w * diag[0]).reshape(h.shape[0], -1), axis=1)
        if len(theta) > 1:
            q_b = jnp.sum(g, axis=(2, 3))
            out = out + (q_b * q_b) @ diag[1]
        return out
    if isinstance(layer, spec.BatchNorm):
        mean, var = stats
        x_hat = (h - _view(mean, h)) / jnp.sqrt(_view(var, h) + layer.eps)
        q_gamma, q_beta = _over_positions(z * x_hat), _over_positions(z)
        return (q_gamma * q_gamma) @ diag[0] + (q_beta * q_beta) @ diag[1]
    raise TypeError(f"no per-sample gradient norm for layer {layer!r}")


def _per_sample_conv_weight_grads(h, g, k: int):
    """Each sample's ∂(g_s · conv(h_s, W))/∂W, shape (S, c_out, c_in, k, k), as k² batched
    matmuls of g with the shifted, zero-padded h: q[s, o, c, i, j] = Σ_p g[s, o, p]
    h[s, c, p + (i, j) - k//2]. On the CPU this is 3× faster than XLA's grouped
    convolution, which ``vmap`` of a weight gradient compiles to."""
    pad, (rows, cols) = k // 2, h.shape[2:]
    padded = jnp.pad(h, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    window = lambda i, j: padded[:, :, i : i + rows, j : j + cols]
    q = [[jnp.einsum("sopq,scpq->soc", g, window(i, j)) for j in range(k)] for i in range(k)]
    return jnp.stack([jnp.stack(row, axis=-1) for row in q], axis=-2)


def _tanh_cotangent(layer, pre, z):
    """The cotangent at the pre-activation of ``h + δ tanh(pre)``: δ z ⊙ (1 - tanh² pre)."""
    a = jnp.tanh(pre)
    return layer.delta * z * (1 - a * a)


def _view(v, like):
    return v if like.ndim == 2 else v[None, :, None, None]


def _over_positions(v):
    return v if v.ndim == 2 else jnp.sum(v, axis=(2, 3))
