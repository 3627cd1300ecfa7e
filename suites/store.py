"""The run store: a run's files on disk, and the rules for writing and resuming them.

Layout of a run under the output root ``out``::

    out/<suite>/<run_id>/run.json             the plan: options, provenance, every cell
    out/<suite>/<run_id>/lock                 held (fcntl.flock) by the process running the run
    out/<suite>/<run_id>/cells/<cell_id>.parquet   one part per finished cell (atomic)
    out/<suite>/<run_id>/checkpoints/<cell_id>.npz  a running cell's checkpoint (suites.checkpoints)
    out/<suite>/<run_id>.parquet              the run file: all parts + metadata

``started_run`` makes a new run (folder, lock, ``run.json``); ``load_run``, ``hold``,
``read_plan`` and ``mark_resumed`` take up a started one. ``write_part`` writes one cell's
part; ``to_run`` is the resume rule (which cells run again); ``write_run_file`` joins the
parts. Starting, resuming and finishing a run hold its lock (``hold``), so two processes
never run the same run. Every write goes through ``_writing``: an ``OSError`` becomes a
one-line ``StoreError``, and no temporary file is left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from suites import schema
from suites.errors import RunError, StoreError
from suites.planning import Cell
from suites.provenance import environment

_RUN_ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_-]*$")


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

    def checkpoint_path(self, cell: Cell) -> Path:
        return self.run_dir / "checkpoints" / f"{cell.cell_id}.npz"


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


def write_part(run: Run, cell: Cell, df: pd.DataFrame, traceback: str | None = None) -> Path:
    """Write a cell's rows as its part file (atomically), and its traceback beside it when
    it failed with one; return the part's path.

    Only the driver (``executors.execute``) calls this: workers return rows, so a worker
    needs no access to the run's folder, and a worker left running by a dead driver cannot
    write into the run. A traceback left by an earlier attempt of the cell (rerun by
    ``--retry-errors``) is removed when this attempt has none."""
    part = run.part_path(cell)
    trace = part.with_suffix(".traceback.txt")
    if traceback:
        write_text_atomic(trace, traceback)
    else:
        with _writing(trace, "remove"):
            trace.unlink(missing_ok=True)
    return _write_parquet(df, part, {"suite": run.suite, "run_id": run.run_id, "cell_id": cell.cell_id})


def to_run(run: Run, cell: Cell, retry_errors: bool = False) -> bool:
    """The resume rule: a cell (re)runs when it has no part yet (never run, interrupted, or
    lost with its worker), or a part of skipped rows only (what it lacked, a data set or a
    GPU, may be here now); with ``retry_errors``, also when its part has an ``error`` row
    (the cell raised: a bug since fixed, a flaky driver). ``ok`` and ``diverged`` cells
    never run again."""
    part = run.part_path(cell)
    if not part.exists():
        return True
    try:
        status = schema.read_results(part)[0]["status"]
    except Exception:  # noqa: BLE001 - an unreadable part is rerun rather than trusted
        return True
    return bool((status == "skipped").all() or (retry_errors and (status == "error").any()))


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
