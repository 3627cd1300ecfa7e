"""nox sessions: ``nox -s tests``, ``nox -s lint``, ``nox -s bench -- [run options]``,
``nox -s report -- [RESULTS...]``, ``nox -s benchmark`` (torch vs jax step times).

Every session that imports the package installs the pinned ``torch==2.13.0`` first and
the package second: pip then keeps that torch when it resolves ``torch>=2.4``. On this
CPU machine pip finds a local CPU wheel; on a GPU machine the same pin is PyPI's CUDA
build.
"""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "tests"]

TORCH = "torch==2.13.0"
LINT_PATHS = ("implementations", "suites", "reports", "tests", "noxfile.py")


def install(session: nox.Session) -> None:
    """The pinned torch, then the package with its test extras (editable)."""
    session.install(TORCH)
    session.install("-e", ".[test]")


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite; pytest exits 5 when it collects nothing, which fails the session."""
    install(session)
    session.run("pytest", "-q", "-p", "no:cacheprovider", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff's lint rules and formatting, checked (not applied)."""
    session.install("ruff")
    session.run("ruff", "check", *LINT_PATHS)
    session.run("ruff", "format", "--check", *LINT_PATHS)


@nox.session
def bench(session: nox.Session) -> None:
    """The main job: run the default suite (options after ``--`` go to ``run``), then
    build the report of the run it just made (``reports/default/index.html``)."""
    install(session)
    session.run("python", "-m", "suites", "run", "default", *session.posargs)
    args = list(session.posargs)
    out = args[args.index("--out") + 1] if "--out" in args[:-1] else "results"
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
    table with the torch/jax ratio printed and written to ``reports/bench/backends.md``.
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
