"""Where cells run: the executor protocol, the two executors msabench brings, the
per-cell worker setup, and ``execute``, which hands a run's cells to an executor.

``execute`` needs only ``Executor`` below (``submit`` returning a
``concurrent.futures.Future``, and ``shutdown``), so any ``concurrent.futures`` executor
fits, and so does an adapter over another scheduler (a Dask client's). Each cell travels
as a ``Task`` (the cell, the run's identity, and the worker setup: threads, data
directory) to ``run_task``, which returns a ``CellResult`` (rows and traceback) and writes
nothing. ``execute`` is the one writer: it writes each part as its result arrives, so no
file system needs to be shared between the driver and where cells run.

Outcomes, whatever the executor: a result is written as the cell's part (``ok``,
``diverged``, ``skipped`` or ``error`` rows); a future that raises ``errors.CellLost`` (a
worker died) leaves the cell without a part, for ``--resume``, and the run ends with
``errors.CellsLost`` once the other cells are done; any other exception is the cell's
``error`` part. Ctrl-C or SIGTERM stops the run at once (``stopping``): cells not yet
started are never started, running ones are ended (``terminate``), and results that
arrive after that are dropped, so an interruption never becomes an ``error`` part.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import dataclasses
import multiprocessing
import os
import sys
import threading
import traceback
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

import pandas as pd
from tqdm import tqdm

from suites import checkpoints, datasets, stopping, store, training
from suites.errors import CellLost, CellsLost, StoreError
from suites.planning import Cell
from suites.store import Run

#: seconds to wait for a killed worker to be reaped before giving up on it.
KILL_JOIN_S = 5.0


class Executor(Protocol):
    """What ``execute`` asks of where cells run.

    ``submit(fn, *args)`` schedules ``fn(*args)`` and returns a ``concurrent.futures.Future``
    (``execute`` waits on them with ``concurrent.futures.wait``); a future whose worker died
    raises ``errors.CellLost``. ``shutdown`` is called only on an executor ``execute`` made
    itself. Optional attributes, read with ``getattr``:

    - ``in_process``: whether tasks run in this process (see ``runs_in_process``); only then
      is a progress callback passed into the cell;
    - ``max_in_flight``: how many tasks ``execute`` keeps submitted at once (default: all).
      A pool that runs tasks in submission order wants its worker count here, so that a
      stop finds no queued cell and a broken pool loses only the cells it was running;
    - ``terminate()``: on Ctrl-C or SIGTERM, end the running tasks now, without waiting
      for them (``execute`` cancels the pending futures itself in any case).
    """

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> cf.Future: ...

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None: ...


def runs_in_process(executor: Executor) -> bool:
    """Whether ``executor``'s tasks run in this process: its ``in_process`` attribute when it
    has one; otherwise every executor but a process pool is taken to (a thread pool is)."""
    return getattr(executor, "in_process", not isinstance(executor, cf.ProcessPoolExecutor))


class SerialExecutor(cf.Executor):
    """An ``Executor`` that runs each task in the calling thread at ``submit``: cells run
    one at a time, in order, with the progress bar updated from inside the cell."""

    in_process = True

    def submit(self, fn, /, *args, **kwargs):
        future: cf.Future = cf.Future()
        if not future.set_running_or_notify_cancel():
            return future
        try:
            result = fn(*args, **kwargs)
        except BaseException as e:
            future.set_exception(e)
            if not isinstance(e, Exception):
                raise  # Ctrl-C stops the run; finished cells keep their part files
        else:
            future.set_result(result)
        return future


# ---------------------------------------------------------------------------------------
# The task: what travels to a worker, and what comes back
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """One cell and all its worker needs to run it, whatever process or machine that is:
    the run's identity (``run.root`` is None: a worker never writes), the concurrency
    recorded on its rows, and the setup applied at the cell's start (``prepare``):
    intra-op threads (None: as the worker has them) and the data directory (None: the
    worker's own). ``checkpoint`` names the cell's checkpoint file, the one file a worker
    writes (it must see the run's folder for that: on a cluster, a shared file system;
    a worker that cannot write it trains on without checkpoints)."""

    cell: Cell
    run: Run
    concurrency: int = 1
    threads: int | None = None
    data_dir: str | None = None
    checkpoint: checkpoints.Policy = checkpoints.NEVER


@dataclass(frozen=True)
class CellResult:
    """What a worker returns for a cell: its rows, and its traceback when it failed with one."""

    rows: pd.DataFrame
    traceback: str | None = None


def prepare(threads: int | None, data_dir: str | None) -> None:
    """A task's worker setup, applied at the start of every cell, and idempotent, so that it
    holds whichever worker runs the cell, fresh or not: the thread count (``set_threads``)
    and the data directory (``$MSABENCH_DATA_DIR``, which ``datasets`` reads)."""
    if data_dir is not None:
        os.environ[datasets.ENV_VAR] = data_dir
    if threads is not None:
        set_threads(threads)


def run_task(task: Task, progress: Callable[[int], Any] | None = None) -> CellResult:
    """Run one cell where this is called (in the driver, a pool worker or a cluster worker):
    apply the task's setup, train, return the rows. Writes nothing."""
    prepare(task.threads, task.data_dir)
    rows, tb = training.train_cell(task.cell, task.run, task.concurrency, progress, task.checkpoint)
    return CellResult(rows, tb)


def set_threads(threads: int) -> None:
    """Fix the intra-op thread count of this process (torch, and the OpenMP/BLAS pools
    of libraries imported later). On a busy 2-core machine torch's default of one thread
    per core made a 2 ms step take 200 ms, so the count is worth fixing and recording.
    Idempotent: called again with the same count, it changes nothing."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    flag = "--xla_cpu_multi_thread_eigen=false"
    flags = os.environ.get("XLA_FLAGS", "")
    if threads == 1 and "jax" not in sys.modules and flag not in flags.split():
        # XLA reads its flags when its CPU client starts (the first jax computation), so
        # this holds in a fresh worker; its thread pool cannot be sized, only made serial
        os.environ["XLA_FLAGS"] = f"{flags} {flag}".strip()
    if "torch" in sys.modules:
        # torch not imported yet reads OMP_NUM_THREADS when it is; importing it here would
        # cost every worker seconds, cells that never use torch included
        torch = sys.modules["torch"]
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def worker_threads(jobs: int) -> int:
    """Intra-op threads per worker when ``jobs`` workers share this machine's CPUs."""
    return max(1, (os.cpu_count() or 1) // jobs)


# ---------------------------------------------------------------------------------------
# The local process pool
# ---------------------------------------------------------------------------------------


def _init_pool_worker(parent_pid: int, threads: int) -> None:
    """A pool worker's initializer: signals and lifetime (``stopping.init_worker``), then
    the default thread count (each task may set its own)."""
    stopping.init_worker(parent_pid)
    set_threads(threads)


class LocalPool:
    """The local process pool: ``jobs`` spawned workers (fork is unsafe once torch/JAX
    started threads), each with ``threads`` intra-op threads unless a task says otherwise.

    Workers ignore Ctrl-C and die with this process (``stopping``). A worker that dies
    (SIGKILL, the OOM killer) breaks a ``ProcessPoolExecutor`` and fails every task it was
    running with ``BrokenProcessPool``: here those futures raise ``CellLost`` instead, and
    the next ``submit`` starts a fresh pool, so the cells not yet started still run. With
    ``fresh_process`` every cell gets a new worker process (``max_tasks_per_child=1``):
    JAX's device preallocation, caches and the peak memory of one cell then never carry
    into the next, at the cost of a process start (about 2 s) per cell.
    """

    in_process = False

    def __init__(self, jobs: int, threads: int | None = None, fresh_process: bool = False):
        self.jobs = jobs
        self.max_in_flight = jobs
        self.threads = threads or worker_threads(jobs)
        self.fresh_process = fresh_process
        self._lock = threading.Lock()
        self._pool: cf.ProcessPoolExecutor | None = None
        self._broken = False  # set by a future's callback (in the pool's thread) when a worker died
        self._retired: list[cf.ProcessPoolExecutor] = []  # broken pools, whose workers terminate() still reaps

    def _start_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._retired.append(self._pool)
        self._pool = cf.ProcessPoolExecutor(
            self.jobs,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_pool_worker,
            initargs=(os.getpid(), self.threads),
            max_tasks_per_child=1 if self.fresh_process else None,
        )
        self._broken = False

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> cf.Future:
        with self._lock:
            if self._pool is None or self._broken:
                self._start_pool()
            try:
                inner = self._pool.submit(fn, *args)
            except BrokenProcessPool:  # broke before its futures' callbacks said so
                self._start_pool()
                inner = self._pool.submit(fn, *args)
        outer: cf.Future = cf.Future()
        outer.set_running_or_notify_cancel()
        inner.add_done_callback(lambda done: self._relay(done, outer))
        return outer

    def _relay(self, inner: cf.Future, outer: cf.Future) -> None:
        """Pass ``inner``'s outcome to ``outer``, a dead worker's as ``CellLost``."""
        if inner.cancelled():
            outer.set_exception(CellLost("the pool was shut down before the cell started"))
            return
        e = inner.exception()
        if isinstance(e, BrokenProcessPool):
            self._broken = True
            outer.set_exception(CellLost(f"its worker process died ({e})"))
        elif e is not None:
            outer.set_exception(e)
        else:
            outer.set_result(inner.result())

    def terminate(self) -> None:
        """Kill every worker now (SIGKILL: a worker deadlocked in native code ignores
        anything gentler), reap each for at most ``KILL_JOIN_S``, and shut the pools down
        without waiting. The interpreter joins a pool's workers at exit; once killed, they
        are joined at once."""
        with self._lock:
            pools = [*self._retired, *([self._pool] if self._pool is not None else [])]
            self._retired, self._pool = [], None
        # ``_processes`` is private (Python 3.14 adds kill_workers()); it has held the
        # workers, by pid, since ProcessPoolExecutor was written
        workers = [w for pool in pools for w in list((getattr(pool, "_processes", None) or {}).values())]
        for w in workers:
            with contextlib.suppress(OSError, ValueError, AttributeError, AssertionError):  # already gone
                w.kill()
        for w in workers:
            with contextlib.suppress(OSError, ValueError, AttributeError, AssertionError):
                w.join(KILL_JOIN_S)
        for pool in pools:
            pool.shutdown(wait=False, cancel_futures=True)
        # Before Python 3.12, the interpreter's exit wakes each pool's manager thread through
        # a pipe that thread may be closing at that very moment, and prints "Exception
        # ignored ... Bad file descriptor" (seen once in CI after a Ctrl-C). With the workers
        # dead, the manager thread ends at once: joining it here closes the pipe before exit.
        for pool in pools:
            manager = getattr(pool, "_executor_manager_thread", None)  # private, as _processes
            if manager is not None and manager is not threading.current_thread():
                manager.join(KILL_JOIN_S)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            pools = [*self._retired, *([self._pool] if self._pool is not None else [])]
            self._retired, self._pool = [], None
        for pool in pools:
            pool.shutdown(wait=wait, cancel_futures=cancel_futures)


def process_executor(jobs: int, threads: int | None = None, fresh_process: bool = False) -> LocalPool:
    """The local process pool (``LocalPool``) of ``jobs`` workers, each with ``threads``
    intra-op threads (default: the CPUs shared out, at least 1)."""
    return LocalPool(jobs, threads, fresh_process)


def auto_jobs(device: str, n_cells: int) -> int:
    """``--jobs auto``: one cell per CPU core on the CPU (each on its own threads); one at a
    time on a GPU, whose timings would not be comparable if cells shared it."""
    if device == "cuda":
        return 1
    return max(1, min(os.cpu_count() or 1, n_cells))


# ---------------------------------------------------------------------------------------
# execute
# ---------------------------------------------------------------------------------------


def execute(
    run: Run,
    cells: list[Cell],
    *,
    jobs: int = 1,
    threads: int | None = None,
    executor: Executor | None = None,
    concurrency: int | None = None,
    fresh_process: bool = False,
    retry_errors: bool = False,
    checkpoint_every: int | None = None,
    show_progress: bool = True,
    log: TextIO | None = None,
) -> dict[str, pd.DataFrame]:
    """Run the cells that ``store.to_run`` picks (no part yet, a skipped one, and with
    ``retry_errors`` an ``error`` one), write each one's part as it finishes, and return
    their rows by ``cell_id``.

    ``executor`` defaults to ``SerialExecutor`` (``jobs == 1``) or the local process pool
    (``LocalPool``; also for one job with ``fresh_process``), whose workers use ``threads``
    intra-op threads each. ``threads`` and the data directory travel with every cell
    (``Task``). ``concurrency`` (recorded on every row) defaults to ``min(jobs, cells to
    run)``. Each cell checkpoints into the run's folder at its evaluation points and, with
    ``checkpoint_every``, every that many steps (0: never; no checkpoints for a run without
    a folder), and continues from its checkpoint when it has one; the driver deletes a
    cell's checkpoint once its part is written. A cell that raised becomes an ``error``
    row; the other cells go on. Cells whose
    worker died get no part, and once the others are done the run stops with
    ``CellsLost``. A ``StoreError`` (a part file cannot be written: full or read-only disk)
    stops the run: the cells that finished keep their parts. A ``KeyboardInterrupt``
    (Ctrl-C, or SIGTERM as the runner delivers it) ends the running cells, drops their
    results and goes on up.
    """
    log = log or sys.stderr
    todo = [c for c in cells if run.root is None or store.to_run(run, c, retry_errors)]
    if concurrency is None:
        concurrency = max(1, min(jobs, len(todo)))
    own = executor is None
    if executor is None:
        pool = jobs > 1 or fresh_process
        executor = process_executor(max(1, jobs), threads, fresh_process) if pool else SerialExecutor()
    in_process = runs_in_process(executor)
    window = getattr(executor, "max_in_flight", None) or max(1, len(todo))
    worker_run = dataclasses.replace(run, root=None)  # a worker never needs the run's folder
    data_dir = os.environ.get(datasets.ENV_VAR)  # resolved by runner.start/resume; None: the worker's own
    bar = tqdm(total=sum(c.steps for c in todo), file=log, unit="step", disable=not show_progress, dynamic_ncols=True)
    reported: dict[str, int] = {}
    results: dict[str, pd.DataFrame] = {}
    lost: list[str] = []

    def say(line: str) -> None:
        tqdm.write(line, file=log)

    def progress_for(cell: Cell) -> Callable[[int], None] | None:
        if not in_process:
            return None  # a bound tqdm method cannot cross a process boundary

        def progress(n: int) -> None:
            reported[cell.cell_id] = reported.get(cell.cell_id, 0) + n
            bar.update(n)

        return progress

    def finish(future: cf.Future, cell: Cell) -> None:
        try:
            result = future.result()
        except StoreError:
            raise  # the run's files cannot be written: every further cell would fail alike
        except (CellLost, BrokenProcessPool, cf.CancelledError) as e:
            lost.append(cell.cell_id)  # no part: --resume runs it again
            say(f"{cell.cell_id}: lost: {e}")
            return
        except Exception as e:  # noqa: BLE001 - the task failed outside the cell's own handling
            tb = "".join(traceback.format_exception(e))
            result = CellResult(training.error_frame(run, cell, concurrency, e), tb)
        if run.root is not None:
            store.write_part(run, cell, result.rows, result.traceback)
            checkpoints.remove(policy_for(cell).path)  # the part is final
        results[cell.cell_id] = result.rows
        if not in_process:
            bar.set_description_str(f"{len(results)}/{len(todo)} cells")
        bar.update(cell.steps - reported.get(cell.cell_id, 0))
        last = result.rows.iloc[-1]
        if last["status"] != "ok":
            say(f"{cell.cell_id}: {last['status']}: {last['reason']}")

    def policy_for(cell: Cell) -> checkpoints.Policy:
        if run.root is None or checkpoint_every == 0:
            return checkpoints.NEVER
        return checkpoints.Policy(str(run.checkpoint_path(cell)), checkpoint_every)

    def submit(cell: Cell) -> cf.Future:
        task = Task(cell, worker_run, concurrency, threads, data_dir, policy_for(cell))
        try:
            return executor.submit(run_task, task, progress_for(cell))
        except (CellLost, BrokenProcessPool) as e:  # a pool that cannot take tasks any more
            future: cf.Future = cf.Future()
            future.set_exception(e)
            return future

    queue = collections.deque(todo)
    pending: dict[cf.Future, Cell] = {}
    try:
        while queue or pending:
            while queue and len(pending) < window:
                cell = queue.popleft()
                if in_process:
                    bar.set_description_str(cell.cell_id)
                future = submit(cell)
                if future.done():
                    finish(future, cell)
                else:
                    pending[future] = cell
            if pending:
                done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for future in done:
                    finish(future, pending.pop(future))
    except BaseException as e:  # Ctrl-C, SIGTERM, a StoreError: nothing more runs
        _stop(executor, own, pending, queue, say if isinstance(e, KeyboardInterrupt) else None)
        raise
    finally:
        bar.close()
    if own:
        executor.shutdown(wait=True)
    if lost:
        raise CellsLost(lost)
    return results


def _stop(
    executor: Executor,
    own: bool,
    pending: dict[cf.Future, Cell],
    queue: collections.deque,
    say: Callable[[str], None] | None,
) -> None:
    """The run stops (Ctrl-C, SIGTERM, a part that cannot be written): start nothing more,
    end what runs, and hold further signals until that is done (a second Ctrl-C used to
    abandon the cleanup and leave the interpreter joining a deadlocked worker). The results
    of running cells are dropped: their cells have no part and run again on resume. ``say``
    (None: quietly) reports the stop."""
    with stopping.signals_held(say):
        if say is not None:
            say(f"stopping: {len(pending)} running cell(s) ended, {len(queue)} not started")
        queue.clear()
        for future in pending:
            future.cancel()
        terminate = getattr(executor, "terminate", None)
        if terminate is not None:
            terminate()
        elif own:
            executor.shutdown(wait=False, cancel_futures=True)
