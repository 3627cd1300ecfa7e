"""The runner's errors, in a module of their own so that every part of the runner
(and any front end: the CLI, a notebook, a future Dask driver) can raise and catch them
without importing the others."""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from suites.store import Run


class RunError(ValueError):
    """Bad input to a run (unknown names, a missing run to resume, a run in use); one-line
    message.

    ``run`` is None while nothing is written yet. ``runner.start``/``runner.resume`` set it
    when the error stopped a run that had started: its finished cells are kept, and it can
    be resumed once the cause is fixed."""

    run: Run | None = None


class StoreError(RunError):
    """A run's files could not be written or read (read-only or full disk, ``--out`` below a
    file, ``/proc``); one-line message naming the path and the system's reason."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM stopped a started run; ``run`` is that run (its finished
    cells are kept) and ``signum`` the signal.

    A ``KeyboardInterrupt``, so that callers who catch that (a notebook) see no difference;
    the CLI uses ``run`` to print the command that finishes it, and exits 128 + ``signum``
    (130 for Ctrl-C, 143 for SIGTERM), as a shell reports a process that signal ended."""

    def __init__(self, run: Run, signum: int = signal.SIGINT):
        super().__init__(f"run {run.run_id} interrupted by {signal.Signals(signum).name}")
        self.run = run
        self.signum = int(signum)


class CellLost(RuntimeError):
    """The process (or cluster worker) running a cell died, or its connection was lost,
    before the cell returned. Lost is not failed: the cell gets no part, so ``--resume``
    runs it again. Executors raise it from a cell's future (a process pool's
    ``BrokenProcessPool``, Dask's ``KilledWorker`` after its retries) and ``execute``
    treats it alike whatever the executor."""


class CellsLost(RunError):
    """Some cells of a run were lost (``CellLost``): they have no part, the other cells
    finished, and ``--resume`` runs the lost ones again. Raised by ``execute`` once every
    other cell is done; ``cells`` are their ids."""

    def __init__(self, cells: list[str]):
        n = len(cells)
        super().__init__(f"{n} cell{'s' if n != 1 else ''} lost (worker died; first: {cells[0]})")
        self.cells = cells
