"""``python tests/fault_driver.py run faulty ...``: the msabench CLI with the fake backend
of ``conftest.py`` registered and a suite ``faulty`` on it, for the tests that kill and
interrupt real runs (tests/test_faults.py).

The registration is at module level on purpose: pool workers are spawned, and a spawned
worker imports the main script again (as ``__mp_main__``), so the workers know the fake
backend and the suite too. Set through the environment, since the tests drive this as a
separate process:

- ``FAULT_STEP_S``: seconds each training step sleeps (default 0: as fast as it goes);
- ``FAULT_MARKS``: a folder; a cell's worker creates ``<algorithm>.s<seed>.<pid>`` in it at
  the cell's first step, so a test knows which process runs which cell, and that it runs;
- ``FAULT_MODES``: ``algorithm=mode,...``, the fake's modes (``error`` makes it raise).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from conftest import Fake, tiny_suite

import implementations
from suites import __main__ as cli
from suites import grids

STEP_S = float(os.environ.get("FAULT_STEP_S", "0"))
MARKS = os.environ.get("FAULT_MARKS")

fake = Fake(modes=dict(kv.split("=", 1) for kv in os.environ.get("FAULT_MODES", "").split(",") if kv))
fake.bad_step = 1


def _make(algorithm: str):
    make_fake = fake.make(algorithm)

    def make(problem, hp, *, dtype, device, seed):
        trainer = make_fake(problem, hp, dtype=dtype, device=device, seed=seed)

        def step(state, batch):
            if state["k"] == 0 and MARKS:
                Path(MARKS, f"{algorithm}.s{seed}.{os.getpid()}").touch()
            time.sleep(STEP_S)
            fake.events.clear()  # the fake logs every step; nobody reads the log here
            return trainer.step(state, batch)

        return trainer._replace(step=step)

    return make


def _get(algorithm: str, backend: str, real=implementations.get):
    return _make(algorithm) if backend == "fake" else real(algorithm, backend)


def _why_not(hp, backend, problem=None, device="cpu", real=implementations.why_not):
    return [] if backend == "fake" else real(hp, backend, problem, device)


implementations.BACKENDS = (*implementations.BACKENDS, "fake")
implementations.get = _get
implementations.why_not = _why_not
grids.SUITES["faulty"] = tiny_suite("faulty", eval_every=1000)  # --steps sets the length

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:]))
