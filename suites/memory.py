"""Peak memory of one cell: host RSS of the process, and device memory where a GPU is used.

- Host: Linux keeps a process's peak resident set (``VmHWM`` in ``/proc/self/status``)
  and resets it when ``5`` is written to ``/proc/self/clear_refs``; ``PeakMemory`` resets
  it when the cell starts and reads it when the cell ends, so the figure is the peak of
  the process (interpreter and libraries included) *during that cell*, also when a worker
  runs several cells. Where the reset is refused or ``/proc`` is missing (not Linux), the
  figure is NaN rather than a lifetime peak that would mix cells.
- GPU (``device == "cuda"``): torch's ``max_memory_allocated`` after
  ``reset_peak_memory_stats``; for jax, the device's ``peak_bytes_in_use``, which JAX
  cannot reset: the peak since the process started, so with several cells in one process
  it bounds this cell's from above (``results/README.md`` says so).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Self

MIB = 1024 * 1024
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _vm_hwm_mib() -> float:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return math.nan


def _reset_host_peak() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """``with PeakMemory(backend, device) as peak: ...``; then ``peak.host_mib`` and
    ``peak.gpu_mib`` (NaN where not measured)."""

    def __init__(self, backend: str, device: str):
        self.backend, self.device = backend, device
        self.host_mib = math.nan
        self.gpu_mib = math.nan
        self._host_ok = False

    def __enter__(self) -> Self:
        self._host_ok = _reset_host_peak()
        if self.device == "cuda" and self.backend != "jax" and "torch" in sys.modules:
            import torch

            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc) -> None:
        self.host_mib = _vm_hwm_mib() if self._host_ok else math.nan
        if self.device != "cuda":
            return
        if self.backend == "jax" and "jax" in sys.modules:
            import jax

            stats = jax.devices("gpu")[0].memory_stats() or {}
            if "peak_bytes_in_use" in stats:
                self.gpu_mib = stats["peak_bytes_in_use"] / MIB
        elif "torch" in sys.modules:
            import torch

            if torch.cuda.is_available():
                self.gpu_mib = torch.cuda.max_memory_allocated() / MIB
