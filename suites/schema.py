"""The results schema: one tidy row per (cell, evaluation point), stored as parquet.

A *cell* is one training run: (problem, labelled hyperparameters, backend, seed, dtype).
Every cell contributes one row per evaluation point (step 0, every ``eval_every`` steps and
the last step), or a single row when it was skipped. Columns, in file order:

- identity: ``suite, run_id, cell_id, problem, algorithm, label, backend, device, dtype,
  seed``;
- trajectory: ``step, epoch, time_s`` (cumulative timed step seconds, the first step
  excluded), ``compile_s`` (the first step's seconds), ``ms_per_step`` (the cell's median
  over its timed blocks after the first step), ``concurrency`` (cells sharing the device),
  ``peak_rss_mib`` and ``peak_gpu_mib`` (the cell's peak memory, ``suites/memory.py``);
- metrics: ``train_loss, train_acc, test_loss, test_acc, val_loss, val_acc, nonzero_frac,
  flips, layer_nonzero_frac`` (list: one fraction per layer with a weight ``W``);
- hyperparameters: ``hp_<field>`` for the union of the fields of ``spec.HYPERPARAMETERS``,
  null where the cell's algorithm has no such field;
- outcome: ``status`` in ``STATUSES`` and ``reason`` (empty exactly when ``ok``).

Provenance lives in the parquet key-value metadata, JSON under the key ``msabench``; it
always holds ``schema_version`` (``SCHEMA_VERSION``). ``results/README.md`` documents it.
"""

from __future__ import annotations

import json
import math
import os
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from implementations import spec

SCHEMA_VERSION = 2  # 2: peak_rss_mib, peak_gpu_mib
METADATA_KEY = b"msabench"
STATUSES = ("ok", "diverged", "error", "skipped")

IDENTITY = (
    ("suite", pa.string()),
    ("run_id", pa.string()),
    ("cell_id", pa.string()),
    ("problem", pa.string()),
    ("algorithm", pa.string()),
    ("label", pa.string()),
    ("backend", pa.string()),
    ("device", pa.string()),
    ("dtype", pa.string()),
    ("seed", pa.int64()),
)
TRAJECTORY = (
    ("step", pa.int64()),
    ("epoch", pa.float64()),
    ("time_s", pa.float64()),
    ("compile_s", pa.float64()),
    ("ms_per_step", pa.float64()),
    ("concurrency", pa.int64()),
    ("peak_rss_mib", pa.float64()),
    ("peak_gpu_mib", pa.float64()),
)
METRICS = (
    ("train_loss", pa.float64()),
    ("train_acc", pa.float64()),
    ("test_loss", pa.float64()),
    ("test_acc", pa.float64()),
    ("val_loss", pa.float64()),
    ("val_acc", pa.float64()),
    ("nonzero_frac", pa.float64()),
    ("flips", pa.float64()),
    ("layer_nonzero_frac", pa.list_(pa.float64())),
)
OUTCOME = (("status", pa.string()), ("reason", pa.string()))

_PY_TO_ARROW = {"float": pa.float64(), "int": pa.int64(), "bool": pa.bool_(), "str": pa.string()}


class ResultsError(ValueError):
    """A results file that cannot be read as msabench results; the message is one line."""


def _arrow_type(hint: Any) -> pa.DataType:
    """The column type of a field annotation: float/int/bool/str, ``X | None`` as X,
    anything else as string (written with ``str``)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if len(args) == 1:  # Optional[X] / X | None
        hint = args[0]
    return _PY_TO_ARROW.get(getattr(hint, "__name__", ""), pa.string())


def _hp_types() -> dict[str, pa.DataType]:
    """``hp_<field>`` -> arrow type, over every hyperparameter class in ``spec``.

    A field name shared by classes with different types (none today) widens to float64
    for int/float and to string otherwise, so the union stays one column per name.
    """
    out: dict[str, pa.DataType] = {}
    for cls in spec.HYPERPARAMETERS:
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            t = _arrow_type(hints[f.name])
            name = f"hp_{f.name}"
            if name in out and out[name] != t:
                numeric = {out[name], t} <= {pa.float64(), pa.int64()}
                t = pa.float64() if numeric else pa.string()
            out[name] = t
    return out


HP_TYPES = _hp_types()
ARROW_SCHEMA = pa.schema([*IDENTITY, *TRAJECTORY, *METRICS, *HP_TYPES.items(), *OUTCOME])
COLUMNS = tuple(ARROW_SCHEMA.names)
#: columns every results file must have (``hp_*`` may grow with new algorithms).
REQUIRED = tuple(name for name, _ in (*IDENTITY, *TRAJECTORY, *METRICS, *OUTCOME))


def hp_columns(hp: Any) -> dict[str, Any]:
    """A hyperparameter dataclass as its ``hp_<field>`` row entries."""
    return {f"hp_{k}": v for k, v in spec.hp_fields(hp).items()}


def empty_row() -> dict[str, Any]:
    """A row with every column null (NaN for floats), to be filled in."""
    row: dict[str, Any] = {}
    for f in ARROW_SCHEMA:
        row[f.name] = math.nan if pa.types.is_floating(f.type) else None
    row["reason"] = ""
    return row


def frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows (dicts) as a DataFrame with exactly ``COLUMNS``, missing entries null."""
    return pd.DataFrame([{**empty_row(), **r} for r in rows], columns=list(COLUMNS))


# ---------------------------------------------------------------------------------------
# Conversion to arrow: column by column, so ints with nulls stay int64 and lists stay lists.
# ---------------------------------------------------------------------------------------


def _is_null(v: Any) -> bool:
    if v is None or v is pd.NA:
        return True
    return isinstance(v, float) and math.isnan(v)


def _cell_value(v: Any, t: pa.DataType) -> Any:
    if pa.types.is_list(t):
        if v is None or (not hasattr(v, "__len__") and _is_null(v)):
            return None
        return [float(x) for x in v]
    if pa.types.is_floating(t):
        return math.nan if _is_null(v) else float(v)
    if _is_null(v):
        return None
    if pa.types.is_integer(t):
        return int(v)
    if pa.types.is_boolean(t):
        return bool(v)
    return str(v)


def to_table(df: pd.DataFrame) -> pa.Table:
    """The DataFrame as an arrow table with ``ARROW_SCHEMA`` (extra columns are kept,
    typed by arrow's inference, so a newer writer's columns are not silently dropped)."""
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ResultsError(f"rows lack columns: {', '.join(missing)}")
    arrays, names = [], []
    for f in ARROW_SCHEMA:
        values = df[f.name].tolist() if f.name in df.columns else [None] * len(df)
        arrays.append(pa.array([_cell_value(v, f.type) for v in values], type=f.type))
        names.append(f.name)
    for extra in (c for c in df.columns if c not in ARROW_SCHEMA.names):
        arrays.append(pa.array(df[extra].tolist(), from_pandas=True))
        names.append(extra)
    return pa.Table.from_arrays(arrays, names=names)


def write_parquet(df: pd.DataFrame, path: str | os.PathLike, metadata: dict[str, Any]) -> Path:
    """Validate ``df`` and write it with ``metadata`` (JSON under ``msabench``) atomically:
    a reader sees the old file or the complete new one, never a partial write."""
    validate(df)
    table = to_table(df)
    meta = {"schema_version": SCHEMA_VERSION, **metadata}
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(meta, default=str).encode()})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``msabench`` metadata of a results file (checked like ``read_results``)."""
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"results file not found: {path}")
    try:
        kv = pq.read_schema(path).metadata or {}
    except (pa.ArrowException, OSError) as e:
        raise ResultsError(f"not a parquet file (or corrupt): {path} ({one_line(e)})") from None
    if METADATA_KEY not in kv:
        raise ResultsError(f"{path} has no msabench metadata (not written by msabench?)")
    try:
        meta = json.loads(kv[METADATA_KEY])
    except ValueError as e:
        raise ResultsError(f"{path}: msabench metadata is not valid JSON ({one_line(e)})") from None
    version = meta.get("schema_version") if isinstance(meta, dict) else None
    if version != SCHEMA_VERSION:
        raise ResultsError(f"{path} has schema_version {version!r}; this msabench reads version {SCHEMA_VERSION}")
    return meta


def read_results(path: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A results file as ``(rows, metadata)``; ``ResultsError`` (one line) when the file is
    missing, not parquet, not ours, of another schema version or fails ``validate``."""
    meta = read_metadata(path)
    try:
        df = pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError) as e:
        raise ResultsError(f"not a parquet file (or corrupt): {path} ({one_line(e)})") from None
    try:
        validate(df)
    except ResultsError as e:
        raise ResultsError(f"{path}: {e}") from None
    return df, meta


def validate(df: pd.DataFrame) -> None:
    """Check the columns and the outcome vocabulary; ``ResultsError`` on the first problem."""
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ResultsError(f"missing columns: {', '.join(missing)}")
    bad = sorted({str(s) for s in df["status"].tolist() if s not in STATUSES})
    if bad:
        raise ResultsError(f"status values outside {{{', '.join(STATUSES)}}}: {', '.join(map(repr, bad))}")
    reasons = df["reason"].fillna("").astype(str)
    if ((df["status"] == "ok") & (reasons != "")).any():
        raise ResultsError("rows with status 'ok' must have an empty reason")
    if ((df["status"] != "ok") & (reasons == "")).any():
        raise ResultsError("rows with status other than 'ok' must give a reason")


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
