"""Learning-rate tuning of the baselines: ``python -m suites tune [--suite default]``.

For every baseline entry of the suite (SGD, Adagrad, Adam, STE) the runner trains
``TUNE_SEEDS`` for the entry's own step budget at each learning rate of a grid around the entry's
constant default, ``lr × FACTORS``; the training uses the train split only and the
choice is made on the validation split:

- classification problems: the highest final validation accuracy (mean over the seeds);
- regression problems (the sine toy): the lowest final validation loss (mean over the seeds);
- ties go to the lower learning rate; diverged or failed runs never win; when every
  candidate fails the entry keeps its default (``choice`` is null);
- when the winner is the grid's largest (smallest) rate, the grid grows by one rate ×3
  (÷3) past it, at most ``EDGE_EXTENSIONS`` times.

The result goes to ``suites/tuned.json``: per suite and ``problem/label``, the grid, each
rate's validation metric and status, the choice, the command and the date. Entries of
other suites or problems already in the file are kept. ``suites/grids.py`` reads the file
and replaces the baselines' ``lr`` by the choice (the labels stay the same). The grid is
always centred on the constants in ``grids.py``, not on an earlier choice, so re-tuning
does not drift.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shlex
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from suites import PROG, fail

#: the learning-rate grid, as multiples of the entry's default.
FACTORS = (0.1, 1 / 3, 1.0, 3.0, 10.0)
#: every rate is trained from these seeds; its score is the mean, and a seed that fails
#: or goes non-finite disqualifies the rate (one lucky seed must not pick a rate at the
#: edge of stability).
TUNE_SEEDS = (0, 1)
#: how many times the grid may grow by a factor of 3 past an edge that wins.
EDGE_EXTENSIONS = 2


def lr_grid(default: float, factors: Iterable[float] = FACTORS) -> list[float]:
    """``default × factors``, rounded to 4 significant digits (so 0.1 × 3 prints as 0.3)."""
    return sorted({float(f"{default * f:.4g}") for f in factors})


def pick(scores: dict[float, float | None], maximise: bool) -> float | None:
    """The best learning rate: highest (``maximise``) or lowest score, ties to the lower
    rate; ``None`` when no rate has a finite score."""
    valid = [(lr, s) for lr, s in scores.items() if s is not None and math.isfinite(s)]
    if not valid:
        return None
    return min(valid, key=lambda item: (-item[1] if maximise else item[1], item[0]))[0]


def extend_at_edge(scores: dict[float, float | None], maximise: bool) -> float | None:
    """The next rate to try when the best one sits at an edge of the grid (×3 past the
    largest, ÷3 past the smallest), else None: a winner at the edge says the optimum may
    lie outside."""
    best = pick(scores, maximise)
    if best is None or len(scores) < 2:
        return None
    if best == max(scores):
        return float(f"{best * 3:.4g}")
    if best == min(scores):
        return float(f"{best / 3:.4g}")
    return None


def tune_suite(
    suite,
    *,
    backend: str = "torch",
    device: str = "cpu",
    dtype: str = "float32",
    steps_scale: float = 1.0,
    problems_filter: Iterable[str] | None = None,
    labels: Iterable[str] | None = None,
    factors: Iterable[float] = FACTORS,
    jobs: int = 1,
    threads: int | None = None,
    command: str = "",
    show_progress: bool = True,
    log: TextIO | None = None,
) -> dict[str, dict[str, Any]]:
    """Tune the suite's baseline entries; return ``{"problem/label": record}``."""
    from suites import executors, grids, planning, problems, store

    problems_filter = set(problems_filter or ())
    labels = set(labels or ())
    entries = [
        e
        for e in suite.entries
        if grids.is_baseline(e.hp)
        and (not problems_filter or e.problem in problems_filter)
        and (not labels or e.label in labels)
    ]
    run = store.Run(f"tune-{suite.name}", "tune", None)
    scores: dict[tuple[str, str], dict[float, float | None]] = {(e.problem, e.label): {} for e in entries}
    statuses: dict[tuple[str, str], dict[float, str]] = {key: {} for key in scores}
    pending = {(e.problem, e.label): lr_grid(e.hp.lr, factors) for e in entries}
    for _ in range(1 + EDGE_EXTENSIONS):
        cells, where = [], {}
        for e in entries:
            scaled = e.scaled(steps_scale)
            for lr in pending.get((e.problem, e.label), []):
                for seed in TUNE_SEEDS:
                    cell = planning.Cell(
                        problem=e.problem,
                        label=f"{e.label}@lr={lr:g}",
                        hp=dataclasses.replace(e.hp, lr=lr),
                        backend=backend,
                        seed=seed,
                        steps=scaled.steps,
                        eval_every=scaled.steps,  # evaluate at the start and the end only
                        dtype="float64" if backend == "reference" else dtype,
                        device=device,
                    )
                    cells.append(cell)
                    where[cell.cell_id] = ((e.problem, e.label), lr)
        if not cells:
            break
        rows = executors.execute(run, cells, jobs=jobs, threads=threads, show_progress=show_progress, log=log)
        finals: dict[tuple[tuple[str, str], float], list[tuple[str, float]]] = {}
        for cell_id, (key, lr) in where.items():
            problem = problems.get_problem(key[0])
            metric = "val_acc" if problem.n_classes is not None else "val_loss"
            last = rows[cell_id].iloc[-1]
            finals.setdefault((key, lr), []).append((str(last["status"]), float(last[metric])))
        for (key, lr), runs in finals.items():
            statuses[key][lr] = ",".join(status for status, _ in runs)
            good = all(status == "ok" and math.isfinite(value) for status, value in runs)
            scores[key][lr] = sum(value for _, value in runs) / len(runs) if good else None
        pending = {}
        for key, by_lr in scores.items():
            more = extend_at_edge(by_lr, maximise=problems.get_problem(key[0]).n_classes is not None)
            if more is not None:
                pending[key] = [more]

    date = datetime.now(UTC).isoformat(timespec="seconds")
    records: dict[str, dict[str, Any]] = {}
    for e in entries:
        maximise = problems.get_problem(e.problem).n_classes is not None
        metric = "val_acc" if maximise else "val_loss"
        by_lr, status = scores[(e.problem, e.label)], statuses[(e.problem, e.label)]
        scaled = e.scaled(steps_scale)
        records[f"{e.problem}/{e.label}"] = {
            "problem": e.problem,
            "label": e.label,
            "algorithm": e.algorithm,
            "backend": backend,
            "device": device,
            "dtype": dtype,
            "seeds": list(TUNE_SEEDS),
            "steps": scaled.steps,
            "default_lr": e.hp.lr,
            "grid": sorted(by_lr),
            "metric": metric,
            "goal": "max" if maximise else "min",
            "scores": {f"{lr:g}": s for lr, s in sorted(by_lr.items())},
            "status": {f"{lr:g}": s for lr, s in sorted(status.items())},
            "choice": pick(by_lr, maximise),
            "command": command,
            "date": date,
        }
    return records


def write_tuned(path: Path, suite_name: str, records: dict[str, dict[str, Any]]) -> Path:
    """Merge ``records`` into the tune file at ``path`` (atomically; ``store.StoreError``
    when it cannot be written, leaving the old file as it was)."""
    from suites import grids, store

    try:
        suites = grids.load_tuned(path)
    except ValueError:
        suites = {}  # an unreadable file is replaced, not merged
    suites.setdefault(suite_name, {}).update(records)
    doc = {
        "schema": 1,
        "about": "learning rates chosen by `python -m suites tune` on the validation split; see suites/tune.py",
        "suites": suites,
    }
    return store.write_text_atomic(path, json.dumps(doc, indent=1, sort_keys=True) + "\n")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suite", default="default", help="suite whose baselines to tune (default: default)")
    p.add_argument("--backend", default="torch", help="backend to tune on (default: torch)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--steps-scale", type=float, default=1.0, help="multiply every budget")
    p.add_argument("--problem", action="append", help="only these problems (repeatable)")
    p.add_argument("--label", action="append", help="only these labels (repeatable)")
    p.add_argument("--jobs", type=int, default=1, help="candidates at once (>1: process pool)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads per candidate")
    p.add_argument("--output", default=None, help="tune file to write (default: suites/tuned.json)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run_from_args(args: argparse.Namespace) -> int:
    """Validate, tune, write the tune file and print its path."""
    import implementations as registry
    from suites import executors, grids, planning, problems, store
    from suites.errors import RunError

    suite = grids.UNTUNED.get(args.suite)
    if suite is None:
        fail(f"unknown suite {args.suite!r} (known: {', '.join(grids.UNTUNED)})")
    if args.backend not in registry.BACKENDS:
        fail(f"unknown backend {args.backend!r} (known: {', '.join(registry.BACKENDS)})")
    for p in args.problem or ():
        if p not in problems.PROBLEMS:
            fail(f"unknown problem {p!r} (known: {', '.join(problems.PROBLEMS)})")
    if not (math.isfinite(args.steps_scale) and args.steps_scale > 0):
        fail(f"--steps-scale must be a positive number, got {args.steps_scale!r}")
    if args.jobs < 1:
        fail(f"--jobs must be at least 1, got {args.jobs}")
    if args.threads is not None and args.threads < 1:
        fail(f"--threads must be at least 1, got {args.threads}")
    baselines = [e for e in suite.entries if grids.is_baseline(e.hp)]
    if args.problem:
        baselines = [e for e in baselines if e.problem in args.problem]
    if args.label:
        baselines = [e for e in baselines if e.label in args.label]
    if not baselines:
        fail(f"no baseline entries of suite {suite.name!r} match the filters")
    try:
        device = planning.resolve_device(args.device)
    except RunError as e:
        fail(str(e))
    output = Path(args.output) if args.output else grids.TUNED_PATH
    if output.is_dir():
        fail(f"--output {output} is a directory")
    try:
        store.check_writable(output.parent, "--output")  # before hours of tuning, not after
    except RunError as e:
        fail(str(e))
    command = shlex.join([PROG, *getattr(args, "argv", ["tune"])])
    if args.threads and args.jobs == 1:
        executors.set_threads(args.threads)
    records = tune_suite(
        suite,
        backend=args.backend,
        device=device,
        dtype=args.dtype,
        steps_scale=args.steps_scale,
        problems_filter=args.problem,
        labels=args.label,
        jobs=args.jobs,
        threads=args.threads,
        command=command,
        show_progress=not args.quiet,
    )
    for key, r in records.items():
        print(f"{key}: {r['metric']} by lr {r['scores']} -> {r['choice']}")
    try:
        print(write_tuned(output, suite.name, records))
    except RunError as e:
        fail(str(e))
    return 0
