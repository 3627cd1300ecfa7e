"""Pontryagin's maximum principle, in the papers' notation (JAX, float64, never jitted).

This is the suite's oracle: every backend is tested against it step by step, so it is
written for clarity, one definition per function, exactly as implementations/README.md §1
states it.

For a minibatch of S samples and a batch-mean loss,

    J(θ) = (1/S) Σ_s Φ(x_{s,T}, y_s) + Σ_t L_t(θ_t),      L_t(θ) = reg · ½‖θ‖²

- forward: ``x_{t+1} = f_t(x_t, θ_t)``, storing x_0..x_T;
- costates: ``p_T = -∇_{x_T} (1/S) Σ_s Φ``, ``p_t = ∇_x H_t(x_t, p_{t+1}, θ_t)``;
- Hamiltonian: ``H_t(x, p, θ) = Σ_batch p · f_t(x, θ) - L_t(θ)``;
- augmented Hamiltonian (E-MSA):
  ``H̃_t = H_t - ρ/2 ‖x_{t+1} - f_t(x_t, θ)‖² - ρ/2 ‖p_t - ∇_x H_t(x_t, p_{t+1}, θ)‖²``,
  the norms summed over the whole batch tensor, the costates carrying the 1/S (as in the
  JMLR authors' code, where ``tf.nn.l2_loss`` sums over the batch).

Layers are described by ``implementations.spec``; a layer's θ is a tuple of arrays in the
order of its ``param_names``. Batch norm is applied in training mode (batch statistics).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from implementations import spec

jax.config.update("jax_enable_x64", True)


# ---------------------------------------------------------------------------------------
# f_t: the forward map of each layer kind
# ---------------------------------------------------------------------------------------


def conv_same(x, w):
    """``conv(x, W)``: stride 1, 'same' padding, NCHW / OIHW, no bias."""
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW"))


def batch_stats(x):
    """Per-feature batch mean and biased variance over every axis but the feature axis."""
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    return jnp.mean(x, axis=axes), jnp.var(x, axis=axes)


def _feature_view(v, ndim):
    return v if ndim == 2 else v[None, :, None, None]


def apply(layer: spec.Layer, theta: tuple, x, stats=None):
    """``f_t(x, θ)``. ``stats``: BN's (mean, var) to use instead of the batch's (eval)."""
    if isinstance(layer, spec.Dense):
        z = x @ theta[0]
        return z + theta[1] if layer.bias else z
    if isinstance(layer, spec.Conv):
        z = conv_same(x, theta[0])
        return z + theta[1][None, :, None, None] if layer.bias else z
    if isinstance(layer, spec.ResDense):
        return x + layer.delta * jnp.tanh(x @ theta[0] + theta[1])
    if isinstance(layer, spec.ResConv):
        return x + layer.delta * jnp.tanh(conv_same(x, theta[0]) + theta[1][None, :, None, None])
    if isinstance(layer, spec.BatchNorm):
        mean, var = batch_stats(x) if stats is None else stats
        v = lambda a: _feature_view(a, x.ndim)
        return v(theta[0]) * (x - v(mean)) / jnp.sqrt(v(var) + layer.eps) + v(theta[1])
    if isinstance(layer, spec.ReLU):
        return jnp.where(x > 0, x, 0.0)  # ReLU'(0) = 0, as torch and TF (jnp.maximum splits ties: ½)
    if isinstance(layer, spec.Tanh):
        return jnp.tanh(x)
    if isinstance(layer, spec.MaxPool2):
        return max_pool2(x)
    if isinstance(layer, spec.AvgPool2):
        n, c, h, w = x.shape
        return x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))
    if isinstance(layer, spec.Flatten):
        return x.reshape(x.shape[0], -1)
    if isinstance(layer, spec.SumFeatures):
        return jnp.sum(x, axis=1, keepdims=True)
    raise TypeError(f"unknown layer {layer!r}")


def max_pool2(x):
    """2×2 max pooling whose gradient goes to the *first* maximum of each window in
    row-major order (torch's convention). Ties are common, not measure-zero: a constant
    image background gives equal activations in a whole window."""
    n, c, h, w = x.shape
    windows = x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)
    first = jnp.argmax(windows, axis=-1)[..., None]
    return jnp.take_along_axis(windows, first, axis=-1)[..., 0]


def terminal_loss(loss: str, z, y):
    """(1/S) Σ_s Φ(z_s, y_s) for the losses of ``spec.LOSSES``."""
    if loss == "mse":
        return jnp.mean((z[:, 0] - y.reshape(-1)) ** 2)
    if loss == "xent":
        logp = jax.nn.log_softmax(z, axis=1)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))
    if loss == "sqhinge":
        sign = 2.0 * jax.nn.one_hot(y, z.shape[1], dtype=z.dtype) - 1.0
        return jnp.mean(jnp.maximum(0.0, 1.0 - sign * z) ** 2)
    raise ValueError(f"unknown loss {loss!r}")


def regulariser(theta: tuple, reg: float):
    """``L_t(θ) = reg · ½ ‖θ‖²`` over all the layer's variables."""
    return reg * 0.5 * sum(jnp.sum(v**2) for v in theta) if theta else 0.0


# ---------------------------------------------------------------------------------------
# The PMP objects
# ---------------------------------------------------------------------------------------


def per_layer(layers, flat_params) -> list[tuple]:
    """Flat parameter list -> one θ tuple per layer."""
    return [tuple(flat_params[s]) for s in spec.layer_slices(layers)]


def forward(layers, params, x0) -> list:
    """States ``[x_0, ..., x_T]``; ``params`` is one θ tuple per layer."""
    xs = [x0]
    for layer, theta in zip(layers, params):
        xs.append(apply(layer, theta, xs[-1]))
    return xs


def hamiltonian(layer, theta, x, p_next, reg: float = 0.0):
    """``H_t(x, p, θ) = Σ_batch p · f_t(x, θ) - L_t(θ)``."""
    return jnp.sum(p_next * apply(layer, theta, x)) - regulariser(theta, reg)


def costates(layers, params, xs, y, loss: str) -> list:
    """Costates ``[p_0, ..., p_T]``: ``p_T = -∇_{x_T} (1/S)ΣΦ``, ``p_t = ∇_x H_t``."""
    p = -jax.grad(terminal_loss, argnums=1)(loss, xs[-1], y)
    ps = [p]
    for t in reversed(range(len(layers))):
        p = jax.grad(hamiltonian, argnums=2)(layers[t], params[t], xs[t], p)
        ps.append(p)
    return ps[::-1]


def augmented_hamiltonian(layer, theta, x, x_next, p, p_next, rho: float, reg: float = 0.0):
    """``H̃_t(θ) = H_t - ρ/2 ‖x_{t+1} - f_t(x_t, θ)‖² - ρ/2 ‖p_t - ∇_x H_t(x_t, p_{t+1}, θ)‖²``.

    ``p`` is p_t and ``p_next`` is p_{t+1}; ∇_x H_t is a function of θ, so maximising H̃
    differentiates through a gradient (second-order autodiff)."""
    f = apply(layer, theta, x)
    h = jnp.sum(p_next * f) - regulariser(theta, reg)
    dh_dx = jax.grad(hamiltonian, argnums=2)(layer, theta, x, p_next, reg)
    return h - 0.5 * rho * jnp.sum((x_next - f) ** 2) - 0.5 * rho * jnp.sum((p - dh_dx) ** 2)


def objective(layers, params, x0, y, loss: str, reg: float = 0.0):
    """``J(θ)`` on one batch: the batch-mean loss plus the layers' regularisers."""
    xs = forward(layers, params, x0)
    return terminal_loss(loss, xs[-1], y) + sum(regulariser(th, reg) for th in params)
