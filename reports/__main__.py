"""``python -m reports build RESULTS... [--suite NAME] [--out DIR]``: the comparison report.

RESULTS are run files (``results/<suite>/<run_id>.parquet``); with ``--suite`` instead,
the newest run of that suite under ``--results-dir``. Several run files are reported
together, their cells counted as replicates (``reports/load.py``). The report goes to
``--out`` (default ``reports/<suite>/``): ``index.html``, ``index.md``, ``figures/`` and
the manifest of those files (``reports/publish.py``); other files there are left alone.

Bad input stops the build with one line on stderr and exit status 2, before anything is
written: a results file that is missing, empty, corrupt, of another schema version or
without its run facts; a destination that is a file, unwritable, or holds report files
no earlier report wrote. A write that fails midway (a full disk) is one line and status 2
too, and leaves the destination as it was.
"""

from __future__ import annotations

import sys
from pathlib import Path

from msaresults import schema
from msaresults.cli import Parser, fail
from reports import load, publish


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m reports", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    b = commands.add_parser("build", help="build the HTML + Markdown report of one or more runs")
    b.add_argument("results", nargs="*", type=Path, help="run files (results/<suite>/<run_id>.parquet)")
    b.add_argument("--suite", help="use the newest run of this suite instead")
    b.add_argument("--results-dir", type=Path, default=Path("results"), help="where --suite looks (default: results)")
    b.add_argument("--out", type=Path, help="output folder (default: reports/<suite>)")
    args = parser.parse_args(argv)
    if bool(args.results) == bool(args.suite):
        fail("give results files or --suite NAME (exactly one of them)")
    try:
        paths = args.results or [load.latest_run(args.results_dir, args.suite)]
        runs = load.load_runs(paths)
        out = args.out or Path("reports") / runs.suite
        publish.check_destination(out)
    except load.ReportError as e:
        fail(str(e))
    from reports import build  # matplotlib and seaborn load only for a valid build

    try:
        index = build.build(runs, out)
    except load.ReportError as e:
        fail(str(e))
    except OSError as e:
        fail(f"cannot write the report to {out}: {schema.one_line(e)}")
    print(index)
    return 0


if __name__ == "__main__":
    sys.exit(main())
