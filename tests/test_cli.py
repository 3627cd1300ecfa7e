"""The command line: bad input is one line on stderr, exit 2, nothing written; good input
runs, resumes and summarises; the smoke suite runs end to end on the real backends."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import implementations
from reports import summary
from suites import __main__ as cli
from suites import executors, grids, schema

REPO = Path(__file__).resolve().parents[1]


def _python_m(*args: str, cwd: Path = REPO, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", *args], check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def _fails(capsys, argv: list[str], pattern: str) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("msabench: error: "), err
    assert pattern in err


@pytest.mark.parametrize(
    "argv, pattern",
    [
        (["run", "nosuch"], "unknown suite 'nosuch'"),
        (["run", "tiny", "--backend", "tpu"], "unknown backend 'tpu'"),
        (["run", "tiny", "--problem", "mnist-60k"], "unknown problem 'mnist-60k'"),
        (["run", "tiny", "--algorithm", "lion"], "unknown algorithm 'lion'"),
        (["run", "tiny", "--algorithm", "emsa"], "no cells"),
        (["run", "tiny", "--jobs", "0"], "--jobs: expected a positive integer"),
        (["run", "tiny", "--seeds", "two"], "--seeds: expected a positive integer"),
        (["run", "tiny", "--threads", "0"], "--threads: expected a positive integer"),
        (["run", "tiny", "--steps-scale", "-1"], "--steps-scale: expected a positive number"),
        (["run", "tiny", "--steps-scale", "nan"], "--steps-scale: expected a positive number"),
        (["run", "tiny", "--dtype", "float16"], "invalid choice"),
        (["run", "tiny", "--device", "tpu"], "invalid choice"),
        (["run", "tiny", "--frobnicate"], "unrecognized arguments"),
        (["run", "tiny", "--resume", "20260101T000000Z-dead"], "no run '20260101T000000Z-dead'"),
        (["run", "tiny", "--resume", "../../etc"], "malformed run id"),
        (["run", "tiny", "--resume", "x", "--backend", "fake"], "cannot be combined with --resume"),
        (["run"], "required: suite"),
        (["frobnicate"], "invalid choice"),
        (["summary"], "exactly one"),
        (["summary", "missing.parquet"], "not found"),
        (["tune", "--suite", "nosuch"], "unknown suite"),
        (["tune", "--backend", "nope"], "unknown backend"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tiny, capsys, tmp_path, argv, pattern):
    out = tmp_path / "out"
    if argv[0] == "run":
        argv = [*argv, "--out", str(out)]
    _fails(capsys, argv, pattern)
    assert not out.exists()


def test_out_that_is_a_file(tiny, capsys, tmp_path):
    (tmp_path / "f").write_text("")
    _fails(capsys, ["run", "tiny", "--out", str(tmp_path / "f")], "not a directory")


def test_subprocess_error_contract(tmp_path):
    out = tmp_path / "out"
    proc = _python_m("suites", "run", "nosuch", "--out", str(out))
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "msabench: error: unknown suite 'nosuch' (known: smoke, default, kernels, paper-icml, paper-jmlr, repro-fashion, repro-sparsity, repro-jmlr-zero, ddpnopt, gpu)"
    ]
    assert proc.stdout == "" and not out.exists()


def test_run_resume_and_summary(tiny, fake_backend, capsys, tmp_path, monkeypatch):
    fake_backend.modes["adagrad"] = "diverge"
    threads = []
    monkeypatch.setattr(executors, "set_threads", threads.append)  # keep this process's torch as it is
    assert (
        cli.main(["run", "tiny", "--out", str(tmp_path), "--quiet", "--seeds", "2", "--threads", "1", "--jobs", "1"])
        == 0
    )
    assert threads == [1] * 7  # in the runner before the run starts, then (idempotent) at each cell's start
    path = Path(capsys.readouterr().out.splitlines()[-1])
    df, meta = schema.read_results(path)
    assert meta["options"]["seeds"] == [0, 1] and meta["options"]["command"].startswith("msabench run tiny")
    assert meta["options"]["threads"] == 1
    assert df["cell_id"].nunique() == 6

    # interrupt: drop a part and the run file, then resume through the CLI
    parts = sorted((tmp_path / "tiny" / path.stem / "cells").glob("*.parquet"))
    parts[0].unlink()
    path.unlink()
    fake_backend.made.clear()
    assert cli.main(["run", "tiny", "--out", str(tmp_path), "--resume", path.stem, "--quiet", "--jobs", "1"]) == 0
    assert Path(capsys.readouterr().out.splitlines()[-1]) == path
    assert len(fake_backend.made) == 1

    md_path = tmp_path / "summary.md"
    assert cli.main(["summary", str(path), "--out", str(md_path)]) == 0
    assert capsys.readouterr().out.strip() == str(md_path)
    md = md_path.read_text()
    assert f"run {path.stem}" in md
    assert "| sine-resnet | sgd | fake | float32 | 2 |" in md
    assert "2 diverged" in md and "2 ok" in md


def test_summary_table_statistics(tiny, fake_backend, tmp_path, capsys):
    cli.main(["run", "tiny", "--out", str(tmp_path), "--quiet", "--seeds", "3", "--jobs", "1"])
    path = Path(capsys.readouterr().out.splitlines()[-1])
    df, _ = schema.read_results(path)
    t = summary.table(df)
    assert t["status"].tolist() == ["3 ok"] * 3
    assert t["seeds"].tolist() == [3, 3, 3]
    assert t["test acc %"].tolist() == ["–"] * 3  # regression problem
    last = df.groupby("cell_id").tail(1)
    loss = last[last["label"] == "sgd"]["test_loss"]
    assert t["test loss"].iloc[0] == f"{loss.mean():.4g} ± {loss.std(ddof=1):.4g}"
    assert summary.latest_run(tmp_path, "tiny") == path
    out = tmp_path / "reports" / "s.md"
    assert summary.main(["--suite", "tiny", "--results-dir", str(tmp_path), "--out", str(out)]) == 0
    assert "| sine-resnet | adam | fake | float32 | 3 |" in out.read_text()


def test_list(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "smoke" in out and "default" in out and "mnist5k-rescnn" in out and "emsa" in out


def test_list_into_a_closed_pipe_stops_without_a_traceback():
    # `msabench list | head -1` once head has exited: the reading end is closed before the
    # child starts, so its first write fails (deterministically, whatever the buffering)
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "suites", "list"],
            cwd=REPO,
            env=env,
            stdout=write_end,
            stderr=subprocess.PIPE,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    stderr = proc.stderr.decode()
    assert proc.returncode == 1 and "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr


@pytest.mark.slow  # CI runs the smoke suite whole from the installed wheel (`nox -s wheel`)
def test_smoke_suite_end_to_end(tmp_path):
    # two worker processes: halves the wall time on two cores and covers the process pool
    proc = _python_m("suites", "run", "smoke", "--out", str(tmp_path), "--quiet", "--jobs", "2", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    path = Path(proc.stdout.splitlines()[-1])
    df, meta = schema.read_results(path)
    assert meta["suite"] == "smoke" and (df["concurrency"] == 2).all()
    last = df.groupby("cell_id", sort=False).tail(1)
    smoke = grids.UNTUNED["smoke"]
    assert len(last) == len(smoke.entries) * len(smoke.backends)
    assert set(last["backend"]) == set(smoke.backends)
    for _, row in last.iterrows():
        allowed = ("ok", "diverged") if row["algorithm"] == "msa" else ("ok",)
        if row["backend"] not in implementations.PARTIAL_ALGORITHMS.get(row["algorithm"], (row["backend"],)):
            allowed = ("skipped",)  # not implemented in this backend yet: a row that says so
        assert row["status"] in allowed, f"{row['cell_id']}: {row['status']}: {row['reason']}"
    assert (last.loc[last["status"] == "ok", "step"] == 3).all()
