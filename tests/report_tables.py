"""Synthetic results tables for the report tests: every status, two seeds, two backends,
and curves shaped so that each of the papers' claims holds (``hold=True``) or fails.

Shapes (per backend, per seed; times are cumulative timed seconds):

- per-iteration: E-MSA's training loss halves every 5 steps and the baselines' every 20
  (hold), or the reverse (fail), on sine-resnet and mnist5k-rescnn; both meet the
  problems' targets by step 100;
- zero init: E-MSA ends at test loss 0.01 and the gradient methods at 0.25 (hold), or
  E-MSA also at 0.25 (fail);
- wall clock: E-MSA steps cost 100 ms and the baselines 1 ms (hold), or the reverse (fail);
  E-MSA with the device solver (``emsa-device``) follows E-MSA's per-step curve at 1.5 ms
  a step (hold: competitive) or the baselines' curve at 100 ms (fail);
- basic MSA: one seed diverges and the other's loss climbs 10× (hold), or it behaves
  like E-MSA (fail);
- binary: binary MSA 95% and BinaryConnect 95% (hold), or 90% against 95% (fail);
- ternary: ternary MSA 95%, non-zero 0.1, against TWN 95%, 0.6 (hold), or non-zero 0.55
  (fail);
- DDPNOpt on sine-resnet and mnist5k-rescnn: 0.9 × E-MSA's loss at 5 ms per step (hold), or
  2 × the baselines' at 500 ms (fail), beside RMSprop on the baselines' curve;
- DDPNOpt's sensitivity on digits-mlp at lrs 1e-3, 1e-2, 1e-1: with the feedback 90%
  everywhere, without it 90%, 80%, 50% (hold: the gain grows) or 90% everywhere (fail).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from suites import problems, schema

SEEDS = (0, 1)
BACKENDS = ("torch", "jax")
STEPS = (0, 10, 20, 40, 80, 100)


RUN_ID = "20260101T000000Z-test"
#: every cell's provenance columns, as the metadata below names the run's start
PROVENANCE = {
    "host": "test-host",
    "device_name": "test CPU",
    "git_sha": "0123456789abcdef",
    "git_dirty": True,
    "versions": f"python=3.11 numpy={np.__version__}",
}


def _cell(problem, label, algorithm, backend, seed, **fields):
    return {
        "suite": "synthetic",
        "run_id": RUN_ID,
        "cell_id": f"{problem}.{label}.{backend}.float32.s{seed}",
        "problem": problem,
        "algorithm": algorithm,
        "label": label,
        "backend": backend,
        "device": "cpu",
        "dtype": "float32",
        "seed": seed,
        **PROVENANCE,
        "compile_s": 0.5,
        "concurrency": 1,
        "host_sync": label == "emsa",  # the SciPy-driven E-MSA; emsa-device runs on the device
        **fields,
    }


def _curve(problem, label, algorithm, backend, seed, *, loss, ms, acc=None, nonzero=1.0, diverge_at=None, hp=None):
    """Rows at ``STEPS`` with training/test loss ``loss(step)`` and timed ms per step;
    ``hp``: their ``hp_<field>`` entries."""
    rows = []
    for step in STEPS:
        row = _cell(
            problem,
            label,
            algorithm,
            backend,
            seed,
            step=step,
            epoch=step / 10,
            time_s=max(step - 1, 0) * ms / 1000,
            ms_per_step=ms,
            train_loss=loss(step) * (1 + 0.01 * seed),
            test_loss=loss(step) * (1 + 0.01 * seed),
            test_acc=math.nan if acc is None else acc(step),
            nonzero_frac=nonzero + (0.66 - nonzero) * (1 - step / STEPS[-1]),  # falls to `nonzero`
            layer_nonzero_frac=[nonzero, nonzero],
            status="ok",
            reason="",
            **{f"hp_{k}": v for k, v in (hp or {}).items()},
        )
        if diverge_at is not None and step >= diverge_at:
            row.update(status="diverged", reason=f"non-finite training loss at step {step}", train_loss=math.nan)
            rows.append(row)
            break
        rows.append(row)
    return rows


def rows_of(hold: bool) -> list[dict]:
    out = []
    fast, slow = (lambda s: 0.5 ** (s / 5)), (lambda s: 0.5 ** (s / 20))  # slow still meets the targets by step 100
    for backend in BACKENDS:
        for seed in SEEDS:
            for problem in ("sine-resnet", "mnist5k-rescnn"):
                acc = None if problem.startswith("sine") else (lambda curve: lambda s: 1 - 0.9 * curve(s))
                emsa_ms, base_ms = (100.0, 1.0) if hold else (1.0, 100.0)
                emsa_loss = fast if hold else slow
                base_loss = slow if hold else fast
                out += _curve(
                    problem, "emsa", "emsa", backend, seed, loss=emsa_loss, ms=emsa_ms, acc=acc and acc(emsa_loss)
                )
                for b in ("sgd", "adagrad", "adam"):
                    out += _curve(problem, b, b, backend, seed, loss=base_loss, ms=base_ms, acc=acc and acc(base_loss))
                device_loss, device_ms = (fast, 1.5) if hold else (slow, 100.0)
                out += _curve(
                    problem,
                    "emsa-device",
                    "emsa",
                    backend,
                    seed,
                    loss=device_loss,
                    ms=device_ms,
                    acc=acc and acc(device_loss),
                    hp={"inner": "lbfgs-device"},
                )
            # basic MSA on the sine net: unstable (one seed diverges, the other climbs) or tame
            if hold:
                climb = lambda s: 0.1 * (1 + s / 10)
                out += _curve(
                    "sine-resnet",
                    "msa",
                    "msa",
                    backend,
                    seed,
                    loss=climb,
                    ms=50.0,
                    diverge_at=40 if seed == 0 else None,
                )
            else:
                out += _curve("sine-resnet", "msa", "msa", backend, seed, loss=fast, ms=50.0)
            # all-zero init
            zero_emsa = (lambda s: 0.25 if s < 20 else 0.01) if hold else (lambda s: 0.25)
            out += _curve("sine-resnet-zero", "emsa", "emsa", backend, seed, loss=zero_emsa, ms=100.0)
            for b in ("sgd", "adam"):
                out += _curve("sine-resnet-zero", b, b, backend, seed, loss=lambda s: 0.25, ms=1.0)
            # binary and ternary MLPs
            bin_acc = 0.95 if hold else 0.90
            out += _curve(
                "mnist5k-mlp-binary",
                "dmsa-binary",
                "dmsa",
                backend,
                seed,
                loss=slow,
                ms=5.0,
                acc=lambda s, a=bin_acc: a,
            )
            out += _curve("mnist5k-mlp-binary", "bc", "ste", backend, seed, loss=slow, ms=5.0, acc=lambda s: 0.95)
            out += _curve(
                "mnist5k-mlp-ternary",
                "dmsa-ternary",
                "dmsa",
                backend,
                seed,
                loss=slow,
                ms=5.0,
                acc=lambda s: 0.95,
                nonzero=0.1 if hold else 0.55,
            )
            out += _curve(
                "mnist5k-mlp-ternary", "twn", "ste", backend, seed, loss=slow, ms=5.0, acc=lambda s: 0.95, nonzero=0.6
            )
            out += _ddpnopt_rows(hold, backend, seed, fast, slow, acc)
    # the other statuses: a skipped cell and an error cell
    out.append(
        _cell(
            "sine-resnet",
            "emsa-optax-lbfgs",
            "emsa",
            "torch",
            0,
            step=0,
            status="skipped",
            reason="inner solver 'optax-lbfgs' runs in the reference and jax backends only",
        )
    )
    err = _curve("mnist5k-mlp", "adam", "adam", "jax", 0, loss=slow, ms=3.0, acc=lambda s: 0.9)[:2]
    err.append(
        _cell("mnist5k-mlp", "adam", "adam", "jax", 0, step=20, status="error", reason="RuntimeError: out of memory")
    )
    return out + err


DDP_HP = {"precond": "rmsprop", "vxx": "factored", "feedback": True, "lr": 1e-3}
SENSITIVITY_LRS = (1e-3, 1e-2, 1e-1)


def _ddpnopt_rows(hold, backend, seed, fast, slow, acc) -> list[dict]:
    """DDPNOpt beside E-MSA and RMSprop, and its lr-sensitivity grid (module docstring)."""
    out = []
    ddp_loss, ddp_ms = ((lambda s: 0.9 * fast(s)), 5.0) if hold else ((lambda s: 2 * slow(s)), 500.0)
    for problem in ("sine-resnet", "mnist5k-rescnn"):
        a = None if problem.startswith("sine") else acc
        out += _curve(
            problem, "ddpnopt", "ddpnopt", backend, seed, loss=ddp_loss, ms=ddp_ms, acc=a and a(ddp_loss), hp=DDP_HP
        )
        out += _curve(problem, "rmsprop", "rmsprop", backend, seed, loss=slow, ms=1.0, acc=a and a(slow))
    open_acc = (0.9, 0.8, 0.5) if hold else (0.9, 0.9, 0.9)
    for lr, without in zip(SENSITIVITY_LRS, open_acc):
        for feedback, final in ((True, 0.9), (False, without)):
            label = f"ddpnopt{'' if feedback else '-open'}-lr{lr:g}"
            hp = DDP_HP | {"lr": lr, "feedback": feedback}
            out += _curve(
                "digits-mlp", label, "ddpnopt", backend, seed, loss=slow, ms=2.0, acc=lambda s, f=final: f, hp=hp
            )
    return out


METADATA = {
    "suite": "synthetic",
    "run_id": RUN_ID,
    "git_sha": "0123456789abcdef",
    "git_dirty": True,
    "device": "cpu",
    "device_name": "test CPU",
    "created": "2026-01-01T00:00:00+00:00",
    "finished": "2026-01-01T00:10:00+00:00",
    "versions": {"python": "3.11", "numpy": np.__version__},
    "options": {"jobs": 1, "threads": 1},
}


def problem_facts(names) -> dict[str, dict]:
    """``metadata["problems"]`` for ``names``, from the registry, as the runner records it."""
    return {n: schema.ProblemFacts.of(problems.get_problem(n)).to_json() for n in sorted(set(names))}


def facts_of(names, labels: dict[str, str] | None = None) -> schema.RunFacts:
    return schema.RunFacts.from_metadata({"problems": problem_facts(names), "labels": labels or {}})


def run_metadata(rows: list[dict], **overrides) -> dict:
    """``METADATA`` plus the run facts of ``rows`` as the runner records them: each
    problem's facts and each label's algorithm."""
    labels = schema.label_algorithms((r["label"], r["algorithm"]) for r in rows)
    facts = problem_facts(r["problem"] for r in rows)
    return {**METADATA, "problems": facts, "labels": labels, **overrides}


def write(tmp_path: Path, hold: bool = True, drop_problem: str | None = None, run_id: str = RUN_ID, edit=None) -> Path:
    """A synthetic run file; ``run_id`` renames the run, ``edit(row)`` changes rows in place
    (a second run of the same suite)."""
    rows = [{**r, "run_id": run_id} for r in rows_of(hold) if r["problem"] != drop_problem]
    for r in rows if edit else ():
        edit(r)
    path = tmp_path / f"run-{run_id}-{hold}-{drop_problem}.parquet"
    return schema.write_parquet(schema.frame(rows), path, run_metadata(rows, run_id=run_id))
