"""DDPNOpt's step against its base optimizer's (RMSprop) and E-MSA's, on the default
suite's problems that run them: ``sine-resnet`` (20 residual dense layers),
``digits-mlp`` (64-128-128-10 with BN) and ``mnist5k-rescnn`` (the residual CNN),
torch and jax, float32, the default suite's hyperparameters. Issue 17's goal: DDPNOpt's
step ≤ 3× RMSprop's on the MLP and the CNN, and far below E-MSA's.

    MSABENCH_BENCHMARKS=1 pytest tests/bench/test_ddpnopt_step.py --benchmark-only --benchmark-json=OUT.json
    python tests/bench/ratios.py OUT.json --ddpnopt
"""

from __future__ import annotations

import pytest

from suites import grids
from tests.bench import stepping

PROBLEMS = ("sine-resnet", "digits-mlp", "mnist5k-rescnn")
LABELS = ("ddpnopt", "rmsprop", "emsa")
BACKENDS = ("torch", "jax")
ROUNDS = {"emsa": 10, "ddpnopt": 30, "rmsprop": 60}  # E-MSA's steps take up to a second

CELLS = [
    (e, b) for e in grids.get_suite("default").entries if e.problem in PROBLEMS and e.label in LABELS for b in BACKENDS
]


@pytest.mark.parametrize(("entry", "backend"), CELLS, ids=[f"{e.problem}-{e.label}-{b}" for e, b in CELLS])
def test_ddpnopt_step_time(benchmark, entry, backend):
    loss = stepping.time_entry(benchmark, entry, backend, ROUNDS[entry.label])
    assert stepping.still_trains(entry, loss), f"{entry.problem}/{entry.label}/{backend}: loss {loss}"
