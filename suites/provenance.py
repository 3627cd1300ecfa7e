"""Provenance: what a run records about where and how it ran.

``environment`` is the ``environment`` section of a run's ``run.json`` and of its run
file's metadata: time, git commit and dirtiness (only when the code runs from its own
checkout, not an installed wheel), package versions, platform, device name, thread counts
and the facts of the problems the run uses.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import subprocess
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from suites import problems, schema

REPO_ROOT = Path(__file__).resolve().parents[1]

_VERSIONED = (
    "numpy",
    "scipy",
    "torch",
    "jax",
    "jaxlib",
    "optax",
    "pandas",
    "pyarrow",
    "scikit-learn",
    "mlxtend",
    "tqdm",
)


def _git_output(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], check=False, cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def _git(*args: str) -> str | None:
    """git's answer about the checkout this code runs from, or None when it runs from an
    installed wheel: site-packages is then no work tree's top, and a work tree above it (a
    virtual environment inside some repository, .nox/ in this one) is not the code's source."""
    top = _git_output("rev-parse", "--show-toplevel")
    if top is None or Path(top.strip()).resolve() != REPO_ROOT:
        return None
    return _git_output(*args)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str, problem_names: Iterable[str], per_cell_threads: int | None = None) -> dict[str, Any]:
    """Provenance for the run file's metadata: time, git, versions, device, threads (the
    CPU count, this process's torch threads, and the intra-op threads each cell ran with)
    and the problems' facts (``schema.ProblemFacts``: init, weights, target, ...)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in (*_VERSIONED, "msabench"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    threads: dict[str, int | None] = {"cpu_count": os.cpu_count(), "torch": None, "per_cell": per_cell_threads}
    device_name = _cpu_name()
    if importlib.util.find_spec("torch") is not None:
        import torch

        threads["torch"] = torch.get_num_threads()
        if device == "cuda" and torch.cuda.is_available():
            device_name = torch.cuda.get_device_name()
    sha = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain")
    # what the run's report reads instead of the registry (schema.ProblemFacts)
    used = {name: schema.ProblemFacts.of(problems.get_problem(name)).to_json() for name in sorted(set(problem_names))}
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_sha": sha.strip() if sha else None,
        "git_dirty": None if status is None else bool(status.strip()),
        "versions": versions,
        "platform": platform.platform(),
        "device": device,
        "device_name": device_name,
        "threads": threads,
        "problems": used,
    }
