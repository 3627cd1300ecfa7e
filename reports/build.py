"""Build the comparison report of one or more runs: ``reports/<suite>/index.html``,
``index.md`` and ``figures/*.png|svg``.

Everything is built in a temporary folder beside the output and moved into place only
when complete, so a failure (a bad results file, a plotting error, a full disk) leaves the
previous report as it was and never a half-written one.

The output folder may hold files of others (``reports/<suite>/summary.md``): the report
only replaces or deletes the files an earlier report listed in its manifest
(``reports/publish.py``), and its destination is checked before anything is built.

Sections, in order: header (runs, git, device, versions, date, and where the cells ran:
hosts, devices, commits, from the rows); coverage; convergence;
final results; sparsity; speed; claims; reference overlay.
"""

from __future__ import annotations

import html
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from reports import claims, figures, publish, tables
from reports.load import Runs

SECTIONS = ("Header", "Coverage", "Convergence", "Final results", "Sparsity", "Speed", "Claims", "Reference overlay")
CSS = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #444; }
.holds { background: #e3f6e3; } .does-not-hold { background: #fbe3e3; } .not-measured { background: #f1f1f1; }
code { background: #f5f5f5; padding: 0 0.2em; }
"""


# ---------------------------------------------------------------------------------------
# a tiny document model rendered twice: HTML and Markdown
# ---------------------------------------------------------------------------------------


class Document:
    def __init__(self) -> None:
        self.html: list[str] = []
        self.md: list[str] = []

    def heading(self, text: str, level: int = 2, anchor: str | None = None) -> None:
        ident = f' id="{anchor}"' if anchor else ""
        self.html.append(f"<h{level}{ident}>{html.escape(text)}</h{level}>")
        self.md += [f"{'#' * level} {text}", ""]

    def paragraph(self, text: str) -> None:
        self.html.append(f"<p>{html.escape(text)}</p>")
        self.md += [text, ""]

    def bullets(self, items: list[str]) -> None:
        self.html.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>")
        self.md += [f"- {i}" for i in items] + [""]

    def table(
        self, df: pd.DataFrame, row_class: Callable[[pd.Series], str] | None = None, links: tuple[str, ...] = ()
    ) -> None:
        """``row_class``: the CSS class of a row (the claims' verdict kind); ``links``:
        columns holding in-page anchors, rendered as links."""
        if df.empty:
            self.paragraph("(nothing to show)")
            return
        cols = list(df.columns)

        def cell_html(c, v) -> str:
            return f'<a href="#{html.escape(str(v))}">{html.escape(str(v))}</a>' if c in links else html.escape(str(v))

        def cell_md(c, v) -> str:
            text = str(v).replace("|", "\\|").replace("\n", " ")
            return f"[{text}](#{text})" if c in links else text

        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
        body = []
        for _, r in df.iterrows():
            cls = f' class="{row_class(r).replace(" ", "-")}"' if row_class else ""
            body.append(f"<tr{cls}>" + "".join(f"<td>{cell_html(c, r[c])}</td>" for c in cols) + "</tr>")
        self.html.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
        self.md.append("| " + " | ".join(map(str, cols)) + " |")
        self.md.append("|" + "|".join("---" for _ in cols) + "|")
        for _, r in df.iterrows():
            self.md.append("| " + " | ".join(cell_md(c, r[c]) for c in cols) + " |")
        self.md.append("")

    def figure(self, files: list[str] | None, caption: str, anchor: str) -> None:
        if not files:
            self.paragraph(f"Not measured in this run: {caption}")
            return
        png, svg = (f"figures/{f}" for f in files)
        self.html.append(
            f'<figure id="{anchor}"><a href="{svg}"><img src="{png}" alt="{html.escape(caption)}"></a>'
            f'<figcaption>{html.escape(caption)} (<a href="{svg}">SVG</a>)</figcaption></figure>'
        )
        self.md += [f'<a id="{anchor}"></a>', f"![{caption}]({png})", "", f"*{caption}* ([SVG]({svg}))", ""]

    def render_html(self, title: str) -> str:
        return (
            f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body>\n" + "\n".join(self.html) + "\n</body></html>\n"
        )

    def render_md(self) -> str:
        return "\n".join(self.md).rstrip() + "\n"


# ---------------------------------------------------------------------------------------
# the sections
# ---------------------------------------------------------------------------------------


def _header(doc: Document, runs: Runs) -> None:
    doc.heading(f"msabench report: {runs.suite}", 1)
    doc.heading("Header", 2, "header")
    first = runs.metas[0]
    items = [
        f"suite: {runs.suite}",
        "runs: " + ", ".join(f"{m.get('run_id')} ({p})" for m, p in zip(runs.metas, runs.paths)),
    ]
    for m in runs.metas:
        dirty = {True: "dirty", False: "clean", None: "unknown"}[m.get("git_dirty")]
        threads = (m.get("options") or {}).get("threads")
        items.append(
            f"{m.get('run_id')}: started at git {m.get('git_sha') or 'unknown'} ({dirty}); device "
            f"{m.get('device')} ({m.get('device_name')}), {threads or 'default'} intra-op thread(s) per cell, "
            f"{(m.get('options') or {}).get('jobs', '?')} cell(s) at once; created {m.get('created')}, "
            f"finished {m.get('finished')}"
        )
    versions = first.get("versions") or {}
    items.append("packages: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v))
    items += tables.where_cells_ran(runs.df)  # each cell's own provenance: the truth where runs span machines
    items.append(f"report built: {datetime.now(UTC).isoformat(timespec='seconds')}")
    doc.bullets(items)
    concurrency = pd.to_numeric(runs.df["concurrency"], errors="coerce").max()
    if pd.notna(concurrency) and concurrency > 1:
        doc.paragraph(
            f"Timing caveat: up to {int(concurrency)} cells ran at once on the device; their times compare with "
            "each other, not with single-cell timings."
        )


def _coverage(doc: Document, df: pd.DataFrame) -> None:
    doc.heading("Coverage", 2, "coverage")
    doc.paragraph(
        "Algorithm (configuration label) × backend × problem: each entry counts the cells by final status; "
        "– = not in this run."
    )
    doc.table(tables.coverage(df))
    bad = tables.not_ok(df)
    if not bad.empty:
        doc.paragraph("Cells not ok, with their reasons:")
        doc.table(bad)


def _convergence(doc: Document, df: pd.DataFrame, out: Path) -> None:
    doc.heading("Convergence", 2, "convergence")
    classification = df[df["test_acc"].notna()]
    specs = [
        ("fig-loss-step", df, "train_loss", "step", "loss-step", "training loss (log)", True),
        ("fig-loss-time", df, "train_loss", "seconds", "loss-time", "training loss (log)", True),
        ("fig-acc-step", classification, "test_acc", "step", "acc-step", "test accuracy", False),
        ("fig-acc-time", classification, "test_acc", "seconds", "acc-time", "test accuracy", False),
    ]
    for anchor, data, metric, x, name, ylabel, log in specs:
        files = figures.curves(data, metric, x, out, name, ylabel, log) if not data.empty else None
        against = "iteration" if x == "step" else "timed wall-clock seconds"
        caption = (
            f"{ylabel.replace(' (log)', '')} against {against}, one panel per problem; colour = configuration, "
            f"line style = backend; {figures.BAND}."
        )
        doc.figure(files, caption, anchor)


def _final(doc: Document, runs: Runs) -> None:
    doc.heading("Final results", 2, "final-results")
    doc.paragraph(
        "Final = each cell's last evaluation; mean ± sd over cells (ok cells; with several runs, the cells "
        "of every run count as replicates). Steps and seconds to target = median over cells of the first "
        "evaluation meeting the problem's target, as the run recorded it (timed seconds, compile excluded); "
        "ms/step = median over cells of each cell's median timed block."
    )
    doc.table(tables.targets(runs.df, runs.facts))
    doc.table(tables.final_results(runs.df, runs.facts))


def _sparsity(doc: Document, runs: Runs, out: Path) -> None:
    doc.heading("Sparsity", 2, "sparsity")
    caption = (
        "Non-zero fraction of the ternary configurations: during training (non-zero discrete weights over all "
        f"trainable parameters, the ICML measure; {figures.BAND}) and per layer at the end (non-zero fraction "
        "of each layer's W, mean over cells)."
    )
    doc.figure(figures.sparsity(runs.df, runs.facts, out), caption, "fig-sparsity")
    beside = tables.beside_authors(runs.df, runs.facts)
    if not beside.empty:
        doc.paragraph(
            "Ours beside the authors' logged runs (reports/data/li_hao_2018/) at the same paper epochs: an "
            "epoch is the paper's training split at our batch size (550 steps for MNIST at batch 100, on the "
            "MNIST-5k stand-ins too), every whole epoch we evaluated up to 25 and every 25th after, and our "
            "last evaluation against the authors' nearest epoch; ours = median over cells."
        )
        doc.table(beside)


def _speed(doc: Document, df: pd.DataFrame, out: Path) -> None:
    doc.heading("Speed", 2, "speed")
    doc.table(tables.speed(df))
    caption = "Median ms per step per configuration and backend (log scale); the first step (compile) excluded."
    doc.figure(figures.speed(df, out), caption, "fig-speed")


def _claims(doc: Document, runs: Runs) -> None:
    doc.heading("Claims", 2, "claims")
    doc.paragraph(
        "Each claim of the papers, evaluated per backend from the runs' data (the cells of every run count "
        "as replicates); the threshold column states the rule behind the verdict, the budget column how "
        "long our cells ran beside how long the paper trained (in the paper's unit), and the figure column "
        "links the figure to read it from. A verdict measured short of the paper's budget says so "
        '("does not hold at 3.8 of 250 epochs"): a claim that fails only before the paper\'s budget is '
        "not shown to be false."
    )
    table = claims.evaluate(runs.df, runs.facts)
    shown = table[["claim", "source", "backend", "verdict", "numbers", "threshold", "budget", "figure"]]
    doc.table(shown, row_class=lambda r: claims.verdict_kind(r["verdict"]), links=("figure",))


def _reference(doc: Document, runs: Runs, out: Path) -> None:
    doc.heading("Reference overlay", 2, "reference-overlay")
    result = figures.reference_overlay(runs.df, runs.facts, out)
    if result is None:
        doc.paragraph("No problem in this run matches one of the authors' logged runs (reports/data/).")
        return
    files, matches = result
    doc.paragraph(
        "The authors' logged runs (Li & Hao 2018, read off their public notebooks; reports/data/li_hao_2018/) "
        "beside ours. Matches: "
        + "; ".join(matches)
        + ". "
        + (
            "Problems marked stand-in are smaller than the paper's (the embedded mnist5k nets: 5,000 MNIST "
            "digits and a 3×512 MLP, against 55,000 digits and 3×2048), so those curves share an axis of "
            "training samples seen, not an identical setting. "
            if any("(stand-in)" in m for m in matches)
            else ""
        )
        + (
            "Problems marked same setting run the paper's data set, split and architecture."
            if any("(same setting)" in m for m in matches)
            else ""
        )
    )
    doc.figure(
        files,
        f"Test accuracy and non-zero fraction against training samples seen; ours: {figures.BAND}.",
        "fig-reference",
    )


# ---------------------------------------------------------------------------------------
# build and publish
# ---------------------------------------------------------------------------------------


def build(runs: Runs, out: Path) -> Path:
    """Write the report of ``runs`` into ``out`` (created); returns ``out/index.html``.
    ``ReportError`` when ``out`` cannot take it (``publish.check_destination``); an ``OSError``
    while writing (a full disk) leaves ``out`` as it was."""
    publish.check_destination(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        fig_dir = tmp / publish.FIGURES
        fig_dir.mkdir()
        df = runs.df
        doc = Document()
        _header(doc, runs)
        _coverage(doc, df)
        _convergence(doc, df, fig_dir)
        _final(doc, runs)
        _sparsity(doc, runs, fig_dir)
        _speed(doc, df, fig_dir)
        _claims(doc, runs)
        _reference(doc, runs, fig_dir)
        (tmp / "index.html").write_text(doc.render_html(f"msabench report: {runs.suite}"))
        (tmp / "index.md").write_text(doc.render_md())
        publish.publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out / "index.html"
