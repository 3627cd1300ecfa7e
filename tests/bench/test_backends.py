"""Median step time of every algorithm, torch eager against jax jit, on ``sine-resnet``
(20 residual tanh layers: eager pays per-op overhead) and ``mnist5k-mlp-binary``
(784-512-512-512-10 with BN), float32, CPU (or the GPU with ``MSABENCH_DEVICE=cuda``).

The hyperparameters are the default suite's (tuned rates included), so the times are
those of the suite's cells; ``stepping.time_entry`` says how a step is timed. ``ratios.py`` turns the saved JSON into the torch/jax table.

    MSABENCH_BENCHMARKS=1 pytest tests/bench --benchmark-only --benchmark-json=OUT.json
"""

from __future__ import annotations

import pytest

from suites import grids
from tests.bench import stepping

PROBLEMS = ("sine-resnet", "mnist5k-mlp-binary")
BACKENDS = ("torch", "jax")


def _entries():
    suite = grids.get_suite("default")
    return [e for e in suite.entries if e.problem in PROBLEMS]


CELLS = [(e, b) for e in _entries() for b in BACKENDS]


def _rounds(label: str) -> int:
    """Fewer rounds for the slow MSA-family steps (~20-80 ms), more for the fast ones."""
    return 15 if label in ("emsa", "msa") else 60


@pytest.mark.parametrize(("entry", "backend"), CELLS, ids=[f"{e.problem}-{e.label}-{b}" for e, b in CELLS])
def test_step_time(benchmark, entry, backend):
    loss = stepping.time_entry(benchmark, entry, backend, _rounds(entry.label))
    stepping.finite_or_msa(entry, backend, loss)
