"""Triton versions of the hot ops of ``implementations.torch.ops``, same signatures.

``emsa_dense_grad`` (the closed form of ``torch.ops.emsa_dense_grad``) runs every layer of
a residual stack in one launch, one program per layer; see its docstring.

``dmsa_update(m_bar, m, w, *, alpha, one_minus_alpha, rho, levels, lam) -> (m_bar_new, w_new, flips)`` in
two passes over memory, the fewest the reduction allows (ρ_k needs the max of |M̄'| over
*all* wrong-signed entries before any entry can be decided):

1. ``_ema_and_wrong_max``: per block, ``M̄' = α M̄ + (1 - α) M`` (stored; both weights given), the block's
   max of |M̄'| over entries with ``W ≠ sgn(M̄')`` (binary, sgn(0) = +1) or
   ``W ≠ sign(M̄')`` (ternary), and the block's count of such entries;
2. ``_apply_rule``: ρ_k = ρ · max over blocks and "any wrong-signed entry" are read from
   device memory (never synchronised to the host), then the binary or ternary rule of
   ``torch.ops.dmsa_update`` per entry, ``W'`` stored, and per block the number of flipped
   and of non-zero entries.

The per-block partials (one float and two ints per 1,024 entries) are reduced by torch on
the device; ``flips`` is a 0-d int64 tensor, as torch's op returns. W keeps its dtype
(float32, float64 or int8: the rule only compares and selects). Every float parameter
reaches a kernel as a device tensor of the data's dtype (``scalars``), never as a Python
float, which Triton would type float32. The reductions (per-block max and counts, then
torch's over the blocks) have a fixed order, so the ops are run-to-run deterministic.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 1024


def scalars(like: torch.Tensor, *values: float) -> torch.Tensor:
    """The kernels' float parameters (α, 1 - α, λ, δ, ρ, reg) as one device tensor in
    ``like``'s dtype, which the kernels load: Triton types a Python float argument as
    float32, so a float64 run would compute with rounded parameters. ``torch.full`` writes
    each value on the device from a kernel argument (a double): no host-to-device copy, no
    synchronisation."""
    return torch.stack([torch.full((), v, dtype=like.dtype, device=like.device) for v in values])


@triton.jit
def _ema_and_wrong_max(
    m_bar_ptr,
    m_ptr,
    w_ptr,
    out_ptr,
    max_ptr,
    count_ptr,
    n,
    weights_ptr,
    TERNARY: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    alpha = tl.load(weights_ptr)
    one_minus_alpha = tl.load(weights_ptr + 1)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    m_bar = tl.load(m_bar_ptr + offs, mask=mask, other=0.0)
    m = tl.load(m_ptr + offs, mask=mask, other=0.0)
    w = tl.load(w_ptr + offs, mask=mask, other=0).to(m_bar.dtype)
    new = alpha * m_bar + one_minus_alpha * m
    tl.store(out_ptr + offs, new, mask=mask)
    if TERNARY:
        target = tl.where(new > 0, 1.0, tl.where(new < 0, -1.0, 0.0))
    else:
        target = tl.where(new >= 0, 1.0, -1.0)
    wrong = (w != target) & mask
    tl.store(max_ptr + pid, tl.max(tl.where(wrong, tl.abs(new), 0.0), axis=0))
    tl.store(count_ptr + pid, tl.sum(wrong.to(tl.int32), axis=0))


@triton.jit
def _apply_rule(
    m_bar_ptr,
    w_ptr,
    w_out_ptr,
    rho_k_ptr,
    any_wrong_ptr,
    flips_ptr,
    nonzero_ptr,
    n,
    lam_ptr,
    TERNARY: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    lam = tl.load(lam_ptr)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    m = tl.load(m_bar_ptr + offs, mask=mask, other=0.0)
    w_raw = tl.load(w_ptr + offs, mask=mask, other=0)
    w = w_raw.to(m.dtype)
    rho_k = tl.load(rho_k_ptr)
    any_wrong = tl.load(any_wrong_ptr) != 0
    if TERNARY:
        up = m > rho_k * (1 - 2 * w) + lam
        down = m < -rho_k * (1 + 2 * w) - lam
        decided = tl.where(up, 1.0, tl.where(down, -1.0, 0.0))
    else:
        target = tl.where(m >= 0, 1.0, -1.0)
        decided = tl.where(tl.abs(m) > rho_k, target, w)
    new = tl.where(any_wrong, decided, w)
    tl.store(w_out_ptr + offs, new.to(w_raw.dtype), mask=mask)
    tl.store(flips_ptr + pid, tl.sum(((new != w) & mask).to(tl.int32), axis=0))
    tl.store(nonzero_ptr + pid, tl.sum(((new != 0) & mask).to(tl.int32), axis=0))


def dmsa_update_with_nonzero(m_bar, m, w, *, alpha: float, one_minus_alpha: float, rho: float, levels: int, lam: float):
    """``dmsa_update`` and, fused into its second pass, the number of non-zero entries of
    W' (a 0-d int64 tensor): ``(m_bar_new, w_new, flips, nonzero)``."""
    if levels not in (2, 3):
        raise ValueError(f"levels must be 2 (binary) or 3 (ternary), not {levels}")
    if not (m_bar.shape == m.shape == w.shape):
        raise ValueError(f"shapes differ: m_bar {tuple(m_bar.shape)}, m {tuple(m.shape)}, w {tuple(w.shape)}")
    m_bar, m, w = (t.contiguous() for t in (m_bar, m, w))
    n = m_bar.numel()
    blocks = max(1, triton.cdiv(n, BLOCK))
    dev = m_bar.device
    m_new = torch.empty_like(m_bar)
    block_max = torch.empty(blocks, dtype=m_bar.dtype, device=dev)
    block_wrong = torch.empty(blocks, dtype=torch.int32, device=dev)
    ternary = levels == 3
    weights = scalars(m_bar, alpha, one_minus_alpha)
    _ema_and_wrong_max[(blocks,)](m_bar, m, w, m_new, block_max, block_wrong, n, weights, TERNARY=ternary, BLOCK=BLOCK)
    rho_k = (rho * block_max.max()).reshape(1)
    any_wrong = (block_wrong.sum() > 0).to(torch.int32).reshape(1)
    w_new = torch.empty_like(w)
    flips = torch.empty(blocks, dtype=torch.int32, device=dev)
    nonzero = torch.empty(blocks, dtype=torch.int32, device=dev)
    lam_t = scalars(m_bar, lam)
    _apply_rule[(blocks,)](m_new, w, w_new, rho_k, any_wrong, flips, nonzero, n, lam_t, TERNARY=ternary, BLOCK=BLOCK)
    return m_new, w_new, flips.sum(dtype=torch.int64), nonzero.sum(dtype=torch.int64)


def dmsa_update(m_bar, m, w, *, alpha: float, one_minus_alpha: float, rho: float, levels: int, lam: float):
    """``implementations.torch.ops.dmsa_update``, as two Triton passes (module docstring)."""
    m_new, w_new, flips, _ = dmsa_update_with_nonzero(
        m_bar, m, w, alpha=alpha, one_minus_alpha=one_minus_alpha, rho=rho, levels=levels, lam=lam
    )
    return m_new, w_new, flips


@triton.jit
def _tanh(z):
    """tanh from exp (libdevice is not available in Triton's interpreter): a Taylor
    polynomial for |z| < 0.1 (error < 1e-10), ``(1 - e)/(1 + e)``, e = exp(-2|z|), beyond
    (a few ulps: 1 - e loses at most ~3 ulps there)."""
    az = tl.abs(z)
    z2 = z * z
    poly = z * (1.0 + z2 * (-1.0 / 3.0 + z2 * (2.0 / 15.0 + z2 * (-17.0 / 315.0))))
    e = tl.exp(-2.0 * az)
    far = (1.0 - e) / (1.0 + e)
    return tl.where(az < 0.1, poly, tl.where(z < 0, -far, far))


@triton.jit
def _emsa_dense_grad_kernel(
    w_ptr, b_ptr, x_ptr, xn_ptr, p_ptr, pn_ptr, gw_ptr, gb_ptr,
    S, D, coef_ptr,
    BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    layer = tl.program_id(0)
    delta = tl.load(coef_ptr)
    rho = tl.load(coef_ptr + 1)
    reg = tl.load(coef_ptr + 2)
    rows = tl.arange(0, BLOCK_S)
    cols = tl.arange(0, BLOCK_D)
    row_ok = rows < S
    col_ok = cols < D
    sd = row_ok[:, None] & col_ok[None, :]
    dd = col_ok[:, None] & col_ok[None, :]
    state = layer * S * D + rows[:, None] * D + cols[None, :]
    x = tl.load(x_ptr + state, mask=sd, other=0.0)
    xn = tl.load(xn_ptr + state, mask=sd, other=0.0)
    p = tl.load(p_ptr + state, mask=sd, other=0.0)
    q = tl.load(pn_ptr + state, mask=sd, other=0.0)
    wm = layer * D * D + cols[:, None] * D + cols[None, :]
    w = tl.load(w_ptr + wm, mask=dd, other=0.0)  # w[i, j]
    b = tl.load(b_ptr + layer * D + cols, mask=col_ok, other=0.0)
    # z[s, j] = Σ_i x[s, i] w[i, j] + b[j]
    z = tl.sum(x[:, :, None] * w[None, :, :], axis=1) + b[None, :]
    a = _tanh(z)
    s = 1.0 - a * a
    r1 = xn - (x + delta * a)
    g = q * s
    # (g Wᵀ)[s, i] = Σ_j g[s, j] w[i, j]
    gwt = tl.sum(g[:, None, :] * w[None, :, :], axis=2)
    u = tl.where(sd, (rho * delta) * (p - q - delta * gwt), 0.0)
    v = tl.sum(u[:, :, None] * w[None, :, :], axis=1)  # (U W)[s, j]
    dz = tl.where(sd, delta * (q + rho * r1) * s - 2.0 * v * q * a * s, 0.0)
    gw = tl.sum(x[:, :, None] * dz[:, None, :], axis=0) + tl.sum(u[:, :, None] * g[:, None, :], axis=0) - reg * w
    gb = tl.sum(dz, axis=0) - reg * b
    tl.store(gw_ptr + wm, gw, mask=dd)
    tl.store(gb_ptr + layer * D + cols, gb, mask=col_ok)


def emsa_dense_grad(w, b, x, x_next, p, p_next, *, delta: float, rho: float, reg: float):
    """``torch.ops.emsa_dense_grad`` in one launch for the whole stack: program ℓ computes
    layer ℓ's (∇_W H̃, ∇_b H̃) from its stored (x, x_{t+1}, p, p_{t+1}), all in registers
    (the sine toy: S = 100 samples, width d = 5). Sizes are padded to powers of two and
    masked; d ≤ 32 keeps the (S, d, d) products in registers."""
    L, S, D = x.shape
    if w.shape != (L, D, D) or b.shape != (L, D) or not (x.shape == x_next.shape == p.shape == p_next.shape):
        raise ValueError(
            f"shapes: w {tuple(w.shape)}, b {tuple(b.shape)}, states {tuple(x.shape)} (want (L, d, d), (L, d), (L, S, d))"
        )
    if D > 32:
        raise ValueError(f"width {D} > 32: this kernel keeps a layer in registers (the JMLR sine net has 5)")
    w, b, x, x_next, p, p_next = (t.contiguous() for t in (w, b, x, x_next, p, p_next))
    grad_w, grad_b = torch.empty_like(w), torch.empty_like(b)
    _emsa_dense_grad_kernel[(L,)](
        w, b, x, x_next, p, p_next, grad_w, grad_b, S, D, scalars(x, delta, rho, reg),
        BLOCK_S=triton.next_power_of_2(S), BLOCK_D=max(2, triton.next_power_of_2(D)),
    )  # fmt: skip
    return grad_w, grad_b
