"""Triton versions of the hot ops of ``implementations.torch.ops``, same signatures.

``dmsa_update(m_bar, m, w, *, alpha, rho, levels, lam) -> (m_bar_new, w_new, flips)`` in
two passes over memory, the fewest the reduction allows (ρ_k needs the max of |M̄'| over
*all* wrong-signed entries before any entry can be decided):

1. ``_ema_and_wrong_max``: per block, ``M̄' = α M̄ + (1 - α) M`` (stored), the block's
   max of |M̄'| over entries with ``W ≠ sgn(M̄')`` (binary, sgn(0) = +1) or
   ``W ≠ sign(M̄')`` (ternary), and the block's count of such entries;
2. ``_apply_rule``: ρ_k = ρ · max over blocks and "any wrong-signed entry" are read from
   device memory (never synchronised to the host), then the binary or ternary rule of
   ``torch.ops.dmsa_update`` per entry, ``W'`` stored, and per block the number of flipped
   and of non-zero entries.

The per-block partials (one float and two ints per 1,024 entries) are reduced by torch on
the device; ``flips`` is a 0-d int64 tensor, as torch's op returns. W keeps its dtype
(float32, float64 or int8: the rule only compares and selects).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 1024


@triton.jit
def _ema_and_wrong_max(
    m_bar_ptr, m_ptr, w_ptr, out_ptr, max_ptr, count_ptr, n, alpha, TERNARY: tl.constexpr, BLOCK: tl.constexpr
):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    m_bar = tl.load(m_bar_ptr + offs, mask=mask, other=0.0)
    m = tl.load(m_ptr + offs, mask=mask, other=0.0)
    w = tl.load(w_ptr + offs, mask=mask, other=0).to(m_bar.dtype)
    new = alpha * m_bar + (1.0 - alpha) * m
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
    lam,
    TERNARY: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
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


def dmsa_update_with_nonzero(m_bar, m, w, *, alpha: float, rho: float, levels: int, lam: float):
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
    _ema_and_wrong_max[(blocks,)](m_bar, m, w, m_new, block_max, block_wrong, n, alpha, TERNARY=ternary, BLOCK=BLOCK)
    rho_k = (rho * block_max.max()).reshape(1)
    any_wrong = (block_wrong.sum() > 0).to(torch.int32).reshape(1)
    w_new = torch.empty_like(w)
    flips = torch.empty(blocks, dtype=torch.int32, device=dev)
    nonzero = torch.empty(blocks, dtype=torch.int32, device=dev)
    _apply_rule[(blocks,)](m_new, w, w_new, rho_k, any_wrong, flips, nonzero, n, lam, TERNARY=ternary, BLOCK=BLOCK)
    return m_new, w_new, flips.sum(dtype=torch.int64), nonzero.sum(dtype=torch.int64)


def dmsa_update(m_bar, m, w, *, alpha: float, rho: float, levels: int, lam: float):
    """``implementations.torch.ops.dmsa_update``, as two Triton passes (module docstring)."""
    m_new, w_new, flips, _ = dmsa_update_with_nonzero(m_bar, m, w, alpha=alpha, rho=rho, levels=levels, lam=lam)
    return m_new, w_new, flips
