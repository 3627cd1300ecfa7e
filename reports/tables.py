"""The report's tables, as pandas DataFrames of display strings.

- ``coverage``: algorithm × backend × problem, each cell's statuses;
- ``not_ok``: the reasons of every skipped, diverged and error cell;
- ``final_results``: per problem × label × backend, final test accuracy (or loss) mean ±
  sd over cells, median iterations and timed seconds to the problem's target, median
  ms/step and compile seconds;
- ``speed``: median ms/step per problem × label × backend and the ratio to PyTorch eager;
- ``where_cells_ran``: the hosts, devices, commits and package versions the cells ran on,
  from each cell's own provenance columns;
- ``beside_authors``: our discrete MSA's test accuracy and non-zero fraction beside the
  authors' logged run at the paper epochs both cover.

A cell is (run_id, cell_id) and its result its final row (``schema.final_rows``): the
cells of every run given count as replicates (``reports/load.py``). Targets come from the
run's recorded facts (``schema.RunFacts``), never from today's problem registry.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from msaresults import schema
from msaresults.schema import final_rows, trained_finals
from reports import reference

KEY = ["problem", "label", "backend"]


def finite(values) -> np.ndarray:
    a = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=np.float64)
    return a[np.isfinite(a)]


def mean_sd(values, fmt: str, scale: float = 1.0) -> str:
    """``mean ± sd`` of the finite values (``–`` when none; the sd only with 2+ values)."""
    a = finite(values) * scale
    if a.size == 0:
        return "–"
    if a.size == 1:
        return format(a[0], fmt)
    return f"{format(a.mean(), fmt)} ± {format(a.std(ddof=1), fmt)}"


def median_str(values, fmt: str = ".3g") -> str:
    a = finite(values)
    if not a.size:
        return "–"
    m = float(np.median(a))
    return f"{m:.0f}" if abs(m) >= 100 else format(m, fmt)


def status_counts(statuses: pd.Series) -> str:
    counts = statuses.value_counts()
    return ", ".join(f"{int(counts[s])} {s}" for s in schema.STATUSES if s in counts)


def coverage(df: pd.DataFrame) -> pd.DataFrame:
    """Rows algorithm × label × backend, columns problems; each entry the cells' status
    counts (``–``: no such cell in the run)."""
    last = final_rows(df)
    groups = last.groupby(["algorithm", "label", "backend", "problem"], sort=False)["status"]
    return groups.apply(status_counts).unstack().fillna("–").reset_index()


def not_ok(df: pd.DataFrame) -> pd.DataFrame:
    last = final_rows(df)
    bad = last[last["status"] != "ok"]
    return bad[["cell_id", "status", "reason"]].sort_values(["status", "cell_id"]).reset_index(drop=True)


def to_target(cells: pd.DataFrame, target: schema.ProblemFacts) -> tuple[float, float] | None:
    """Median over cells of the step and of the timed seconds at the first evaluation
    meeting the problem's recorded target, from the ``ok`` rows; a cell that never meets
    it counts as infinity. None when the problem has no target or no ok cell."""
    metric, value = target.target_metric, target.target_value
    if metric is None:
        return None
    steps, secs = [], []
    for _, cell in cells[cells["status"] == "ok"].groupby(schema.CELL_KEY, sort=False):
        hit = cell[cell[metric] >= value] if metric == "test_acc" else cell[cell[metric] <= value]
        steps.append(float(hit["step"].min()) if len(hit) else math.inf)
        secs.append(float(hit["time_s"].min()) if len(hit) else math.inf)
    if not steps:
        return None
    return float(np.median(steps)), float(np.median(secs))


def _to_target(cells: pd.DataFrame, target: schema.ProblemFacts) -> tuple[str, str]:
    """``to_target`` as display strings ("not reached" for infinity, "–" for none)."""
    reached = to_target(cells, target)
    if reached is None:
        return "–", "–"
    step, sec = reached
    return ("not reached", "not reached") if math.isinf(step) else (f"{step:.0f}", f"{sec:.3g}")


def final_results(df: pd.DataFrame, facts: schema.RunFacts) -> pd.DataFrame:
    """One row per problem × label × backend; ``cells`` counts its replicates (all runs)."""
    last = final_rows(df)
    out = []
    for key, cells in df.groupby(KEY, sort=False):
        ends = last[(last[KEY] == pd.Series(key, index=KEY)).all(axis=1)]
        done = ends[ends["status"] == "ok"]
        steps, secs = _to_target(cells, facts.problems[key[0]])
        out.append(
            {
                **dict(zip(KEY, key)),
                "cells": len(ends),
                "test acc %": mean_sd(done["test_acc"], ".1f", 100.0),
                "test loss": mean_sd(done["test_loss"], ".3g"),
                "non-zero": mean_sd(done["nonzero_frac"], ".3f"),
                "steps to target": steps,
                "s to target": secs,
                "ms/step": median_str(done["ms_per_step"]),
                "compile s": median_str(done["compile_s"]),
                "status": status_counts(ends["status"]),
            }
        )
    return pd.DataFrame(out)


def targets(df: pd.DataFrame, facts: schema.RunFacts) -> pd.DataFrame:
    """Each problem's target, as the runs recorded it."""
    names = list(dict.fromkeys(df["problem"]))
    return pd.DataFrame({"problem": names, "target": [facts.problems[n].target_text for n in names]})


def speed(df: pd.DataFrame, base: str = "torch") -> pd.DataFrame:
    """Median ms/step over the finished cells of each problem × label × backend, and the
    speed-up over PyTorch eager, ``ms(torch) / ms(backend)`` (above 1: faster)."""
    done = trained_finals(df)
    med = done.groupby(KEY, sort=False)["ms_per_step"].median()
    rows = []
    for (problem, label, backend), ms in med.items():
        ref = med.get((problem, label, base), math.nan)
        ratio = ref / ms if ms > 0 else math.nan
        rows.append(
            {
                "problem": problem,
                "label": label,
                "backend": backend,
                "ms/step": median_str([ms]),
                f"speed-up vs {base}": "–" if math.isnan(ratio) else f"{ratio:.2f}×",
            }
        )
    return pd.DataFrame(rows)


def _commit(sha, dirty) -> str:
    if not isinstance(sha, str) or not sha:
        return "unknown (not a git checkout)"
    return sha + (" (dirty)" if dirty is True else "")


def _counted(values: pd.Series, noun: str, plural: str, verb: str = "on") -> str:
    """``cells ran on 1 host: a`` or ``cells ran on 2 hosts: a (3 cells), b (1 cell)``."""
    counts = values.value_counts(sort=False)
    if len(counts) == 1:
        return f"cells ran {verb} 1 {noun}: {counts.index[0]}"
    each = ", ".join(f"{v} ({n} cell{'s' if n != 1 else ''})" for v, n in counts.items())
    return f"cells ran {verb} {len(counts)} {plural}: {each}"


def _versions(text) -> dict[str, str]:
    """``name=version name=version`` (the ``versions`` column) as a dict."""
    pairs = (item.partition("=") for item in str(text or "").split())
    return {name: version for name, _, version in pairs if version}


def where_cells_ran(df: pd.DataFrame) -> list[str]:
    """Where the cells ran, as the process that trained each recorded it: one line each for
    hosts, devices and commits, with the cell counts when there are several, and one line
    per package whose version differed between cells. A resumed run, or one spread over a
    cluster, can differ from the commit and device its metadata names (its start)."""
    last = final_rows(df)
    devices = last["device"].astype(str) + "/" + last["device_name"].astype(str)
    commits = pd.Series([_commit(s, d) for s, d in zip(last["git_sha"], last["git_dirty"])], index=last.index)
    lines = [
        _counted(last["host"].astype(str), "host", "hosts"),
        _counted(devices, "device", "devices"),
        _counted(commits, "commit", "commits", "at"),
    ]
    per_cell = [_versions(v) for v in last["versions"]]
    for name in dict.fromkeys(n for versions in per_cell for n in versions):
        found = pd.Series([versions.get(name, "absent") for versions in per_cell])
        if found.nunique() > 1:
            lines.append(_counted(found, f"version of {name}", f"versions of {name}", "with"))
    return lines


#: ``beside_authors`` shows every whole paper epoch up to this one, then only its multiples
#: (a 250-epoch run gives 25 + 9 rows per problem and backend, not 250)
EVERY_EPOCH_UP_TO = 25


def _shown_epoch(epoch: int) -> bool:
    return 1 <= epoch <= EVERY_EPOCH_UP_TO or epoch % EVERY_EPOCH_UP_TO == 0


def _side_by_side_steps(steps: list[int], epoch_steps: int) -> list[tuple[int, int]]:
    """(our step, the authors' epoch it is read against): every evaluation at a whole paper
    epoch that ``_shown_epoch`` keeps, and our last evaluation against the nearest whole
    epoch when it falls between two (a 2,100-step run ends at 3.8 of the 550-step epochs)."""
    pairs = [(s, s // epoch_steps) for s in steps if s > 0 and s % epoch_steps == 0 and _shown_epoch(s // epoch_steps)]
    last = max(steps, default=0)
    if last > 0 and last % epoch_steps:
        pairs.append((last, reference.nearest_epoch(last, epoch_steps)))
    return pairs


def beside_authors(df: pd.DataFrame, facts: schema.RunFacts) -> pd.DataFrame:
    """Ours and the authors' side by side, for every problem whose recorded facts name a
    logged run (``ProblemFacts.reference_run``) and its discrete MSA configuration
    (``reference.MSA_LABELS``), per backend: at the steps ``_side_by_side_steps`` picks,
    the median over our ``ok`` cells (as the curves) and the authors' logged value at that
    epoch. Our step is counted in the authors' epochs by ``reference.epoch_steps``."""
    rows = []
    for problem in dict.fromkeys(df["problem"]):
        p = facts.problems[problem]
        label = reference.MSA_LABELS.get(p.weights)
        ours = df[(df["problem"] == problem) & (df["label"] == label) & (df["status"] == "ok")]
        if p.reference_run is None or ours.empty:
            continue
        log, epoch_steps = reference.load(p.reference_run), reference.epoch_steps(p)
        for backend, cells in ours.groupby("backend", sort=False):
            curve = cells.groupby("step")[["test_acc", "nonzero_frac"]].median()
            for step, epoch in _side_by_side_steps([int(s) for s in curve.index], epoch_steps):
                theirs = reference.at_epoch(log, epoch)
                if theirs is None:
                    continue
                rows.append(
                    {
                        "problem": problem,
                        "label": label,
                        "backend": backend,
                        "step": step,
                        "our paper epoch": f"{step / epoch_steps:.3g}",
                        "authors' epoch": epoch,
                        "test acc % (ours)": _percent(curve.at[step, "test_acc"]),
                        "test acc % (authors)": _percent(theirs["test_acc"]),
                        "non-zero (ours)": _fraction(curve.at[step, "nonzero_frac"]),
                        "non-zero (authors)": _fraction(theirs.get("nonzero_frac", math.nan)),
                    }
                )
    return pd.DataFrame(rows)


def _percent(v) -> str:
    return "–" if pd.isna(v) else f"{float(v) * 100:.1f}"


def _fraction(v) -> str:
    return "–" if pd.isna(v) else f"{float(v):.3f}"
