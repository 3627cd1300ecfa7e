"""Cells on a Dask distributed cluster: ``--executor dask`` (and ``--scheduler``).

``open_cluster`` connects (or starts a ``LocalCluster`` of ``jobs`` worker processes on this
machine) and yields a ``DaskExecutor``, which fits ``executors.Executor``: ``execute`` hands
it cells exactly as it hands them to the process pool, and never sees Dask. What the
executor adds on the way to a worker:

- every task is ``pure=False`` (a cell submitted twice runs twice; Dask would otherwise
  reuse a result by its arguments' hash);
- a cell on ``cuda`` asks for the worker resource ``GPU=1``, so a worker started with
  ``--resources GPU=1`` runs one such cell at a time, and cells never share a GPU;
- each cell's ``executors.Task`` carries its intra-op threads and the data directory,
  applied at its start, so a worker needs no setup of its own and a restarted one gets it;
- a cell whose worker died is run again elsewhere by the scheduler (up to its
  ``distributed.scheduler.allowed-failures``, 3 by default); after that the future's
  ``KilledWorker``, or a lost connection, reaches ``execute`` as ``errors.CellLost``.

Dask is imported only here, and only when a run asks for it: the default executor needs
no server and no Dask.
"""

from __future__ import annotations

import concurrent.futures as cf
import importlib.util
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from suites import PROG
from suites.errors import CellLost, RunError
from suites.planning import Cell

#: seconds to wait for ``--scheduler`` to answer before the run is refused.
CONNECT_TIMEOUT_S = 10.0
#: reruns of a task that raised (not of one whose worker died: the scheduler reschedules
#: those by itself). ``run_cell`` turns a failing cell into an ``error`` row, so what raises
#: is around the cell: unpickling it on a worker, writing its part.
TASK_RETRIES = 2


def _lost_errors() -> tuple[type[BaseException], ...]:
    """The exceptions of a future whose task never returned: its workers kept dying
    (``KilledWorker``), the connection went, or the cluster dropped it (cancelled)."""
    from distributed import KilledWorker
    from distributed.comm.core import CommClosedError

    return (KilledWorker, CommClosedError, cf.CancelledError)


def _settle(future: cf.Future, dask_future: Any, lost: tuple[type[BaseException], ...]) -> None:
    """Copy a finished Dask future's outcome onto ``future``, a worker lost as ``CellLost``."""
    try:
        result = dask_future.result()
    except lost as e:
        future.set_exception(CellLost(f"the Dask worker running this cell was lost ({type(e).__name__}: {e})"))
    except BaseException as e:  # noqa: BLE001 - the task's own exception, passed on as is
        future.set_exception(e)
    else:
        future.set_result(result)


class DaskExecutor:
    """An ``executors.Executor`` over a ``distributed.Client``; its futures are
    ``concurrent.futures.Future`` objects, so ``execute`` waits on them like any other."""

    in_process = False  # progress is counted by the driver as cells finish

    def __init__(self, client: Any, retries: int = TASK_RETRIES):
        self.client = client
        self.retries = retries
        self._lost = _lost_errors()
        #: the Dask futures not settled yet: a settled one is dropped, so that the cluster
        #: can free its result (a long run's rows would otherwise stay in workers' memory)
        self._pending: set[Any] = set()

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> cf.Future:
        cells = [a if isinstance(a, Cell) else getattr(a, "cell", None) for a in args]  # a Task holds its cell
        on_gpu = any(isinstance(c, Cell) and c.device == "cuda" for c in cells)
        dask_future = self.client.submit(
            fn,
            *args,
            pure=False,
            retries=self.retries,
            resources={"GPU": 1} if on_gpu else None,
        )
        future: cf.Future = cf.Future()
        future.set_running_or_notify_cancel()
        self._pending.add(dask_future)

        def settle(finished: Any) -> None:
            _settle(future, finished, self._lost)
            self._pending.discard(finished)

        dask_future.add_done_callback(settle)
        return future

    def terminate(self) -> None:
        """Ctrl-C or SIGTERM of the driver: cancel every cell not finished. A cell already
        running on a worker may finish there, but its result is dropped (the driver is the
        only writer), so it runs again on resume."""
        self.shutdown(cancel_futures=True)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Cancel what has not finished (``cancel_futures``); the cluster itself is closed
        by ``open_cluster``."""
        if cancel_futures:
            self.client.cancel([f for f in list(self._pending) if not f.done()])
        self._pending.clear()


def cluster_threads(client: Any) -> int:
    """How many cells an attached cluster runs at once: its workers' threads, summed."""
    workers = client.scheduler_info().get("workers", {})
    return max(1, sum(w.get("nthreads", 1) for w in workers.values()))


def _import_distributed() -> Any:
    if importlib.util.find_spec("distributed") is None:
        raise RunError("--executor dask needs the packages dask and distributed (pip install dask distributed)")
    import distributed

    return distributed


def _dashboard_line(client: Any) -> str:
    try:
        link = client.dashboard_link
    except Exception:  # noqa: BLE001 - a scheduler without a dashboard
        return f"{PROG}: Dask dashboard: not served by this scheduler"
    if importlib.util.find_spec("bokeh") is None:
        link += " (its pages need the package bokeh on the scheduler)"
    return f"{PROG}: Dask dashboard: {link}"


@contextmanager
def open_cluster(
    scheduler: str | None,
    *,
    jobs: int,
    gpu: bool = False,
    log: TextIO | None = None,
) -> Iterator[DaskExecutor]:
    """A ``DaskExecutor`` on the cluster at ``scheduler`` (``tcp://HOST:PORT``), or, with
    ``scheduler`` None, on a ``LocalCluster`` of ``jobs`` single-threaded worker processes
    (each with the resource ``GPU=1`` when ``gpu``), closed with its workers on exit. The
    dashboard's address is one line on ``log``.

    Raises ``RunError`` before yielding when Dask is not installed, the scheduler does
    not answer within ``CONNECT_TIMEOUT_S``, has no workers, or none with a GPU for cells
    on ``cuda`` (``gpu``): nothing has been written then."""
    log = log or sys.stderr
    distributed = _import_distributed()
    if scheduler is None:
        cluster = distributed.LocalCluster(
            n_workers=jobs,
            threads_per_worker=1,
            processes=True,
            resources={"GPU": 1} if gpu else None,
            # the workers' and nannies' warnings (a task cancelled by Ctrl-C, a slow exit)
            # would bury the runner's own lines; the dashboard keeps the workers' events
            silence_logs=logging.ERROR,
        )
        with cluster, distributed.Client(cluster) as client:
            print(_dashboard_line(client), file=log)
            yield from _until_done(DaskExecutor(client))
        return
    try:
        client = distributed.Client(scheduler, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError, TypeError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise RunError(f"cannot reach the Dask scheduler at {scheduler} ({reason})") from None
    with client:
        _check_workers(client, scheduler, gpu)
        print(_dashboard_line(client), file=log)
        yield from _until_done(DaskExecutor(client))


def _until_done(executor: DaskExecutor) -> Iterator[DaskExecutor]:
    """Yield ``executor``; however the run ends (Ctrl-C, an error), cancel the cells it
    left queued, so that a shared cluster does not go on with a run nobody waits for."""
    try:
        yield executor
    finally:
        executor.shutdown(cancel_futures=True)


def _check_workers(client: Any, scheduler: str, gpu: bool) -> None:
    """Refuse a cluster on which the cells would wait forever: one without workers, or,
    for cells on ``cuda``, one where no worker offers the resource ``GPU``."""
    workers = client.scheduler_info().get("workers", {})
    if not workers:
        raise RunError(f"the Dask scheduler at {scheduler} has no workers (start them with `dask worker {scheduler}`)")
    if gpu and not any(w.get("resources", {}).get("GPU", 0) >= 1 for w in workers.values()):
        raise RunError(
            f"no worker of the Dask scheduler at {scheduler} offers a GPU, which the cells on cuda need "
            "(start one worker per GPU with --resources GPU=1; see README, Running on a cluster)"
        )
