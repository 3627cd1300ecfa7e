"""The ``fake`` backend of tests/conftest.py, installed on Dask workers (separate processes
the ``fake_backend`` fixture cannot reach), with slow steps that leave a mark.

``FakeOnWorkers`` is a worker plugin: the scheduler gives it to every worker, and again to
each worker the nanny restarts after a kill, so a rerun cell still finds the backend. Each
trainer's first step writes a file ``<algorithm>.<pid>`` into ``marks``, so that a test sees
which worker process is inside which cell (and kills it there), and afterwards how many
times, and where, each cell started.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from distributed.diagnostics.plugin import WorkerPlugin

import implementations


def install(marks: str, step_s: float) -> None:
    """Register ``fake`` in this process: conftest's trainers, each step ``step_s`` slower."""
    from tests.conftest import Fake

    fake = Fake()
    real_get, real_why_not = implementations.get, implementations.why_not

    def get(algorithm, backend):
        if backend != "fake":
            return real_get(algorithm, backend)
        make = fake.make(algorithm)

        def slow_make(*args, **kwargs):
            trainer = make(*args, **kwargs)

            def step(state, batch):
                if state["k"] == 0:
                    (Path(marks) / f"{algorithm}.{os.getpid()}").touch()
                time.sleep(step_s)
                return trainer.step(state, batch)

            return trainer._replace(step=step)  # a Trainer is a NamedTuple

        return slow_make

    def why_not(hp, backend, problem=None, device="cpu"):
        return [] if backend == "fake" else real_why_not(hp, backend, problem, device)

    implementations.BACKENDS = (*implementations.BACKENDS, "fake")
    implementations.get = get
    implementations.why_not = why_not


class FakeOnWorkers(WorkerPlugin):
    """Installs the slow fake backend on every worker, restarted ones included."""

    name = "msabench-test-fake"

    def __init__(self, marks: str, step_s: float = 0.2):
        self.marks = marks
        self.step_s = step_s

    def setup(self, worker) -> None:
        install(self.marks, self.step_s)
