"""``msabench compare [BASE NEW]``: what got worse between two runs, and by how much.

BASE and NEW are run ids (looked up under ``--results-dir/<suite>/``) or run files.
Without them: NEW is the newest run of ``--suite`` and BASE the newest earlier run of that
suite on the same device (same ``device`` and ``device_name``); with no such run there is
nothing to compare, which is not an error (``nox -s bench`` on a fresh machine).

For every (problem, label, backend, dtype) present in both runs, over the cells that
trained (``ok`` or ``diverged``), one value per seed:

| metric | per-seed value | regressed when |
|---|---|---|
| ms/step | the cell's median timed block | the median rises by more than ``--speed-threshold`` (relative, default 10%) *and* by more than the seeds' spread |
| compile s | the first step | same rule |
| peak RSS MiB | the cell's peak host memory | same rule |
| test acc | final test accuracy | the mean falls by more than ``--accuracy-threshold`` (absolute, default 1 point) |
| non-zero | final non-zero fraction | the mean rises by more than ``--nonzero-threshold`` (absolute, default 0.02) |
| test loss | final test loss (problems without accuracy) | the median rises by more than the speed threshold (relative) and the spread |

The seeds' spread is the larger of the two runs' ranges (max - min over seeds): a change
inside it is seed noise and counts as ``unchanged``. The mirror-image changes count as
``improved``. A row is ``regressed`` if any metric regressed, else ``improved`` if any
improved, else ``unchanged``; a configuration whose cells stopped training (now all
``error`` or ``skipped``) is ``regressed`` too.

Runs from different devices, or files of different schema versions, are refused with one
line: their numbers do not compare.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from suites import schema

KEY = ["problem", "label", "backend", "dtype"]
REGRESSED, IMPROVED, UNCHANGED = "regressed", "improved", "unchanged"


class CompareError(Exception):
    """A one-line reason two runs cannot be compared."""


@dataclass(frozen=True)
class Thresholds:
    speed: float = 0.10
    accuracy: float = 0.01
    nonzero: float = 0.02


# ---------------------------------------------------------------------------------------
# finding and reading the runs
# ---------------------------------------------------------------------------------------


def _raw_metadata(path: Path) -> dict[str, Any]:
    """The file's msabench metadata without the version check (to name both versions)."""
    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, ValueError) as e:
        raise CompareError(f"not a results file: {path} ({schema.one_line(e)})") from None
    if schema.METADATA_KEY not in meta:
        raise CompareError(f"not an msabench results file: {path}")
    return json.loads(meta[schema.METADATA_KEY])


def resolve(ref: str, results_dir: Path, suite: str) -> Path:
    """A run file from a path or a run id."""
    path = Path(ref)
    if path.suffix == ".parquet" or path.exists():
        if not path.exists():
            raise CompareError(f"results file not found: {path}")
        return path
    hits = sorted(results_dir.glob(f"*/{ref}.parquet"))
    preferred = [h for h in hits if h.parent.name == suite] or hits
    if not preferred:
        raise CompareError(f"no run {ref!r} under {results_dir} (give a run id or a .parquet path)")
    return preferred[0]


def default_pair(results_dir: Path, suite: str) -> tuple[Path, Path] | None:
    """(BASE, NEW): the newest run of ``suite`` and the newest earlier one on its device."""
    runs = sorted((results_dir / suite).glob("*.parquet"))
    if not runs:
        raise CompareError(f"no run files of suite {suite!r} under {results_dir / suite}")
    new = runs[-1]
    device = _device(_raw_metadata(new))
    for base in reversed(runs[:-1]):
        try:
            meta = _raw_metadata(base)
        except CompareError:
            continue  # an unreadable old file is no baseline
        if _device(meta) == device and meta.get("schema_version") == schema.SCHEMA_VERSION:
            return base, new
    return None


def _device(meta: dict[str, Any]) -> tuple[str, str]:
    return str(meta.get("device")), str(meta.get("device_name"))


def load_pair(base: Path, new: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict, dict]:
    mb, mn = _raw_metadata(base), _raw_metadata(new)
    vb, vn = mb.get("schema_version"), mn.get("schema_version")
    if vb != vn:
        raise CompareError(f"cannot compare schema version {vb} ({base}) with schema version {vn} ({new})")
    if _device(mb) != _device(mn):
        raise CompareError(
            "cannot compare runs from different devices: "
            f"{'/'.join(_device(mb))} ({base.name}) vs {'/'.join(_device(mn))} ({new.name})"
        )
    try:
        db, _ = schema.read_results(base)
        dn, _ = schema.read_results(new)
    except schema.ResultsError as e:
        raise CompareError(str(e)) from None
    return db, dn, mb, mn


# ---------------------------------------------------------------------------------------
# the comparison
# ---------------------------------------------------------------------------------------


def _per_seed(df: pd.DataFrame) -> pd.DataFrame:
    """One row per trained cell: its final metrics."""
    last = df.groupby("cell_id", sort=False).tail(1)
    return last[last["status"].isin(("ok", "diverged"))]


def _values(cells: pd.DataFrame, column: str) -> np.ndarray:
    a = pd.to_numeric(cells[column], errors="coerce").to_numpy(dtype=np.float64)
    return a[np.isfinite(a)]


def _spread(a: np.ndarray, b: np.ndarray) -> float:
    return max(float(np.ptp(a)) if a.size else 0.0, float(np.ptp(b)) if b.size else 0.0)


def relative(base: np.ndarray, new: np.ndarray, threshold: float) -> tuple[str, str]:
    """Verdict and text of a lower-is-better metric judged relatively, noise-aware."""
    if not base.size or not new.size:
        return UNCHANGED, "–"
    b, n = float(np.median(base)), float(np.median(new))
    change = (n - b) / b if b else math.inf if n > b else 0.0
    text = f"{b:.3g} → {n:.3g} ({change:+.0%})"
    beyond_noise = abs(n - b) > _spread(base, new)
    if change > threshold and beyond_noise:
        return REGRESSED, text
    if change < -threshold and beyond_noise:
        return IMPROVED, text
    return UNCHANGED, text


def absolute(base: np.ndarray, new: np.ndarray, threshold: float, higher_is_better: bool, scale: float = 1.0):
    """Verdict and text of a metric judged by an absolute change of its mean."""
    if not base.size or not new.size:
        return UNCHANGED, "–"
    b, n = float(base.mean()), float(new.mean())
    worse = (b - n) if higher_is_better else (n - b)
    text = f"{b * scale:.3g} → {n * scale:.3g} ({(n - b) * scale:+.2g})"
    if worse > threshold:
        return REGRESSED, text
    if -worse > threshold:
        return IMPROVED, text
    return UNCHANGED, text


def _select(cells: pd.DataFrame, key: tuple) -> pd.DataFrame:
    return cells[(cells[KEY] == pd.Series(key, index=KEY)).all(axis=1)]


def compare(base: pd.DataFrame, new: pd.DataFrame, t: Thresholds = Thresholds()) -> pd.DataFrame:
    """One row per configuration in both runs: each metric as ``base → new (change)`` and
    the verdict (module docstring)."""
    rows = []
    base_cells, new_cells = _per_seed(base), _per_seed(new)
    in_base = set(map(tuple, base[KEY].to_numpy()))
    keys = [k for k in dict.fromkeys(map(tuple, new[KEY].to_numpy())) if k in in_base]
    for key in keys:
        b, n = (_select(cells, key) for cells in (base_cells, new_cells))
        judged: dict[str, tuple[str, str]] = {}
        for column, name in (("ms_per_step", "ms/step"), ("compile_s", "compile s"), ("peak_rss_mib", "peak RSS MiB")):
            judged[name] = relative(_values(b, column), _values(n, column), t.speed)
        judged["test acc %"] = absolute(_values(b, "test_acc"), _values(n, "test_acc"), t.accuracy, True, 100.0)
        judged["non-zero"] = absolute(_values(b, "nonzero_frac"), _values(n, "nonzero_frac"), t.nonzero, False)
        if not _values(n, "test_acc").size:
            judged["test loss"] = relative(_values(b, "test_loss"), _values(n, "test_loss"), t.speed)
        verdicts = [v for v, _ in judged.values()]
        stopped = len(b) > 0 and len(n) == 0
        verdict = REGRESSED if stopped or REGRESSED in verdicts else IMPROVED if IMPROVED in verdicts else UNCHANGED
        worse = [name for name, (v, _) in judged.items() if v == REGRESSED] + (["no cell trained"] if stopped else [])
        rows.append(
            {
                **dict(zip(KEY, key)),
                **{name: text for name, (_, text) in judged.items()},
                "verdict": verdict,
                "what": ", ".join(worse),
            }
        )
    return pd.DataFrame(rows)


def render(table: pd.DataFrame, base: Path, new: Path) -> str:
    lines = [f"base: {base}", f"new:  {new}", ""]
    if table.empty:
        return "\n".join(lines + ["no configuration is in both runs"]) + "\n"
    for problem, rows in table.groupby("problem", sort=False):
        shown = rows.drop(columns=["problem"]).dropna(axis=1, how="all").fillna("–")
        lines += [f"== {problem}", shown.to_string(index=False), ""]
    counts = table["verdict"].value_counts()
    lines.append(", ".join(f"{int(counts.get(v, 0))} {v}" for v in (REGRESSED, IMPROVED, UNCHANGED)))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="*", metavar="RUN", help="BASE NEW: run ids or run files (default: see --suite)")
    p.add_argument(
        "--suite", default="default", help="without RUNs: its newest run against the previous one on the same device"
    )
    p.add_argument("--results-dir", type=Path, default=Path("results"))
    p.add_argument("--speed-threshold", type=float, default=Thresholds.speed, help="relative (default 0.10)")
    p.add_argument(
        "--accuracy-threshold", type=float, default=Thresholds.accuracy, help="absolute fraction (default 0.01)"
    )
    p.add_argument("--nonzero-threshold", type=float, default=Thresholds.nonzero, help="absolute (default 0.02)")
    p.add_argument("--fail-on-regression", action="store_true", help="exit 1 when any configuration regressed")


def run_from_args(args: argparse.Namespace) -> int:
    from suites import fail

    if len(args.runs) not in (0, 2):
        fail("give two runs (BASE NEW) or none")
    try:
        if args.runs:
            base, new = (resolve(r, args.results_dir, args.suite) for r in args.runs)
        else:
            pair = default_pair(args.results_dir, args.suite)
            if pair is None:
                print(f"no earlier run of suite {args.suite!r} on this device to compare with")
                return 0
            base, new = pair
        b, n, _, _ = load_pair(base, new)
    except CompareError as e:
        fail(str(e))
    thresholds = Thresholds(args.speed_threshold, args.accuracy_threshold, args.nonzero_threshold)
    table = compare(b, n, thresholds)
    print(render(table, base, new), end="")
    return 1 if args.fail_on_regression and (table["verdict"] == REGRESSED).any() else 0
