"""Where the triton kernels may run: a CUDA device, or the CPU under Triton's interpreter (``TRITON_INTERPRET=1``, how the tests run them)."""

from __future__ import annotations

import os

import torch


def require_device(device: str) -> None:
    """Raise unless the triton kernels can run on ``device``."""
    if device == "cuda" and torch.cuda.is_available():
        return
    if device == "cpu" and os.environ.get("TRITON_INTERPRET") == "1":
        return
    raise RuntimeError("the triton backend needs a CUDA device" + ("" if device == "cuda" else f", not {device!r}"))
