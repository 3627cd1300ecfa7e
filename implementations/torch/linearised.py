"""Every layer map linearised at its nominal input, in closed form (no autograd).

DDPNOpt's sweep (``torch/ddpnopt.py``) applies, stage by stage, the derivatives of
f_t(x, θ) at the stored trajectory: A = ∂f/∂x and B = ∂f/∂θ to and from vectors. Through
``torch.func`` each product is a transform of its own (forward-mode AD goes through
Python-level decompositions), which made one step of a 20-layer width-5 net cost 150 ms
against RMSprop's 4. The layers are affine in θ after at most one elementwise function, so
each product is one or two tensor operations:

=====================  ===========================  ==================================
layer, nominal h       A δh  /  Aᵀ c                  B dθ  /  Σ_s B_sᵀ c_s
=====================  ===========================  ==================================
Dense   h W + b        δh W  /  c Wᵀ                  h dW + db  /  (hᵀ c, Σ c)
ResDense h + δ tanh    δh + s ⊙ (δh W)  /  c + (s⊙c)Wᵀ  s ⊙ (h dW + db)  /  (hᵀ(s⊙c), Σ s⊙c)
Conv    conv(h, W)+b   conv(δh, W) / conv_transpose   conv(h, dW) + db  /  conv weight grad
ResConv h + δ tanh(·)  as ResDense with conv           as ResDense with conv
BatchNorm, held μ, σ   (γ/σ) δh  /  (γ/σ) c            dγ x̂ + dβ  /  (Σ c x̂, Σ c)
ReLU, Tanh             the derivative's mask / 1 - t²  –
MaxPool2               the argmax's entries            –
AvgPool2, Flatten,     the (linear) map itself and     –
SumFeatures            its transpose
=====================  ===========================  ==================================

with s = δ(1 - tanh²(pre)), x̂ = (h - μ)/√(σ² + ε). BatchNorm's A above holds the
statistics fixed, as DDPNOpt's second-order terms do; ``pull_live`` is backprop's
pullback through them (``Aᵀc = (γ/σ)(c - mean c - x̂ mean(c x̂))``, means over the batch
and positions), which the first-order terms use.

``sqnorms(z, D)`` is the one per-sample quantity: ‖B_sᵀ z_s‖²_D for a diagonal D (DDPNOpt's
η M⁻¹), a GEMM rather than S gradients the size of θ:
Σ_ij h_si² D_ij g_sj² = rowsum(((h ⊙ h) D) ⊙ g ⊙ g) for the dense maps (g = z, or s ⊙ z);
the conv maps form each sample's weight gradient g_s unfold(h_s)ᵀ (S × the layer's
weights); BatchNorm's are (Σ_positions z ⊙ x̂)² and (Σ_positions z)².

``tests/test_ddpnopt_fast.py`` checks every product of every layer kind against autodiff.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from implementations import spec
from implementations.torch import ops


def _features(v, like):
    return v if like.ndim == 2 else v[None, :, None, None]


def _over_batch(v):
    """Σ over the batch (and positions), per feature or channel."""
    return v.sum(dim=0) if v.ndim == 2 else v.sum(dim=(0, 2, 3))


def _over_positions(v):
    return v if v.ndim == 2 else v.sum(dim=(2, 3))


class Elementwise:
    """An elementwise map with output ``out``: A = diag(d)."""

    def __init__(self, out, d):
        self.out, self.d = out, d

    def push(self, dx):
        return self.d * dx

    pull = push


class Reshaped:
    """Flatten: a reshape and its inverse."""

    def __init__(self, h):
        self.shape, self.out = h.shape, h.reshape(h.shape[0], -1)

    def push(self, dx):
        return dx.reshape(dx.shape[0], -1)

    def pull(self, c):
        return c.reshape(self.shape)


class Summed:
    """SumFeatures: x ↦ Σ_i x_i, and its transpose (a broadcast)."""

    def __init__(self, h):
        self.shape, self.out = h.shape, h.sum(dim=1, keepdim=True)

    def push(self, dx):
        return dx.sum(dim=1, keepdim=True)

    def pull(self, c):
        return c.expand(self.shape)


class MaxPooled:
    """2×2 max pooling, linearised: each window's argmax (torch's first maximum) carries."""

    def __init__(self, h):
        self.out, self.index = F.max_pool2d(h, 2, return_indices=True)
        self.size = h.shape[-2:]

    def push(self, dx):
        return dx.flatten(2).gather(2, self.index.flatten(2)).view_as(self.index)

    def pull(self, c):
        return F.max_unpool2d(c, self.index, 2, output_size=self.size)


class AvgPooled:
    """2×2 average pooling (linear): the map, and its transpose (a quarter to each entry
    of the window; rows and columns past the last whole window get none)."""

    def __init__(self, h):
        self.shape, self.out = h.shape, F.avg_pool2d(h, 2)

    def push(self, dx):
        return F.avg_pool2d(dx, 2)

    def pull(self, c):
        up = c.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3) / 4
        return F.pad(up, (0, self.shape[3] - up.shape[3], 0, self.shape[2] - up.shape[2]))


class Affine:
    """Dense (``conv=None``) or conv ``pre = h W (+ b)``, optionally inside a residual
    ``h + δ tanh(pre)`` (``delta``)."""

    def __init__(self, theta, h, *, conv: int | None, delta: float | None):
        self.theta, self.h, self.k, self.delta = theta, h, conv, delta
        self.bias = len(theta) > 1
        pre = self._map(h, theta[0], theta[1] if self.bias else None)
        if delta is None:
            self.s, self.out = None, pre
        else:
            a = torch.tanh(pre)
            self.s, self.out = delta * (1 - a * a), h + delta * a

    def _map(self, x, w, b=None):
        if self.k is None:
            out = x @ w
            return out if b is None else out + b
        return F.conv2d(x, w, b, padding=self.k // 2)

    def _map_t(self, c):
        """The transpose of ``x ↦ _map(x, W)``."""
        if self.k is None:
            return c @ self.theta[0].T
        return F.conv_transpose2d(c, self.theta[0], padding=self.k // 2)

    def _scaled(self, c):
        return c if self.s is None else self.s * c

    def push(self, dx):
        lin = self._map(dx, self.theta[0])
        return lin if self.s is None else dx + self.s * lin

    def pull(self, c):
        back = self._map_t(self._scaled(c))
        return back if self.s is None else c + back

    pull_live = pull

    def push_w(self, dtheta):
        return self._scaled(self._map(self.h, dtheta[0], dtheta[1] if self.bias else None))

    def pull_w(self, c):
        g = self._scaled(c)
        if self.k is None:
            d_w = self.h.T @ g
        else:
            d_w = torch.nn.grad.conv2d_weight(self.h, self.theta[0].shape, g, padding=self.k // 2)
        return (d_w, _over_batch(g)) if self.bias else (d_w,)

    def sqnorms(self, z, diag):
        g = self._scaled(z)
        g2 = g * g
        if self.k is None:
            out = ((self.h * self.h) @ diag[0] * g2).sum(dim=1)
        else:
            q_w = _per_sample_conv_weight_grads(self.h, g, self.k)  # (S, c_out, c_in, k, k)
            out = (q_w * q_w * diag[0]).flatten(1).sum(dim=1)
        if self.bias:
            q_b = _over_positions(g)
            out = out + (q_b * q_b) @ diag[1]
        return out


def _per_sample_conv_weight_grads(h, g, k: int):
    """Each sample's ∂(g_s · conv(h_s, W))/∂W, shape (S, c_out, c_in, k, k): one weight
    gradient of a grouped convolution with the samples as groups (5× faster here than
    unfold and a batched matmul)."""
    n, c_in, c_out = h.shape[0], h.shape[1], g.shape[1]
    flat = lambda v: v.reshape(1, -1, *v.shape[2:])
    grads = torch.nn.grad.conv2d_weight(flat(h), (n * c_out, c_in, k, k), flat(g), padding=k // 2, groups=n)
    return grads.reshape(n, c_out, c_in, k, k)


class Normalised:
    """BatchNorm ``γ x̂ + β`` with the nominal batch's statistics held (``pull_live``:
    through them)."""

    def __init__(self, layer: spec.BatchNorm, theta, h):
        mean, var = ops.batch_stats(h)
        self.inv_sd = 1 / torch.sqrt(_features(var, h) + layer.eps)
        self.x_hat = (h - _features(mean, h)) * self.inv_sd
        self.scale = _features(theta[0], h) * self.inv_sd
        self.out = ops.apply(layer, theta, h, (mean, var))

    def push(self, dx):
        return self.scale * dx

    def pull(self, c):
        return self.scale * c

    def pull_live(self, c):
        n = c.numel() // c.shape[1]
        mean_c = _features(_over_batch(c), c) / n
        mean_cx = _features(_over_batch(c * self.x_hat), c) / n
        return self.scale * (c - mean_c - self.x_hat * mean_cx)

    def push_w(self, dtheta):
        return _features(dtheta[0], self.x_hat) * self.x_hat + _features(dtheta[1], self.x_hat)

    def pull_w(self, c):
        return _over_batch(c * self.x_hat), _over_batch(c)

    def sqnorms(self, z, diag):
        q_gamma, q_beta = _over_positions(z * self.x_hat), _over_positions(z)
        return (q_gamma * q_gamma) @ diag[0] + (q_beta * q_beta) @ diag[1]


def linearise(layer: spec.Layer, theta: tuple, h: torch.Tensor):
    """``layer`` linearised at input h (BatchNorm at h's own batch statistics); its
    ``out`` is the layer's output f(h, θ)."""
    if isinstance(layer, spec.Dense):
        return Affine(theta, h, conv=None, delta=None)
    if isinstance(layer, spec.Conv):
        return Affine(theta, h, conv=layer.k, delta=None)
    if isinstance(layer, spec.ResDense):
        return Affine(theta, h, conv=None, delta=layer.delta)
    if isinstance(layer, spec.ResConv):
        return Affine(theta, h, conv=layer.k, delta=layer.delta)
    if isinstance(layer, spec.BatchNorm):
        return Normalised(layer, theta, h)
    if isinstance(layer, spec.ReLU):
        return Elementwise(torch.relu(h), (h > 0).to(h.dtype))
    if isinstance(layer, spec.Tanh):
        t = torch.tanh(h)
        return Elementwise(t, 1 - t * t)
    if isinstance(layer, spec.MaxPool2):
        return MaxPooled(h)
    if isinstance(layer, spec.AvgPool2):
        return AvgPooled(h)
    if isinstance(layer, spec.Flatten):
        return Reshaped(h)
    if isinstance(layer, spec.SumFeatures):
        return Summed(h)
    raise TypeError(f"no linearisation for layer {layer!r}")


def ravel(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def unravel(w: torch.Tensor, shapes) -> tuple:
    out, start = [], 0
    for shape in shapes:
        size = math.prod(shape)
        out.append(w[start : start + size].reshape(shape))
        start += size
    return tuple(out)


class Stage:
    """A DDPNOpt stage linearised at its nominal input: the folded parameter-free layers,
    then the controlled layer, with its parameters as one flat vector w."""

    def __init__(self, folded: list, controlled, shapes):
        self.folded, self.controlled, self.shapes = folded, controlled, shapes

    def push_x(self, dx):
        """A δx per sample."""
        for lin in self.folded:
            dx = lin.push(dx)
        return self.controlled.push(dx)

    def _pull_folded(self, c):
        for lin in reversed(self.folded):
            c = lin.pull(c)
        return c

    def pull_x(self, c):
        """Aᵀ c per sample."""
        return self._pull_folded(self.controlled.pull(c))

    def pull_x_live(self, c):
        """Backprop's Aᵀ c (through BatchNorm's batch statistics)."""
        return self._pull_folded(self.controlled.pull_live(c))

    def pull_x_value(self, v, c):
        """Backprop's Aᵀv plus the held-statistics Aᵀc: one pullback of v + c where the
        two A's coincide (no BatchNorm)."""
        if isinstance(self.controlled, Normalised):
            return self.pull_x_live(v) + self.pull_x(c)
        return self.pull_x(v + c)

    def push_w(self, dw):
        """B dw per sample, one flat dw for the batch."""
        return self.controlled.push_w(unravel(dw, self.shapes))

    def pull_w(self, c):
        """Σ_s B_sᵀ c_s, flat."""
        return ravel(self.controlled.pull_w(c))

    def sqnorms(self, z, diag):
        """‖B_sᵀ z_s‖²_D per sample, the diagonal D flat like w."""
        return self.controlled.sqnorms(z, unravel(diag, self.shapes))


def forward(layers, params, x0) -> list:
    """The nominal forward pass, every layer linearised on the way: ``lins[i]`` is layer
    i at its input, ``lins[i].out`` its output (so ``x_0 = x0``, ``x_{i+1} = lins[i].out``)."""
    lins, x = [], x0
    for layer, theta in zip(layers, params):
        lins.append(linearise(layer, theta, x))
        x = lins[-1].out
    return lins


def stage(lins: list, ddp_stage: spec.DDPStage, shapes) -> Stage:
    """DDPNOpt's stage ``ddp_stage`` from the layers' linearisations (``forward``)."""
    return Stage(lins[ddp_stage.start : ddp_stage.stop - 1], lins[ddp_stage.stop - 1], shapes)
