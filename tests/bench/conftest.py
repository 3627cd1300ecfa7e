"""Benchmarks, not tests: collected only when ``MSABENCH_BENCHMARKS=1`` (the nox sessions
set it), so the test suite never spends minutes timing steps.

Every cell of the suite runs on one intra-op thread (``python -m suites run``'s default),
and the benchmarks time steps the same way: ``executors.set_threads(1)`` here, before any
JAX computation starts XLA's CPU client."""

from __future__ import annotations

import os

if os.environ.get("MSABENCH_BENCHMARKS") != "1":
    collect_ignore_glob = ["test_*.py"]
else:
    from suites import executors

    executors.set_threads(int(os.environ.get("MSABENCH_THREADS", "1")))


def pytest_benchmark_update_machine_info(config, machine_info):
    """Record the GPU (torch's and JAX's view) and the threads beside pytest-benchmark's CPU info."""
    gpu = {"torch": None, "jax": None}
    try:
        import torch

        if torch.cuda.is_available():
            gpu["torch"] = torch.cuda.get_device_name()
        machine_info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    try:
        import jax

        gpu["jax"] = [d.device_kind for d in jax.devices() if d.platform == "gpu"] or None
    except (ImportError, RuntimeError):
        pass
    machine_info["gpu"] = gpu
    machine_info["xla_flags"] = os.environ.get("XLA_FLAGS", "")
