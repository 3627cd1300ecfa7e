"""Training one cell: the timed loop, evaluation, and the cell's result rows.

This module is the one home of the timing contract (docs/design.md §4): only
``trainer.step`` is inside the clock. The first step is a block of its own
(``compile_s``); the remaining steps are timed in blocks that end at evaluation points
(and are at most ``MAX_BLOCK`` steps long, so the pre-staged batches stay small), with
``trainer.sync`` at both edges of every block. Batches are moved to the device with
``trainer.put`` before the block starts, and step metrics (device scalars) are only read
after the block has been timed. Evaluation runs outside the clock.

A cell checkpoints at its evaluation points (``suites.checkpoints``) when its policy names
a file, and a cell that finds its checkpoint continues from it: the state restored
(``Trainer.restore``), the batch stream sought to the step, the rows and counters so far
kept. The first step a process trains is always a block of its own, timed into
``compile_s``, so ``compile_s`` is the sum of those first steps (one per process that
trained the cell: they include compilation and warm-up) and ``time_s`` the other steps'.

``train_cell`` never raises for a failing cell: skipped, diverged and failed cells are rows
with a status and a reason. Besides its checkpoint it writes nothing: the driver writes
the part (``executors.execute``), so a cell needs no access to the run's folder.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd

import implementations as registry
from implementations import spec
from suites import checkpoints, datasets, determinism, memory, problems, provenance, schema
from suites.planning import Cell
from suites.store import Run

#: evaluation inputs are fed to ``predict`` in chunks of at most this many rows.
EVAL_CHUNK = 1000
#: the fixed train subset evaluated at every point: the first this-many train samples.
TRAIN_EVAL_SAMPLES = 1000
#: longest timed block; blocks between evaluation points are split to stage fewer batches.
MAX_BLOCK = 50


def _as_float(v: Any) -> float:
    """A device scalar (torch, JAX or NumPy) as a host float; several values are summed."""
    if hasattr(v, "detach"):  # torch: leave the graph and the device without importing torch here
        v = v.detach().cpu()
    return float(np.asarray(v, dtype=np.float64).sum())


def _blocks(steps: int, eval_every: int, start: int = 0, every: int | None = None) -> Iterator[tuple[int, bool]]:
    """The timed blocks of a cell from step ``start`` (a resumed cell's checkpoint) on,
    lazily (memory stays constant whatever the budget): the step count at each block's
    end, and whether it is an evaluation point (every ``eval_every`` steps, and the last
    step). The first step is a block of its own; the others end at evaluation points and
    at multiples of ``every`` (the checkpoint interval, when there is one), split to at
    most ``MAX_BLOCK`` steps."""
    done = start + 1
    yield done, done % eval_every == 0 or done == steps
    while done < steps:
        next_eval = min(steps, (done // eval_every + 1) * eval_every)
        end = min(next_eval, done + MAX_BLOCK)
        if every:
            end = min(end, (done // every + 1) * every)
        yield end, end == next_eval
        done = end


def _eval_sets(problem: problems.Problem) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    x, y = problem.arrays("train")
    return {
        "train": (x[:TRAIN_EVAL_SAMPLES], y[:TRAIN_EVAL_SAMPLES]),
        "val": problem.arrays("val"),
        "test": problem.arrays("test"),
    }


def evaluate(trainer: spec.Trainer, state: Any, problem: problems.Problem, sets: dict) -> dict[str, Any]:
    """Losses and accuracies on the fixed train subset, val and test, and the non-zero
    fractions of the effective parameters (overall and per layer with a weight W)."""
    out: dict[str, Any] = {}
    for split, (x, y) in sets.items():
        z = np.concatenate(
            [np.asarray(trainer.predict(state, x[i : i + EVAL_CHUNK])) for i in range(0, len(x), EVAL_CHUNK)]
        )
        out[f"{split}_loss"] = problem.loss_value(z, y)
        out[f"{split}_acc"] = problem.accuracy(z, y)
    params = [np.asarray(p) for p in trainer.get(state)]
    out["nonzero_frac"] = problem.nonzero_frac(params)
    per_layer = []
    for layer, sl in zip(problem.layers, spec.layer_slices(problem.layers)):
        if "W" in layer.param_names:
            w = params[sl][layer.param_names.index("W")]
            per_layer.append(np.count_nonzero(w) / w.size)
    out["layer_nonzero_frac"] = per_layer
    return out


def _identity(run: Run, cell: Cell, concurrency: int) -> dict[str, Any]:
    """The columns every row of a cell shares: identity, provenance, concurrency,
    hyperparameters. The provenance is this process's: the one training the cell."""
    return {
        "suite": run.suite,
        "run_id": run.run_id,
        "cell_id": cell.cell_id,
        "problem": cell.problem,
        "algorithm": cell.algorithm,
        "label": cell.label,
        "backend": cell.backend,
        "device": cell.device,
        "dtype": cell.dtype,
        "seed": cell.seed,
        **provenance.cell_provenance(cell.device),
        "concurrency": concurrency,
        "host_sync": spec.host_synchronises(cell.hp),
        "deterministic": cell.device == "cpu",  # replaced at the cell's start (determinism.enforce)
        "resumed_from": 0,
        **schema.hp_columns(cell.hp),
    }


def run_cell(
    cell: Cell,
    run: Run,
    concurrency: int = 1,
    progress: Callable[[int], Any] | None = None,
    checkpoint: checkpoints.Policy = checkpoints.NEVER,
) -> pd.DataFrame:
    """Train one cell and return its rows (``train_cell`` without the traceback)."""
    return train_cell(cell, run, concurrency, progress, checkpoint)[0]


def train_cell(
    cell: Cell,
    run: Run,
    concurrency: int = 1,
    progress: Callable[[int], Any] | None = None,
    checkpoint: checkpoints.Policy = checkpoints.NEVER,
) -> tuple[pd.DataFrame, str | None]:
    """Train one cell; return its rows and, when it failed with one, the traceback.

    Never raises for a failing cell (the failure becomes a ``diverged``/``error``/``skipped``
    row) and writes nothing but its ``checkpoint`` (the policy's file; none by default):
    ``run`` is read for the rows' identity only (its ``root`` is not used), so the cell can
    run on a machine that cannot see the run's folder; the driver writes the part."""
    base = _identity(run, cell, concurrency)
    tb: str | None = None
    try:
        base["deterministic"] = determinism.enforce(cell.backend, cell.device, cell.deterministic)
        with memory.PeakMemory(cell.backend, cell.device) as peak:
            rows = _train(cell, base, progress, checkpoint)
        if any(r["status"] != "skipped" for r in rows):  # a skipped cell allocated nothing of its own
            for r in rows:
                r["peak_rss_mib"], r["peak_gpu_mib"] = peak.host_mib, peak.gpu_mib
    except Exception as e:  # noqa: BLE001 - a failing cell is a row, never a dead suite
        tb = traceback.format_exc()
        rows = [{**base, "step": 0, "epoch": 0.0, "status": "error", "reason": schema.one_line(e)}]
    if rows and isinstance(rows[-1].get("_traceback"), str):
        tb = rows[-1].pop("_traceback")
    return schema.frame(rows), tb


def _skip_reasons(cell: Cell, problem: problems.Problem) -> list[str]:
    reasons = list(registry.why_not(cell.hp, cell.backend, problem, cell.device))
    if problem.dataset is not None:
        found = datasets.locate(problem.dataset)
        if found.status == "absent":
            fix = datasets.how_to_get(found.dataset, datasets.data_dir())
            reasons.append(f"data set {problem.dataset!r} not found in {found.folder}: {fix}")
    return reasons


def _train(
    cell: Cell, base: dict[str, Any], progress: Callable[[int], Any] | None, policy: checkpoints.Policy
) -> list[dict[str, Any]]:
    problem = problems.get_problem(cell.problem)
    reasons = _skip_reasons(cell, problem)
    if reasons:
        return [{**base, "step": 0, "epoch": 0.0, "status": "skipped", "reason": "; ".join(reasons)}]
    try:
        make = registry.get(cell.algorithm, cell.backend)
    except ModuleNotFoundError as e:
        if not (e.name or "").startswith("implementations"):
            raise
        reason = f"{e.name} is not available here ({schema.one_line(e)})"
        return [{**base, "step": 0, "epoch": 0.0, "status": "skipped", "reason": reason}]

    rows: list[dict[str, Any]] = []
    per_epoch = problem.steps_per_epoch
    done = 0
    time_s = 0.0
    compile_s = math.nan
    block_ms: list[float] = []
    flips: float | None = None  # None until the algorithm reports flips

    def row(step: int, metrics: dict[str, Any], status: str = "ok", reason: str = "") -> dict[str, Any]:
        return {
            **base,
            "step": step,
            "epoch": step / per_epoch,
            "time_s": time_s,
            **metrics,
            "flips": math.nan if flips is None else flips,
            "status": status,
            "reason": reason,
        }

    try:
        trainer = make(problem, cell.hp, dtype=cell.dtype, device=cell.device, seed=cell.seed)
        sets = _eval_sets(problem)
        resumed = checkpoints.load(policy, cell)
        if resumed is None:
            state = trainer.init(problem.init_params(cell.seed))
            first = evaluate(trainer, state, problem, sets)
            if not math.isfinite(first["train_loss"]):
                rows.append(row(0, first, "diverged", "non-finite training loss at step 0"))
                return _finish(rows, compile_s, block_ms)
            rows.append(row(0, first))
        else:
            state = trainer.restore(resumed.state)
            done, rows = resumed.step, resumed.rows
            time_s, block_ms, flips = resumed.loop["time_s"], resumed.loop["block_ms"], resumed.loop["flips"]
            compile_s = resumed.loop["compile_s"]
            base["resumed_from"] = done
            if progress is not None:
                progress(done)
        batches = problem.batches("train", cell.seed, done)
        first_block = True
        for end, is_eval in _blocks(cell.steps, cell.eval_every, done, policy.every):
            n = end - done
            staged = [trainer.put(next(batches)) for _ in range(n)]  # host->device outside the clock
            collected = []
            trainer.sync(state)
            t0 = time.perf_counter()
            for batch in staged:
                state, m = trainer.step(state, batch)
                collected.append(m)
            trainer.sync(state)
            dt = time.perf_counter() - t0
            del staged
            if first_block:  # this process's first step: compilation and warm-up
                compile_s = dt if math.isnan(compile_s) else compile_s + dt
                first_block = False
            else:
                time_s += dt
                block_ms.append(1000.0 * dt / n)
            bad_step = None
            for k, m in enumerate(collected, start=done + 1):
                if "loss" in m and bad_step is None and not math.isfinite(_as_float(m["loss"])):
                    bad_step = k
                if "flips" in m:
                    flips = (flips or 0.0) + _as_float(m["flips"])
            done = end
            if progress is not None:
                progress(n)
            if bad_step is not None:
                try:
                    metrics = evaluate(trainer, state, problem, sets)
                except Exception:  # noqa: BLE001 - a diverged state may not even evaluate; it stays diverged
                    metrics = {}
                rows.append(row(end, metrics, "diverged", f"non-finite training loss at step {bad_step}"))
                break
            if is_eval:
                metrics = evaluate(trainer, state, problem, sets)
                if not math.isfinite(metrics["train_loss"]):
                    rows.append(row(end, metrics, "diverged", f"non-finite training loss at step {end}"))
                    break
                rows.append(row(end, metrics))
                flips = 0.0 if flips is not None else None
            if end < cell.steps and policy.due(end, is_eval):
                loop = {"time_s": time_s, "compile_s": compile_s, "block_ms": block_ms, "flips": flips}
                policy = _checkpoint(policy, cell, end, trainer.state_arrays(state), rows, loop)
    except Exception as e:  # noqa: BLE001 - a failing cell is a row, never a dead suite
        rows.append({**row(done, {}, "error", schema.one_line(e)), "_traceback": traceback.format_exc()})
    return _finish(rows, compile_s, block_ms)


def _checkpoint(
    policy: checkpoints.Policy, cell: Cell, step: int, state: dict, rows: list, loop: dict
) -> checkpoints.Policy:
    """Save a checkpoint; the policy to go on with. A checkpoint that cannot be written (a
    worker that cannot see the run's folder, a full disk) never fails the cell: it is said
    once, in one line, and the cell trains on without checkpoints."""
    try:
        checkpoints.save(policy.path, cell, step, state, rows, loop)
    except OSError as e:
        print(f"{cell.cell_id}: cannot write checkpoint {policy.path} ({e}); training on without", file=sys.stderr)
        return checkpoints.Policy()
    return policy


def _finish(rows: list[dict[str, Any]], compile_s: float, block_ms: list[float]) -> list[dict[str, Any]]:
    """Fill the per-cell timing columns on every row; give step 0 zero flips when the
    algorithm reports flips at all (none can have happened before training)."""
    ms = statistics.median(block_ms) if block_ms else math.nan
    has_flips = any(isinstance(r.get("flips"), float) and not math.isnan(r["flips"]) for r in rows[1:])
    for r in rows:
        r["compile_s"] = compile_s
        r["ms_per_step"] = ms
        if has_flips and r["step"] == 0:
            r["flips"] = 0.0
    return rows


def error_frame(run: Run, cell: Cell, concurrency: int, e: BaseException) -> pd.DataFrame:
    """The one ``error`` row of a cell whose task raised outside ``train_cell`` (its
    arguments or result could not cross to or from the worker, say). A worker that died is
    not this: that cell is lost (``errors.CellLost``) and gets no row."""
    row = {
        **_identity(run, cell, concurrency),
        "step": 0,
        "epoch": 0.0,
        "status": "error",
        "reason": schema.one_line(e),
    }
    return schema.frame([row])
