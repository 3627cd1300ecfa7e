"""Benchmarks, not tests: collected only when ``MSABENCH_BENCHMARKS=1`` (the nox sessions
set it), so the test suite never spends minutes timing steps.

Every cell of the suite runs on one intra-op thread (``python -m suites run``'s default),
and the benchmarks time steps the same way: ``runner.set_threads(1)`` here, before any
JAX computation starts XLA's CPU client."""

from __future__ import annotations

import os

if os.environ.get("MSABENCH_BENCHMARKS") != "1":
    collect_ignore_glob = ["test_*.py"]
else:
    from suites import runner

    runner.set_threads(int(os.environ.get("MSABENCH_THREADS", "1")))
