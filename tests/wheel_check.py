"""What ``nox -s wheel`` asserts once the wheel is installed (not editable) and the smoke
and reference-overlay runs and reports are built in WORKDIR, outside the checkout:

    python tests/wheel_check.py WORKDIR

1. ``suites``, ``reports``, ``implementations`` and ``msaresults`` are imported from this
   interpreter's site-packages, and msabench is installed from a wheel, not editable;
2. the files the code reads beside its modules are there: every logged run of the
   authors' that a problem names (``reports/data/li_hao_2018/``, loaded as the report
   loads it), their README, ``suites/tuned.json`` and the CUDA sources the cuda backend
   compiles from (found, not compiled: no GPU needed);
3. both reports were written, every figure they link exists, and the reference report
   holds the overlay of our ternary curve on the authors' logged run;
4. the runs record no git commit: the installed code is no checkout's.

Prints every failure and exits 1 when there is any, 2 on bad usage, 0 otherwise.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import re
import sys
import sysconfig
from pathlib import Path

PACKAGES = ("suites", "reports", "implementations", "msaresults")
#: what nox -s wheel names the report folders and the run the overlay is checked on
SMOKE_REPORT = "report"
REFERENCE_REPORT = "report-reference"
REFERENCE_RUN = "li_hao_2018/mnist_fc_ternary_per_epoch"


def site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"]).resolve()


def check_installed() -> list[str]:
    site = site_packages()
    failures = []
    for name in PACKAGES:
        origin = Path(importlib.import_module(name).__file__).resolve()
        if not origin.is_relative_to(site):
            failures.append(f"{name} is imported from {origin}, not from {site}")
    direct_url = importlib.metadata.distribution("msabench").read_text("direct_url.json")
    if direct_url and json.loads(direct_url).get("dir_info", {}).get("editable"):
        failures.append("msabench is an editable install, not the wheel")
    return failures


def _file_in_site(path: Path, what: str) -> list[str]:
    path = path.resolve()
    if not path.is_file():
        return [f"{what}: {path} is missing"]
    if not path.is_relative_to(site_packages()):
        return [f"{what}: {path} is not the installed package's"]
    return []


def check_package_data() -> list[str]:
    from implementations.cuda import ops as cuda_ops
    from reports import reference
    from suites import grids, problems

    failures = _file_in_site(grids.TUNED_PATH, "tuned learning rates")
    failures += _file_in_site(reference.DATA / "li_hao_2018" / "README.md", "the logged runs' provenance")
    for source in ("kernels.cu", "binding.cpp"):
        failures += _file_in_site(cuda_ops.CSRC / source, "CUDA source")
    named = sorted({p.reference_run for p in problems.PROBLEMS.values() if p.reference_run})
    if not named:
        failures.append("no problem names a logged run of the authors' (suites/problems.py changed?)")
    for name in named:
        try:
            rows = len(reference.load(name))
        except (OSError, ValueError) as e:
            failures.append(f"logged run {name}: {type(e).__name__}: {e}")
            continue
        if rows == 0:
            failures.append(f"logged run {name}: no rows")
    return failures


def _report_failures(folder: Path) -> list[str]:
    index = folder / "index.md"
    if not (folder / "index.html").is_file() or not index.is_file():
        return [f"{folder}: no index.html + index.md"]
    text = index.read_text()
    linked = re.findall(r"\]\((figures/[^)\s]+)\)", text)
    if not linked:
        return [f"{index}: links no figure"]
    return [f"{index}: links {f}, which is missing or empty" for f in linked if not _non_empty(folder / f)]


def _non_empty(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def check_reports(work: Path) -> list[str]:
    failures = _report_failures(work / SMOKE_REPORT) + _report_failures(work / REFERENCE_REPORT)
    index = work / REFERENCE_REPORT / "index.md"
    if index.is_file():
        text = index.read_text()
        # the match list is written only after reports.reference has read the CSV
        if f"↔ {REFERENCE_RUN}" not in text:
            failures.append(f"{index}: the reference overlay does not match {REFERENCE_RUN}")
        for ext in ("png", "svg"):
            if f"figures/reference.{ext}" not in text or not _non_empty(
                work / REFERENCE_REPORT / "figures" / f"reference.{ext}"
            ):
                failures.append(f"{index}: no reference overlay figure reference.{ext}")
    return failures


def check_provenance(work: Path) -> list[str]:
    from msaresults import schema

    runs = sorted((work / "results").glob("*/*.parquet"))
    if not runs:
        return [f"{work / 'results'}: no run file"]
    failures = [
        f"{path}: records git commit {sha}, though it ran the installed wheel"
        for path in runs
        if (sha := schema.read_metadata(path).get("git_sha")) is not None
    ]
    for path in runs:  # each cell's own provenance, from the worker that trained it
        shas = schema.read_results(path)[0]["git_sha"].dropna().unique()
        if len(shas):
            failures.append(f"{path}: cells record git commit {shas[0]}, though they ran the installed wheel")
    return failures


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: python tests/wheel_check.py WORKDIR (the folder nox -s wheel ran the suites in)", file=sys.stderr)
        return 2
    work = Path(argv[0])
    failures = check_installed() + check_package_data() + check_reports(work) + check_provenance(work)
    for failure in failures:
        print(f"wheel check: FAIL: {failure}", file=sys.stderr)
    if failures:
        return 1
    print(f"wheel check: the installed wheel ({site_packages()}) has its data, and both reports are complete")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
