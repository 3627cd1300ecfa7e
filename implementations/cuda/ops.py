"""CUDA C++ versions of the hot ops of ``implementations.torch.ops``, same signatures.

The kernels (``csrc/kernels.cu``: plain CUDA, ``extern "C"`` launchers that return
``cudaGetLastError()`` after every launch) and their torch binding (``csrc/binding.cpp``,
which raises on a launch error) are compiled at first use with
``torch.utils.cpp_extension.load`` (nvcc and the host compiler; the build is cached under
``TORCH_EXTENSIONS_DIR``). CI compiles ``kernels.cu`` alone with nvcc for sm_80 and sm_90
(``tests/test_cuda_build.py``); running them needs a CUDA device.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

CSRC = Path(__file__).with_name("csrc")


@functools.cache
def _extension():
    if not torch.cuda.is_available():
        raise RuntimeError("the cuda backend needs a CUDA device, and torch sees none")
    from torch.utils.cpp_extension import load

    return load(
        name="msabench_cuda",
        sources=[str(CSRC / "binding.cpp"), str(CSRC / "kernels.cu")],
        extra_cuda_cflags=["-O3", "-std=c++17"],
        verbose=False,
    )


def dmsa_update_with_nonzero(m_bar, m, w, *, alpha: float, one_minus_alpha: float, rho: float, levels: int, lam: float):
    """``torch.ops.dmsa_update`` in two kernel passes (plus a one-block reduction of the
    partials between them, on the device), and the non-zero count of W'."""
    if levels not in (2, 3):
        raise ValueError(f"levels must be 2 (binary) or 3 (ternary), not {levels}")
    return tuple(
        _extension().dmsa_update(m_bar, m, w, float(alpha), float(one_minus_alpha), float(rho), int(levels), float(lam))
    )


def dmsa_update(m_bar, m, w, *, alpha: float, one_minus_alpha: float, rho: float, levels: int, lam: float):
    m_new, w_new, flips, _ = dmsa_update_with_nonzero(
        m_bar, m, w, alpha=alpha, one_minus_alpha=one_minus_alpha, rho=rho, levels=levels, lam=lam
    )
    return m_new, w_new, flips


def emsa_dense_grad(w, b, x, x_next, p, p_next, *, delta: float, rho: float, reg: float):
    """``torch.ops.emsa_dense_grad``: one block per layer, one launch per stack."""
    return tuple(_extension().emsa_dense_grad(w, b, x, x_next, p, p_next, float(delta), float(rho), float(reg)))
