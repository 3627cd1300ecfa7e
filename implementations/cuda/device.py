"""Where the cuda kernels may run: a CUDA device."""

from __future__ import annotations

import torch


def require_device(device: str) -> None:
    """Raise unless the cuda kernels can run on ``device``."""
    if device == "cuda" and torch.cuda.is_available():
        return
    raise RuntimeError("the cuda backend needs a CUDA device" + ("" if device == "cuda" else f", not {device!r}"))
