"""Cells on a Dask cluster (``--executor dask``): the same rows as the local executor, a
worker killed inside a cell costs nothing but time, and a scheduler that does not answer
is refused before anything is written. Every cluster here is a real ``LocalCluster`` of
worker processes, closed by its context manager before the test ends."""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed")
psutil = pytest.importorskip("psutil")  # a dependency of distributed

import implementations
from suites import __main__ as cli
from suites import dask_cluster, datasets, grids, runner, schema
from suites.errors import CellLost
from suites.planning import Cell
from tests.dask_fake import FakeOnWorkers

REPO = Path(__file__).resolve().parents[1]

#: columns that measure the run rather than the numerics, or say where a cell ran: the
#: only ones allowed to differ between executors.
MEASURED_OR_PLACED = {"run_id", "time_s", "compile_s", "ms_per_step", "peak_rss_mib", "peak_gpu_mib", "host", "worker"}


def _msabench_run(out: Path, *extra: str) -> subprocess.Popen:
    # the smoke suite on torch: every algorithm of the smoke suite, on the backend whose
    # workers start fastest (the full suite takes minutes on two busy cores)
    argv = ["run", "smoke", "--backend", "torch", "--jobs", "2", "--quiet", "--out", str(out), *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "suites", *argv], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _finished(proc: subprocess.Popen, timeout: float = 240) -> tuple[Path, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    assert proc.returncode == 0, err.decode()[-3000:]
    return Path(out.decode().splitlines()[-1]), err.decode()


def test_smoke_suite_on_a_local_cluster_gives_the_local_rows(tmp_path):
    # both runs at once: they share nothing but the CPUs, and the test takes half the time
    on_dask = _msabench_run(tmp_path / "dask", "--executor", "dask")
    local = _msabench_run(tmp_path / "local")
    (dask_path, dask_err), (local_path, _) = _finished(on_dask), _finished(local)
    assert "Dask dashboard: http" in dask_err
    dask_rows, meta = schema.read_results(dask_path)
    local_rows, _ = schema.read_results(local_path)
    assert meta["options"]["executor"] == "dask" and meta["options"]["jobs"] == 2
    assert set(dask_rows.columns) == set(local_rows.columns)
    partial = [a for a, backends in implementations.PARTIAL_ALGORITHMS.items() if "torch" not in backends]
    finals = dask_rows.groupby("cell_id").tail(1)
    assert (finals.loc[~finals["algorithm"].isin(partial), "status"] == "ok").all()
    assert (finals.loc[finals["algorithm"].isin(partial), "status"] == "skipped").all()
    same = sorted(set(dask_rows.columns) - MEASURED_OR_PLACED)
    key = ["cell_id", "step"]
    a = dask_rows.sort_values(key).reset_index(drop=True)[same]
    b = local_rows.sort_values(key).reset_index(drop=True)[same]
    assert len(a) == len(b) and a["cell_id"].nunique() == len(grids.UNTUNED["smoke"].entries)
    assert a.loc[a["status"] == "ok", "train_loss"].notna().all()
    # exact equality: the same cells on the same threads give the same floats, wherever they ran
    for column in same:
        assert a[column].astype(str).tolist() == b[column].astype(str).tolist(), column


def test_a_worker_killed_inside_a_cell_costs_only_time(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv(datasets.ENV_VAR, str(datasets.data_dir()))  # start() exports it; undo that after
    marks = tmp_path / "marks"
    marks.mkdir()
    killed: list[tuple[str, int]] = []

    def kill_the_first_cell_to_start() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            for mark in marks.iterdir():
                algorithm, pid = mark.name.rsplit(".", 1)
                os.kill(int(pid), signal.SIGKILL)  # at its first of 7 slow steps: in the middle of the cell
                killed.append((algorithm, int(pid)))
                return
            time.sleep(0.02)

    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        distributed.Client(cluster) as client,
    ):
        client.register_plugin(FakeOnWorkers(str(marks), step_s=0.3))
        pids = set(client.run(os.getpid).values())
        killer = threading.Thread(target=kill_the_first_cell_to_start, daemon=True)
        killer.start()
        path = runner.start(
            "tiny", out=tmp_path / "out", executor=dask_cluster.DaskExecutor(client), jobs=2, show_progress=False
        )
        killer.join(timeout=5)
        pids |= set(client.run(os.getpid).values())  # the worker restarted in place of the killed one

    assert len(killed) == 1
    algorithm, pid = killed[0]
    rows, _ = schema.read_results(path)
    assert sorted(rows["label"].unique()) == ["adagrad", "adam", "sgd"]
    assert not rows.duplicated(["cell_id", "step"]).any()  # every cell exactly once
    assert (rows.groupby("cell_id")["step"].max() == 7).all() and (rows["status"] == "ok").all()
    parts = list((tmp_path / "out" / "tiny" / path.stem / "cells").glob("*.parquet"))
    assert len(parts) == 3
    started = [m.name for m in marks.iterdir() if m.name.startswith(f"{algorithm}.")]
    assert len(started) == 2 and f"{algorithm}.{pid}" in started  # killed there, then ran again elsewhere
    # the cluster's context closed every worker process, the restarted one too
    alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert alive == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_scheduler_that_does_not_answer_is_one_line_exit_2(tiny, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(dask_cluster, "CONNECT_TIMEOUT_S", 1.0)
    address = f"tcp://127.0.0.1:{_free_port()}"
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        cli.main(["run", "tiny", "--out", str(out), "--executor", "dask", "--scheduler", address])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"msabench: error: cannot reach the Dask scheduler at {address}")
    assert not out.exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--scheduler", "tcp://127.0.0.1:8786"], "--scheduler needs --executor dask"),
        (["--executor", "dask", "--scheduler", "tcp://127.0.0.1:8786", "--jobs", "2"], "--jobs cannot be combined"),
    ],
)
def test_scheduler_option_misuse(tiny, capsys, tmp_path, argv, message):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        cli.main(["run", "tiny", "--out", str(out), *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not out.exists()


class _DoneDaskFuture:
    """Stands in for a finished ``distributed.Future``."""

    def __init__(self, outcome):
        self.outcome = outcome

    def result(self):
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome

    def done(self):
        return True

    def add_done_callback(self, fn):
        fn(self)


class _RecordingClient:
    def __init__(self, outcome):
        self.outcome = outcome
        self.submitted: list[dict] = []

    def submit(self, fn, *args, **kwargs):
        self.submitted.append(kwargs)
        return _DoneDaskFuture(self.outcome)


def _cell(device: str) -> Cell:
    from tests.conftest import tiny_suite

    entry = tiny_suite().entries[0]
    return Cell(entry.problem, entry.label, entry.hp, "fake", 0, 7, 3, "float32", device)


@pytest.mark.parametrize("device, resources", [("cuda", {"GPU": 1}), ("cpu", None)])
def test_cells_on_cuda_ask_for_a_gpu_and_every_task_runs_anew(device, resources):
    client = _RecordingClient("rows")
    future = dask_cluster.DaskExecutor(client).submit(lambda *a: None, _cell(device), None, 1, None)
    assert future.result() == "rows"
    (kwargs,) = client.submitted
    assert kwargs["resources"] == resources
    assert kwargs["pure"] is False and kwargs["retries"] == dask_cluster.TASK_RETRIES


def test_a_worker_lost_for_good_is_cell_lost_and_a_cell_error_passes_through():
    worker = types.SimpleNamespace(address="tcp://10.0.0.7:4242")  # what KilledWorker reads of a WorkerState
    killed = distributed.KilledWorker("run_cell-1", worker, 3)
    lost = dask_cluster.DaskExecutor(_RecordingClient(killed)).submit(print)
    with pytest.raises(CellLost, match="KilledWorker"):
        lost.result()
    failed = dask_cluster.DaskExecutor(_RecordingClient(OSError("disk full"))).submit(print)
    assert isinstance(failed.exception(), OSError) and not isinstance(failed.exception(), CellLost)
    assert isinstance(failed, cf.Future)


def test_attached_to_a_running_scheduler(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv(datasets.ENV_VAR, str(datasets.data_dir()))
    # workers in this process (processes=False) see the fake backend the fixture registered
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0"
    ) as cluster:
        address = cluster.scheduler_address
        with pytest.raises(runner.RunError, match="offers a GPU"):  # nothing on cuda could ever start
            runner.start("tiny", out=tmp_path / "gpu", device="cuda", executor="dask", scheduler=address)
        assert not (tmp_path / "gpu").exists()
        path = runner.start("tiny", out=tmp_path / "out", executor="dask", scheduler=address, show_progress=False)
    rows, meta = schema.read_results(path)
    assert meta["options"]["executor"] == "dask" and meta["options"]["scheduler"] == address
    assert meta["options"]["jobs"] == 2 and (rows["concurrency"] == 2).all()  # the cluster's worker threads
    assert rows["cell_id"].nunique() == 3 and (rows["status"] == "ok").all()
