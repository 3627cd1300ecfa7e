"""``msabench compare [BASE NEW]``: what got worse between two runs, and by how much.

BASE and NEW are run ids (looked up under ``--results-dir/<suite>/``) or run files.
Without them: NEW is the newest run of ``--suite`` and BASE the newest earlier run of that
suite whose cells ran on a device NEW's cells ran on; with no such run there is nothing
to compare, which is not an error (``nox -s bench`` on a fresh machine).

Devices are matched per cell: each row names the device its cell ran on (``device`` and
``device_name``, recorded by the process that trained it), and only cells on the same
device are compared, so a speed-up is always a same-hardware ratio. For every (problem,
label, backend, dtype) present in both runs and every device both runs have cells of it
on, over the cells that trained (``ok`` or ``diverged``; a cell's result is its
``schema.final_rows`` row), one value per seed:

| metric | per-seed value | regressed when |
|---|---|---|
| ms/step | the cell's median timed block | the median rises by more than ``--speed-threshold`` (relative, default 10%) *and* by more than the noise |
| compile s | the first step | same rule |
| peak RSS MiB | the cell's peak host memory | same rule |
| test acc | final test accuracy | the mean falls by more than ``--accuracy-threshold`` (absolute, default 1 point) |
| non-zero | final non-zero fraction | the mean rises by more than ``--nonzero-threshold`` (absolute, default 0.02) |
| test loss | final test loss (problems without accuracy) | the median rises by more than the speed threshold (relative) and the noise |

The noise of a relatively judged metric is the largest spread either run shows: the
seeds' range (max - min over seeds, from 2 seeds on) and, for ms/step, also the timing
spread inside a cell: each cell's ms/step over each interval between evaluation points
(``time_s`` and ``step`` of consecutive rows), its range (from 2 intervals on), the median
over the configuration's cells. A change inside the noise is ``unchanged``. With no noise
estimate (one seed and one timed interval per cell in both runs) the metric is ``not
judged``: speed is never called a regression without one. The mirror-image changes count
as ``improved``. A row is ``regressed`` if any metric regressed, else ``improved`` if any
improved, else ``unchanged``; a configuration whose cells stopped training (now all
``error`` or ``skipped``) is ``regressed`` too. A configuration whose base and new cells
share no device is ``not judged`` (the row names the devices), and cells on a device the
other run lacks are left out (the row says so); neither fails ``--fail-on-regression``.

Refused with one line (exit status 2), since their numbers do not compare or there is
nothing to judge: runs of different suites, budgets (``options``: ``steps``, ``epochs``,
``steps_scale``) or schema versions; runs whose cells share no device; a run without rows;
runs without a configuration in common; unreadable metadata.
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
import pyarrow as pa
import pyarrow.parquet as pq

from msaresults import schema
from msaresults.cli import fail

KEY = ["problem", "label", "backend", "dtype"]
#: what a row says about the device its cell ran on; cells compare only on the same one
DEVICE = ["device", "device_name"]
REGRESSED, IMPROVED, UNCHANGED, NOT_JUDGED = "regressed", "improved", "unchanged", "not judged"
#: the options that set a run's budget: runs that differ in one do not compare
BUDGET_OPTIONS = ("steps", "epochs", "steps_scale")


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
    except (OSError, ValueError, pa.ArrowException) as e:
        raise CompareError(f"not a results file: {path} ({schema.one_line(e)})") from None
    if schema.METADATA_KEY not in meta:
        raise CompareError(f"not an msabench results file: {path}")
    try:
        doc = json.loads(meta[schema.METADATA_KEY])
    except ValueError as e:
        raise CompareError(f"{path}: msabench metadata is not valid JSON ({schema.one_line(e)})") from None
    if not isinstance(doc, dict):
        raise CompareError(f"{path}: msabench metadata is not a JSON object")
    return doc


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
    """(BASE, NEW): the newest run of ``suite`` and the newest earlier one with cells on a
    device NEW's cells ran on."""
    runs = sorted((results_dir / suite).glob("*.parquet"))
    if not runs:
        raise CompareError(f"no run files of suite {suite!r} under {results_dir / suite}")
    new = runs[-1]
    _raw_metadata(new)  # NEW must be readable: it is what the user asked about
    devices = _file_devices(new)
    for base in reversed(runs[:-1]):
        try:
            meta = _raw_metadata(base)
        except CompareError:
            continue  # an unreadable old file is no baseline
        if meta.get("schema_version") in schema.READABLE_VERSIONS and devices & _file_devices(base):
            return base, new
    return None


def _file_devices(path: Path) -> set[tuple[str, str]]:
    """The (device, device_name) pairs a run file's rows name; empty when it has none (a
    file of an older schema, without ``device_name``)."""
    try:
        table = pq.read_table(path, columns=DEVICE)
    except (OSError, ValueError, KeyError, pa.ArrowException):
        return set()
    return _devices(table.to_pandas())


def _devices(rows: pd.DataFrame) -> set[tuple[str, str]]:
    return set(rows[DEVICE].astype(str).itertuples(index=False, name=None))


def _device_text(devices: set[tuple[str, str]]) -> str:
    return ", ".join(f"{d}/{name}" for d, name in sorted(devices)) or "none"


def _budget(meta: dict[str, Any]) -> dict[str, Any]:
    options = meta.get("options") if isinstance(meta.get("options"), dict) else {}
    return {k: options.get(k) for k in BUDGET_OPTIONS}


def _refuse_incomparable(mb: dict[str, Any], mn: dict[str, Any], base: Path, new: Path) -> None:
    """``CompareError`` when the two runs' metadata say their numbers do not compare."""
    vb, vn = mb.get("schema_version"), mn.get("schema_version")
    # versions this msabench upgrades on reading compare as the current one
    if vb != vn and not {vb, vn} <= set(schema.READABLE_VERSIONS):
        raise CompareError(f"cannot compare schema version {vb} ({base}) with schema version {vn} ({new})")
    if mb.get("suite") != mn.get("suite"):
        raise CompareError(f"cannot compare runs of different suites: {mb.get('suite')!r} vs {mn.get('suite')!r}")
    if _budget(mb) != _budget(mn):
        raise CompareError(f"cannot compare runs of different budgets: {_budget(mb)} vs {_budget(mn)}")


def load_pair(base: Path, new: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict, dict]:
    """Both runs' rows and metadata; ``CompareError`` (one line) when they do not compare
    or either has no rows."""
    mb, mn = _raw_metadata(base), _raw_metadata(new)
    _refuse_incomparable(mb, mn, base, new)
    try:
        db, _ = schema.read_results(base)
        dn, _ = schema.read_results(new)
    except schema.ResultsError as e:
        raise CompareError(str(e)) from None
    for path, df in ((base, db), (new, dn)):
        if df.empty:
            raise CompareError(f"run has no rows: {path}")
    if not _devices(db) & _devices(dn):
        raise CompareError(
            "cannot compare runs from different devices: "
            f"{_device_text(_devices(db))} ({base.name}) vs {_device_text(_devices(dn))} ({new.name})"
        )
    return db, dn, mb, mn


# ---------------------------------------------------------------------------------------
# the comparison
# ---------------------------------------------------------------------------------------


def _values(cells: pd.DataFrame, column: str) -> np.ndarray:
    a = pd.to_numeric(cells[column], errors="coerce").to_numpy(dtype=np.float64)
    return a[np.isfinite(a)]


def _seed_range(a: np.ndarray) -> float | None:
    """max - min over seeds; None with fewer than 2 seeds (no spread to measure)."""
    return float(np.ptp(a)) if a.size >= 2 else None


def interval_ms(cell: pd.DataFrame) -> np.ndarray:
    """A cell's ms per step over each interval between consecutive ``ok`` rows: ``time_s``
    counts timed steps, which exclude the first step (``compile_s``), so a row at step s
    has timed max(s - 1, 0) steps."""
    rows = cell[cell["status"] == "ok"].sort_values("step")
    timed = np.maximum(rows["step"].to_numpy(dtype=np.float64) - 1, 0)
    seconds = pd.to_numeric(rows["time_s"], errors="coerce").to_numpy(dtype=np.float64)
    dn, dt = np.diff(timed), np.diff(seconds)
    ok = (dn > 0) & np.isfinite(dt)
    return 1000.0 * dt[ok] / dn[ok]


def within_cell_spread(rows: pd.DataFrame, cells: pd.DataFrame) -> float | None:
    """Median over ``cells`` (final rows) of the range of each cell's ``interval_ms``;
    None when no cell has 2 intervals."""
    keyed = rows.set_index(schema.CELL_KEY).sort_index()
    spreads = []
    for key in cells[schema.CELL_KEY].itertuples(index=False, name=None):
        rates = interval_ms(keyed.loc[[key]])
        if rates.size >= 2:
            spreads.append(float(np.ptp(rates)))
    return float(np.median(spreads)) if spreads else None


def noise(*estimates: float | None) -> float | None:
    """The largest of the available noise estimates; None when there is none."""
    known = [e for e in estimates if e is not None]
    return max(known) if known else None


def relative(base: np.ndarray, new: np.ndarray, threshold: float, spread: float | None) -> tuple[str, str]:
    """Verdict and text of a lower-is-better metric judged relatively, beyond ``spread``
    (the noise); ``not judged`` when there is no noise estimate."""
    if not base.size or not new.size:
        return UNCHANGED, "–"
    b, n = float(np.median(base)), float(np.median(new))
    change = (n - b) / b if b else math.inf if n > b else 0.0
    text = f"{b:.3g} → {n:.3g} ({change:+.0%})"
    if spread is None:
        return NOT_JUDGED, text + " not judged: no noise estimate"
    beyond_noise = abs(n - b) > spread
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


def _judge_relative(b: pd.DataFrame, n: pd.DataFrame, column: str, threshold: float, spread_inside=None):
    """``relative`` on ``column`` with the noise of both runs: the seeds' ranges and, when
    given, the within-cell spreads (ms/step)."""
    vb, vn = _values(b, column), _values(n, column)
    spread = noise(_seed_range(vb), _seed_range(vn), *(spread_inside or ()))
    return relative(vb, vn, threshold, spread)


def _on_device(cells: pd.DataFrame, device: tuple[str, str]) -> pd.DataFrame:
    return cells[(cells[DEVICE].astype(str) == pd.Series(device, index=DEVICE)).all(axis=1)]


def _judge(base: pd.DataFrame, new: pd.DataFrame, b: pd.DataFrame, n: pd.DataFrame, t: Thresholds) -> dict:
    """Every metric's (verdict, text) for one configuration on one device: ``b``/``n`` are
    its trained final rows in each run, ``base``/``new`` all rows (the timing spreads)."""
    inside = (within_cell_spread(base, b), within_cell_spread(new, n))
    judged: dict[str, tuple[str, str]] = {"ms/step": _judge_relative(b, n, "ms_per_step", t.speed, inside)}
    judged["compile s"] = _judge_relative(b, n, "compile_s", t.speed)
    judged["peak RSS MiB"] = _judge_relative(b, n, "peak_rss_mib", t.speed)
    judged["test acc %"] = absolute(_values(b, "test_acc"), _values(n, "test_acc"), t.accuracy, True, 100.0)
    judged["non-zero"] = absolute(_values(b, "nonzero_frac"), _values(n, "nonzero_frac"), t.nonzero, False)
    if not _values(n, "test_acc").size:
        judged["test loss"] = _judge_relative(b, n, "test_loss", t.speed)
    return judged


def compare(base: pd.DataFrame, new: pd.DataFrame, t: Thresholds = Thresholds()) -> pd.DataFrame:
    """One row per configuration in both runs and device both ran its cells on: each metric
    as ``base → new (change)`` and the verdict (module docstring); a configuration whose
    runs share no device is one ``not judged`` row. ``CompareError`` when no configuration
    is in both."""
    rows = []
    base_finals, new_finals = schema.final_rows(base), schema.final_rows(new)
    base_cells, new_cells = schema.trained_finals(base), schema.trained_finals(new)
    in_base = set(map(tuple, base[KEY].to_numpy()))
    keys = [k for k in dict.fromkeys(map(tuple, new[KEY].to_numpy())) if k in in_base]
    if not keys:
        raise CompareError("no configuration (problem, label, backend, dtype) is in both runs")
    for key in keys:
        on_base, on_new = _devices(_select(base_finals, key)), _devices(_select(new_finals, key))
        shared = on_base & on_new
        if not shared:
            elsewhere = f"cells ran on other devices: base {_device_text(on_base)}, new {_device_text(on_new)}"
            rows.append(
                {
                    **dict(zip(KEY, key)),
                    "device": _device_text(on_new),
                    "verdict": NOT_JUDGED,
                    "what": "",
                    "not judged": elsewhere,
                }
            )
            continue
        unmatched = (on_base | on_new) - shared
        for device in sorted(shared):
            b, n = (_on_device(_select(cells, key), device) for cells in (base_cells, new_cells))
            judged = _judge(base, new, b, n, t)
            verdicts = [v for v, _ in judged.values()]
            stopped = len(b) > 0 and len(n) == 0
            verdict = REGRESSED if stopped or REGRESSED in verdicts else IMPROVED if IMPROVED in verdicts else UNCHANGED
            worse = [name for name, (v, _) in judged.items() if v == REGRESSED]
            not_judged = [name for name, (v, _) in judged.items() if v == NOT_JUDGED]
            if unmatched:
                not_judged.append(f"cells on {_device_text(unmatched)} (no counterpart)")
            rows.append(
                {
                    **dict(zip(KEY, key)),
                    "device": _device_text({device}),
                    **{name: text for name, (_, text) in judged.items()},
                    "verdict": verdict,
                    "what": ", ".join(worse + (["no cell trained"] if stopped else [])),
                    "not judged": ", ".join(not_judged) or None,
                }
            )
    return pd.DataFrame(rows)


def render(table: pd.DataFrame, base: Path, new: Path) -> str:
    lines = [f"base: {base}", f"new:  {new}"]
    hidden = ["problem"]
    if table["device"].nunique() == 1:  # one device: said once, not on every row
        lines.append(f"device: {table['device'].iloc[0]}")
        hidden.append("device")
    lines.append("")
    for problem, rows in table.groupby("problem", sort=False):
        shown = rows.drop(columns=hidden).dropna(axis=1, how="all").fillna("–")
        lines += [f"== {problem}", shown.to_string(index=False), ""]
    counts = table["verdict"].value_counts()
    shown_verdicts = [REGRESSED, IMPROVED, UNCHANGED] + ([NOT_JUDGED] if counts.get(NOT_JUDGED) else [])
    lines.append(", ".join(f"{int(counts.get(v, 0))} {v}" for v in shown_verdicts))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="*", metavar="RUN", help="BASE NEW: run ids or run files (default: see --suite)")
    p.add_argument(
        "--suite", default="default", help="without RUNs: its newest run against the previous one on the same devices"
    )
    p.add_argument("--results-dir", type=Path, default=Path("results"))
    p.add_argument("--speed-threshold", type=float, default=Thresholds.speed, help="relative (default 0.10)")
    p.add_argument(
        "--accuracy-threshold", type=float, default=Thresholds.accuracy, help="absolute fraction (default 0.01)"
    )
    p.add_argument("--nonzero-threshold", type=float, default=Thresholds.nonzero, help="absolute (default 0.02)")
    p.add_argument("--fail-on-regression", action="store_true", help="exit 1 when any configuration regressed")


def run_from_args(args: argparse.Namespace) -> int:
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
        thresholds = Thresholds(args.speed_threshold, args.accuracy_threshold, args.nonzero_threshold)
        table = compare(b, n, thresholds)
    except CompareError as e:
        fail(str(e))
    print(render(table, base, new), end="")
    return 1 if args.fail_on_regression and (table["verdict"] == REGRESSED).any() else 0
