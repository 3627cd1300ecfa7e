"""The comparison report: every section from a synthetic run, each claim's verdict on
tables built to make it hold and to make it fail, bad input, and the HTML in a real
browser (headless Chromium)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from reports import build, claims, figures, load
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
    wrong = table[table["verdict"] != wanted][["id", "backend", "verdict", "numbers"]]
    assert wrong.empty, wrong.to_string()


def test_claims_without_their_data_are_not_measured(tmp_path):
    runs = load.load_runs([report_tables.write(tmp_path, drop_problem="mnist5k-mlp-ternary")])
    table = claims.evaluate(runs.df, runs.facts).set_index(["id", "backend"])
    assert table.loc[("ternary-sparser-than-twn", "torch"), "verdict"] == claims.NOT_MEASURED
    assert table.loc[("binary-matches-bc", "torch"), "verdict"] == claims.HOLDS


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
        (lambda d: _garbage(d), "not a"),
    ],
    ids=["missing", "empty", "other-schema-version", "corrupt"],
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
