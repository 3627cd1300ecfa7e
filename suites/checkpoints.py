"""Cell checkpoints: a long cell survives being stopped.

A cell saves a checkpoint at every evaluation point (and, with ``--checkpoint-every N``,
at every multiple of N steps): its whole training state
(``Trainer.state_arrays``: parameters, discrete weights, M̄, α and the step count,
optimizer moments, BN running statistics), its rows so far and the loop's counters
(steps done, timed seconds, per-block step times, flips since the last evaluation).
Nothing else is needed to continue exactly: no trainer keeps hidden random state
(``spec.Trainer.restore``), and the batch stream seeks to the step (``Problem.batches``).

One file per cell, ``<run>/checkpoints/<cell_id>.npz``, written atomically (a temporary
file renamed over the old one, so a kill mid-write leaves the previous checkpoint) and
deleted by the driver once the cell's part is written. A cell that starts and finds its
checkpoint continues from it (``--resume``); a checkpoint that cannot be read, was
written for another cell configuration or by another checkpoint format or results schema
is reported in one line and ignored: the cell starts from step 0.

Layout: the arrays under ``state/<name>``, and ``meta``, a JSON string: ``format``
(``FORMAT``), ``schema_version``, ``cell`` (the cell's configuration, ``Cell.to_json``),
``step``, ``rows`` and ``loop``.
"""

from __future__ import annotations

import json
import os
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from suites import schema
from suites.planning import Cell

#: bumped whenever the file's layout or meaning changes
FORMAT = 1
STATE_PREFIX = "state/"


@dataclass(frozen=True)
class Policy:
    """Where a cell checkpoints and how often: ``path`` (None: never), at every evaluation
    point and, with ``every``, at every multiple of ``every`` steps too (the training
    loop ends a timed block there)."""

    path: str | None = None
    every: int | None = None

    def due(self, step: int, is_eval: bool) -> bool:
        return self.path is not None and (is_eval or bool(self.every and step % self.every == 0))


#: the policy of a cell that never checkpoints (tuning, tests, runs kept in memory)
NEVER = Policy()


@dataclass(frozen=True)
class Checkpoint:
    """What a cell continues from."""

    step: int
    state: dict[str, np.ndarray]
    rows: list[dict[str, Any]]
    loop: dict[str, Any]


def _jsonable(v: Any) -> Any:
    """NumPy scalars and arrays in rows (flips, per-layer fractions) as plain JSON values."""
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


def save(path: str | os.PathLike, cell: Cell, step: int, state: dict, rows: list, loop: dict) -> None:
    """Write the checkpoint atomically. Raises ``OSError`` when it cannot be written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT,
        "schema_version": schema.SCHEMA_VERSION,
        "cell": cell.to_json(),
        "step": step,
        "rows": rows,
        "loop": loop,
    }
    arrays = {STATE_PREFIX + k: np.asarray(v) for k, v in state.items()}
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, meta=np.asarray(json.dumps(meta, default=_jsonable)), **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class Unusable(Exception):
    """A checkpoint that must not be loaded; the message says why, in one line."""


def read(path: str | os.PathLike, cell: Cell) -> Checkpoint:
    """The checkpoint at ``path`` for ``cell``; ``Unusable`` when it cannot be read or
    belongs to another cell, format or schema; ``FileNotFoundError`` when there is none."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"][()]))
            state = {k[len(STATE_PREFIX) :]: f[k] for k in f.files if k.startswith(STATE_PREFIX)}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise Unusable(f"unreadable ({schema.one_line(e)})") from None
    if not isinstance(meta, dict):
        raise Unusable("its metadata is not an object")
    if meta.get("format") != FORMAT:
        raise Unusable(f"checkpoint format {meta.get('format')!r}, this msabench writes {FORMAT}")
    if meta.get("schema_version") != schema.SCHEMA_VERSION:
        raise Unusable(f"results schema {meta.get('schema_version')!r}, this msabench writes {schema.SCHEMA_VERSION}")
    if meta.get("cell") != json.loads(json.dumps(cell.to_json())):
        raise Unusable("written for another configuration of this cell")
    step = meta.get("step")
    if not isinstance(step, int) or not 0 < step < cell.steps or not meta.get("rows"):
        raise Unusable(f"its step {step!r} is not inside the cell's budget of {cell.steps}")
    return Checkpoint(step, state, meta["rows"], meta["loop"])


def load(policy: Policy, cell: Cell) -> Checkpoint | None:
    """The checkpoint the cell continues from, or None (none, or an unusable one, which is
    said in one line on stderr: the cell then starts from step 0)."""
    if policy.path is None:
        return None
    try:
        return read(policy.path, cell)
    except FileNotFoundError:
        return None
    except Unusable as e:
        print(f"{cell.cell_id}: checkpoint {policy.path} ignored, starting from step 0: {e}", file=sys.stderr)
        return None


def remove(path: str | os.PathLike | None) -> None:
    """Delete a cell's checkpoint (its part is final); a missing one is fine."""
    if path is not None:
        Path(path).unlink(missing_ok=True)
