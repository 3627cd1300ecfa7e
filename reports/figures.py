"""The report's figures (seaborn on the tidy results), each saved as PNG and SVG.

Every curve is the median over seeds at each evaluation step, with a band from the 25th
to the 75th percentile over seeds (the interquartile range); against wall-clock, the x
of each step is the median over seeds of the cell's timed seconds (the first step, which
compiles, excluded). Colour = configuration label, line style = backend. Time axes
start at 0 (a duration is never negative: symlog would otherwise draw ticks such as
-10⁰ in its margin). Weight kinds and reference runs are the run's recorded facts
(``schema.RunFacts``).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from msaresults import schema
from msaresults.schema import final_rows, trained_finals
from reports import reference

LINESTYLES = ["-", "--", ":", "-."]
BAND = "median over seeds; band: 25th–75th percentile"


def _theme() -> None:
    sns.set_theme(style="whitegrid", context="notebook", font_scale=0.85)


def _save(fig, out: Path, name: str) -> list[str]:
    paths = []
    for ext in ("png", "svg"):
        path = out / f"{name}.{ext}"
        # "tight" grows the canvas to hold the legend placed below the panels
        fig.savefig(path, dpi=110 if ext == "png" else None, bbox_inches="tight")
        paths.append(path.name)
    plt.close(fig)
    return paths


def _styles(df: pd.DataFrame) -> tuple[dict, dict]:
    labels = list(dict.fromkeys(df["label"]))
    backends = list(dict.fromkeys(df["backend"]))
    palette = dict(zip(labels, sns.color_palette("tab10", len(labels))))
    dashes = {b: LINESTYLES[i % len(LINESTYLES)] for i, b in enumerate(backends)}
    return palette, dashes


def aggregate(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per problem × label × backend × step: median, q25, q75 of ``metric`` over seeds and
    the median timed seconds (``ok`` rows, finite values)."""
    rows = df[(df["status"] == "ok") & np.isfinite(pd.to_numeric(df[metric], errors="coerce"))]
    g = rows.groupby(["problem", "label", "backend", "step"], sort=False)
    return g.agg(
        mid=(metric, "median"),
        lo=(metric, lambda v: v.quantile(0.25)),
        hi=(metric, lambda v: v.quantile(0.75)),
        seconds=("time_s", "median"),
    ).reset_index()


def _grid(n: int, width: float = 4.2, height: float = 3.2):
    cols = min(3, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _finish(fig) -> None:
    fig.tight_layout()


def _legend(fig, palette: dict, dashes: dict) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, lw=2, label=label) for label, c in palette.items()]
    handles += [Line2D([], [], color="0.3", ls=ls, label=f"backend: {b}") for b, ls in dashes.items()]
    fig.tight_layout()
    fig.legend(handles=handles, loc="upper center", ncol=min(6, len(handles)), frameon=False, bbox_to_anchor=(0.5, 0))


def curves(df: pd.DataFrame, metric: str, x: str, out: Path, name: str, ylabel: str, log: bool) -> list[str] | None:
    """One panel per problem having ``metric``, saved; x is ``"step"`` or ``"seconds"``."""
    fig = curves_figure(df, metric, x, ylabel, log)
    return None if fig is None else _save(fig, out, name)


def curves_figure(df: pd.DataFrame, metric: str, x: str, ylabel: str, log: bool):
    """The figure of ``curves`` (None when no row has ``metric``); seconds on a symlog
    axis from 0, so that it never shows a negative tick."""
    agg = aggregate(df, metric)
    if agg.empty:
        return None
    _theme()
    palette, dashes = _styles(df)
    names = list(dict.fromkeys(agg["problem"]))
    fig, axes = _grid(len(names))
    for ax, problem in zip(axes, names):
        for (label, backend), g in agg[agg["problem"] == problem].groupby(["label", "backend"], sort=False):
            g = g.sort_values("step")
            xs = g["step"] if x == "step" else g["seconds"]
            ax.plot(xs, g["mid"], color=palette[label], ls=dashes[backend], lw=1.6)
            ax.fill_between(xs, g["lo"], g["hi"], color=palette[label], alpha=0.15, lw=0)
        ax.set_title(problem)
        ax.set_xlabel("iteration" if x == "step" else "timed seconds (compile excluded)")
        ax.set_ylabel(ylabel)
        if log:
            ax.set_yscale("log")
        if x == "seconds":
            ax.set_xscale("symlog", linthresh=0.1)
            ax.set_xlim(left=0)  # the default margin reaches below 0, where symlog ticks -10^k
    _legend(fig, palette, dashes)
    return fig


def sparsity(df: pd.DataFrame, facts: schema.RunFacts, out: Path) -> list[str] | None:
    """Non-zero fraction against iteration for the ternary configurations (left), and
    per layer at the end (right, mean over cells)."""
    ternary = [n for n in dict.fromkeys(df["problem"]) if facts.problems[n].weights == "ternary"]
    rows = df[df["problem"].isin(ternary)]
    if rows.empty:
        return None
    _theme()
    palette, dashes = _styles(df)
    agg = aggregate(rows, "nonzero_frac")
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for (problem, label, backend), g in agg.groupby(["problem", "label", "backend"], sort=False):
        left.plot(g["step"], g["mid"], color=palette[label], ls=dashes[backend], lw=1.6)
        left.fill_between(g["step"], g["lo"], g["hi"], color=palette[label], alpha=0.15, lw=0)
    left.set(xlabel="iteration", ylabel="non-zero fraction (ICML measure)", title="during training")
    last = final_rows(rows)
    last = last[last["status"] == "ok"]
    layers = [
        {"label": r.label, "backend": r.backend, "layer": i, "non-zero": float(v)}
        for r in last.itertuples()
        for i, v in enumerate(r.layer_nonzero_frac if r.layer_nonzero_frac is not None else [])
    ]
    if layers:
        per_layer = pd.DataFrame(layers)
        per_layer["configuration"] = per_layer["label"] + " / " + per_layer["backend"]
        sns.barplot(per_layer, x="layer", y="non-zero", hue="configuration", ax=right, errorbar=None)
        right.set(title="per layer at the end (mean over seeds)", ylabel="non-zero fraction of W")
    _legend(fig, palette, dashes)
    return _save(fig, out, "sparsity")


def speed(df: pd.DataFrame, out: Path) -> list[str] | None:
    done = trained_finals(df)
    if done.empty:
        return None
    _theme()
    names = list(dict.fromkeys(done["problem"]))
    fig, axes = _grid(len(names), width=4.6, height=3.0)
    for ax, problem in zip(axes, names):
        d = done[done["problem"] == problem]
        sns.barplot(d, y="label", x="ms_per_step", hue="backend", estimator="median", errorbar=None, ax=ax)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels collide
        ax.set(title=problem, xlabel="ms per step (median over seeds, log scale)", ylabel="")
    _finish(fig)
    return _save(fig, out, "speed")


def reference_overlay(df: pd.DataFrame, facts: schema.RunFacts, out: Path) -> tuple[list[str], list[str]] | None:
    """Our discrete-MSA curves beside the authors' logged run for every problem whose
    recorded facts name one (``ProblemFacts.reference_run``): test accuracy, and the
    non-zero fraction for ternary runs, against training samples seen."""
    matched = [(n, facts.problems[n]) for n in dict.fromkeys(df["problem"]) if facts.problems[n].reference_run]
    panels = []
    for name, p in matched:
        label = reference.MSA_LABELS.get(p.weights)
        ours = df[(df["problem"] == name) & (df["label"] == label)]
        if label and not ours.empty:
            panels.append((name, p, label, ours, reference.load(p.reference_run)))
    if not panels:
        return None
    _theme()
    metrics = [("test_acc", "test accuracy")] + [("nonzero_frac", "non-zero fraction")]
    fig, axes = plt.subplots(len(metrics), len(panels), figsize=(4.8 * len(panels), 3.2 * len(metrics)), squeeze=False)
    for j, (name, p, label, ours, theirs) in enumerate(panels):
        agg = {m: aggregate(ours, m) for m, _ in metrics}
        for i, (metric, ylabel) in enumerate(metrics):
            ax = axes[i][j]
            if metric == "nonzero_frac" and p.weights != "ternary":
                ax.set_visible(False)  # binary weights are never zero
                continue
            for k, (backend, g) in enumerate(agg[metric].groupby("backend", sort=False)):
                ax.plot(
                    g["step"] * p.batch_size, g["mid"], ls=LINESTYLES[k % 4], lw=1.6, label=f"ours: {label} / {backend}"
                )
                ax.fill_between(g["step"] * p.batch_size, g["lo"], g["hi"], alpha=0.15, lw=0)
            if metric in theirs and theirs[metric].notna().any():
                ax.plot(theirs["samples"], theirs[metric], color="black", lw=1.2, label=f"authors: {p.reference_run}")
            ax.set_xscale("log")
            ax.set(title=name if i == 0 else "", xlabel="training samples seen (log scale)", ylabel=ylabel)
            ax.legend(fontsize=7, loc="best")
    _finish(fig)
    kind = lambda p: "same setting" if p.reference_exact else "stand-in"
    return _save(fig, out, "reference"), [f"{n} ↔ {p.reference_run} ({kind(p)})" for n, p, *_ in panels]
