"""The one way the pytest-benchmark files time a suite entry's training step.

``time_entry`` builds the entry's trainer (float32, ``MSABENCH_DEVICE``), runs ``WARMUP``
steps (the first compiles), then times ``rounds`` single steps, each followed by the
backend's synchronisation (``trainer.sync``) and fed the next of a ring of ``BATCHES``
minibatches already on the device. A pair the registry cannot run here is skipped with
``why_not``'s reason.
"""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest

import implementations
from suites import problems

DEVICE = os.environ.get("MSABENCH_DEVICE", "cpu")
WARMUP = 3
BATCHES = 8


def time_entry(benchmark, entry, backend: str, rounds: int) -> float:
    """Time ``entry``'s step on ``backend``; return the last step's training loss."""
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
    benchmark.pedantic(one_step, rounds=rounds, iterations=1, warmup_rounds=WARMUP)
    return float(box["metrics"]["loss"])


def still_trains(entry, loss: float) -> bool:
    """Whether a timed cell's last loss is what training gives: finite, except for basic MSA,
    which may blow up (the JMLR paper's point)."""
    return bool(np.isfinite(loss)) or entry.label == "msa"
