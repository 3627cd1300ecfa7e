"""Median step time of every algorithm in torch eager, jax jit and torch-compile, on
``sine-resnet`` (20 residual tanh layers: eager pays per-op overhead),
``mnist5k-mlp-binary`` and ``mnist5k-mlp-ternary`` (784-512-512-512-10 with BN: binary and
ternary MSA beside BinaryConnect and TWN) and, for E-MSA's two solvers against Adam,
``mnist5k-rescnn``; float32, CPU (or the GPU with ``MSABENCH_DEVICE=cuda``).

The hyperparameters are the default suite's (tuned rates included), so the times are
those of the suite's cells; ``stepping.time_entry`` says how a step is timed (torch-compile
compiles during the warm-up steps). ``ratios.py`` turns the saved JSON into the tables:
the backends side by side, and issue 18's goals (E-MSA with the device solver against
Adam, binary/ternary MSA against BinaryConnect/TWN).

    MSABENCH_BENCHMARKS=1 pytest tests/bench/test_backends.py --benchmark-only --benchmark-json=OUT.json
    python tests/bench/ratios.py OUT.json
"""

from __future__ import annotations

import pytest

from suites import grids
from tests.bench import stepping

PROBLEMS = ("sine-resnet", "mnist5k-mlp-binary", "mnist5k-mlp-ternary")
#: on the residual CNN, E-MSA's two inner solvers and the base line of its goal only
RESCNN_LABELS = ("emsa", "emsa-device", "adam")
BACKENDS = ("torch", "jax", "torch-compile")


def _entries():
    suite = grids.get_suite("default")
    return [
        e
        for e in suite.entries
        if e.problem in PROBLEMS or (e.problem == "mnist5k-rescnn" and e.label in RESCNN_LABELS)
    ]


CELLS = [(e, b) for e in _entries() for b in BACKENDS]


def _rounds(entry) -> int:
    """Fewer rounds for the slow steps (E-MSA with SciPy, anything on the CNN), more for
    the fast ones."""
    if entry.problem == "mnist5k-rescnn":
        return 8
    return 15 if entry.label in ("emsa", "msa", "emsa-device", "ddpnopt") else 60


@pytest.mark.parametrize(("entry", "backend"), CELLS, ids=[f"{e.problem}-{e.label}-{b}" for e, b in CELLS])
def test_step_time(benchmark, entry, backend):
    loss = stepping.time_entry(benchmark, entry, backend, _rounds(entry))
    assert stepping.still_trains(entry, loss), f"{entry.problem}/{entry.label}/{backend}: loss {loss}"
