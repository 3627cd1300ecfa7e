"""Plain-torch hot operations, the signatures kernel backends (Triton, CUDA) reimplement.

- ``apply(layer, theta, x, stats=None)``: the layer map ``f_t(x, θ)``;
- ``terminal_loss(loss, z, y)``: ``(1/S) Σ_s Φ``;
- ``dmsa_update(m_bar, m, w, *, alpha, one_minus_alpha, rho, levels, lam) -> (m_bar_new, w_new, flips)``:
  binary/ternary MSA's per-layer update (implementations/README.md §3.4), nothing else;
- ``emsa_dense_grad(w, b, x, x_next, p, p_next, *, delta, rho, reg) -> (grad_w, grad_b)``:
  E-MSA's ascent direction for a stack of dense residual tanh layers, in closed form (the
  kernel signature; ``emsa_dense_value_and_grad`` and ``emsa_conv_value_and_grad`` add the
  value, and the conv stacks, for the torch backend's own inner solvers);
- quantizers: ``sgn`` (sgn(0) = +1), ``quantize_init``, ``ste_quantize``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from implementations import spec


def _features(v: torch.Tensor, ndim: int) -> torch.Tensor:
    return v if ndim == 2 else v[None, :, None, None]


def batch_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature batch mean and biased variance."""
    dims = (0,) if x.ndim == 2 else (0, 2, 3)
    return x.mean(dim=dims), x.var(dim=dims, unbiased=False)


def apply(layer: spec.Layer, theta, x: torch.Tensor, stats=None) -> torch.Tensor:
    """``f_t(x, θ)`` (see ``spec`` for each layer's formula); ``stats``: BN's (mean, var)
    to use instead of the batch's (evaluation)."""
    if isinstance(layer, spec.Dense):
        return x @ theta[0] + theta[1] if layer.bias else x @ theta[0]
    if isinstance(layer, spec.Conv):
        return F.conv2d(x, theta[0], theta[1] if layer.bias else None, padding=layer.k // 2)
    if isinstance(layer, spec.ResDense):
        return x + layer.delta * torch.tanh(x @ theta[0] + theta[1])
    if isinstance(layer, spec.ResConv):
        return x + layer.delta * torch.tanh(F.conv2d(x, theta[0], theta[1], padding=layer.k // 2))
    if isinstance(layer, spec.BatchNorm):
        mean, var = batch_stats(x) if stats is None else stats
        n = x.ndim
        return _features(theta[0], n) * (x - _features(mean, n)) / torch.sqrt(
            _features(var, n) + layer.eps
        ) + _features(theta[1], n)
    if isinstance(layer, spec.ReLU):
        return torch.relu(x)
    if isinstance(layer, spec.Tanh):
        return torch.tanh(x)
    if isinstance(layer, spec.MaxPool2):
        return F.max_pool2d(x, 2)
    if isinstance(layer, spec.AvgPool2):
        return F.avg_pool2d(x, 2)
    if isinstance(layer, spec.Flatten):
        return x.reshape(x.shape[0], -1)
    if isinstance(layer, spec.SumFeatures):
        return x.sum(dim=1, keepdim=True)
    raise TypeError(f"unknown layer {layer!r}")


def terminal_loss(loss: str, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(1/S) Σ_s Φ(z_s, y_s)`` for ``spec.LOSSES``."""
    if loss == "mse":
        return torch.mean((z[:, 0] - y.reshape(-1)) ** 2)
    if loss == "xent":
        return F.cross_entropy(z, y)
    if loss == "sqhinge":
        sign = 2.0 * F.one_hot(y, z.shape[1]).to(z.dtype) - 1.0
        return torch.mean(torch.relu(1.0 - sign * z) ** 2)
    raise ValueError(f"unknown loss {loss!r}")


def sgn(x: torch.Tensor) -> torch.Tensor:
    """Binary sign with sgn(0) = +1 (``torch.sign(0) == 0`` would make a binary net ternary)."""
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


def quantize_init(w: torch.Tensor, levels: int) -> torch.Tensor:
    """Discrete initial weights from a latent U(-1, 1) init: sgn(W), or round(1.5 W)."""
    return sgn(w) if levels == 2 else torch.clamp(torch.round(1.5 * w), -1.0, 1.0)


def dmsa_update(m_bar, m, w, *, alpha: float, one_minus_alpha: float, rho: float, levels: int, lam: float):
    """One layer's binary (``levels=2``) or ternary (``levels=3``) MSA update.

    ``M̄' = α M̄ + (1 - α) M`` with both weights given (``conventions.ema_weights`` forms
    them on the host, so that no backend rounds α before forming 1 - α unless the
    convention says so); wrong-signed entries ``W ≠ sgn(M̄')`` (binary, sgn(0) = +1)
    or ``W ≠ sign(M̄')`` (ternary, sign(0) = 0); ``ρ_k = ρ · max |M̄'|`` over them, and with
    none, W is returned unchanged. Then

    - binary: ``W ← sgn(M̄')`` where ``|M̄'| > ρ_k``, else unchanged
      (= argmax over {±1} of ``M̄' w - (ρ_k/2)(w - W)²``; with ρ_k/4 the argmax would
      flip at ``|M̄'| > ρ_k/2``, while the authors' code and this rule flip at ρ_k:
      implementations/README.md §3.4);
    - ternary: ``+1`` if ``M̄' > ρ_k (1 - 2W) + λ``, ``-1`` if ``M̄' < -ρ_k (1 + 2W) - λ``,
      else 0 (= argmax over {-1, 0, 1} of ``M̄' w - λ|w| - ρ_k (w - W)²``).

    Returns ``(M̄', W', flips)`` with ``flips`` a 0-d int64 tensor (entries of W changed).
    No host synchronisation: the "no wrong-signed entry" case is a ``where`` on device.

    Written for few passes over memory (eager torch runs one kernel per operation, and
    this update is what binary/ternary MSA adds to BinaryConnect's step): |M̄'| is formed
    once; the binary rule needs no "no wrong-signed entry" case (then W = sgn(M̄')
    already, so the rule changes nothing); the ternary thresholds are compared as
    ``M̄' + 2ρ_k W > ρ_k + λ`` and ``M̄' + 2ρ_k W < -(ρ_k + λ)``, the same inequalities
    moved to one side (they may round differently within an ulp of a threshold, which
    the parity tests keep their inputs clear of).
    """
    if levels not in (2, 3):
        raise ValueError(f"levels must be 2 (binary) or 3 (ternary), not {levels}")
    m_bar = alpha * m_bar + one_minus_alpha * m
    magnitude = m_bar.abs()
    target = sgn(m_bar) if levels == 2 else torch.sign(m_bar)
    wrong = w != target
    rho_k = rho * (magnitude * wrong).amax()
    if levels == 2:
        w_new = torch.where(magnitude > rho_k, target, w)
    else:
        shifted, bound = m_bar + w * (2 * rho_k), rho_k + lam
        w_new = torch.where(shifted > bound, 1.0, torch.where(shifted < -bound, -1.0, 0.0)).to(w.dtype)
        w_new = torch.where(wrong.any(), w_new, w)
    return m_bar, w_new, (w_new != w).sum()


def ste_quantize(w: torch.Tensor, kind: str, u: torch.Tensor | None = None) -> torch.Tensor:
    """STE forward weights: BinaryConnect ``sgn(W)`` (stochastic: +1 where
    ``u < clip((W+1)/2, 0, 1)``) or TWN ``a·t`` with ``Δ = 0.7 mean|W|``,
    ``a = mean{|W_i| : |W_i| > Δ}``."""
    if kind == "bc":
        if u is None:
            return sgn(w)
        return torch.where(u < torch.clamp((w + 1) / 2, 0, 1), 1.0, -1.0).to(w.dtype)
    if kind == "twn":
        delta = 0.7 * w.abs().mean()
        big = w.abs() > delta
        a = torch.where(big, w.abs(), torch.zeros_like(w)).sum() / big.sum().clamp(min=1)
        return a * torch.where(w > delta, 1.0, torch.where(w < -delta, -1.0, 0.0)).to(w.dtype)
    raise ValueError(f"unknown STE kind {kind!r} (known: bc, twn)")


def emsa_dense_grad(w, b, x, x_next, p, p_next, *, delta: float, rho: float, reg: float):
    """∇ of the augmented Hamiltonian with respect to (W, b), for every layer of a stack of
    ``f(x) = x + δ tanh(x W + b)`` at once, in closed form (no autograd): the gradient
    half of ``emsa_dense_value_and_grad``, the signature the kernel backends implement."""
    return _dense_value_and_grad(w, b, x, x_next, p, p_next, delta, rho, reg, with_value=False)[1:]


def emsa_dense_value_and_grad(w, b, x, x_next, p, p_next, *, delta: float, rho: float, reg: float):
    """The augmented Hamiltonian H̃ of every layer of a stack of ``f(x) = x + δ tanh(x W + b)``
    and its gradient with respect to (W, b), in closed form (no autograd).

    Shapes: ``w`` (L, d, d), ``b`` (L, d), the stored ``x = x_t``, ``x_next = x_{t+1}``,
    ``p = p_t``, ``p_next = p_{t+1}`` (L, S, d). With z = xW + b, a = tanh z, s = 1 - a²,
    q = p_{t+1}:

        H̃ = Σ q·f - reg/2 (‖W‖² + ‖b‖²) - ρ/2 ‖r₁‖² - ρ/2 ‖r₂‖²,
        r₁ = x_{t+1} - f,   g = q ⊙ s,   ∇ₓH = q + δ g Wᵀ,   r₂ = p_t - ∇ₓH,
        U = ρ δ r₂,   V = U W,
        ∂H̃/∂z = δ (q + ρ r₁) ⊙ s - 2 V ⊙ q ⊙ a ⊙ s,
        ∇_W H̃ = xᵀ ∂H̃/∂z + Uᵀ g - reg W,      ∇_b H̃ = Σ_s ∂H̃/∂z - reg b.

    The second-order term (the ∇ₓH penalty) enters through U: directly (Uᵀ g, W inside
    ∇ₓH) and through s(z) (the V term). Returns ``(H̃ (L,), ∇_W (L, d, d), ∇_b (L, d))``.
    This is the plain-torch reference of the fused kernels; ``tests/test_closed_form.py``
    checks it against autograd."""
    return _dense_value_and_grad(w, b, x, x_next, p, p_next, delta, rho, reg, with_value=True)


def _dense_value_and_grad(w, b, x, x_next, p, p_next, delta, rho, reg, *, with_value: bool):
    z = torch.baddbmm(b[:, None, :], x, w)
    a = torch.tanh(z)
    s = 1 - a * a
    r1 = x_next - (x + delta * a)
    g = p_next * s
    r2 = p - p_next - delta * torch.bmm(g, w.transpose(1, 2))
    u = (rho * delta) * r2
    v = torch.bmm(u, w)
    dz = delta * (p_next + rho * r1) * s - 2 * v * p_next * a * s
    grad_w = torch.baddbmm(w, torch.cat([x, u], dim=1).transpose(1, 2), torch.cat([dz, g], dim=1), beta=-reg)
    grad_b = dz.sum(dim=1) - reg * b
    value = _augmented_value(p_next, x + delta * a, r1, r2, (w, b), rho, reg) if with_value else None
    return value, grad_w, grad_b


def emsa_conv_value_and_grad(w, b, x, x_next, p, p_next, *, delta: float, rho: float, reg: float):
    """``emsa_dense_value_and_grad`` for a stack of residual conv layers
    ``f(x) = x + δ tanh(conv(x, W) + b)`` ('same' padding): the same formulas with x W
    replaced by conv(x, W), g Wᵀ by its transpose convT(g, W) and xᵀ ∂H̃/∂z, Uᵀ g by the
    weight gradients of conv (Σ over samples and positions):

        ∇ₓH = q + δ convT(g, W),   V = conv(U, W),
        ∇_W H̃ = ∂_W⟨conv(x, W), ∂H̃/∂z⟩ + ∂_W⟨conv(U, W), g⟩ - reg W.

    Shapes: ``w`` (L, C, C, k, k), ``b`` (L, C), the stored values (L, S, C, H, W). The
    layers run as the groups of one grouped convolution."""
    n_layers, channels, k = w.shape[0], w.shape[1], w.shape[-1]
    pad = k // 2
    merged = lambda v: v.transpose(0, 1).reshape(v.shape[1], n_layers * channels, *v.shape[3:])
    split = lambda v: v.reshape(v.shape[0], n_layers, channels, *v.shape[2:]).transpose(0, 1)
    weight = w.reshape(n_layers * channels, channels, k, k)
    xm = merged(x)
    z = F.conv2d(xm, weight, b.reshape(-1), padding=pad, groups=n_layers)
    a = torch.tanh(z)
    s = 1 - a * a
    qm = merged(p_next)
    r1 = merged(x_next) - (xm + delta * a)
    g = qm * s
    r2 = merged(p) - qm - delta * F.conv_transpose2d(g, weight, padding=pad, groups=n_layers)
    u = (rho * delta) * r2
    v = F.conv2d(u, weight, padding=pad, groups=n_layers)
    dz = delta * (qm + rho * r1) * s - 2 * v * qm * a * s
    grad = torch.nn.grad.conv2d_weight(
        torch.cat([xm, u]), weight.shape, torch.cat([dz, g]), padding=pad, groups=n_layers
    )
    grad_w = grad.reshape(w.shape) - reg * w
    grad_b = dz.sum(dim=(0, 2, 3)).reshape(b.shape) - reg * b
    value = _augmented_value(split(qm), split(xm + delta * a), split(r1), split(r2), (w, b), rho, reg)
    return value, grad_w, grad_b


def _augmented_value(q, f, r1, r2, theta, rho: float, reg: float):
    """Per layer (leading axis): Σ q·f - reg/2 ‖θ‖² - ρ/2 ‖r₁‖² - ρ/2 ‖r₂‖²."""
    per_layer = lambda v: v.reshape(v.shape[0], -1).sum(dim=1)
    return per_layer(q * f - (0.5 * rho) * (r1 * r1 + r2 * r2)) - (0.5 * reg) * sum(per_layer(t * t) for t in theta)
