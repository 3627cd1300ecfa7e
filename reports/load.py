"""Results files in, one table out: ``load_runs(paths) -> Runs``.

Every file must exist, be a results file of this schema version (``schema.read_results``)
and hold at least one row; the first that does not stops the report with a one-line
``ReportError`` before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from suites import schema


class ReportError(Exception):
    """A one-line reason the report cannot be built."""


@dataclass(frozen=True)
class Runs:
    """The rows of one or more runs (``df``) and each run's metadata, in the given order."""

    df: pd.DataFrame
    metas: tuple[dict[str, Any], ...]
    paths: tuple[Path, ...]

    @property
    def suite(self) -> str:
        return "+".join(dict.fromkeys(str(m.get("suite", "unknown")) for m in self.metas))


def load_runs(paths: list[Path]) -> Runs:
    if not paths:
        raise ReportError("no results files given")
    frames, metas = [], []
    for path in paths:
        if not path.exists():
            raise ReportError(f"results file not found: {path}")
        try:
            df, meta = schema.read_results(path)
        except schema.ResultsError as e:
            raise ReportError(str(e)) from None
        if df.empty:
            raise ReportError(f"results file has no rows: {path}")
        frames.append(df)
        metas.append(meta)
    df = pd.concat(frames, ignore_index=True)
    dupes = df.loc[df.duplicated(["run_id", "cell_id", "step"]), "run_id"].unique()
    if len(dupes):
        raise ReportError(f"run {dupes[0]} given more than once")
    return Runs(df, tuple(metas), tuple(paths))


def latest_run(results_dir: Path, suite: str) -> Path:
    """The newest run file of ``suite`` (run ids start with a UTC timestamp)."""
    runs = sorted((results_dir / suite).glob("*.parquet"))
    if not runs:
        raise ReportError(f"no run files of suite {suite!r} under {results_dir / suite}")
    return runs[-1]


def finals(df: pd.DataFrame) -> pd.DataFrame:
    """Each cell's last row (it carries the cell's status)."""
    return df.groupby(["run_id", "cell_id"], sort=False).tail(1)


def finished(df: pd.DataFrame) -> pd.DataFrame:
    """The final rows of the cells that trained (``ok`` or ``diverged``)."""
    last = finals(df)
    return last[last["status"].isin(("ok", "diverged"))]
