"""The comparison report: every section from a synthetic run, each claim's verdict on
tables built to make it hold and to make it fail, bad input, and the HTML in a real
browser (headless Chromium)."""

from __future__ import annotations

import errno
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from reports import __main__ as report_cli
from reports import build, claims, figures, load, publish, tables
from tests import report_tables

pytest.importorskip("seaborn")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("report")
    runs = load.load_runs([report_tables.write(tmp, hold=True)])
    return build.build(runs, tmp / "out")


def test_every_section_in_order(report: Path):
    text = report.read_text()
    md = (report.parent / "index.md").read_text()
    positions = [text.index(f">{section}</h2>") for section in build.SECTIONS]
    assert positions == sorted(positions)
    for section in build.SECTIONS:
        assert f"## {section}" in md
    for anchor in ("fig-loss-step", "fig-loss-time", "fig-acc-step", "fig-acc-time", "fig-sparsity", "fig-speed"):
        assert f'id="{anchor}"' in text, anchor
    figures = {p.name for p in (report.parent / "figures").iterdir()}
    for name in ("loss-step", "loss-time", "acc-step", "acc-time", "sparsity", "speed"):
        assert {f"{name}.png", f"{name}.svg"} <= figures, name
    # the header names the run, git sha and dirty flag, device and versions
    for needle in ("20260101T000000Z-test", "0123456789abcdef", "dirty", "test CPU", "numpy"):
        assert needle in text, needle
    # every status and every reason reaches the coverage section
    for needle in ("1 skipped", "1 error", "1 diverged", "RuntimeError: out of memory", "optax-lbfgs"):
        assert needle in md, needle


def test_every_image_reference_exists(report: Path):
    for src in re.findall(r'(?:src|href)="(figures/[^"]+)"', report.read_text()):
        assert (report.parent / src).is_file(), src


@pytest.mark.parametrize("hold", [True, False])
def test_claim_verdicts_follow_the_data(tmp_path, hold: bool):
    runs = load.load_runs([report_tables.write(tmp_path, hold=hold)])
    table = claims.evaluate(runs.df, runs.facts)
    assert set(table["backend"]) == set(report_tables.BACKENDS)
    assert {c.id for c in claims.CLAIMS} == set(table["id"])
    wanted = claims.HOLDS if hold else claims.FAILS
    wrong = table[table["verdict"].map(claims.verdict_kind) != wanted][["id", "backend", "verdict", "numbers"]]
    assert wrong.empty, wrong.to_string()
    # the synthetic cells run 100 steps, short of every paper budget: no verdict is bare
    assert not table["verdict"].isin([claims.HOLDS, claims.FAILS]).any(), table["verdict"].tolist()


def test_claims_without_their_data_are_not_measured(tmp_path):
    runs = load.load_runs([report_tables.write(tmp_path, drop_problem="mnist5k-mlp-ternary")])
    table = claims.evaluate(runs.df, runs.facts).set_index(["id", "backend"])
    assert table.loc[("ternary-sparser-than-twn", "torch"), "verdict"] == claims.NOT_MEASURED
    assert claims.verdict_kind(table.loc[("binary-matches-bc", "torch"), "verdict"]) == claims.HOLDS


def _python_m(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    root = Path(__file__).resolve().parents[1]
    return subprocess.run(
        [sys.executable, "-m", "reports", *args],
        check=False,
        cwd=cwd,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.parquet", "results file not found"),
        (lambda d: _empty_run(d), "has no rows"),
        (lambda d: _other_version(d), "schema"),
        (lambda d: _version_3(d), "has schema_version 3; this msabench reads versions 4, 5, 6"),
        (lambda d: _garbage(d), "not a"),
    ],
    ids=["missing", "empty", "other-schema-version", "schema-version-3", "corrupt"],
)
def test_bad_results_file_one_line_error_and_nothing_written(tmp_path, make, message):
    out = tmp_path / "out"
    proc = _python_m("build", str(make(tmp_path)), "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not out.exists()
    assert not list(tmp_path.glob(".out.building-*"))


def test_failed_build_keeps_the_previous_report(tmp_path, monkeypatch):
    runs = load.load_runs([report_tables.write(tmp_path)])
    index = build.build(runs, tmp_path / "out")
    before = index.read_text()

    def broken(*args, **kwargs):
        raise RuntimeError("plotting failed")

    monkeypatch.setattr(build.figures, "sparsity", broken)
    with pytest.raises(RuntimeError):
        build.build(runs, tmp_path / "out")
    assert index.read_text() == before
    assert not list(tmp_path.glob(".out.building-*"))


def _empty_run(d: Path) -> Path:
    from suites import schema

    return schema.write_parquet(schema.frame([]), d / "empty.parquet", report_tables.run_metadata([]))


def _other_version(d: Path) -> Path:
    import json

    import pyarrow.parquet as pq

    from suites import schema

    path = report_tables.write(d)
    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[schema.METADATA_KEY])
    meta["schema_version"] = schema.SCHEMA_VERSION + 1
    pq.write_table(table.replace_schema_metadata({schema.METADATA_KEY: json.dumps(meta).encode()}), path)
    return path


def _version_3(d: Path) -> Path:
    """A run file as version 3 wrote it: no provenance columns in the rows."""
    import json

    import pyarrow.parquet as pq

    from suites import schema

    path = report_tables.write(d)
    table = pq.read_table(path)
    meta = {**json.loads(table.schema.metadata[schema.METADATA_KEY]), "schema_version": 3}
    old = table.drop_columns([name for name, _ in schema.PROVENANCE])
    pq.write_table(old.replace_schema_metadata({schema.METADATA_KEY: json.dumps(meta).encode()}), path)
    return path


def _garbage(d: Path) -> Path:
    path = d / "garbage.parquet"
    path.write_bytes(b"this is not parquet")
    return path


# ---------------------------------------------------------------------------------------
# the HTML in a real browser
# ---------------------------------------------------------------------------------------


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def test_html_opens_in_headless_chromium(report: Path):
    """Loaded from disk (file://, no network): no console errors, every image decoded."""
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium on this machine (CI installs Debian's chromium package)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (the test extra) is not installed")
    with sync_api.sync_playwright() as pw:
        chrome = pw.chromium.launch(executable_path=browser, args=["--no-sandbox"])
        try:
            page = chrome.new_page()
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
            page.goto(report.resolve().as_uri(), wait_until="load")
            images = page.evaluate("Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])")
        finally:
            chrome.close()
    assert not problems, problems
    assert len(images) >= 6
    assert all(width > 0 for _, width in images), images


def test_reference_overlay_says_which_problems_are_the_papers_setting(tmp_path):
    """The embedded MLP is a stand-in for the ICML MNIST run; the paper-scale problem
    (55,000 digits, 3×2048) is the same setting, and the overlay says which is which."""
    runs = load.load_runs([report_tables.write(tmp_path, hold=True)])
    df = runs.df
    paper = df[df["problem"] == "mnist5k-mlp-binary"].assign(problem="mnist-mlp-binary")
    facts = runs.facts.merge(report_tables.facts_of(["mnist-mlp-binary"]))
    (tmp_path / "figures").mkdir()
    _, matches = figures.reference_overlay(pd.concat([df, paper]), facts, tmp_path / "figures")
    assert "mnist5k-mlp-binary ↔ li_hao_2018/mnist_fc_binary_per_epoch (stand-in)" in matches
    assert "mnist-mlp-binary ↔ li_hao_2018/mnist_fc_binary_per_epoch (same setting)" in matches


def test_wall_clock_claim_is_not_judged_when_nobody_reaches_the_target(tmp_path):
    """An E-MSA that never reaches the target cannot lose a race nobody finished."""
    runs = load.load_runs([report_tables.write(tmp_path, hold=True)])
    cnn = runs.df[runs.df["problem"] == "mnist5k-rescnn"].assign(test_acc=0.1)
    verdict = claims.emsa_not_competitive_in_wall_clock(claims.Data(cnn, runs.facts), "torch")
    assert verdict.verdict == claims.NOT_MEASURED
    assert "mnist5k-rescnn: no configuration reached the target" in verdict.numbers


# ---------------------------------------------------------------------------------------
# two runs of one suite; the run's own facts; the destination; bad input through the CLI
# ---------------------------------------------------------------------------------------


def _second_run(row: dict) -> None:
    """A rerun of the synthetic suite on a machine half as fast, where binary MSA ends
    1.5 points lower: alone it misses BC's accuracy by more than the 1-point tolerance."""
    if row["label"] == "dmsa-binary":
        row["test_acc"] = 0.935
    if "time_s" in row:
        row["time_s"] *= 2


def _seconds_to_target(runs: load.Runs, problem: str, label: str) -> float:
    table = tables.final_results(runs.df, runs.facts).set_index(["problem", "label", "backend"])
    return float(table.loc[(problem, label, "torch"), "s to target"])


def test_two_runs_of_one_suite_count_as_replicates_in_claims_and_tables(tmp_path):
    """The documented ``reports build RUN1 RUN2``: every cell of both runs is a replicate,
    in the claims and in the tables alike (not the second run's cells for one, and the
    best of both for the other)."""
    first = report_tables.write(tmp_path)
    second = report_tables.write(tmp_path, run_id="20260102T000000Z-again", edit=_second_run)
    both = load.load_runs([first, second])
    table = claims.evaluate(both.df, both.facts).set_index(["id", "backend"])
    # mean over the 2 + 2 cells: (0.95 + 0.935) / 2 = 94.25%, within 1 point of BC's 95%
    binary = table.loc[("binary-matches-bc", "torch")]
    assert (
        claims.verdict_kind(binary["verdict"]) == claims.HOLDS and "binary MSA 94.2% vs BC 95.0%" in binary["numbers"]
    )
    second_only = load.load_runs([second])
    alone = claims.evaluate(second_only.df, second_only.facts).set_index(["id", "backend"])
    assert claims.verdict_kind(alone.loc[("binary-matches-bc", "torch"), "verdict"]) == claims.FAILS
    # seconds to target: the median of two cells at t and two at 2t, i.e. 1.5 t
    fast = _seconds_to_target(load.load_runs([first]), "mnist5k-rescnn", "sgd")
    slow = _seconds_to_target(load.load_runs([second]), "mnist5k-rescnn", "sgd")
    assert slow == pytest.approx(2 * fast, rel=1e-2)  # 3 significant digits shown
    assert _seconds_to_target(both, "mnist5k-rescnn", "sgd") == pytest.approx(1.5 * fast, rel=1e-2)
    cells = tables.final_results(both.df, both.facts)
    assert set(cells.loc[cells["status"] != "1 skipped", "cells"]) <= {2, 4}
    assert (cells.loc[cells["label"] == "sgd", "cells"] == 4).all()


def test_header_says_where_the_cells_ran_when_they_ran_on_several_machines(tmp_path):
    """A run resumed on another machine at another commit: the header counts the cells per
    host, device and commit (from the rows, not the metadata's start), and names the package
    whose version changed; a run on one machine says so in one line each."""

    def resumed_elsewhere(row):
        if row["seed"] == 1:
            row.update(host="node-2", device_name="other CPU", git_sha="fedcba9876543210", git_dirty=False)
            row["versions"] = row["versions"].replace("python=3.11", "python=3.12")

    runs = load.load_runs([report_tables.write(tmp_path, edit=resumed_elsewhere)])
    cells = runs.df.drop_duplicates(["run_id", "cell_id"])
    moved, stayed = int((cells["seed"] == 1).sum()), int((cells["seed"] != 1).sum())
    lines = tables.where_cells_ran(runs.df)
    assert lines[:3] == [
        f"cells ran on 2 hosts: test-host ({stayed} cells), node-2 ({moved} cells)",
        f"cells ran on 2 devices: cpu/test CPU ({stayed} cells), cpu/other CPU ({moved} cells)",
        f"cells ran at 2 commits: 0123456789abcdef (dirty) ({stayed} cells), fedcba9876543210 ({moved} cells)",
    ]
    assert lines[3:] == [f"cells ran with 2 versions of python: 3.11 ({stayed} cells), 3.12 ({moved} cells)"]
    md = (build.build(runs, tmp_path / "out").parent / "index.md").read_text()
    assert all(f"- {line}" in md for line in lines)
    one = tables.where_cells_ran(load.load_runs([report_tables.write(tmp_path / "one")]).df)
    assert one == [
        "cells ran on 1 host: test-host",
        "cells ran on 1 device: cpu/test CPU",
        "cells ran at 1 commit: 0123456789abcdef (dirty)",
    ]


def test_reports_never_import_the_problem_registry():
    """The results format is the contract: reports (and msaresults) import nothing of
    ``suites``, so there is no suites ⇄ reports cycle and an old run reports as recorded."""
    code = (
        "import sys, msaresults.schema, reports.__main__, reports.build, reports.summary\n"
        "bad = sorted(m for m in sys.modules if m == 'suites' or m.startswith('suites.'))\n"
        "assert not bad, bad\n"
    )
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_report_reads_the_target_the_run_recorded(tmp_path):
    """A target changed in the registry since the run does not change its report."""
    path = report_tables.write(tmp_path)
    meta = _meta_of(path)
    meta["problems"]["mnist5k-rescnn"]["target_value"] = 0.5  # what the run knew
    _rewrite_meta(path, meta)
    runs = load.load_runs([path])
    targets = tables.targets(runs.df, runs.facts).set_index("problem")["target"]
    assert targets["mnist5k-rescnn"] == "test accuracy ≥ 50%"


def _meta_of(path: Path) -> dict:
    import json

    import pyarrow.parquet as pq

    from suites import schema

    return json.loads(pq.read_schema(path).metadata[schema.METADATA_KEY])


def _rewrite_meta(path: Path, meta: dict) -> Path:
    import json

    import pyarrow.parquet as pq

    from suites import schema

    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata({schema.METADATA_KEY: json.dumps(meta).encode()}), path)
    return path


def _without_facts(d: Path) -> Path:
    path = report_tables.write(d)
    meta = _meta_of(path)
    del meta["problems"]
    return _rewrite_meta(path, meta)


def _unknown_problem(d: Path) -> Path:
    path = report_tables.write(d)
    meta = _meta_of(path)
    del meta["problems"]["sine-resnet-zero"]  # e.g. a problem since renamed
    return _rewrite_meta(path, meta)


def _wrong_column_type(d: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = report_tables.write(d)
    table = pq.read_table(path)
    i = table.schema.get_field_index("ms_per_step")
    text = pa.array([str(v) for v in table.column("ms_per_step").to_pylist()])
    pq.write_table(table.set_column(i, "ms_per_step", text), path)
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (_without_facts, "metadata has no problems"),
        (_unknown_problem, "rows name problem 'sine-resnet-zero', which the metadata does not describe"),
        (_wrong_column_type, "column ms_per_step has type string, expected double"),
    ],
    ids=["no-run-facts", "unknown-problem", "wrong-column-type"],
)
def test_bad_run_file_is_one_line_through_the_cli(tmp_path, make, message):
    out = tmp_path / "out"
    proc = _python_m("build", str(make(tmp_path)), "--out", str(out), cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr
    assert not out.exists() and not list(tmp_path.glob(".out.building-*"))


def _refuse(capsys, argv) -> str:
    with pytest.raises(SystemExit) as e:
        report_cli.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_out_file_is_refused_before_building(tmp_path, capsys, monkeypatch):
    def must_not_build(*args, **kwargs):
        raise AssertionError("built before checking the destination")

    monkeypatch.setattr(build, "build", must_not_build)
    target = tmp_path / "report.html"
    target.write_text("mine")
    assert "is a file, not a folder" in _refuse(
        capsys, ["build", str(report_tables.write(tmp_path)), "--out", str(target)]
    )
    assert target.read_text() == "mine"


def test_a_folder_with_report_files_we_did_not_write_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "index.md").write_text("someone's notes")
    message = _refuse(capsys, ["build", str(report_tables.write(tmp_path)), "--out", str(out)])
    assert "index.md was not written by an msabench report" in message
    assert (out / "index.md").read_text() == "someone's notes" and sorted(p.name for p in out.iterdir()) == ["index.md"]


def test_rebuild_replaces_only_what_the_report_wrote(tmp_path, monkeypatch):
    """Other files in the folder, and in figures/, survive a rebuild untouched; a figure
    the previous report wrote and this one does not is deleted."""
    runs = load.load_runs([report_tables.write(tmp_path)])
    out = tmp_path / "out"
    build.build(runs, out)
    (out / "summary.md").write_text("the summary")
    (out / "figures" / "mine.png").write_bytes(b"a figure of mine")
    assert (out / "figures" / "reference.png").exists()
    monkeypatch.setattr(build.figures, "reference_overlay", lambda *a: None)  # this build draws no overlay
    build.build(runs, out)
    assert (out / "summary.md").read_text() == "the summary"
    assert (out / "figures" / "mine.png").read_bytes() == b"a figure of mine"
    assert not (out / "figures" / "reference.png").exists()
    assert (out / "index.html").exists() and (out / publish.MANIFEST).exists()


def test_full_disk_while_writing_is_one_line_and_keeps_the_previous_report(tmp_path, capsys, monkeypatch):
    path = report_tables.write(tmp_path)
    out = tmp_path / "out"
    build.build(load.load_runs([path]), out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(build.figures, "speed", full_disk)
    message = _refuse(capsys, ["build", str(path), "--out", str(out)])
    assert "cannot write the report" in message and "No space left on device" in message
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert not list(tmp_path.glob(".out.building-*"))


def test_time_axes_have_no_negative_ticks(tmp_path):
    """Timed seconds are never negative: the symlog axis starts at 0, so no -10^k tick."""
    df = load.load_runs([report_tables.write(tmp_path)]).df
    fig = figures.curves_figure(df, "train_loss", "seconds", "training loss (log)", True)
    fig.canvas.draw()
    for ax in fig.axes:
        if not ax.get_visible() or ax.get_xscale() != "symlog":
            continue
        lo, hi = ax.get_xlim()
        shown = [t.get_text() for t in ax.get_xticklabels() if lo <= t.get_position()[0] <= hi]
        assert shown and not [
            t for t in shown if t.lstrip("$").startswith(("−", "-", "\\mathdefault{−", "\\mathdefault{-"))
        ], shown
        assert lo >= 0
    figures.plt.close(fig)
