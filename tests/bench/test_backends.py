"""Median step time of every algorithm, torch eager against jax jit, on ``sine-resnet``
(20 residual tanh layers: eager pays per-op overhead) and ``mnist5k-mlp-binary``
(784-512-512-512-10 with BN), float32, CPU (or the GPU with ``MSABENCH_DEVICE=cuda``).

The hyperparameters are the default suite's (tuned rates included), so the times are
those of the suite's cells. Each benchmark builds its trainer, runs warm-up steps (the
first compiles), then times ``rounds`` single steps, each followed by the backend's
synchronisation (``trainer.sync``) and fed the next of a ring of minibatches already on
the device. ``ratios.py`` turns the saved JSON into the torch/jax table.

    MSABENCH_BENCHMARKS=1 pytest tests/bench --benchmark-only --benchmark-json=OUT.json
"""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest

import implementations
from suites import grids, problems

PROBLEMS = ("sine-resnet", "mnist5k-mlp-binary")
BACKENDS = ("torch", "jax")
DEVICE = os.environ.get("MSABENCH_DEVICE", "cpu")
WARMUP = 3
BATCHES = 8


def _entries():
    suite = grids.get_suite("default")
    return [e for e in suite.entries if e.problem in PROBLEMS]


CELLS = [(e, b) for e in _entries() for b in BACKENDS]


def _rounds(label: str) -> int:
    """Fewer rounds for the slow MSA-family steps (~20-80 ms), more for the fast ones."""
    return 15 if label in ("emsa", "msa") else 60


@pytest.mark.parametrize(("entry", "backend"), CELLS, ids=[f"{e.problem}-{e.label}-{b}" for e, b in CELLS])
def test_step_time(benchmark, entry, backend):
    problem = problems.get_problem(entry.problem)
    reasons = implementations.why_not(entry.hp, backend, problem, DEVICE)
    if reasons:
        pytest.skip("; ".join(reasons))
    make = implementations.get(implementations.spec.algorithm_id(entry.hp), backend)
    trainer = make(problem, entry.hp, dtype="float32", device=DEVICE, seed=0)
    stream = problem.batches("train", 0)
    ring = itertools.cycle([trainer.put(next(stream)) for _ in range(BATCHES)])
    box = {"state": trainer.init(problem.init_params(0))}

    def one_step():
        box["state"], box["metrics"] = trainer.step(box["state"], next(ring))
        trainer.sync(box["state"])

    benchmark.group = f"{entry.problem}/{entry.label}"
    benchmark.extra_info.update(
        problem=entry.problem, label=entry.label, backend=backend, device=DEVICE, hp=repr(entry.hp)
    )
    benchmark.pedantic(one_step, rounds=_rounds(entry.label), iterations=1, warmup_rounds=WARMUP)
    loss = float(box["metrics"]["loss"])
    # basic MSA may blow up (the JMLR paper's point); every other configuration must still train
    assert np.isfinite(loss) or entry.label == "msa", f"{entry.problem}/{entry.label}/{backend}: loss {loss}"
