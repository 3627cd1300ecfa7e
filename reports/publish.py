"""Where a report goes: ``check_destination(out)`` before building, ``publish(tmp, out)``
after.

A report's folder may hold files of others (``reports/<suite>/summary.md``, notes). The
report lists the files it wrote in ``MANIFEST`` (``.msabench-report.json`` in the folder)
and only ever replaces or deletes files listed there; everything else is left untouched.
A destination is refused, with one line, when it is a file, lies under a file, is not
writable, or holds an ``index.html``, ``index.md`` or ``figures/`` (or, at publishing, a
figure file) that no earlier report listed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from msaresults import schema
from reports.load import ReportError

MANIFEST = ".msabench-report.json"
FIGURES = "figures"
#: the names a report owns at the top of its folder (figures/ holds the figure files)
TOP_LEVEL = ("index.html", "index.md", FIGURES)


def _owned(out: Path) -> set[str]:
    """The files (paths relative to ``out``) an earlier report listed in its manifest;
    entries outside the report's own names are ignored (never trusted for deletion)."""
    try:
        doc = json.loads((out / MANIFEST).read_text())
    except FileNotFoundError:
        return set()
    except (OSError, ValueError) as e:
        raise ReportError(f"{out / MANIFEST} is unreadable ({schema.one_line(e)}); remove it or choose another --out")
    files = doc.get("files", []) if isinstance(doc, dict) else []
    return {f for f in files if isinstance(f, str) and _is_report_path(f)}


def _is_report_path(rel: str) -> bool:
    parts = Path(rel).parts
    return (len(parts) == 1 and parts[0] in TOP_LEVEL) or (
        len(parts) == 2 and parts[0] == FIGURES and parts[1] not in ("", ".", "..")
    )


def check_destination(out: Path) -> None:
    """``ReportError`` (one line) unless ``out`` can receive the report: a folder (or a
    path to create under a folder) that is writable, whose ``index.html``, ``index.md``
    and ``figures/`` are absent or listed by an earlier report's manifest."""
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out {out} is a file, not a folder")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ReportError(f"--out {out} lies under {existing}, which is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ReportError(f"cannot write the report: {existing} is not writable")
    if not out.exists():
        return
    owned = _owned(out)
    foreign = [name for name in TOP_LEVEL if (out / name).exists() and name not in owned]
    if foreign:
        raise ReportError(
            f"{out / foreign[0]} was not written by an msabench report (no {MANIFEST} lists it); "
            "remove it or choose another --out"
        )
    if not os.access(out, os.W_OK | os.X_OK):
        raise ReportError(f"cannot write the report: {out} is not writable")


def _write_manifest(out: Path, files: set[str]) -> None:
    tmp = out / (MANIFEST + ".tmp")
    try:
        tmp.write_text(json.dumps({"written_by": "python -m reports build", "files": sorted(files)}, indent=1))
        os.replace(tmp, out / MANIFEST)
    finally:
        tmp.unlink(missing_ok=True)


def publish(tmp: Path, out: Path) -> None:
    """Move the finished report into ``out``: its files replace those the previous report
    listed, files that report listed and this one does not are deleted, and nothing
    else in ``out`` (or in ``out/figures/``) is touched. The manifest lists the union
    before any file moves, so an interruption never leaves one of our files unlisted."""
    out.mkdir(parents=True, exist_ok=True)
    previous = _owned(out)
    figure_files = sorted(f"{FIGURES}/{p.name}" for p in (tmp / FIGURES).iterdir())
    new = {*TOP_LEVEL, *figure_files}
    clash = [f for f in figure_files if (out / f).exists() and f not in previous]
    if clash:
        raise ReportError(f"{out / clash[0]} was not written by an msabench report; remove it or choose another --out")
    _write_manifest(out, previous | new)
    (out / FIGURES).mkdir(exist_ok=True)
    for rel in figure_files:
        os.replace(tmp / rel, out / rel)
    for rel in sorted(previous - new):
        (out / rel).unlink(missing_ok=True)
    for name in ("index.md", "index.html"):
        os.replace(tmp / name, out / name)
    _write_manifest(out, new)
