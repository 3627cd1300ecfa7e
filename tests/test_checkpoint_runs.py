"""Cells that checkpoint and resume (``suites.checkpoints``): a stopped cell continues
from its last checkpoint, and ends with the rows an uninterrupted run gives.

The rows of a resumed cell equal the uninterrupted cell's in every column but those that
describe the process rather than the training: the timings (the steps after a resume are
timed by another process, and its first step counts as compilation), peak memory, and
``resumed_from`` itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from implementations import spec
from suites import checkpoints, schema, training
from suites.planning import Cell
from suites.store import Run

#: the columns that describe the process, not the training (module docstring)
PROCESS_COLUMNS = ["time_s", "compile_s", "ms_per_step", "peak_rss_mib", "peak_gpu_mib", "resumed_from"]
ROOT = Path(__file__).resolve().parents[1]


def _cell(steps: int = 60, eval_every: int = 20) -> Cell:
    return Cell("sine-resnet", "adam", spec.Adam(lr=0.005), "torch", 0, steps, eval_every, "float32", "cpu")


RUN = Run("test", "r0", None)


def _training_columns(rows: pd.DataFrame) -> pd.DataFrame:
    return rows.drop(columns=PROCESS_COLUMNS).reset_index(drop=True)


class Stop(BaseException):
    """Ends a cell from inside, as a kill would: nothing after it runs."""


def _stopped_after(steps: int):
    done = 0

    def progress(n: int) -> None:
        nonlocal done
        done += n
        if done >= steps:
            raise Stop

    return progress


def test_a_stopped_cell_resumes_from_its_last_checkpoint(tmp_path):
    pytest.importorskip("torch")
    cell = _cell()
    straight = training.run_cell(cell, RUN)
    policy = checkpoints.Policy(str(tmp_path / "cell.npz"))
    with pytest.raises(Stop):
        training.run_cell(cell, RUN, progress=_stopped_after(50), checkpoint=policy)
    assert checkpoints.read(policy.path, cell).step == 40  # the last evaluation point before the stop

    reported: list[int] = []
    resumed = training.run_cell(cell, RUN, progress=reported.append, checkpoint=policy)
    assert reported[0] == 40 and sum(reported[1:]) == cell.steps - 40  # it trained only the steps after 40
    assert resumed["resumed_from"].tolist() == [0, 0, 0, 40]  # rows at 0, 20, 40 came from the checkpoint
    pd.testing.assert_frame_equal(_training_columns(resumed), _training_columns(straight))


def test_checkpoint_every_adds_checkpoints_between_evaluations(tmp_path):
    pytest.importorskip("torch")
    cell = _cell(steps=60, eval_every=30)
    policy = checkpoints.Policy(str(tmp_path / "cell.npz"), every=10)
    with pytest.raises(Stop):
        training.run_cell(cell, RUN, progress=_stopped_after(25), checkpoint=policy)
    assert checkpoints.read(policy.path, cell).step == 20
    resumed = training.run_cell(cell, RUN, checkpoint=policy)
    pd.testing.assert_frame_equal(_training_columns(resumed), _training_columns(training.run_cell(cell, RUN)))


def _saved_checkpoint(tmp_path: Path, cell: Cell) -> checkpoints.Policy:
    policy = checkpoints.Policy(str(tmp_path / "cell.npz"))
    with pytest.raises(Stop):
        training.run_cell(cell, RUN, progress=_stopped_after(30), checkpoint=policy)
    return policy


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _other_schema(path: Path) -> None:
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays.pop("meta")[()]))
    np.savez(path, meta=np.asarray(json.dumps({**meta, "schema_version": schema.SCHEMA_VERSION - 1})), **arrays)


@pytest.mark.parametrize(
    ("damage", "message"),
    [(_truncate, "unreadable"), (_other_schema, f"results schema {schema.SCHEMA_VERSION - 1}")],
    ids=["truncated", "other-schema"],
)
def test_a_damaged_checkpoint_is_said_in_one_line_and_the_cell_starts_over(tmp_path, capsys, damage, message):
    pytest.importorskip("torch")
    cell = _cell()
    policy = _saved_checkpoint(tmp_path, cell)
    damage(Path(policy.path))
    capsys.readouterr()
    rows = training.run_cell(cell, RUN, checkpoint=policy)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ignored, starting from step 0" in err[0] and message in err[0], err
    assert (rows["resumed_from"] == 0).all() and rows["status"].eq("ok").all()
    pd.testing.assert_frame_equal(_training_columns(rows), _training_columns(training.run_cell(cell, RUN)))


def test_a_checkpoint_of_another_configuration_is_not_loaded(tmp_path, capsys):
    pytest.importorskip("torch")
    policy = _saved_checkpoint(tmp_path, _cell())
    other = _cell(steps=80)  # same cell id, another budget
    rows = training.run_cell(other, RUN, checkpoint=policy)
    assert "another configuration" in capsys.readouterr().err
    assert (rows["resumed_from"] == 0).all()


# ---------------------------------------------------------------------------------------
# a real run, killed with SIGKILL in the middle of a long cell, then --resume
# ---------------------------------------------------------------------------------------

#: one cell: E-MSA's sine net is too slow for a test; Adam on it, 4,000 steps evaluated
#: every 400 (the default suite's entry, scaled by --steps), a few seconds
COMMAND = [
    "run",
    "default",
    "--backend",
    "torch",
    "--problem",
    "sine-resnet",
    "--algorithm",
    "adam",
    "--seeds",
    "1",
    "--steps",
    "4000",
    "--jobs",
    "1",
    "--quiet",
]


def _cli(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "suites", *args], cwd=ROOT, env=env, **kw)


def _rows(out: Path) -> pd.DataFrame:
    (path,) = (out / "default").glob("*.parquet")
    return schema.read_results(path)[0]


def test_a_run_killed_mid_cell_resumes_from_the_checkpoint(tmp_path):
    pytest.importorskip("torch")
    straight_out, killed_out = tmp_path / "straight", tmp_path / "killed"
    assert _cli(*COMMAND, "--out", str(straight_out)).wait(timeout=600) == 0

    proc = _cli(*COMMAND, "--out", str(killed_out), start_new_session=True, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    checkpoint = None
    while time.monotonic() < deadline and proc.poll() is None:
        found = list(killed_out.glob("default/*/checkpoints/*.npz"))
        if found and _checkpoint_step(found[0]) >= 1200:
            checkpoint = found[0]
            break
        time.sleep(0.05)
    assert checkpoint is not None, "the cell finished or never checkpointed before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    step = _checkpoint_step(checkpoint)  # the newest one: a kill mid-write leaves the previous file
    assert 1200 <= step < 4000

    (run_dir,) = [p for p in (killed_out / "default").iterdir() if p.is_dir()]
    resumed = _cli(*COMMAND[:2], "--out", str(killed_out), "--resume", run_dir.name, "--quiet")
    assert resumed.wait(timeout=600) == 0
    rows = _rows(killed_out)
    assert set(rows["resumed_from"]) == {0, step}
    assert (rows.loc[rows["step"] > step, "resumed_from"] == step).all()
    assert not list(run_dir.glob("checkpoints/*.npz"))  # deleted once the part was final
    pd.testing.assert_frame_equal(
        _training_columns(rows.drop(columns=["run_id"])),
        _training_columns(_rows(straight_out).drop(columns=["run_id"])),
    )


def _checkpoint_step(path: Path) -> int:
    try:
        with np.load(path) as f:
            return int(json.loads(str(f["meta"][()]))["step"])
    except (OSError, ValueError, KeyError, EOFError):
        return -1  # being replaced right now
