"""Markdown summary of one run: ``python -m reports.summary [RESULTS.parquet | --suite NAME]``.

One table per run, one line per (problem, label, backend, dtype): the final test accuracy
and test loss as mean ± sd over seeds (final = the last row of each ``ok`` or
``diverged`` cell; sd with ddof = 1, left out for a single seed), the mean non-zero
fraction, the median ms/step and compile seconds over the cells, and the cells' status
counts (``3 ok``, ``2 ok, 1 diverged``). Written atomically to
``reports/<suite>/summary.md`` unless ``--out`` says otherwise; the path is printed.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from msaresults import schema
from msaresults.cli import Parser, fail
from reports.load import ReportError, latest_run
from reports.tables import finite, mean_sd, median_str, status_counts, where_cells_ran

GROUP = ["problem", "label", "backend", "dtype"]


def _mean(values: pd.Series, fmt: str) -> str:
    a = finite(values)
    return format(float(a.mean()), fmt) if a.size else "–"


def table(df: pd.DataFrame) -> pd.DataFrame:
    """The summary table (strings), one row per (problem, label, backend, dtype), in the
    order the run's cells appear."""
    last = schema.final_rows(df)  # each cell's final row carries its status
    finals = last[last["status"].isin(schema.TRAINED)]
    out = []
    for key, cells in last.groupby(GROUP, sort=False):
        done = finals[(finals[GROUP] == pd.Series(key, index=GROUP)).all(axis=1)]
        acc = done["test_acc"] * 100.0
        out.append(
            {
                **dict(zip(GROUP, key)),
                "seeds": int(cells["seed"].nunique()),
                "test acc %": mean_sd(acc, ".1f"),
                "test loss": mean_sd(done["test_loss"], ".4g"),
                "non-zero": _mean(done["nonzero_frac"], ".3f"),
                "ms/step": median_str(done["ms_per_step"], ".3g"),
                "compile s": median_str(done["compile_s"], ".3g"),
                "status": status_counts(cells["status"]),
            }
        )
    return pd.DataFrame(out)


def _markdown(t: pd.DataFrame) -> str:
    cols = list(t.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, r in t.iterrows():
        lines.append("| " + " | ".join(str(r[c]).replace("|", "\\|") for c in cols) + " |")
    return "\n".join(lines)


def render(df: pd.DataFrame, meta: dict[str, Any], source: str) -> str:
    """The Markdown document for one run."""
    git = meta.get("git_sha") or "unknown"
    if meta.get("git_dirty"):
        git += " (dirty)"
    threads = meta.get("threads") or {}
    options = meta.get("options") or {}
    lines = [
        f"# {meta.get('suite', '?')}: run {meta.get('run_id', '?')}",
        "",
        f"- results: `{source}`",
        f"- git (at the start): {git}",
        (
            f"- device: {meta.get('device', '?')} ({meta.get('device_name', '?')}), "
            f"{threads.get('per_cell') or options.get('threads') or threads.get('torch', '?')} intra-op "
            f"thread(s) per cell, {options.get('jobs', '?')} cell(s) at once, CPUs {threads.get('cpu_count', '?')}"
        ),
        f"- created: {meta.get('created', '?')}, finished: {meta.get('finished', '?')}",
        *(f"- {line}" for line in (where_cells_ran(df) if not df.empty else [])),
        "",
        (
            "Final = the last evaluation of each ok or diverged cell; mean ± sd over seeds. "
            "ms/step = median over cells of each cell's median timed block (the first step "
            "excluded; it is compile s)."
        ),
    ]
    concurrency = pd.to_numeric(df["concurrency"], errors="coerce").max()
    if isinstance(concurrency, (int, float)) and not math.isnan(concurrency) and concurrency > 1:
        lines.append(
            f"**Timing caveat:** up to {int(concurrency)} cells shared the device; their times are "
            "not comparable with single-cell timings."
        )
    lines += ["", _markdown(table(df)), ""]
    problems = sorted(df.loc[df["status"] != "ok", ["cell_id", "status", "reason"]].itertuples(index=False))
    if problems:
        lines += ["Cells not ok:", ""]
        lines += [f"- `{c}`: {s}: {r}" for c, s, r in problems]
        lines.append("")
    return "\n".join(lines)


def write_summary(results: Path, out: Path | None = None) -> Path:
    """Summarise the run file ``results`` into ``out`` (default reports/<suite>/summary.md)."""
    df, meta = schema.read_results(results)
    out = out or Path("reports") / str(meta.get("suite", "unknown")) / "summary.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    try:
        tmp.write_text(render(df, meta, str(results)))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)  # after a failed write: no partial file left
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", nargs="?", help="a run file (results/<suite>/<run_id>.parquet)")
    p.add_argument("--suite", help="summarise the newest run of this suite instead")
    p.add_argument("--results-dir", default="results", help="where --suite looks (default: results)")
    p.add_argument("--out", help="output path (default: reports/<suite>/summary.md)")


def run_from_args(args: argparse.Namespace) -> int:
    """Validate the arguments, write the summary and print its path."""
    if (args.results is None) == (args.suite is None):
        fail("give a results file or --suite NAME (exactly one)")
    try:
        path = Path(args.results) if args.results else latest_run(Path(args.results_dir), args.suite)
        out = write_summary(path, Path(args.out) if args.out else None)
    except (schema.ResultsError, ReportError) as e:
        fail(str(e))
    except OSError as e:  # an unwritable folder, a full disk
        fail(f"cannot write the summary: {schema.one_line(e)}")
    print(out)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m reports.summary", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
