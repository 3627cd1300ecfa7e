"""Results files in, one table out: ``load_runs(paths) -> Runs``.

Every file must exist, be a run file of this schema version with its run facts
(``schema.read_run``) and hold at least one row; the first that does not stops the report
with a one-line ``ReportError`` before anything is written.

How several runs combine: a cell is (run_id, cell_id) (``schema.CELL_KEY``), so the same
configuration and seed in two runs of a suite are two replicates. Every table, figure and
claim pools the replicates of all given runs (means, medians and quantiles over cells, not
over seeds), and reads each cell's result from ``schema.final_rows``. The runs' facts are
merged; runs that record different facts for one problem or label are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from msaresults import schema


class ReportError(Exception):
    """A one-line reason the report cannot be built."""


@dataclass(frozen=True)
class Runs:
    """The rows of one or more runs (``df``), each run's metadata and path, in the given
    order, and their merged facts (targets, weight kinds, labels' algorithms)."""

    df: pd.DataFrame
    metas: tuple[dict[str, Any], ...]
    paths: tuple[Path, ...]
    facts: schema.RunFacts

    @property
    def suite(self) -> str:
        return "+".join(dict.fromkeys(str(m.get("suite", "unknown")) for m in self.metas))


def load_runs(paths: list[Path]) -> Runs:
    if not paths:
        raise ReportError("no results files given")
    frames, metas, facts = [], [], None
    for path in paths:
        if not path.exists():
            raise ReportError(f"results file not found: {path}")
        try:
            df, meta, run_facts = schema.read_run(path)
            facts = run_facts if facts is None else facts.merge(run_facts)
        except schema.ResultsError as e:
            raise ReportError(str(e)) from None
        if df.empty:
            raise ReportError(f"results file has no rows: {path}")
        frames.append(df)
        metas.append(meta)
    df = pd.concat(frames, ignore_index=True)
    dupes = df.loc[df.duplicated([*schema.CELL_KEY, "step"]), "run_id"].unique()
    if len(dupes):
        raise ReportError(f"run {dupes[0]} given more than once")
    return Runs(df, tuple(metas), tuple(paths), facts)


def latest_run(results_dir: Path, suite: str) -> Path:
    """The newest run file of ``suite`` (run ids start with a UTC timestamp)."""
    runs = sorted((results_dir / suite).glob("*.parquet"))
    if not runs:
        raise ReportError(f"no run files of suite {suite!r} under {results_dir / suite}")
    return runs[-1]
