"""The runner's front: the entry points a front end calls to run a suite, and the map of
the runner's parts.

    suites/planning.py    Cell; plan (a suite's cells, budgets, bounds); resolve_device; check_data
    suites/store.py       Run; the run folder, run.json, the lock, parts, the resume rule, the run file
    suites/training.py    run_cell: one cell's timed loop, evaluation and rows (the timing contract)
    suites/executors.py   the Executor protocol, SerialExecutor, the process pool, threads; execute
    suites/dask_cluster.py  DaskExecutor, open_cluster: cells on a Dask cluster (``executor="dask"``)
    suites/provenance.py  environment(): time, git, versions, device, threads, the problems' facts
    suites/stopping.py    signals: workers ignore Ctrl-C and die with the driver; SIGTERM as Ctrl-C
    suites/errors.py      RunError, StoreError, RunInterrupted, CellLost, CellsLost

``start`` (a new run from a suite and options) and ``resume`` (an interrupted run) do all
that ``msabench run`` does: every check before anything is written (output folder, device,
plan, data sets), the thread count, the options record, executing the cells under the
run's lock and writing the run file, whose path they return. ``suites/__main__.py`` only
parses arguments, calls them, and turns their errors into exit statuses, so another front
end (a notebook, a driver on a cluster) calls the same two functions. ``run_suite`` starts
a run of cells planned by the caller, with the caller's options record.

Errors: ``RunError`` (``StoreError`` for the run's files) with ``run`` unset means nothing
was written; with ``run`` set, the run had started and can be resumed (``CellsLost``: some
cells' workers died, the others finished). Ctrl-C or SIGTERM during the cells is
``RunInterrupted``, a ``KeyboardInterrupt`` naming the run and the signal: the workers are
ended within seconds, and no interrupted cell gets a part.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from suites import PROG, dask_cluster, datasets, determinism, executors, grids, planning, stopping, store
from suites.errors import CellsLost, RunError, RunInterrupted, StoreError
from suites.executors import Executor
from suites.planning import Cell
from suites.store import Run

__all__ = ["CellsLost", "RunError", "RunInterrupted", "StoreError", "resume", "run_suite", "start"]


def start(
    suite: str | grids.Suite,
    *,
    out: str | os.PathLike = "results",
    backends: Iterable[str] | None = None,
    device: str = "auto",
    dtype: str | None = None,
    seeds: int | Iterable[int] | None = None,
    steps_scale: float | None = None,
    steps: int | None = None,
    epochs: float | None = None,
    problems_filter: Iterable[str] | None = None,
    algorithms_filter: Iterable[str] | None = None,
    data_dir: str | os.PathLike | None = None,
    jobs: int = 1,
    threads: int | None = None,
    executor: Executor | str | None = None,
    scheduler: str | None = None,
    fresh_process: bool = False,
    checkpoint_every: int | None = None,
    command: str | None = None,
    show_progress: bool = True,
    log: TextIO | None = None,
    deterministic: bool = False,
) -> Path:
    """Check everything, then run the suite as a new run under ``out``; return its run file.

    ``suite`` is a suite or a registered suite's name; ``seeds`` a count (seeds 0..n-1) or
    the seeds; ``dtype`` and ``steps_scale`` default to float32 and 1; the budget and filter
    options are ``planning.plan``'s. ``data_dir`` defaults to ``$MSABENCH_DATA_DIR`` (or
    the cache folder) and is exported, so worker processes read the same data. ``jobs`` is
    the number of cells at once (0: ``executors.auto_jobs``); ``threads`` the intra-op
    threads per cell, set in this process too when cells run here (None: this process's
    are left as they are). ``fresh_process`` runs every cell in a new worker process
    (``executors.LocalPool``). Cells checkpoint at their evaluation points and, with
    ``checkpoint_every``, every that many steps (0: never; ``suites.checkpoints``).
    ``command`` is recorded in the options, as the CLI's command line. ``deterministic``
    runs every cell under ``suites.determinism``'s settings (set here, before any worker
    starts, so that the workers inherit them).

    ``executor`` is an ``Executor`` of the caller's, or ``"local"`` (None: the serial
    executor or a process pool of ``jobs``), or ``"dask"``: a ``LocalCluster`` of ``jobs``
    workers, or with ``scheduler`` (``tcp://HOST:PORT``) the cluster it serves, whose
    worker threads then set ``jobs``; the scheduler is reached before anything is written.

    Raises ``RunError`` before anything is written for bad input; warnings (an unreadable
    tune file, absent data sets, whose cells are skipped) go to ``log``.
    """
    if isinstance(suite, str):
        try:
            suite = grids.get_suite(suite)
        except KeyError as e:
            raise RunError(e.args[0]) from None
    out = Path(out)
    store.check_writable(out, "--out")
    data_root = datasets.use_data_dir(data_dir)
    device = planning.resolve_device(device)
    cells = planning.plan(
        suite,
        backends=backends,
        seeds=range(seeds) if isinstance(seeds, int) else seeds,  # counted, not built, before the bound
        steps_scale=steps_scale or 1.0,
        steps=steps,
        epochs=epochs,
        dtype=dtype or "float32",
        device=device,
        problems_filter=problems_filter,
        algorithms_filter=algorithms_filter,
        deterministic=deterministic,
    )
    if deterministic:
        determinism.request()
    _check_data(cells, log)
    jobs = jobs or executors.auto_jobs(device, len(cells))
    with _executor_for(executor, scheduler, jobs, threads, cells, log) as (opened, jobs, cell_threads):
        # Everything is valid and the cluster (if any) answers: from here on files are written.
        _fix_threads(jobs, threads)  # before the run starts, so its provenance records them
        options = {
            "suite": suite.name,
            "backends": sorted({c.backend for c in cells}),
            "device": device,
            "dtype": dtype or "float32",
            "seeds": sorted({c.seed for c in cells}),
            "steps_scale": steps_scale or 1.0,
            "steps": steps,
            "epochs": epochs,
            "data_dir": str(data_root),
            "problems": None if problems_filter is None else list(problems_filter),
            "algorithms": None if algorithms_filter is None else list(algorithms_filter),
            "jobs": jobs,
            "threads": threads,  # per cell
            "fresh_process": fresh_process,
            "checkpoint_every": checkpoint_every,
            "command": command,
            "executor": "dask" if isinstance(opened, dask_cluster.DaskExecutor) else "local",
            "scheduler": scheduler,
            "deterministic": deterministic,
        }
        return run_suite(
            suite,
            cells,
            out=out,
            options=options,
            jobs=jobs,
            threads=cell_threads,
            executor=opened,
            fresh_process=fresh_process,
            checkpoint_every=checkpoint_every,
            show_progress=show_progress,
            log=log,
        )


def run_suite(
    suite: grids.Suite,
    cells: list[Cell],
    *,
    out: str | os.PathLike,
    options: dict[str, Any],
    jobs: int = 1,
    threads: int | None = None,
    executor: Executor | None = None,
    fresh_process: bool = False,
    checkpoint_every: int | None = None,
    show_progress: bool = True,
    log: TextIO | None = None,
) -> Path:
    """Start a run of ``cells`` with ``options`` as its options record, execute them and
    write the run file, holding the run's lock throughout; return the run file's path.
    ``start`` without its checks: the caller planned the cells."""
    with store.started_run(Path(out), suite.name, cells, options) as (run, doc):
        how = {
            "jobs": jobs,
            "threads": threads,
            "executor": executor,
            "fresh_process": fresh_process,
            "checkpoint_every": checkpoint_every,
        }
        return _execute(run, cells, doc, how, show_progress, log)


def resume(
    out: str | os.PathLike,
    suite: str,
    run_id: str,
    *,
    data_dir: str | os.PathLike | None = None,
    jobs: int = 1,
    threads: int | None = None,
    executor: Executor | str | None = None,
    scheduler: str | None = None,
    fresh_process: bool = False,
    retry_errors: bool = False,
    checkpoint_every: int | None = None,
    show_progress: bool = True,
    log: TextIO | None = None,
) -> Path:
    """Finish an interrupted run: run the cells of its ``run.json`` that ``store.to_run``
    picks (no part yet, or a skipped one; with ``retry_errors`` also those that failed
    with an ``error``) and write the run file; return its path. A cell that left a
    checkpoint continues from it (``suites.checkpoints``), its rows so far kept.

    The run is locked as soon as it is found (``RunError`` naming the holder when another
    process has it), then checked like a new one (data sets) before ``run.json`` records
    the resumption. ``data_dir`` defaults to the one the run recorded; ``jobs`` and
    ``threads``, ``executor``, ``scheduler``, ``fresh_process`` and ``checkpoint_every``
    are ``start``'s, and may differ from the run's first start (the cells' own options are fixed in ``run.json``)."""
    run, cells, _ = store.load_run(Path(out), suite, run_id)
    with store.hold(run):
        doc = store.read_plan(run)  # as it is under the lock
        datasets.use_data_dir(data_dir or doc["options"].get("data_dir"))
        _check_data(cells, log)
        if any(c.deterministic for c in cells):
            determinism.request()  # before the workers start, as a new run does
        device = cells[0].device if cells else "cpu"
        jobs = jobs or executors.auto_jobs(device, len(cells))
        with _executor_for(executor, scheduler, jobs, threads, cells, log) as (opened, jobs, cell_threads):
            _fix_threads(jobs, threads)
            store.mark_resumed(run, doc)
            how = {
                "jobs": jobs,
                "threads": cell_threads,
                "executor": opened,
                "fresh_process": fresh_process,
                "retry_errors": retry_errors,
                "checkpoint_every": checkpoint_every,
            }
            return _execute(run, cells, doc, how, show_progress, log)


def _check_data(cells: list[Cell], log: TextIO | None) -> None:
    """``planning.check_data`` (a damaged data set is a ``RunError``), and the warnings a
    run starts with: an unreadable tune file, and each absent data set."""
    log = log or sys.stderr
    if grids.TUNED_WARNING:
        print(f"{PROG}: warning: {grids.TUNED_WARNING}", file=log)
    for name in planning.check_data(cells):
        print(f"{PROG}: data set {name!r} not found (its cells are skipped; see `{PROG} data`)", file=log)


@contextmanager
def _executor_for(
    executor: Executor | str | None,
    scheduler: str | None,
    jobs: int,
    threads: int | None,
    cells: list[Cell],
    log: TextIO | None,
) -> Iterator[tuple[Executor | None, int, int | None]]:
    """The executor ``start``/``resume`` were asked for, open for the run, the cells at
    once it gives (an attached cluster's worker threads; else ``jobs``) and the intra-op
    threads every cell's ``Task`` carries (``threads``; on a LocalCluster, None becomes the
    CPUs shared out). An executor object
    or ``"local"``/None is passed through (None lets ``execute`` pick serial or a pool);
    ``"dask"`` opens ``dask_cluster.open_cluster``, whose ``RunError`` (no Dask, no answer
    from the scheduler) comes before the run writes anything."""
    if isinstance(executor, str) and executor not in ("local", "dask"):
        raise RunError(f"unknown executor {executor!r} (known: local, dask)")
    if executor != "dask":
        if scheduler is not None:
            raise RunError("--scheduler needs --executor dask")
        yield (None if executor == "local" else executor), jobs, threads
        return
    # the workers of a LocalCluster share this machine's CPUs, as a local pool's do; an
    # attached cluster's workers keep their own threads unless the run names a count
    if threads is None and scheduler is None:
        threads = executors.worker_threads(jobs)
    gpu = any(c.device == "cuda" for c in cells)
    with dask_cluster.open_cluster(scheduler, jobs=jobs, gpu=gpu, log=log) as dask_executor:
        cells_at_once = jobs if scheduler is None else dask_cluster.cluster_threads(dask_executor.client)
        yield dask_executor, cells_at_once, threads


def _fix_threads(jobs: int, threads: int | None) -> None:
    """Cells that run in this process run on this process's threads: set them. (Workers of
    a pool get theirs in ``executors.process_executor``.)"""
    if jobs == 1 and threads is not None:
        executors.set_threads(threads)


def _execute(
    run: Run,
    cells: list[Cell],
    doc: dict[str, Any],
    how: dict[str, Any],
    show_progress: bool,
    log: TextIO | None,
) -> Path:
    """Execute the run's cells (``how``: ``executors.execute``'s options) and write its run
    file; an error, Ctrl-C or SIGTERM from here on is tagged with the run, which has
    started and keeps its finished cells."""
    try:
        with stopping.stop_on_signals():
            executors.execute(run, cells, show_progress=show_progress, log=log, **how)
            return store.write_run_file(run, cells, doc)
    except RunError as e:
        e.run = run
        raise
    except KeyboardInterrupt as e:  # stopping.Signalled carries the signal; a plain one is Ctrl-C
        raise RunInterrupted(run, getattr(e, "signum", signal.SIGINT)) from e
