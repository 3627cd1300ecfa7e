"""The asv benchmarks are discovered (``asv check``) and run (one problem's classes,
``--quick``: one sample each, nothing saved), in this environment (``--python=same``).
The run is of one parameter combination, (sgd, torch): asv starts a process per
benchmark and combination, and the problem's 12 took 8 minutes of CI's 20 on a loaded
2-core machine; one shows the same machinery (setup, time, peakmem, setup_cache, track)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("asv") is None, reason="asv (a test extra) is not installed")


@pytest.fixture(scope="module")
def asv_home(tmp_path_factory) -> dict[str, str]:
    """An environment whose HOME holds a fresh ``~/.asv-machine.json``: ``asv run`` refuses
    to run on a machine it has no description of (a fresh CI machine), and the test must
    not write into the user's own home."""
    env = {**os.environ, "HOME": str(tmp_path_factory.mktemp("asv-home"))}
    proc = subprocess.run(["asv", "machine", "--yes"], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return env


def _asv(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["asv", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)


def test_asv_check_discovers_every_benchmark():
    proc = _asv("check", "--python=same")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "No problems found" in proc.stdout


@pytest.mark.slow  # 85 s of CI's 20 minutes; `asv check` above keeps the benchmarks importable
def test_asv_quick_run_of_one_problem(asv_home):
    proc = _asv(
        "run",
        "--python=same",
        "--quick",
        "--dry-run",
        "--show-stderr",
        "-b",
        "(Step|Track)_sine_resnet\\.[a-z_]+\\('sgd', 'torch'\\)",
        env=asv_home,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    for name in ("time_step", "peakmem_step", "track_test_error", "track_dense_fraction"):
        assert f"Step_sine_resnet.{name}" in out or f"Track_sine_resnet.{name}" in out, name
    assert "failed" not in out.lower(), out[-3000:]
