"""The results schema: one tidy row per (cell, evaluation point), stored as parquet.

A *cell* is one training run: (problem, labelled hyperparameters, backend, seed, dtype).
Every cell contributes one row per evaluation point (step 0, every ``eval_every`` steps and
the last step), or a single row when it was skipped. Columns, in file order:

- identity: ``suite, run_id, cell_id, problem, algorithm, label, backend, device, dtype,
  seed``;
- provenance of the cell, from the process that trained it: ``host``, ``device_name`` (the
  CPU model or the GPU's name), ``git_sha`` and ``git_dirty`` (null when the code ran from
  an installed wheel), ``versions`` (``name=version`` pairs, space-separated);
- trajectory: ``step, epoch, time_s`` (cumulative timed step seconds, the first step
  excluded), ``compile_s`` (the first step's seconds), ``ms_per_step`` (the cell's median
  over its timed blocks after the first step), ``concurrency`` (cells sharing the device),
  ``peak_rss_mib`` and ``peak_gpu_mib`` (the cell's peak memory, ``suites/memory.py``);
- metrics: ``train_loss, train_acc, test_loss, test_acc, val_loss, val_acc, nonzero_frac,
  flips, layer_nonzero_frac`` (list: one fraction per layer with a weight ``W``);
- hyperparameters: ``hp_<field>`` for the union of the fields of ``spec.HYPERPARAMETERS``,
  null where the cell's algorithm has no such field;
- outcome: ``status`` in ``STATUSES`` and ``reason`` (empty exactly when ``ok``).

The run's provenance (the process that started it) lives in the parquet key-value metadata,
JSON under the key ``msabench``; it always holds ``schema_version`` (``SCHEMA_VERSION``).
Where the two disagree (cells on several machines, a run resumed at another commit), the
rows' provenance columns are the truth for each cell. A *run file* also records what its
report needs, so a report never reads today's problem registry: per problem its weights,
batch size, target and reference run (``ProblemFacts``), and per configuration label its
algorithm (``RunFacts``); ``read_run`` refuses a run file without them.
``results/README.md`` documents it.

This module is the contract between the writer (``suites``) and the readers (``reports``,
``suites.compare``): it imports neither package, and both import it.

A cell is identified by ``CELL_KEY`` = (run_id, cell_id): the same cell id in two runs is
two cells (two replicates). ``final_rows`` is the one definition of a cell's result.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from implementations import spec

#: 2: peak_rss_mib, peak_gpu_mib; 3: run facts (problems' targets, labels' algorithms);
#: 4: provenance per row (host, device_name, git_sha, git_dirty, versions);
#: 5: resumed_from (the step from which a resumed cell continued its checkpoint);
#: 6: host_sync (whether the timed step waits on the host for the device: ``spec.host_synchronises``),
#: deterministic (whether the cell ran reproducibly: on the CPU, or under ``--deterministic``)
SCHEMA_VERSION = 6
METADATA_KEY = b"msabench"
STATUSES = ("ok", "diverged", "error", "skipped")
TRAINED = ("ok", "diverged")  # statuses of cells that trained: their last row is their result
#: what identifies one cell across runs (a cell id repeats in every run of a suite)
CELL_KEY = ["run_id", "cell_id"]
WEIGHT_KINDS = ("real", "binary", "ternary")
TARGET_METRICS = ("test_acc", "test_loss")  # test_acc: at least the value; test_loss: at most

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
#: where and with what code a cell ran; ``host`` and ``device_name`` are never null
PROVENANCE = (
    ("host", pa.string()),
    ("device_name", pa.string()),
    ("git_sha", pa.string()),
    ("git_dirty", pa.bool_()),
    ("versions", pa.string()),
)
#: the provenance columns every row must fill (compare matches cells by device name)
PROVENANCE_REQUIRED = ("host", "device_name")
TRAJECTORY = (
    ("step", pa.int64()),
    ("epoch", pa.float64()),
    ("time_s", pa.float64()),
    ("compile_s", pa.float64()),
    ("ms_per_step", pa.float64()),
    ("concurrency", pa.int64()),
    #: whether the timed step waits on the host for values the device computed inside it
    #: (``spec.host_synchronises``: SciPy's L-BFGS-B inner solver); the timing contract
    #: otherwise synchronises only at the edges of a timed block
    ("host_sync", pa.bool_()),
    #: whether the cell ran run-to-run reproducibly: on the CPU, or on a GPU under
    #: ``--deterministic`` (``suites.determinism``)
    ("deterministic", pa.bool_()),
    #: 0 for a row trained in one go; k for the rows a cell trained after resuming from
    #: its checkpoint at step k (its earlier rows keep the value they were written with)
    ("resumed_from", pa.int64()),
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
ARROW_SCHEMA = pa.schema([*IDENTITY, *PROVENANCE, *TRAJECTORY, *METRICS, *HP_TYPES.items(), *OUTCOME])
COLUMNS = tuple(ARROW_SCHEMA.names)
#: columns every results file must have (``hp_*`` may grow with new algorithms).
REQUIRED = tuple(name for name, _ in (*IDENTITY, *PROVENANCE, *TRAJECTORY, *METRICS, *OUTCOME))


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
    if version != SCHEMA_VERSION and version not in UPGRADES:
        readable = ", ".join(map(str, READABLE_VERSIONS))
        raise ResultsError(f"{path} has schema_version {version!r}; this msabench reads versions {readable}")
    return meta


def _from_v5(df: pd.DataFrame) -> pd.DataFrame:
    """Version 5 recorded neither ``host_sync`` nor ``deterministic``: SciPy's L-BFGS-B
    (``hp_inner == "lbfgs"``) was then, as now, the only step that waits on the host, and
    no GPU run could ask for determinism (CPU cells are reproducible)."""
    inner = df["hp_inner"] if "hp_inner" in df.columns else pd.Series(None, index=df.index, dtype=object)
    return df.assign(host_sync=(inner == "lbfgs").astype(bool), deterministic=(df["device"] == "cpu").astype(bool))


def _from_v4(df: pd.DataFrame) -> pd.DataFrame:
    """Version 4 had no checkpoints: every cell trained in one go."""
    return _from_v5(df.assign(resumed_from=0))


#: older schema versions this msabench still reads, each with its upgrade to the current one
UPGRADES = {4: _from_v4, 5: _from_v5}
#: every schema version this msabench reads (the current one and those it upgrades)
READABLE_VERSIONS = (*sorted(UPGRADES), SCHEMA_VERSION)


def read_results(path: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A results file as ``(rows, metadata)``; ``ResultsError`` (one line) when the file is
    missing, not parquet, not ours, of another schema version or fails ``validate``."""
    meta = read_metadata(path)
    try:
        table = pq.read_table(path)
        df = table.to_pandas()
    except (pa.ArrowException, OSError) as e:
        raise ResultsError(f"not a parquet file (or corrupt): {path} ({one_line(e)})") from None
    if meta["schema_version"] != SCHEMA_VERSION:
        df = UPGRADES[meta["schema_version"]](df)
        meta = {**meta, "schema_version": SCHEMA_VERSION, "upgraded_from": meta["schema_version"]}
    try:
        validate_types(table.schema)
        validate(df)
    except ResultsError as e:
        raise ResultsError(f"{path}: {e}") from None
    return df, meta


def validate_types(file_schema: pa.Schema) -> None:
    """Every known column present in the file has its ``ARROW_SCHEMA`` type (a column of
    nulls only, arrow's ``null`` type, is accepted: it holds no value of a wrong type)."""
    for name in file_schema.names:
        if name not in ARROW_SCHEMA.names:
            continue  # a newer writer's extra column
        actual, expected = file_schema.field(name).type, ARROW_SCHEMA.field(name).type
        if actual != expected and not pa.types.is_null(actual):
            raise ResultsError(f"column {name} has type {actual}, expected {expected}")


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
    for name in PROVENANCE_REQUIRED:
        values = df[name]
        if (values.isna() | (values.astype(str).str.strip() == "")).any():
            raise ResultsError(f"rows without a {name} (every row names where its cell ran)")


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


# ---------------------------------------------------------------------------------------
# A cell's result: its last row
# ---------------------------------------------------------------------------------------


def final_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Each cell's last row, a cell being one ``CELL_KEY`` (run_id, cell_id): the row that
    carries the cell's status, and for a cell that trained, its final metrics."""
    return df.groupby(CELL_KEY, sort=False).tail(1)


def trained_finals(df: pd.DataFrame) -> pd.DataFrame:
    """The final rows of the cells that trained (status in ``TRAINED``)."""
    last = final_rows(df)
    return last[last["status"].isin(TRAINED)]


# ---------------------------------------------------------------------------------------
# Run facts: what a run's report needs, recorded in the run file's metadata
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProblemFacts:
    """A problem as the run knew it, under ``metadata["problems"][name]``.

    ``target_metric``/``target_value``: the evaluation target of the reports (``test_acc``
    at least, or ``test_loss`` at most, the value); both null when the problem has none.
    ``reference_run``: the authors' logged run (``reports/data/<name>.csv``) this problem
    matches (``reference_exact``) or stands in for; null when none.
    """

    init: str
    loss: str
    weights: str
    batch_size: int
    target_metric: str | None
    target_value: float | None
    reference_run: str | None
    reference_exact: bool

    @classmethod
    def of(cls, problem: Any) -> ProblemFacts:
        """The facts of a ``suites.problems.Problem`` (read by attribute: this module does
        not import the registry)."""
        if problem.target_acc is not None:
            metric, value = "test_acc", float(problem.target_acc)
        elif problem.target_loss is not None:
            metric, value = "test_loss", float(problem.target_loss)
        else:
            metric, value = None, None
        return cls(
            problem.init,
            problem.loss,
            problem.weights,
            int(problem.batch_size),
            metric,
            value,
            problem.reference_run,
            bool(problem.reference_exact),
        )

    @classmethod
    def from_json(cls, name: str, doc: Any) -> ProblemFacts:
        """Parse ``metadata["problems"][name]``; ``ResultsError`` naming the bad field."""
        if not isinstance(doc, dict):
            raise ResultsError(f"metadata problems[{name!r}] is not an object")
        missing = [f.name for f in fields(cls) if f.name not in doc]
        if missing:
            raise ResultsError(f"metadata problems[{name!r}] lacks {', '.join(missing)}")
        facts = cls(**{f.name: doc[f.name] for f in fields(cls)})
        checks = (
            ("weights", facts.weights in WEIGHT_KINDS),
            ("batch_size", isinstance(facts.batch_size, int) and facts.batch_size > 0),
            ("target_metric", facts.target_metric in (*TARGET_METRICS, None)),
            ("target_value", _is_number(facts.target_value) == (facts.target_metric is not None)),
            ("reference_run", facts.reference_run is None or isinstance(facts.reference_run, str)),
            ("reference_exact", isinstance(facts.reference_exact, bool)),
        )
        bad = [field for field, ok in checks if not ok]
        if bad:
            raise ResultsError(f"metadata problems[{name!r}] has a bad {bad[0]}: {doc[bad[0]]!r}")
        return facts

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def target_text(self) -> str:
        if self.target_metric == "test_acc":
            return f"test accuracy ≥ {self.target_value * 100:.0f}%"
        if self.target_metric == "test_loss":
            return f"test loss ≤ {self.target_value:g}"
        return "none"


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class RunFacts:
    """What a run's report reads from the run itself: ``problems`` (name -> ``ProblemFacts``)
    and ``labels`` (configuration label -> algorithm id)."""

    problems: dict[str, ProblemFacts]
    labels: dict[str, str]

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> RunFacts:
        problems, labels = meta.get("problems"), meta.get("labels")
        if not isinstance(problems, dict) or not isinstance(labels, dict):
            absent = "problems" if not isinstance(problems, dict) else "labels"
            raise ResultsError(f"metadata has no {absent} (not a run file?)")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
            raise ResultsError("metadata labels must map each label to an algorithm id")
        return cls({name: ProblemFacts.from_json(name, doc) for name, doc in problems.items()}, dict(labels))

    def check_rows(self, df: pd.DataFrame) -> None:
        """Every problem in the rows is described, and every label's rows are of its
        recorded algorithm; ``ResultsError`` on the first that is not."""
        unknown = sorted(set(df["problem"]) - set(self.problems))
        if unknown:
            raise ResultsError(f"rows name problem {unknown[0]!r}, which the metadata does not describe")
        pairs = df[["label", "algorithm"]].drop_duplicates().itertuples(index=False)
        for label, algorithm in pairs:
            if self.labels.get(label) != algorithm:
                recorded = self.labels.get(label)
                raise ResultsError(f"rows of label {label!r} are algorithm {algorithm!r}; metadata says {recorded!r}")

    def merge(self, other: RunFacts) -> RunFacts:
        """The facts of two runs reported together; ``ResultsError`` when they disagree
        (a target that changed between the runs would make their cells incomparable)."""
        for name in self.problems.keys() & other.problems.keys():
            if self.problems[name] != other.problems[name]:
                raise ResultsError(f"the runs record different facts for problem {name!r}")
        for label in self.labels.keys() & other.labels.keys():
            if self.labels[label] != other.labels[label]:
                raise ResultsError(f"the runs record label {label!r} as different algorithms")
        return RunFacts({**self.problems, **other.problems}, {**self.labels, **other.labels})


def label_algorithms(pairs: typing.Iterable[tuple[str, str]]) -> dict[str, str]:
    """``metadata["labels"]`` from (label, algorithm) pairs; ``ValueError`` if a label names
    two algorithms (its rows would not be one configuration)."""
    out: dict[str, str] = {}
    for label, algorithm in pairs:
        if out.setdefault(label, algorithm) != algorithm:
            raise ValueError(f"label {label!r} names two algorithms: {out[label]} and {algorithm}")
    return out


def read_run(path: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, Any], RunFacts]:
    """A run file as ``(rows, metadata, facts)``: ``read_results`` plus the run facts,
    which must be present and describe every row (``ResultsError``, one line, if not)."""
    df, meta = read_results(path)
    try:
        facts = RunFacts.from_metadata(meta)
        facts.check_rows(df)
    except ResultsError as e:
        raise ResultsError(f"{path}: {e}") from None
    return df, meta, facts
