"""nox sessions: ``nox -s tests``, ``nox -s lint``, ``nox -s bench -- [run options]``,
``nox -s report -- [RESULTS...]``, ``nox -s benchmark`` (torch vs jax step times),
``nox -s wheel`` (the package installed from its wheel, run outside the checkout).

Every session that imports the package installs the pinned ``torch==2.13.0`` first and
the package second: pip then keeps that torch when it resolves ``torch>=2.4``. On this
CPU machine pip finds a local CPU wheel; on a GPU machine the same pin is PyPI's CUDA
build.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import nox

nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "tests"]

TORCH = "torch==2.13.0"
CHECKOUT = Path(__file__).resolve().parent
LINT_PATHS = ("implementations", "msaresults", "suites", "reports", "tests", "noxfile.py")


def install(session: nox.Session) -> None:
    """The pinned torch, then the package with its test extras (editable)."""
    session.install(TORCH)
    session.install("-e", ".[test]")


# The tests' venv, like the wheel's, sees the interpreter's packages: where .ci/run (or the
# user) already installed torch, jax and the rest, pip installs nothing again; that install
# took three of CI's twenty minutes. What the interpreter lacks goes into the venv.
@nox.session(venv_params=["--system-site-packages"])
def tests(session: nox.Session) -> None:
    """The test suite, spread over up to 4 pytest-xdist workers (``-- -n 0`` runs it in
    one process), without the tests marked slow (``-- -m slow`` runs only those); pytest
    exits 5 when it collects nothing, which fails the session."""
    install(session)
    workers = str(min(os.cpu_count() or 1, 4))  # each worker imports torch and jax: ~1 GB
    session.run("pytest", "-q", "-p", "no:cacheprovider", "-n", workers, *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff's lint rules and formatting, checked (not applied)."""
    session.install("ruff")
    session.run("ruff", "check", *LINT_PATHS)
    session.run("ruff", "format", "--check", *LINT_PATHS)


@nox.session
def bench(session: nox.Session) -> None:
    """The main job: run the default suite (options after ``--`` go to ``run``), compare
    it with the previous run of the suite on this device, then build the report of the
    run it just made (``reports/default/index.html``)."""
    install(session)
    session.run("python", "-m", "suites", "run", "default", *session.posargs)
    args = list(session.posargs)
    out = args[args.index("--out") + 1] if "--out" in args[:-1] else "results"
    # what got worse since the previous run of this suite on this device (none: says so)
    session.run("python", "-m", "suites", "compare", "--suite", "default", "--results-dir", out)
    session.run("python", "-m", "reports", "build", "--suite", "default", "--results-dir", out)


@nox.session
def report(session: nox.Session) -> None:
    """Build the comparison report: ``nox -s report -- RESULTS...`` (run files), or with
    no arguments the newest run of the default suite, into ``reports/<suite>/``."""
    install(session)
    args = session.posargs or ["--suite", "default"]
    session.run("python", "-m", "reports", "build", *args)


@nox.session
def benchmark(session: nox.Session) -> None:
    """Median step time of every algorithm, torch vs jax, on sine-resnet and
    mnist5k-mlp-binary (pytest-benchmark): JSON in ``results/bench/backends.json``, the
    table with the torch/jax ratio printed and written to ``reports/bench/backends.md``;
    then DDPNOpt against RMSprop and E-MSA (``results/bench/ddpnopt.json``,
    ``reports/bench/ddpnopt.md``).
    Options after ``--`` go to pytest."""
    install(session)
    out = "results/bench/backends.json"
    Path(out).parent.mkdir(parents=True, exist_ok=True)  # pytest-benchmark does not create it
    session.run(
        "pytest",
        "tests/bench/test_backends.py",
        "--benchmark-only",
        f"--benchmark-json={out}",
        "-p",
        "no:cacheprovider",
        *session.posargs,
        env={"MSABENCH_BENCHMARKS": "1"},
    )
    session.run("python", "tests/bench/ratios.py", out, "--markdown", "reports/bench/backends.md")
    # DDPNOpt against RMSprop and E-MSA on the MLP, the CNN and the sine net
    ddp = "results/bench/ddpnopt.json"
    session.run(
        "pytest",
        "tests/bench/test_ddpnopt_step.py",
        "--benchmark-only",
        f"--benchmark-json={ddp}",
        "-p",
        "no:cacheprovider",
        *session.posargs,
        env={"MSABENCH_BENCHMARKS": "1"},
    )
    session.run("python", "tests/bench/ratios.py", ddp, "--ddpnopt", "--markdown", "reports/bench/ddpnopt.md")


@nox.session
def microbench(session: nox.Session) -> None:
    """Op- and step-level microbenchmarks (``tests/bench/test_ops.py``), saved under
    ``.benchmarks/``; fails when a median is more than 20% slower than in the previous
    saved run on this machine (``-- --benchmark-compare-fail=median:10%`` to tighten; the
    first run only saves)."""
    install(session)
    if any(Path(".benchmarks").rglob("*.json")):
        gate = ["--benchmark-compare"]
        if not any("compare-fail" in a for a in session.posargs):
            gate.append("--benchmark-compare-fail=median:20%")
    else:
        session.log("no saved run under .benchmarks/ yet: this run becomes the baseline")
        gate = []
    session.run(
        "pytest",
        "tests/bench/test_ops.py",
        "--benchmark-only",
        "--benchmark-autosave",
        *gate,
        "-p",
        "no:cacheprovider",
        *session.posargs,
        env={"MSABENCH_BENCHMARKS": "1"},
    )


@nox.session
def asv(session: nox.Session) -> None:
    """asv: time, peak memory and tracked quality of every default-suite configuration
    (``suites/asv_benchmarks``) on this checkout, results in ``.asv/results``, HTML
    published to ``reports/asv``. Options after ``--`` go to ``asv run`` (e.g.
    ``-- --quick -b Step_sine_resnet``)."""
    install(session)
    session.install("asv")
    sha = session.run("git", "rev-parse", "HEAD", external=True, silent=True).strip()
    session.run("asv", "machine", "--yes")
    session.run("asv", "run", "--python=same", f"--set-commit-hash={sha}", "--show-stderr", *session.posargs)
    session.run("asv", "publish")


@nox.session
def kernels(session: nox.Session) -> None:
    """The Triton/CUDA kernel benchmark (``tests/bench/kernels.py``): dmsa_update on a
    4096×4096 layer against the copy bandwidth, and one fused E-MSA inner iteration against
    PyTorch eager. Needs a GPU for the kernel rows; on a CPU it runs the torch rows."""
    install(session)
    session.run("python", "tests/bench/kernels.py", *session.posargs)


# The venv sees the interpreter's own packages, as the tests' does; the wheel itself
# always goes into the venv (``--force-reinstall``), and the check proves every package is
# imported from there.
@nox.session(venv_params=["--system-site-packages"])
def wheel(session: nox.Session) -> None:
    """The package as a user installs it: build the sdist and, from it, the wheel; install
    that wheel (not editable) into this session's venv; then, in a temporary folder outside
    the checkout, run the smoke suite and a 3-step ternary discrete-MSA run of the default
    suite (the smoke suite's problems match none of the authors' logged runs), build both
    reports, and check (``tests/wheel_check.py``) that the code came from site-packages and
    found its data files there. The folder is removed when the checks pass, kept otherwise."""
    work = Path(tempfile.mkdtemp(prefix="msabench-wheel-"))
    session.log(f"working in {work} (kept if a step fails)")
    dist = work / "dist"
    session.install("build")
    # the wheel is built from the sdist, so a file the sdist drops fails here too
    session.run("python", "-m", "build", "--quiet", "--outdir", str(dist), str(CHECKOUT))
    (built,) = dist.glob("msabench-*.whl")
    session.install(TORCH)
    session.install(str(built))  # its dependencies, where the interpreter lacks them
    # the wheel itself, into the venv, even where a reused venv or the interpreter holds one
    # of the same version (which pip would otherwise keep)
    session.install("--force-reinstall", "--no-deps", str(built))
    session.chdir(work)
    outside = {"PYTHONPATH": None}  # a PYTHONPATH naming the checkout would hide the wheel
    run = ("python", "-m", "suites", "run")
    build = ("python", "-m", "reports", "build", "--results-dir", "results")
    session.run(*run, "smoke", "--out", "results", "--quiet", env=outside)
    session.run(*build, "--suite", "smoke", "--out", "report", env=outside)
    one_cell = ("--problem", "mnist5k-mlp-ternary", "--algorithm", "dmsa", "--backend", "torch", "--seeds", "1")
    session.run(*run, "default", *one_cell, "--steps", "3", "--out", "results", "--quiet", env=outside)
    session.run(*build, "--suite", "default", "--out", "report-reference", env=outside)
    session.run("python", str(CHECKOUT / "tests" / "wheel_check.py"), str(work), env=outside)
    shutil.rmtree(work)
