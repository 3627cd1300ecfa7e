"""The run store under faults: an unwritable, read-only, full or misplaced output is one
line on stderr and exit status 2, with nothing partial left behind; runs are locked, so
two processes never run the same run, and a killed holder frees the lock.

Tests run as root, whom permission bits do not stop, so a read-only folder or a full disk
is simulated by making the write raise the ``OSError`` the kernel would give."""

from __future__ import annotations

import errno
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from suites import __main__ as cli
from suites import executors, grids, planning, store, training, tune
from suites.errors import RunError, StoreError

REPO = Path(__file__).resolve().parents[1]
TINY = ["run", "tiny", "--quiet", "--jobs", "1"]


def _fails(capsys, argv: list[str], pattern: str) -> str:
    """``argv`` exits 2 with one line ``msabench: error: ...`` containing ``pattern``."""
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("msabench: error: "), err
    assert pattern in err, err
    return err


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _enospc(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _full_disk_for(monkeypatch, suffix: str, also_parquet: bool = False) -> None:
    """Writes of files whose name ends with ``suffix`` write half their content, then fail
    with ENOSPC, as a filling disk does (text through ``Path.write_text``, parquet through
    ``pyarrow.parquet.write_table``)."""
    real_write_text, real_write_table = Path.write_text, pq.write_table

    def write_text(self, data, *args, **kwargs):
        if self.name.endswith(suffix):
            real_write_text(self, data[: len(data) // 2])
            _enospc()
        return real_write_text(self, data, *args, **kwargs)

    def write_table(table, where, *args, **kwargs):
        if str(where).endswith(suffix):
            Path(where).write_bytes(b"PAR1 half a file")
            _enospc()
        return real_write_table(table, where, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    monkeypatch.setattr(pq, "write_table", write_table)


# ---------------------------------------------------------------------------------------
# Bounds: checked before anything is created
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "option, value, pattern",
    [
        ("--steps", str(planning.MAX_STEPS + 1), f"at most {planning.MAX_STEPS:,} are allowed"),
        ("--epochs", "1e308", "--epochs gives a cell inf steps"),  # overflows before rounding
        ("--steps-scale", "1e300", "--steps-scale gives a cell"),
        # the tiny suite's 3 entries x 1 backend: one seed more than the bound allows
        ("--seeds", str(planning.MAX_CELLS // 3 + 1), f"at most {planning.MAX_CELLS:,} are allowed"),
        ("--seeds", str(10**15), f"the plan has {3 * 10**15:,} cells"),  # counted, never built
    ],
)
def test_huge_budgets_and_seeds_are_refused_before_anything_is_made(tiny, capsys, tmp_path, option, value, pattern):
    out = tmp_path / "out"
    _fails(capsys, [*TINY, "--out", str(out), option, value], pattern)
    assert not out.exists()


def test_the_largest_budget_is_planned_lazily(fake_backend):
    from conftest import tiny_suite

    cells = planning.plan(tiny_suite(), steps=planning.MAX_STEPS)
    assert {c.steps for c in cells} == {planning.MAX_STEPS}
    # the blocks are produced one at a time: the first three arrive without building 10^8
    first = list(itertools.islice(training._blocks(planning.MAX_STEPS, 1), 3))
    assert first == [(1, True), (2, True), (3, True)]


# ---------------------------------------------------------------------------------------
# Unwritable outputs
# ---------------------------------------------------------------------------------------


def test_out_in_proc(tiny, capsys):
    _fails(capsys, [*TINY, "--out", "/proc/msabench-out"], "--out /proc/msabench-out: cannot create files in /proc")


def test_out_below_a_regular_file(tiny, capsys, tmp_path):
    (tmp_path / "f").write_text("")
    _fails(capsys, [*TINY, "--out", str(tmp_path / "f" / "sub")], f"{tmp_path / 'f'} is not a directory")
    assert _files(tmp_path) == ["f"]


def test_read_only_out_is_refused_by_the_probe(tiny, capsys, tmp_path, monkeypatch):
    def read_only(*_args, **_kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(store.tempfile, "NamedTemporaryFile", read_only)
    _fails(capsys, [*TINY, "--out", str(tmp_path / "out")], "cannot create files in")
    assert _files(tmp_path) == []


def test_read_only_out_past_the_probe_is_one_line(tiny, capsys, tmp_path, monkeypatch):
    # the folder turns read-only between the probe and the start: mkdir's own error counts
    monkeypatch.setattr(store, "check_writable", lambda *a: None)
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if self.name == "tiny":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    _fails(capsys, [*TINY, "--out", str(tmp_path / "out")], "Permission denied")
    assert _files(tmp_path) == []  # `out`, made on the way to `out/tiny`, is removed too


def test_full_disk_writing_run_json_leaves_nothing(tiny, capsys, tmp_path, monkeypatch):
    _full_disk_for(monkeypatch, "run.json.tmp")
    _fails(capsys, [*TINY, "--out", str(tmp_path / "out")], "run.json: No space left on device")
    assert _files(tmp_path) == []


def test_full_disk_writing_a_part_stops_the_run_and_resumes(tiny, fake_backend, capsys, tmp_path):
    out = tmp_path / "out"
    with pytest.MonkeyPatch.context() as full_disk:
        _full_disk_for(full_disk, "adagrad.fake.float32.s0.parquet.tmp")
        err = _fails(capsys, [*TINY, "--out", str(out)], "No space left on device")
    assert "finish with: msabench run tiny" in err
    run_id = err.split("--resume ")[1].split(")")[0]
    left = _files(out)
    assert not [f for f in left if f.endswith(".tmp")], left
    assert f"tiny/{run_id}/cells/sine-resnet.sgd.fake.float32.s0.parquet" in left  # the finished cell is kept
    assert len(fake_backend.made) == 2  # the third cell never started

    fake_backend.made.clear()  # space freed
    assert cli.main([*TINY, "--out", str(out), "--resume", run_id]) == 0
    assert len(fake_backend.made) == 2  # the cell that failed to write, and the one after


def test_full_disk_writing_a_traceback_leaves_no_temporary_file(tiny, fake_backend, capsys, tmp_path, monkeypatch):
    fake_backend.modes["sgd"] = "error"
    _full_disk_for(monkeypatch, ".traceback.txt.tmp")
    _fails(capsys, [*TINY, "--out", str(tmp_path)], "traceback.txt: No space left on device")
    assert not [f for f in _files(tmp_path) if f.endswith(".tmp")]


def test_full_disk_writing_the_run_file_keeps_the_parts(tiny, capsys, tmp_path, monkeypatch):
    real_write_table = pq.write_table

    def write_table(table, where, *args, **kwargs):
        if Path(where).parent.name == "tiny":  # the run file, not a part
            Path(where).write_bytes(b"PAR1 half a file")
            _enospc()
        return real_write_table(table, where, *args, **kwargs)

    monkeypatch.setattr(pq, "write_table", write_table)
    _fails(capsys, [*TINY, "--out", str(tmp_path)], "No space left on device")
    left = _files(tmp_path)
    assert not [f for f in left if f.endswith(".tmp") or f.count("/") == 1 and f.endswith(".parquet")], left
    assert len([f for f in left if "/cells/" in f]) == 3


def _started(tmp_path: Path, suite: grids.Suite) -> store.Run:
    cells = planning.plan(suite)
    with store.started_run(tmp_path, suite.name, cells, {}) as (run, _):
        return run


def test_resume_into_a_read_only_run(tiny, capsys, tmp_path, monkeypatch):
    run = _started(tmp_path, tiny)
    before = (run.run_dir / "run.json").read_text()
    monkeypatch.setattr(store.os, "replace", lambda *a: _enospc())
    _fails(capsys, [*TINY, "--out", str(tmp_path), "--resume", run.run_id], "run.json: No space left on device")
    assert (run.run_dir / "run.json").read_text() == before
    assert not [f for f in _files(tmp_path) if f.endswith(".tmp")]


def test_resume_of_an_unreadable_run_json(tiny, capsys, tmp_path, monkeypatch):
    run = _started(tmp_path, tiny)
    real_read_text = Path.read_text

    def read_text(self, *args, **kwargs):
        if self.name == "run.json":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    _fails(capsys, [*TINY, "--out", str(tmp_path), "--resume", run.run_id], "cannot read")


def test_tune_checks_its_output_before_tuning(fake_backend, capsys, tmp_path):
    argv = ["tune", "--suite", "smoke", "--backend", "fake", "--quiet"]
    _fails(capsys, [*argv, "--output", "/proc/msabench/tuned.json"], "--output /proc/msabench: cannot create files")
    _fails(capsys, [*argv, "--output", str(tmp_path)], "is a directory")
    assert fake_backend.made == []


def test_tune_file_on_a_full_disk_stays_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "tuned.json"
    tune.write_tuned(path, "smoke", {"sine-resnet/sgd": {"choice": 0.1}})
    before = path.read_text()
    _full_disk_for(monkeypatch, "tuned.json.tmp")
    with pytest.raises(StoreError, match="tuned.json: No space left on device"):
        tune.write_tuned(path, "smoke", {"sine-resnet/sgd": {"choice": 0.3}})
    assert path.read_text() == before and _files(tmp_path) == ["tuned.json"]


def test_data_download_into_an_unwritable_data_dir(capsys, tmp_path):
    (tmp_path / "f").write_text("")
    _fails(capsys, ["data", "--data-dir", str(tmp_path / "f"), "--download", "mnist"], "is not a directory")
    _fails(capsys, ["data", "--data-dir", "/proc/msabench", "--download", "mnist"], "cannot create files in /proc")
    assert _files(tmp_path) == ["f"]


# ---------------------------------------------------------------------------------------
# The run's lock
# ---------------------------------------------------------------------------------------


def test_a_run_holds_its_lock_while_it_runs(tiny, capsys, tmp_path, monkeypatch):
    refusals = []
    real_execute = executors.execute

    def execute(run, cells, **kwargs):
        with pytest.raises(RunError) as info, store.hold(run):  # a second taker, meanwhile
            pass
        refusals.append(str(info.value))
        return real_execute(run, cells, **kwargs)

    monkeypatch.setattr(executors, "execute", execute)
    assert cli.main([*TINY, "--out", str(tmp_path)]) == 0
    assert len(refusals) == 1
    assert f"is in use by pid {os.getpid()} on {socket.gethostname()} since " in refusals[0]
    with store.hold(store.load_run(tmp_path, "tiny", refusals[0].split()[1])[0]):
        pass  # freed when the run ended


_HOLDER = """
import sys, time
from pathlib import Path
from suites import store
with store.hold(store.Run("smoke", sys.argv[2], Path(sys.argv[1]))):
    print("held", flush=True)
    time.sleep(120)
"""


def test_second_resume_fails_fast_and_a_killed_holder_frees_the_lock(tmp_path):
    suite = grids.get_suite("smoke")
    cells = planning.plan(
        suite, backends=["torch"], problems_filter=["sine-resnet"], algorithms_filter=["sgd"], steps=1
    )
    with store.started_run(tmp_path, suite.name, cells, {}) as (run, _):
        pass
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path), run.run_id], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline() == "held\n"
        started = time.monotonic()
        second = subprocess.run(
            [sys.executable, "-m", "suites", "run", "smoke", "--out", str(tmp_path), "--resume", run.run_id],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        waited = time.monotonic() - started
        assert second.returncode == 2, second.stderr
        assert second.stderr.splitlines() == [
            f"msabench: error: run {run.run_id} is in use by pid {holder.pid} on {socket.gethostname()} since "
            + json.loads((run.run_dir / "lock").read_text())["since"]
            + "; wait for it to finish (or stop it) first"
        ]
        # fast: it stops at the lock instead of training; the holder sleeps 120 s, and the
        # interpreter's start and imports take a few seconds on a busy machine
        assert waited < 60
        assert list((run.run_dir / "cells").iterdir()) == [] and not run.run_file.exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        holder.stdout.close()
    with store.hold(run):  # the killed holder's lock went with its process
        assert json.loads((run.run_dir / "lock").read_text())["pid"] == os.getpid()
