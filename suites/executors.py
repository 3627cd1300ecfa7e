"""Where cells run: the executor protocol, the two executors msabench brings, the
per-process thread settings, and ``execute``, which hands a run's cells to an executor.

``execute`` needs only ``Executor`` below (``submit`` returning a
``concurrent.futures.Future``, and ``shutdown``), so any ``concurrent.futures`` executor
fits, and so would an adapter over another scheduler (a Dask client's). It runs each cell
with ``training.run_cell``, which writes the cell's part itself: results travel as files,
wherever the cell ran, and the returned frames are a convenience.
"""

from __future__ import annotations

import concurrent.futures as cf
import importlib.util
import multiprocessing
import os
import sys
from collections.abc import Callable
from typing import Any, Protocol, TextIO

import pandas as pd
from tqdm import tqdm

from suites import store, training
from suites.errors import StoreError
from suites.planning import Cell
from suites.store import Run


class Executor(Protocol):
    """What ``execute`` asks of where cells run.

    ``submit(fn, *args)`` schedules ``fn(*args)`` and returns a ``concurrent.futures.Future``
    (``execute`` waits on them with ``as_completed``); ``shutdown`` is called only on an
    executor ``execute`` made itself. An executor may say whether its tasks run in this
    process with an ``in_process`` attribute (see ``runs_in_process``): only then is a
    progress callback passed into the cell."""

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


def set_threads(threads: int) -> None:
    """Fix the intra-op thread count of this process (torch, and the OpenMP/BLAS pools
    of libraries imported later). On a busy 2-core machine torch's default of one thread
    per core made a 2 ms step take 200 ms, so the count is worth fixing and recording."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    if threads == 1 and "jax" not in sys.modules:
        # XLA reads its flags when its CPU client starts (the first jax computation), so
        # this holds in a fresh worker; its thread pool cannot be sized, only made serial
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false".strip()
    if importlib.util.find_spec("torch") is not None:
        import torch

        torch.set_num_threads(threads)


def worker_threads(jobs: int) -> int:
    """Intra-op threads per worker when ``jobs`` workers share this machine's CPUs."""
    return max(1, (os.cpu_count() or 1) // jobs)


def process_executor(jobs: int, threads: int | None = None) -> cf.ProcessPoolExecutor:
    """A pool of ``jobs`` spawned workers (fork is unsafe once torch/JAX started threads),
    each with ``threads`` intra-op threads (default: the CPUs shared out, at least 1)."""
    threads = threads or worker_threads(jobs)
    ctx = multiprocessing.get_context("spawn")
    return cf.ProcessPoolExecutor(jobs, mp_context=ctx, initializer=set_threads, initargs=(threads,))


def auto_jobs(device: str, n_cells: int) -> int:
    """``--jobs auto``: one cell per CPU core on the CPU (each on its own threads); one at a
    time on a GPU, whose timings would not be comparable if cells shared it."""
    if device == "cuda":
        return 1
    return max(1, min(os.cpu_count() or 1, n_cells))


def execute(
    run: Run,
    cells: list[Cell],
    *,
    jobs: int = 1,
    threads: int | None = None,
    executor: Executor | None = None,
    concurrency: int | None = None,
    show_progress: bool = True,
    log: TextIO | None = None,
) -> dict[str, pd.DataFrame]:
    """Run the cells that have no part file yet, and those whose part says ``skipped``
    (what they lacked, a data set or a GPU, may be here now); return their rows by
    ``cell_id``.

    ``executor`` defaults to ``SerialExecutor`` (``jobs == 1``) or a process pool whose
    workers use ``threads`` intra-op threads each (see ``process_executor``);
    ``concurrency`` (recorded on every row) defaults to ``min(jobs, cells to run)``.
    A failing cell becomes an ``error`` row; the other cells go on. A ``StoreError`` (a
    part file cannot be written: full or read-only disk) stops the run: the cells that
    finished keep their parts.
    """
    log = log or sys.stderr
    todo = [c for c in cells if run.root is None or store.to_run(run, c)]
    if concurrency is None:
        concurrency = max(1, min(jobs, len(todo)))
    own = executor is None
    if executor is None:
        executor = SerialExecutor() if jobs <= 1 else process_executor(jobs, threads)
    in_process = runs_in_process(executor)
    bar = tqdm(total=sum(c.steps for c in todo), file=log, unit="step", disable=not show_progress, dynamic_ncols=True)
    reported: dict[str, int] = {}
    results: dict[str, pd.DataFrame] = {}

    def progress_for(cell: Cell) -> Callable[[int], None] | None:
        if not in_process:
            return None  # a bound tqdm method cannot cross a process boundary

        def progress(n: int) -> None:
            reported[cell.cell_id] = reported.get(cell.cell_id, 0) + n
            bar.update(n)

        return progress

    def finish(future: cf.Future, cell: Cell) -> None:
        try:
            df = future.result()
        except StoreError:
            raise  # the run's files cannot be written: every further cell would fail alike
        except Exception as e:  # noqa: BLE001 - the worker died
            df = training.error_frame(run, cell, concurrency, e)
        results[cell.cell_id] = df
        if not in_process:
            bar.set_description_str(f"{len(results)}/{len(todo)} cells")
        bar.update(cell.steps - reported.get(cell.cell_id, 0))
        last = df.iloc[-1]
        if last["status"] != "ok":
            tqdm.write(f"{cell.cell_id}: {last['status']}: {last['reason']}", file=log)

    try:
        pending: dict[cf.Future, Cell] = {}
        for cell in todo:
            if in_process:
                bar.set_description_str(cell.cell_id)
            future = executor.submit(training.run_cell, cell, run, concurrency, progress_for(cell))
            if future.done():
                finish(future, cell)
            else:
                pending[future] = cell
        for future in cf.as_completed(pending):
            finish(future, pending[future])
    finally:
        bar.close()
        if own:
            executor.shutdown(wait=True, cancel_futures=True)
    return results
