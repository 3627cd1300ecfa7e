"""Provenance: what a run records about where and how it ran.

``environment`` is the ``environment`` section of a run's ``run.json`` and of its run
file's metadata: time, git commit and dirtiness (only when the code runs from its own
checkout, not an installed wheel), package versions, platform, device name, thread counts
and the facts of the problems the run uses. It describes the process that started the run.

``cell_provenance`` gives the provenance columns of one cell's rows (``schema.PROVENANCE``:
host, device name, git sha and dirtiness, versions), asked in the process that trains the
cell, so that on a cluster, or in a run resumed at another commit, each row names the
machine and code that produced it. It is cached per process: a worker asks git once.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import platform
import socket
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
#: the packages whose versions can change a cell's numbers (its arithmetic, its kernels or
#: its timing), recorded on every row; the data and reporting libraries are left to the
#: run's metadata (``environment``)
NUMERIC_PACKAGES = ("numpy", "scipy", "torch", "jax", "jaxlib", "optax", "triton")


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


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def device_name(device: str) -> str:
    """What ``device`` is on this machine: the CPU model, or the name of the CUDA device
    this process sees first (a worker started with ``CUDA_VISIBLE_DEVICES`` sees its own
    GPU first); ``no CUDA device`` where there is none (the cell is then skipped)."""
    if device != "cuda":
        return _cpu_name()
    if importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name()
    return "no CUDA device"


@functools.cache
def _code() -> tuple[str | None, bool | None]:
    """(git sha, dirty) of the checkout this code runs from; (None, None) from a wheel."""
    sha = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain")
    return (sha.strip() if sha else None), (None if status is None else bool(status.strip()))


@functools.cache
def _versions(device: str) -> str:
    """``name=version`` of python, ``NUMERIC_PACKAGES`` found here, the CUDA runtime torch
    was built for (cuda cells) and msabench, space-separated in that order."""
    found = {"python": platform.python_version()}
    for name in NUMERIC_PACKAGES:
        if (version := _package_version(name)) is not None:
            found[name] = version
    if device == "cuda" and importlib.util.find_spec("torch") is not None:
        import torch

        if torch.version.cuda:
            found["cuda"] = torch.version.cuda
    found["msabench"] = _package_version("msabench") or "unknown"
    return " ".join(f"{k}={v}" for k, v in found.items())


def cell_provenance(device: str) -> dict[str, Any]:
    """The ``schema.PROVENANCE`` columns of a cell on ``device`` trained by this process.
    Cached per process and device, so the rows of every cell cost nothing more; a commit
    made while the process lives does not change the code it has imported."""
    return dict(_cell_provenance(device))  # a copy: no caller can edit the cached answer


@functools.cache
def _cell_provenance(device: str) -> dict[str, Any]:
    sha, dirty = _code()
    return {
        "host": socket.gethostname(),
        "device_name": device_name(device),
        "git_sha": sha,
        "git_dirty": dirty,
        "versions": _versions(device),
    }


def environment(device: str, problem_names: Iterable[str], per_cell_threads: int | None = None) -> dict[str, Any]:
    """Provenance for the run file's metadata: time, git, versions, device, threads (the
    CPU count, this process's torch threads, and the intra-op threads each cell ran with)
    and the problems' facts (``schema.ProblemFacts``: init, weights, target, ...)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in (*_VERSIONED, "msabench"):
        versions[name] = _package_version(name)
    threads: dict[str, int | None] = {"cpu_count": os.cpu_count(), "torch": None, "per_cell": per_cell_threads}
    if importlib.util.find_spec("torch") is not None:
        import torch

        threads["torch"] = torch.get_num_threads()
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
        "device_name": device_name(device),
        "host": socket.gethostname(),
        "threads": threads,
        "problems": used,
    }


def clear_cache() -> None:
    """Forget the cached answers of ``cell_provenance`` (a test that fakes the checkout or
    the host asks again)."""
    for cached in (_code, _versions, _cell_provenance):
        cached.cache_clear()
