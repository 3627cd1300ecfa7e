"""``msabench gpu-check``: the prepared device check, rehearsed on the CPU (``--dry-run``)
as CI must keep it working, its deadlines, and its refusals.

The full dry run takes about two minutes here: it is the rehearsal the issue asks CI to
keep, so it runs whole, once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from suites import __main__ as cli
from suites import gpucheck, schema

REPO = Path(__file__).resolve().parents[1]


def _gpu_check(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "suites", "gpu-check", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.skipif(
    pytest.importorskip("torch").cuda.is_available(), reason="a GPU is here: the real check runs instead"
)
def test_dry_run_writes_the_summary_and_the_run_files(tmp_path):
    out = tmp_path / "check"
    proc = _gpu_check("--dry-run", "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and {"summary.md", "tests.txt", "kernels.json", "gpu.parquet"} <= set(files), files
    text = (out / "summary.md").read_text()
    for phase in ("## versions", "## tests: ok", "## kernels: ok", "## gpu suite: ok", "## sparsity"):
        assert phase in text, phase
    assert "skipped" in (out / "tests.txt").read_text()  # the GPU tests say why they did not run
    df, meta = schema.read_results(out / "gpu.parquet")
    assert meta["suite"] == "gpu" and set(df["backend"]) == {"torch", "triton", "cuda"}  # jax: not in a dry run
    trained = df[df["status"] == "ok"]
    assert set(trained["backend"]) == {"torch"} and trained["deterministic"].all()  # CPU cells
    assert set(df.loc[df["backend"].isin(["triton", "cuda"]), "status"]) == {"skipped"}
    problems = {"sine-resnet", "sine-resnet-zero", "digits-mlp", "mnist5k-mlp", "mnist5k-rescnn"}
    assert problems <= set(trained["problem"])


def test_a_phase_past_its_deadline_is_stopped_and_keeps_its_finished_cells(tmp_path, monkeypatch):
    """The gpu suite given 25 s: SIGTERM at the deadline, the finished cells' rows in
    ``gpu-partial.parquet``, the phase says it was stopped."""
    monkeypatch.setitem(gpucheck.ALLOWANCE_S, "gpu suite", 25.0)
    out, work = tmp_path / "out", tmp_path / "work"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    phase = gpucheck.suite_phase(out, work, gpucheck.Clock(600), env, "cpu", dry=False)
    assert phase.status == "stopped at its deadline" and phase.seconds < 60
    assert phase.files == ["gpu-partial.parquet"]
    df, _ = schema.read_results(out / "gpu-partial.parquet")
    assert len(df) and (df["suite"] == "gpu").all()
    assert any(line.startswith("| sine-resnet |") for line in phase.lines)


def test_checkpoint_rows_are_read_back(tmp_path):
    """An unfinished cell's evaluation points come back from its checkpoint's metadata."""
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    rows = [{"label": "twn", "step": 550, "test_acc": 0.9, "nonzero_frac": 0.6, "status": "ok"}]
    np.savez(folder / "cell.npz", meta=np.asarray(json.dumps({"rows": rows})))
    (folder / "broken.npz").write_bytes(b"not a checkpoint")
    assert gpucheck._checkpoint_rows(tmp_path / "run") == rows
    table = gpucheck._sparsity_lines(rows)
    assert table[2].startswith("| twn | 1.0 | 0.9000 | 0.600 |")  # beside the authors' epoch 1


def test_without_a_gpu_the_real_check_is_refused(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    with pytest.raises(SystemExit) as info:
        cli.main(["gpu-check", "--out", str(tmp_path / "o")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no CUDA device is visible" in err and "--dry-run" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--budget", "-1"], "--budget must be a positive number"),
        (["--wheels", "nowhere"], "no .whl file there"),
        (["--data-dir", "nowhere"], "not a folder"),
    ],
)
def test_bad_options_are_one_line_and_write_nothing(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as info:
        cli.main(["gpu-check", "--dry-run", "--out", str(tmp_path / "o"), *args])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "o").exists()


def test_carried_wheels_install_without_network(tmp_path):
    """``--wheels``: a wheel built here (no index consulted) installs into the check's own
    folder, importable from there."""
    src = tmp_path / "src"
    (src / "carried_pkg").mkdir(parents=True)
    (src / "carried_pkg" / "__init__.py").write_text("VALUE = 42\n")
    (src / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "carried-pkg"\nversion = "1.0"\n'
    )
    wheels = tmp_path / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run([*build, "-w", str(wheels), str(src)], check=True, capture_output=True)
    site = tmp_path / "site"
    assert "installed 1 wheel(s)" in gpucheck.install_wheels(wheels, site)
    probe = subprocess.run(
        [sys.executable, "-c", "import carried_pkg; print(carried_pkg.VALUE)"],
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "42"
