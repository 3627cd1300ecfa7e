"""Run-to-run reproducible cells on a GPU: ``msabench run --deterministic``.

A GPU computes a reduction in whatever order its threads finish unless told otherwise,
so two runs of the same cell can differ in the last bits, and binary/ternary MSA turns such
bits into different weight flips. With ``--deterministic`` every cell of the run asks for
fixed-order arithmetic:

- torch: ``torch.use_deterministic_algorithms(True)`` (an op without a deterministic
  implementation then raises, and the cell is an ``error`` row naming it), with cuBLAS's
  fixed workspace (``CUBLAS_WORKSPACE_CONFIG``) set before CUDA starts;
- JAX: XLA's ``--xla_gpu_deterministic_ops=true``, read once, when JAX's GPU client
  starts: a worker whose JAX started without it cannot turn it on, and says so;
- this suite's own kernels (triton, cuda) reduce in a fixed order always.

Each row records ``deterministic``: whether its cell ran under these settings, or on the
CPU, where every op the backends use is reproducible (the exact-resume tests rely on it).
"""

from __future__ import annotations

import os
import sys

XLA_FLAG = "--xla_gpu_deterministic_ops=true"
CUBLAS = ("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


#: XLA_FLAGS as this process found it when it imported this module (a worker inherits the
#: driver's, set by ``request`` before the pool started)
_XLA_FLAGS_AT_IMPORT = os.environ.get("XLA_FLAGS", "")


def request() -> None:
    """Set the environment a deterministic run needs before any framework starts its GPU
    client: called by the runner before it starts workers (they inherit it) and at each
    cell's start (``enforce``)."""
    os.environ.setdefault(*CUBLAS)
    flags = os.environ.get("XLA_FLAGS", "")
    if XLA_FLAG not in flags.split():
        os.environ["XLA_FLAGS"] = f"{flags} {XLA_FLAG}".strip()


def _xla_flag_in_force() -> bool:
    """Whether JAX in this process runs (or will start) with the flag: it was in the
    environment before anything here could have imported JAX, or JAX is not imported yet
    (``request`` has just set it)."""
    return "jax" not in sys.modules or XLA_FLAG in _XLA_FLAGS_AT_IMPORT.split()


def enforce(backend: str, device: str, deterministic: bool) -> bool:
    """Apply the cell's setting in this process; return whether the cell runs
    deterministically (the row's ``deterministic``): always on the CPU; on a GPU only with
    ``deterministic``, and for jax only where XLA's flag is in force."""
    if device == "cpu":
        return True
    if deterministic:
        request()
    if backend != "jax":
        import torch

        torch.use_deterministic_algorithms(deterministic)
    if not deterministic:
        return False
    return backend != "jax" or _xla_flag_in_force()
