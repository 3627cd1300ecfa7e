"""The runner: turns a suite into cells, trains each cell, writes tidy result rows.

A *cell* is one training run (problem, labelled hyperparameters, backend, seed, dtype,
device). Cells are independent tasks handed to a ``concurrent.futures.Executor``: the
in-process ``SerialExecutor`` by default, a process pool for ``jobs > 1``.

Layout of a run under the output root ``out``::

    out/<suite>/<run_id>/run.json             the plan: options, provenance, every cell
    out/<suite>/<run_id>/lock                 held (fcntl.flock) by the process running the run
    out/<suite>/<run_id>/cells/<cell_id>.parquet   one part per finished cell (atomic)
    out/<suite>/<run_id>.parquet              the run file: all parts + metadata

``resume`` re-runs the cells of ``run.json`` that have no part file, then writes the run
file, so an interrupted run loses at most the cells that were in flight. Starting,
resuming and finishing a run hold its lock (``hold``), so two processes never run the same
run. Every write to the run store goes through ``_writing``: an ``OSError`` becomes a
one-line ``StoreError``, and no temporary file is left behind.

Timing contract (docs/design.md §4): only ``trainer.step`` is inside the clock. The first
step is a block of its own (``compile_s``); the remaining steps are timed in blocks that
end at evaluation points (and at most ``MAX_BLOCK`` steps long, so the pre-staged batches
stay small), with ``trainer.sync`` at both edges of every block. Batches are moved to the
device with ``trainer.put`` before the block starts, and step metrics (device scalars) are
only read after the block has been timed. Evaluation runs outside the clock.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import fcntl
import importlib.metadata
import importlib.util
import json
import math
import multiprocessing
import os
import platform
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd
from tqdm import tqdm

import implementations as registry
from implementations import spec
from suites import datasets, grids, memory, problems, schema

#: evaluation inputs are fed to ``predict`` in chunks of at most this many rows.
EVAL_CHUNK = 1000
#: the fixed train subset evaluated at every point: the first this-many train samples.
TRAIN_EVAL_SAMPLES = 1000
#: longest timed block; blocks between evaluation points are split to stage fewer batches.
MAX_BLOCK = 50
#: the largest budget a cell may have (``--steps``, ``--epochs`` and ``--steps-scale`` alike):
#: 444x the longest budget of any suite (paper-icml's CIFAR-10, 500 epochs x 450 = 225,000
#: steps), and about 5 hours of steps alone at the fastest step measured (jax SGD on the
#: sine net, 0.18 ms). A larger one cannot be a run that finishes; it is a typo.
MAX_STEPS = 10**8
#: the most cells a plan may have (entries x backends x seeds): about 926x the default suite's 108.
#: run.json holds every cell (about 0.35 KB each: 35 MB at the bound) and the runner keeps
#: every finished cell's rows in memory until it writes the run file.
MAX_CELLS = 100_000
REPO_ROOT = Path(__file__).resolve().parents[1]
_RUN_ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_-]*$")


class RunError(ValueError):
    """Bad input to a run (unknown names, a missing run to resume, a run in use); one-line
    message."""


class StoreError(RunError):
    """A run's files could not be written or read (read-only or full disk, ``--out`` below a
    file, ``/proc``); one-line message naming the path and the system's reason."""


# ---------------------------------------------------------------------------------------
# Cells
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One training run. ``dtype`` is the dtype actually used (the reference backend
    always runs float64)."""

    problem: str
    label: str
    hp: Any
    backend: str
    seed: int
    steps: int
    eval_every: int
    dtype: str
    device: str

    @property
    def algorithm(self) -> str:
        return spec.algorithm_id(self.hp)

    @property
    def cell_id(self) -> str:
        """A stable, file-name-safe slug, e.g. ``sine-resnet.emsa.torch.float32.s0``."""
        raw = f"{self.problem}.{self.label}.{self.backend}.{self.dtype}.s{self.seed}"
        return re.sub(r"[^a-z0-9._-]+", "-", raw.lower())

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["hp"] = {"algorithm": self.algorithm, "fields": spec.hp_fields(self.hp)}
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Cell:
        hp_cls = spec.BY_ID.get(d["hp"]["algorithm"])
        if hp_cls is None:
            raise RunError(f"run.json names an unknown algorithm {d['hp']['algorithm']!r}")
        return cls(**{**d, "hp": hp_cls(**d["hp"]["fields"])})


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``."""
    if device not in ("auto", "cpu", "cuda"):
        raise RunError(f"unknown device {device!r} (choose from auto, cpu, cuda)")
    if device != "auto":
        return device
    if importlib.util.find_spec("torch") is None:
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _known(kind: str, names: Iterable[str], known: Iterable[str]) -> tuple[str, ...]:
    """``names`` as a tuple, or a ``RunError`` naming the first unknown one."""
    names, known = tuple(names), tuple(known)
    for name in names:
        if name not in known:
            raise RunError(f"unknown {kind} {name!r} (known: {', '.join(known)})")
    return names


def plan(
    suite: grids.Suite,
    *,
    backends: Iterable[str] | None = None,
    seeds: Iterable[int] | None = None,
    steps_scale: float = 1.0,
    steps: int | None = None,
    epochs: float | None = None,
    dtype: str = "float32",
    device: str = "cpu",
    problems_filter: Iterable[str] | None = None,
    algorithms_filter: Iterable[str] | None = None,
) -> list[Cell]:
    """The suite's cells (entries × backends × seeds), after checking every name.

    Budgets: each entry's own, multiplied by ``steps_scale``, or replaced by ``steps``
    training steps or ``epochs`` epochs of its problem (one of the three); evaluation
    intervals are scaled alike, so every cell keeps about as many evaluation points, up to
    ``MAX_EVALS_PER_EPOCH`` per epoch when ``steps`` or ``epochs`` shortens a run.

    Raises ``RunError`` for unknown backends, problems or algorithms in a filter, a bad
    dtype or budget (more than ``MAX_STEPS`` steps in a cell), more than ``MAX_CELLS``
    cells, or a plan with no cells left. ``seeds`` may be a ``range``: it is counted before
    any cell is built, so a huge one is refused at once.
    """
    backends = tuple(backends) if backends else suite.backends
    seeds = suite.seeds if seeds is None else seeds if isinstance(seeds, Sequence) else tuple(seeds)
    for b in backends:
        if b not in registry.BACKENDS:
            raise RunError(f"unknown backend {b!r} (known: {', '.join(registry.BACKENDS)})")
    if dtype not in ("float32", "float64"):
        raise RunError(f"unknown dtype {dtype!r} (choose from float32, float64)")
    if not (math.isfinite(steps_scale) and steps_scale > 0):
        raise RunError(f"--steps-scale must be a positive number, got {steps_scale!r}")
    if sum(x is not None for x in (steps, epochs)) + (steps_scale != 1.0) > 1:
        raise RunError("--steps-scale, --steps and --epochs are alternatives: give one")
    if steps is not None and steps < 1:
        raise RunError(f"--steps must be a positive integer, got {steps!r}")
    if epochs is not None and not (math.isfinite(epochs) and epochs > 0):
        raise RunError(f"--epochs must be a positive number, got {epochs!r}")
    if not seeds:
        raise RunError("at least one seed is needed")
    entries = list(suite.entries)
    if problems_filter:
        problems_filter = _known("problem", problems_filter, problems.PROBLEMS)
        entries = [e for e in entries if e.problem in problems_filter]
    if algorithms_filter:
        algorithms_filter = _known("algorithm", algorithms_filter, registry.ALGORITHMS)
        entries = [e for e in entries if e.algorithm in algorithms_filter]
    n_cells = len(entries) * len(backends) * len(seeds)
    if n_cells > MAX_CELLS:
        raise RunError(
            f"the plan has {n_cells:,} cells; at most {MAX_CELLS:,} are allowed (use fewer seeds or filters)"
        )
    cells = [
        Cell(
            problem=e.problem,
            label=e.label,
            hp=e.hp,
            backend=b,
            seed=int(s),
            steps=e.steps,
            eval_every=e.eval_every,
            dtype="float64" if b == "reference" else dtype,
            device=device,
        )
        for e in (_budgeted(x, steps_scale, steps, epochs) for x in entries)
        for b in backends
        for s in seeds
    ]
    if not cells:
        raise RunError(f"no cells of suite {suite.name!r} match the filters")
    return cells


#: the densest evaluation a ``--steps``/``--epochs`` override may scale an entry to
#: (paper-jmlr's own CNN cadence): below it a shortened paper run would mostly evaluate
#: (each evaluation reads 16,000 images; 1,000 train, 5,000 val, 10,000 test).
MAX_EVALS_PER_EPOCH = grids.PAPER_EVALS_PER_EPOCH


def _budgeted(entry: grids.Entry, scale: float, steps: int | None, epochs: float | None) -> grids.Entry:
    """The entry with the run's budget. ``--steps`` and ``--epochs`` scale the evaluation
    interval with the budget, but never to more than ``MAX_EVALS_PER_EPOCH`` evaluations
    per epoch of the problem, unless the entry itself evaluated more often than that:
    ``paper-icml --epochs 1`` evaluates CIFAR-10 every 90 steps, not at every step."""
    if steps is None and epochs is None:
        _check_budget(entry.steps * scale, "--steps-scale")
        return entry.scaled(scale)
    per_epoch = problems.get_problem(entry.problem).steps_per_epoch
    _check_budget(steps if steps is not None else epochs * per_epoch, "--steps" if steps is not None else "--epochs")
    budget = steps if steps is not None else max(1, round(epochs * per_epoch))
    shortened = entry.scaled(budget / entry.steps)
    floor = min(entry.eval_every, math.ceil(per_epoch / MAX_EVALS_PER_EPOCH), shortened.steps)
    return dataclasses.replace(shortened, eval_every=max(shortened.eval_every, floor))


def _check_budget(steps: float, option: str) -> None:
    """``RunError`` when a cell's budget would exceed ``MAX_STEPS`` (checked on the float,
    before rounding: ``--epochs 1e308`` overflows to inf)."""
    if not steps <= MAX_STEPS:
        raise RunError(f"{option} gives a cell {steps:.3g} steps; at most {MAX_STEPS:,} are allowed")


def check_data(cells: list[Cell]) -> list[str]:
    """Before any cell runs: every data set the cells need is read and checksummed.

    Returns the names of absent data sets (their cells will be ``skipped``); raises
    ``RunError`` (one line with the path and the fix) for an incomplete data set, a
    truncated file or a checksum mismatch, so no cell trains on damaged data."""
    needed = sorted({p.dataset for p in map(problems.get_problem, {c.problem for c in cells}) if p.dataset})
    absent = []
    for name in needed:
        try:
            if datasets.locate(name).status == "absent":
                absent.append(name)
            else:
                datasets.verify(name)
        except datasets.DataError as e:
            raise RunError(str(e)) from None
    return absent


# ---------------------------------------------------------------------------------------
# Provenance
# ---------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------
# Runs on disk
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """Where a run lives. ``root`` is None for runs kept in memory (tuning)."""

    suite: str
    run_id: str
    root: Path | None

    @property
    def run_dir(self) -> Path:
        return self.root / self.suite / self.run_id

    @property
    def run_file(self) -> Path:
        return self.root / self.suite / f"{self.run_id}.parquet"

    def part_path(self, cell: Cell) -> Path:
        return self.run_dir / "cells" / f"{cell.cell_id}.parquet"


def new_run_id() -> str:
    """A UTC timestamp plus a short random suffix, e.g. ``20261123T150102Z-3fa9``: sorts by
    time, and two runs started in the same second do not collide."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


#: the lock file in a run's folder (see ``hold``).
LOCK_FILE = "lock"


@contextlib.contextmanager
def _writing(path: Path, verb: str = "write") -> Iterator[None]:
    """The one place where run-store failures are named: an ``OSError`` inside the block
    (read-only or full disk, a file where a folder should be, ``/proc``) becomes a one-line
    ``StoreError`` naming ``path`` and the system's reason."""
    try:
        yield
    except OSError as e:
        raise StoreError(f"cannot {verb} {path}: {e.strerror or schema.one_line(e)}") from None


def check_writable(folder: Path, option: str = "--out") -> None:
    """``StoreError`` unless files can be created under ``folder``, which need not exist
    yet: its nearest existing ancestor must be a folder that takes a new file. Probed with
    a temporary file, removed at once, since permission bits do not tell (root ignores
    them; ``/proc`` and read-only mounts refuse all the same). Creates nothing that stays."""
    folder = Path(folder)
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise StoreError(f"{option} {folder}: {existing} is not a directory")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".msabench-probe-"):
            pass
    except OSError as e:
        raise StoreError(f"{option} {folder}: cannot create files in {existing} ({e.strerror or e})") from None


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` (its folder made if missing) through ``<path>.tmp`` and a
    rename, so a reader sees the old file or the whole new one; the temporary file is
    removed when writing fails (a full disk leaves nothing partial). ``StoreError`` on any
    ``OSError``."""
    tmp = path.with_name(path.name + ".tmp")
    with _writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            tmp.write_text(text)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return path


def _write_parquet(df: pd.DataFrame, path: Path, metadata: dict[str, Any]) -> Path:
    """``schema.write_parquet`` (atomic, its temporary file removed on failure), with an
    ``OSError`` turned into a ``StoreError``."""
    with _writing(path):
        return schema.write_parquet(df, path, metadata)


def _read_text(path: Path) -> str:
    with _writing(path, "read"):
        return path.read_text()


def _create_run_dir(run: Run) -> Path:
    """Create the new run's ``<run_dir>/cells`` (the run folder must not exist yet); return
    the topmost folder this created, so that a failed start can remove what it made."""
    cells = run.run_dir / "cells"
    top = next(p for p in (*reversed(cells.parents), cells) if not p.exists())
    try:
        with _writing(run.run_dir):
            cells.mkdir(parents=True, exist_ok=False)
    except StoreError:
        _remove_run_dir(run, top)  # mkdir(parents=True) may have made some parents before failing
        raise
    return top


def _remove_run_dir(run: Run, top: Path) -> None:
    """Remove a run folder that failed to start, and the empty parents made for it, up to
    ``top``. Parents are removed only while empty: another run may have started in them."""
    shutil.rmtree(run.run_dir, ignore_errors=True)
    for folder in run.run_dir.parents:
        if not folder.is_relative_to(top):
            break
        try:
            folder.rmdir()
        except OSError:
            break


@contextlib.contextmanager
def hold(run: Run) -> Iterator[None]:
    """Hold the run's lock for the block: an exclusive ``fcntl.flock`` on
    ``<run_dir>/lock``, so two processes never train, or write the files of, the same run.

    A held lock is refused at once (no waiting) with a ``RunError`` naming the holder: its
    pid, host and start time, which each holder writes into the lock file. The kernel drops
    a flock when its process exits, however it dies (SIGKILL included), so a lock never
    outlives its holder; the file stays (deleting it would let a third process lock a new
    file while the second still holds the old one), quoting the last holder."""
    path = run.run_dir / LOCK_FILE
    with _writing(path):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited: workers cannot keep it
    try:
        with _writing(path):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunError(
                    f"run {run.run_id} is in use by {_holder(fd)}; wait for it to finish (or stop it) first"
                ) from None
            since = datetime.now(UTC).isoformat(timespec="seconds")
            holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": since}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _holder(fd: int) -> str:
    """Who holds the lock, as its lock file says."""
    try:
        h = json.loads(os.pread(fd, 4096, 0))
        return f"pid {h['pid']} on {h['host']} since {h['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (which has not written its name yet)"


@contextlib.contextmanager
def started_run(out: Path, suite: str, cells: list[Cell], options: dict[str, Any]) -> Iterator[tuple[Run, dict]]:
    """Start a new run and hold its lock for the block; yield ``(run, run.json's document)``.

    The run folder, its lock and its ``run.json`` (the plan and the provenance) are made
    in that order, so no other process can take the run in between. When one of them
    fails (``StoreError``), everything made is removed before the error goes on."""
    run = Run(suite, new_run_id(), Path(out))
    device = cells[0].device if cells else "cpu"
    plan_doc = {
        "schema_version": schema.SCHEMA_VERSION,
        "suite": suite,
        "run_id": run.run_id,
        "options": options,
        "environment": environment(device, (c.problem for c in cells), options.get("threads")),
        "cells": [c.to_json() for c in cells],
    }
    top = _create_run_dir(run)
    with contextlib.ExitStack() as lock:
        try:
            lock.enter_context(hold(run))
            _write_json(run.run_dir / "run.json", plan_doc)
            doc = read_plan(run)
        except BaseException:
            lock.close()
            _remove_run_dir(run, top)
            raise
        yield run, doc


def load_run(out: Path, suite: str, run_id: str) -> tuple[Run, list[Cell], dict[str, Any]]:
    """A started run's (Run, cells, run.json); ``RunError`` when there is no such run."""
    if not _RUN_ID.match(run_id):
        raise RunError(f"malformed run id {run_id!r}")
    run = Run(suite, run_id, Path(out))
    path = run.run_dir / "run.json"
    if not path.is_file():
        raise RunError(f"no run {run_id!r} of suite {suite!r} under {out} (looked for {path})")
    text = _read_text(path)
    try:
        doc = json.loads(text)
        cells = [Cell.from_json(c) for c in doc["cells"]]
    except (ValueError, KeyError, TypeError) as e:
        raise RunError(f"{path} is unreadable ({schema.one_line(e)})") from None
    return run, cells, doc


def read_plan(run: Run) -> dict[str, Any]:
    """The run's ``run.json``."""
    return json.loads(_read_text(run.run_dir / "run.json"))


def mark_resumed(run: Run, doc: dict[str, Any]) -> None:
    """Record in ``run.json`` (and in ``doc``) that the run is being resumed now."""
    doc.setdefault("resumed", []).append(datetime.now(UTC).isoformat(timespec="seconds"))
    _write_json(run.run_dir / "run.json", doc)


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(doc, indent=1, default=str))


# ---------------------------------------------------------------------------------------
# One cell
# ---------------------------------------------------------------------------------------


def _as_float(v: Any) -> float:
    """A device scalar (torch, JAX or NumPy) as a host float; several values are summed."""
    if hasattr(v, "detach"):  # torch: leave the graph and the device without importing torch here
        v = v.detach().cpu()
    return float(np.asarray(v, dtype=np.float64).sum())


def _blocks(steps: int, eval_every: int) -> Iterator[tuple[int, bool]]:
    """The timed blocks of a cell, lazily (memory stays constant whatever the budget): the
    step count at each block's end, and whether it is an evaluation point (every
    ``eval_every`` steps, and the last step). The first step is a block of its own; the
    others end at evaluation points, split to at most ``MAX_BLOCK`` steps."""
    yield 1, eval_every == 1 or steps == 1
    done = 1
    while done < steps:
        next_eval = min(steps, (done // eval_every + 1) * eval_every)
        end = min(next_eval, done + MAX_BLOCK)
        yield end, end == next_eval
        done = end


def _eval_sets(problem: problems.Problem) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    x, y = problem.arrays("train")
    return {
        "train": (x[:TRAIN_EVAL_SAMPLES], y[:TRAIN_EVAL_SAMPLES]),
        "val": problem.arrays("val"),
        "test": problem.arrays("test"),
    }


def evaluate(trainer: spec.Trainer, state: Any, problem: problems.Problem, sets: dict) -> dict[str, Any]:
    """Losses and accuracies on the fixed train subset, val and test, and the non-zero
    fractions of the effective parameters (overall and per layer with a weight W)."""
    out: dict[str, Any] = {}
    for split, (x, y) in sets.items():
        z = np.concatenate(
            [np.asarray(trainer.predict(state, x[i : i + EVAL_CHUNK])) for i in range(0, len(x), EVAL_CHUNK)]
        )
        out[f"{split}_loss"] = problem.loss_value(z, y)
        out[f"{split}_acc"] = problem.accuracy(z, y)
    params = [np.asarray(p) for p in trainer.get(state)]
    out["nonzero_frac"] = problem.nonzero_frac(params)
    per_layer = []
    for layer, sl in zip(problem.layers, spec.layer_slices(problem.layers)):
        if "W" in layer.param_names:
            w = params[sl][layer.param_names.index("W")]
            per_layer.append(np.count_nonzero(w) / w.size)
    out["layer_nonzero_frac"] = per_layer
    return out


def _identity(run: Run, cell: Cell, concurrency: int) -> dict[str, Any]:
    """The columns every row of a cell shares: identity, concurrency, hyperparameters."""
    return {
        "suite": run.suite,
        "run_id": run.run_id,
        "cell_id": cell.cell_id,
        "problem": cell.problem,
        "algorithm": cell.algorithm,
        "label": cell.label,
        "backend": cell.backend,
        "device": cell.device,
        "dtype": cell.dtype,
        "seed": cell.seed,
        "concurrency": concurrency,
        **schema.hp_columns(cell.hp),
    }


def run_cell(cell: Cell, run: Run, concurrency: int = 1, progress: Callable[[int], Any] | None = None) -> pd.DataFrame:
    """Train one cell and return its rows; never raises for a failing cell (the failure
    becomes a ``diverged``/``error``/``skipped`` row). When ``run.root`` is set the rows
    are also written atomically as the cell's part file."""
    base = _identity(run, cell, concurrency)
    tb: str | None = None
    try:
        with memory.PeakMemory(cell.backend, cell.device) as peak:
            rows = _train(cell, base, progress)
        if any(r["status"] != "skipped" for r in rows):  # a skipped cell allocated nothing of its own
            for r in rows:
                r["peak_rss_mib"], r["peak_gpu_mib"] = peak.host_mib, peak.gpu_mib
    except Exception as e:  # noqa: BLE001 - a failing cell is a row, never a dead suite
        tb = traceback.format_exc()
        rows = [{**base, "step": 0, "epoch": 0.0, "status": "error", "reason": schema.one_line(e)}]
    if rows and isinstance(rows[-1].get("_traceback"), str):
        tb = rows[-1].pop("_traceback")
    df = schema.frame(rows)
    if run.root is not None:
        part = run.part_path(cell)
        if tb:
            write_text_atomic(part.with_suffix(".traceback.txt"), tb)
        _write_parquet(df, part, {"suite": run.suite, "run_id": run.run_id, "cell_id": cell.cell_id})
    return df


def _skip_reasons(cell: Cell, problem: problems.Problem) -> list[str]:
    reasons = list(registry.why_not(cell.hp, cell.backend, problem, cell.device))
    if problem.dataset is not None:
        found = datasets.locate(problem.dataset)
        if found.status == "absent":
            fix = datasets.how_to_get(found.dataset, datasets.data_dir())
            reasons.append(f"data set {problem.dataset!r} not found in {found.folder}: {fix}")
    return reasons


def _train(cell: Cell, base: dict[str, Any], progress: Callable[[int], Any] | None) -> list[dict[str, Any]]:
    problem = problems.get_problem(cell.problem)
    reasons = _skip_reasons(cell, problem)
    if reasons:
        return [{**base, "step": 0, "epoch": 0.0, "status": "skipped", "reason": "; ".join(reasons)}]
    try:
        make = registry.get(cell.algorithm, cell.backend)
    except ModuleNotFoundError as e:
        if not (e.name or "").startswith("implementations"):
            raise
        reason = f"{e.name} is not available here ({schema.one_line(e)})"
        return [{**base, "step": 0, "epoch": 0.0, "status": "skipped", "reason": reason}]

    rows: list[dict[str, Any]] = []
    per_epoch = problem.steps_per_epoch
    done = 0
    time_s = 0.0
    compile_s = math.nan
    block_ms: list[float] = []
    flips: float | None = None  # None until the algorithm reports flips

    def row(step: int, metrics: dict[str, Any], status: str = "ok", reason: str = "") -> dict[str, Any]:
        return {
            **base,
            "step": step,
            "epoch": step / per_epoch,
            "time_s": time_s,
            **metrics,
            "flips": math.nan if flips is None else flips,
            "status": status,
            "reason": reason,
        }

    try:
        trainer = make(problem, cell.hp, dtype=cell.dtype, device=cell.device, seed=cell.seed)
        state = trainer.init(problem.init_params(cell.seed))
        batches = problem.batches("train", cell.seed)
        sets = _eval_sets(problem)
        first = evaluate(trainer, state, problem, sets)
        if not math.isfinite(first["train_loss"]):
            rows.append(row(0, first, "diverged", "non-finite training loss at step 0"))
            return _finish(rows, compile_s, block_ms)
        rows.append(row(0, first))
        for end, is_eval in _blocks(cell.steps, cell.eval_every):
            n = end - done
            staged = [trainer.put(next(batches)) for _ in range(n)]  # host->device outside the clock
            collected = []
            trainer.sync(state)
            t0 = time.perf_counter()
            for batch in staged:
                state, m = trainer.step(state, batch)
                collected.append(m)
            trainer.sync(state)
            dt = time.perf_counter() - t0
            del staged
            if done == 0:
                compile_s = dt
            else:
                time_s += dt
                block_ms.append(1000.0 * dt / n)
            bad_step = None
            for k, m in enumerate(collected, start=done + 1):
                if "loss" in m and bad_step is None and not math.isfinite(_as_float(m["loss"])):
                    bad_step = k
                if "flips" in m:
                    flips = (flips or 0.0) + _as_float(m["flips"])
            done = end
            if progress is not None:
                progress(n)
            if bad_step is not None:
                try:
                    metrics = evaluate(trainer, state, problem, sets)
                except Exception:  # noqa: BLE001 - a diverged state may not even evaluate; it stays diverged
                    metrics = {}
                rows.append(row(end, metrics, "diverged", f"non-finite training loss at step {bad_step}"))
                break
            if is_eval:
                metrics = evaluate(trainer, state, problem, sets)
                if not math.isfinite(metrics["train_loss"]):
                    rows.append(row(end, metrics, "diverged", f"non-finite training loss at step {end}"))
                    break
                rows.append(row(end, metrics))
                flips = 0.0 if flips is not None else None
    except Exception as e:  # noqa: BLE001 - a failing cell is a row, never a dead suite
        rows.append({**row(done, {}, "error", schema.one_line(e)), "_traceback": traceback.format_exc()})
    return _finish(rows, compile_s, block_ms)


def _finish(rows: list[dict[str, Any]], compile_s: float, block_ms: list[float]) -> list[dict[str, Any]]:
    """Fill the per-cell timing columns on every row; give step 0 zero flips when the
    algorithm reports flips at all (none can have happened before training)."""
    ms = statistics.median(block_ms) if block_ms else math.nan
    has_flips = any(isinstance(r.get("flips"), float) and not math.isnan(r["flips"]) for r in rows[1:])
    for r in rows:
        r["compile_s"] = compile_s
        r["ms_per_step"] = ms
        if has_flips and r["step"] == 0:
            r["flips"] = 0.0
    return rows


# ---------------------------------------------------------------------------------------
# Many cells
# ---------------------------------------------------------------------------------------


class SerialExecutor(cf.Executor):
    """An ``Executor`` that runs each task in the calling thread at ``submit``: cells run
    one at a time, in order, with the progress bar updated from inside the cell."""

    def submit(self, fn, /, *args, **kwargs):
        future: cf.Future = cf.Future()
        if not future.set_running_or_notify_cancel():
            return future
        try:
            result = fn(*args, **kwargs)
        except BaseException as e:
            future.set_exception(e)
            if not isinstance(e, Exception):
                raise  # Ctrl-C stops the run; finished cells keep their part files
        else:
            future.set_result(result)
        return future


def set_threads(threads: int) -> None:
    """Fix the intra-op thread count of this process (torch, and the OpenMP/BLAS pools
    of libraries imported later). On a busy 2-core machine torch's default of one thread
    per core made a 2 ms step take 200 ms, so the count is worth fixing and recording."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    if threads == 1 and "jax" not in sys.modules:
        # XLA reads its flags when its CPU client starts (the first jax computation), so
        # this holds in a fresh worker; its thread pool cannot be sized, only made serial
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false".strip()
    if importlib.util.find_spec("torch") is not None:
        import torch

        torch.set_num_threads(threads)


def worker_threads(jobs: int) -> int:
    """Intra-op threads per worker when ``jobs`` workers share this machine's CPUs."""
    return max(1, (os.cpu_count() or 1) // jobs)


def process_executor(jobs: int, threads: int | None = None) -> cf.ProcessPoolExecutor:
    """A pool of ``jobs`` spawned workers (fork is unsafe once torch/JAX started threads),
    each with ``threads`` intra-op threads (default: the CPUs shared out, at least 1)."""
    threads = threads or worker_threads(jobs)
    ctx = multiprocessing.get_context("spawn")
    return cf.ProcessPoolExecutor(jobs, mp_context=ctx, initializer=set_threads, initargs=(threads,))


def execute(
    run: Run,
    cells: list[Cell],
    *,
    jobs: int = 1,
    threads: int | None = None,
    executor: cf.Executor | None = None,
    concurrency: int | None = None,
    show_progress: bool = True,
    log: TextIO | None = None,
) -> dict[str, pd.DataFrame]:
    """Run the cells that have no part file yet, and those whose part says ``skipped``
    (what they lacked, a data set or a GPU, may be here now); return their rows by
    ``cell_id``.

    ``executor`` defaults to ``SerialExecutor`` (``jobs == 1``) or a process pool whose
    workers use ``threads`` intra-op threads each (see ``process_executor``);
    ``concurrency`` (recorded on every row) defaults to ``min(jobs, cells to run)``.
    A failing cell becomes an ``error`` row; the other cells go on. A ``StoreError`` (a
    part file cannot be written: full or read-only disk) stops the run: the cells that
    finished keep their parts.
    """
    log = log or sys.stderr
    todo = [c for c in cells if run.root is None or _to_run(run.part_path(c))]
    if concurrency is None:
        concurrency = max(1, min(jobs, len(todo)))
    own = executor is None
    if executor is None:
        executor = SerialExecutor() if jobs <= 1 else process_executor(jobs, threads)
    in_process = not isinstance(executor, cf.ProcessPoolExecutor)
    bar = tqdm(total=sum(c.steps for c in todo), file=log, unit="step", disable=not show_progress, dynamic_ncols=True)
    reported: dict[str, int] = {}
    results: dict[str, pd.DataFrame] = {}

    def progress_for(cell: Cell) -> Callable[[int], None] | None:
        if not in_process:
            return None  # a bound tqdm method cannot cross a process boundary

        def progress(n: int) -> None:
            reported[cell.cell_id] = reported.get(cell.cell_id, 0) + n
            bar.update(n)

        return progress

    def finish(future: cf.Future, cell: Cell) -> None:
        try:
            df = future.result()
        except StoreError:
            raise  # the run's files cannot be written: every further cell would fail alike
        except Exception as e:  # noqa: BLE001 - the worker died
            df = _error_frame(run, cell, concurrency, e)
        results[cell.cell_id] = df
        if not in_process:
            bar.set_description_str(f"{len(results)}/{len(todo)} cells")
        bar.update(cell.steps - reported.get(cell.cell_id, 0))
        last = df.iloc[-1]
        if last["status"] != "ok":
            tqdm.write(f"{cell.cell_id}: {last['status']}: {last['reason']}", file=log)

    try:
        pending: dict[cf.Future, Cell] = {}
        for cell in todo:
            if in_process:
                bar.set_description_str(cell.cell_id)
            future = executor.submit(run_cell, cell, run, concurrency, progress_for(cell))
            if future.done():
                finish(future, cell)
            else:
                pending[future] = cell
        for future in cf.as_completed(pending):
            finish(future, pending[future])
    finally:
        bar.close()
        if own:
            executor.shutdown(wait=True, cancel_futures=True)
    return results


def _error_frame(run: Run, cell: Cell, concurrency: int, e: BaseException) -> pd.DataFrame:
    row = {
        **_identity(run, cell, concurrency),
        "step": 0,
        "epoch": 0.0,
        "status": "error",
        "reason": schema.one_line(e),
    }
    df = schema.frame([row])
    if run.root is not None:
        _write_parquet(df, run.part_path(cell), {"suite": run.suite, "run_id": run.run_id})
    return df


def _to_run(part: Path) -> bool:
    """No part yet, or a part of skipped rows only (retried on resume)."""
    if not part.exists():
        return True
    try:
        return bool((schema.read_results(part)[0]["status"] == "skipped").all())
    except Exception:  # noqa: BLE001 - an unreadable part is rerun rather than trusted
        return True


def write_run_file(run: Run, cells: list[Cell], doc: dict[str, Any]) -> Path:
    """Concatenate the cells' parts, in plan order, into the run file with its metadata."""
    frames, missing = [], []
    for cell in cells:
        part = run.part_path(cell)
        if part.exists():
            frames.append(schema.read_results(part)[0])
        else:
            missing.append(cell.cell_id)
    if missing:
        raise RunError(f"run {run.run_id} lacks parts for {len(missing)} cells (first: {missing[0]}); resume it")
    df = pd.concat(frames, ignore_index=True)
    meta = {
        "suite": run.suite,
        "run_id": run.run_id,
        **doc["environment"],
        "options": doc["options"],
        "resumed": doc.get("resumed", []),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "cells": len(cells),
        "labels": schema.label_algorithms((c.label, c.algorithm) for c in cells),
    }
    return _write_parquet(df, run.run_file, meta)


def run_suite(
    suite: grids.Suite,
    cells: list[Cell],
    *,
    out: Path,
    options: dict[str, Any],
    jobs: int = 1,
    threads: int | None = None,
    executor: cf.Executor | None = None,
    show_progress: bool = True,
    log: TextIO | None = None,
) -> Path:
    """Start a run of ``cells``, execute them and write the run file, holding the run's
    lock throughout; return the run file's path."""
    with started_run(Path(out), suite.name, cells, options) as (run, doc):
        execute(run, cells, jobs=jobs, threads=threads, executor=executor, show_progress=show_progress, log=log)
        return write_run_file(run, cells, doc)


def resume(
    out: Path,
    suite: str,
    run_id: str,
    *,
    jobs: int = 1,
    threads: int | None = None,
    executor: cf.Executor | None = None,
    show_progress: bool = True,
    log: TextIO | None = None,
) -> Path:
    """Run the cells of an interrupted run that have no part file (or only a skipped one)
    and write the run file, holding the run's lock throughout (``RunError`` naming the
    holder when another process has it)."""
    run, cells, _ = load_run(Path(out), suite, run_id)
    with hold(run):
        doc = read_plan(run)  # as it is under the lock
        mark_resumed(run, doc)
        execute(run, cells, jobs=jobs, threads=threads, executor=executor, show_progress=show_progress, log=log)
        return write_run_file(run, cells, doc)
