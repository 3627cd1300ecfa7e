"""Faults a long run meets: a pool worker killed, the driver killed, Ctrl-C (twice) and
SIGTERM. Lost cells get no part and ``--resume`` runs them; an interruption never becomes
an ``error`` part; no process of a run outlives it; ``--retry-errors`` reruns failed cells.

The process tests drive ``tests/fault_driver.py`` (the CLI with the fake backend, whose
steps sleep ``FAULT_STEP_S``) in a session of its own, and kill that whole session when
they end, whatever happened. Waits poll with deadlines; nothing depends on how fast this
machine is beyond those generous bounds.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import tiny_suite

from suites import __main__ as cli
from suites import executors, planning, schema, store
from suites.errors import CellLost, CellsLost

REPO = Path(__file__).resolve().parents[1]
DRIVER = REPO / "tests" / "fault_driver.py"
CELLS_OF = {2: 6, 3: 9}  # seeds -> cells of the faulty suite (3 entries)

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads the process table in /proc")


# ---------------------------------------------------------------------------------------
# Processes: start, watch, and always clean up
# ---------------------------------------------------------------------------------------


@pytest.fixture
def runs(tmp_path):
    """Start ``fault_driver.py run faulty ...`` runs; every one's session is killed at the end."""
    started: list[subprocess.Popen] = []
    marks = tmp_path / "marks"
    marks.mkdir()

    def start(*args: str, step_s: float = 0.0) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": str(REPO), "FAULT_STEP_S": str(step_s), "FAULT_MARKS": str(marks)}
        argv = [sys.executable, str(DRIVER), "run", "faulty", "--out", str(tmp_path / "out"), "--quiet", *args]
        if "--resume" not in args:
            argv += ["--device", "cpu"]  # not auto: deciding would import torch, seconds per run
        p = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group: a terminal's Ctrl-C is os.killpg
        )
        started.append(p)
        return p

    start.marks = marks
    start.out = tmp_path / "out"
    yield start
    for p in started:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.communicate(timeout=30)


def _wait_for(what, timeout: float = 60.0, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (children of each of its threads, recursively)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            try:
                kids = {int(k) for k in (task / "children").read_text().split()}
            except OSError:
                continue
            todo += list(kids - found)
            found |= kids
    return found


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has ended: only its exit status is left)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _marks(runs) -> list[tuple[str, int]]:
    """(``algorithm.sSEED``, pid) of every cell that started its first step."""
    return [(m.name.rsplit(".", 1)[0], int(m.name.rsplit(".", 1)[1])) for m in runs.marks.iterdir()]


def _run_dir(runs) -> Path:
    return _wait_for(lambda: next((d for d in (runs.out / "faulty").glob("*") if d.is_dir()), None), 30)


def _statuses(run_dir: Path) -> dict[str, set[str]]:
    """Each part's cell id and the statuses of its rows."""
    return {
        p.name.removesuffix(".parquet"): set(schema.read_results(p)[0]["status"])
        for p in (run_dir / "cells").glob("*.parquet")
    }


def _cell_id(mark: str) -> str:
    algorithm, seed = mark.split(".")
    return f"sine-resnet.{algorithm}.fake.float32.{seed}"


def _resume(runs, run_dir: Path, *more: str) -> None:
    """``--resume`` the run (fast steps); it completes, every cell ``ok``."""
    p = runs("--resume", run_dir.name, "--jobs", "1", *more)  # in the driver: no workers to start
    out, err = p.communicate(timeout=90)
    assert p.returncode == 0, err
    assert Path(out.strip().splitlines()[-1]) == run_dir.with_suffix(".parquet")


# ---------------------------------------------------------------------------------------
# Workers and drivers killed, runs interrupted
# ---------------------------------------------------------------------------------------


def test_pool_worker_killed_mid_cell_loses_its_cells_for_resume(runs):
    p = runs("--jobs", "2", "--seeds", "2", "--steps", "40", step_s=0.03)  # cells of about 1.2 s
    mark, pid = _wait_for(lambda: _marks(runs))[0]
    os.kill(pid, signal.SIGKILL)
    _, err = p.communicate(timeout=90)
    assert p.returncode == 1, err
    assert "lost (worker died" in err and "resume with: msabench run faulty" in err
    run_dir = _run_dir(runs)
    parts = _statuses(run_dir)
    assert _cell_id(mark) not in parts  # lost, not failed: no part at all
    assert len(parts) >= CELLS_OF[2] - 2  # only the cells in flight were lost; the others ran on a fresh pool
    assert all(s == {"ok"} for s in parts.values()), parts
    assert not run_dir.with_suffix(".parquet").exists()  # no run file while cells lack parts

    _resume(runs, run_dir)
    parts = _statuses(run_dir)
    assert len(parts) == CELLS_OF[2] and all(s == {"ok"} for s in parts.values()), parts


def test_driver_killed_then_resumed_keeps_finished_parts(runs, tmp_path):
    p = runs("--jobs", "2", "--seeds", "3", "--steps", "40", step_s=0.03)
    run_dir = _run_dir(runs)
    _wait_for(lambda: len(list((run_dir / "cells").glob("*.parquet"))) >= 2)
    workers = _descendants(p.pid)
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    assert workers, "the pool had workers"
    _wait_for(lambda: not any(_alive(w) for w in workers), 15)  # they died with their parent
    finished = {part: (part.read_bytes(), part.stat().st_mtime_ns) for part in (run_dir / "cells").glob("*.parquet")}
    assert 2 <= len(finished) < CELLS_OF[3]

    _resume(runs, run_dir)
    for part, (content, mtime_ns) in finished.items():  # not rerun, not rewritten
        assert part.read_bytes() == content and part.stat().st_mtime_ns == mtime_ns, part
    assert len(_statuses(run_dir)) == CELLS_OF[3]
    run_file = run_dir.with_suffix(".parquet")
    assert len(set(schema.read_results(run_file)[0]["cell_id"])) == CELLS_OF[3]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    build = [sys.executable, "-m", "reports", "build", str(run_file), "--out", str(tmp_path / "report")]
    done = subprocess.run(build, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert any((tmp_path / "report").iterdir())


@pytest.mark.parametrize(
    "how, status",
    [("SIGINT thrice", 130), ("SIGTERM", 143)],
)
def test_interrupted_run_stops_its_workers_and_resumes(runs, how, status):
    p = runs("--jobs", "2", "--seeds", "2", "--steps", "400", step_s=0.05)  # cells of 20 s: stopped mid-cell
    _wait_for(lambda: len(_marks(runs)) >= 2)
    workers = _descendants(p.pid)
    t0 = time.monotonic()
    if how == "SIGTERM":
        os.kill(p.pid, signal.SIGTERM)
    else:  # as a terminal's Ctrl-C: to the whole process group, workers included
        os.killpg(p.pid, signal.SIGINT)
        time.sleep(0.05)
        os.killpg(p.pid, signal.SIGINT)  # during the stop
        time.sleep(0.5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGINT)  # after it, perhaps as the interpreter exits
    _, err = p.communicate(timeout=60)
    assert time.monotonic() - t0 < 20, "stopped within seconds, not after the running cells"
    assert p.returncode == status, err
    assert "interrupted; finished cells are kept. Resume with: msabench run faulty" in err
    assert "Traceback" not in err
    _wait_for(lambda: not any(_alive(w) for w in workers), 15)
    run_dir = _run_dir(runs)
    parts = _statuses(run_dir)
    started = {_cell_id(mark) for mark, _ in _marks(runs)}
    assert not started & set(parts)  # the interrupted cells have no part, error or other
    assert all("error" not in s for s in parts.values())

    _resume(runs, run_dir)
    parts = _statuses(run_dir)
    assert len(parts) == CELLS_OF[2] and all(s == {"ok"} for s in parts.values()), parts


def test_fresh_process_runs_each_cell_in_a_new_worker(runs):
    p = runs("--jobs", "1", "--fresh-process")
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    pids = [pid for _, pid in _marks(runs)]
    assert len(pids) == 3 and len(set(pids)) == 3 and p.pid not in pids


# ---------------------------------------------------------------------------------------
# In this process: lost cells through any executor, errors rerun on request
# ---------------------------------------------------------------------------------------


class LosingExecutor(executors.SerialExecutor):
    """Runs tasks here, except that ``adagrad``'s worker 'dies'; records every task."""

    in_process = False

    def __init__(self):
        self.tasks: list[executors.Task] = []

    def submit(self, fn, /, *args):
        self.tasks.append(args[0])
        if args[0].cell.algorithm == "adagrad":
            future: cf.Future = cf.Future()
            future.set_exception(CellLost("its worker process died"))
            return future
        return super().submit(fn, *args)


def test_lost_cells_get_no_part_and_rerun_on_resume(fake_backend, tmp_path):
    cells = planning.plan(tiny_suite())
    run = store.Run("tiny", "lost", tmp_path)
    (tmp_path / "tiny" / "lost" / "cells").mkdir(parents=True)
    losing = LosingExecutor()
    with pytest.raises(CellsLost) as info:
        executors.execute(run, cells, executor=losing, show_progress=False)
    assert info.value.cells == ["sine-resnet.adagrad.fake.float32.s0"]
    assert sorted(_statuses(run.run_dir)) == ["sine-resnet.adam.fake.float32.s0", "sine-resnet.sgd.fake.float32.s0"]
    assert all(t.run.root is None for t in losing.tasks)  # workers are never handed the run's folder

    fake_backend.made.clear()
    executors.execute(run, cells, show_progress=False)
    assert [alg for alg, _ in fake_backend.made] == ["adagrad"]


def test_interrupt_inside_a_cell_writes_no_part(fake_backend, tmp_path, monkeypatch):
    real_make = fake_backend.make

    def make(algorithm):
        made = real_make(algorithm)

        def interrupted(*args, **kwargs):
            trainer = made(*args, **kwargs)

            def step(state, batch):
                if algorithm == "adagrad" and state["k"] == 2:
                    raise KeyboardInterrupt  # Ctrl-C, wherever in the step it lands
                return trainer.step(state, batch)

            return trainer._replace(step=step)

        return interrupted

    monkeypatch.setattr(fake_backend, "make", make)
    cells = planning.plan(tiny_suite())
    run = store.Run("tiny", "stopped", tmp_path)
    (run.run_dir / "cells").mkdir(parents=True)
    with pytest.raises(KeyboardInterrupt):
        executors.execute(run, cells, show_progress=False)
    assert list(_statuses(run.run_dir)) == ["sine-resnet.sgd.fake.float32.s0"]  # before the interrupt


def test_retry_errors_reruns_error_cells_only_when_asked(tiny, fake_backend, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(executors, "set_threads", lambda n: None)  # keep this process's torch as it is
    argv = ["run", "tiny", "--quiet", "--jobs", "1", "--out", str(tmp_path)]
    fake_backend.modes["sgd"] = "error"
    assert cli.main([*argv, "--device", "cpu"]) == 0
    run_dir = next(d for d in (tmp_path / "tiny").iterdir() if d.is_dir())
    sgd = "sine-resnet.sgd.fake.float32.s0"
    assert "error" in _statuses(run_dir)[sgd]
    assert (run_dir / "cells" / f"{sgd}.traceback.txt").exists()

    fake_backend.modes["sgd"] = "ok"  # the bug is fixed
    fake_backend.made.clear()
    assert cli.main([*argv, "--resume", run_dir.name]) == 0
    assert fake_backend.made == [] and "error" in _statuses(run_dir)[sgd]  # an error is final by default

    assert cli.main([*argv, "--resume", run_dir.name, "--retry-errors"]) == 0
    assert [alg for alg, _ in fake_backend.made] == ["sgd"]
    assert _statuses(run_dir)[sgd] == {"ok"}
    assert not (run_dir / "cells" / f"{sgd}.traceback.txt").exists()  # the old failure's trace is gone

    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        cli.main([*argv, "--retry-errors"])
    assert info.value.code == 2 and "--retry-errors needs --resume" in capsys.readouterr().err


def test_worker_setup_is_idempotent_and_travels_with_the_task(tmp_path):
    """Applied twice, as a worker does for two cells, the setup leaves one XLA flag and the
    task's data directory (in a fresh process: XLA flags only matter before jax starts)."""
    code = (
        "import os; from suites import executors; "
        f"[executors.prepare(1, {str(tmp_path)!r}) for _ in range(2)]; "
        "print(os.environ['XLA_FLAGS']); print(os.environ['MSABENCH_DATA_DIR']); print(os.environ['OMP_NUM_THREADS'])"
    )
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | {"PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["--xla_cpu_multi_thread_eigen=false", str(tmp_path), "1"]
