"""The msabench command line: ``python -m suites COMMAND`` or ``msabench COMMAND``.

    msabench run SUITE [--backend B ...] [--device auto|cpu|cuda] [--dtype float32|float64]
                       [--out DIR] [--resume RUN_ID] [--jobs N] [--seeds N]
                       [--steps-scale F | --steps N | --epochs E] [--data-dir DIR]
                       [--problem P ...] [--algorithm A ...] [--fresh-process] [--retry-errors] [--quiet]
                       [--executor local|dask [--scheduler tcp://HOST:PORT]]
    msabench list
    msabench data [--data-dir DIR] [--download NAME ...]   (see suites/datasets.py)
    msabench tune [--suite NAME] [--backend B] ...        (see suites/tune.py)
    msabench summary [RESULTS.parquet | --suite NAME] ... (see reports/summary.py)
    msabench compare [BASE NEW] [--suite NAME] [--fail-on-regression] ... (see suites/compare.py)
    msabench gpu-check --out DIR [--dry-run] [--budget S] [--wheels DIR] [--data-dir DIR] (see suites/gpucheck.py)

``run`` checks every input before it creates anything; bad input prints one line
``msabench: error: ...`` on stderr and exits 2. On success the run file's path is the last
line on stdout. A run stopped by Ctrl-C or SIGTERM prints the command that finishes it and
exits 130 (SIGINT) or 143 (SIGTERM); one whose cells were lost with their worker prints
it too, and exits 1.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import sys
from pathlib import Path

from suites import PROG, Parser, fail


def _int_at_least(minimum: int, what: str):
    """An argparse type: an integer of at least ``minimum`` (``what`` names that in errors)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected a {what} integer, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1, "positive")
_nonnegative_int = _int_at_least(0, "non-negative")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _jobs(text: str) -> int:
    """``auto`` (0: decided from the device) or a positive integer."""
    return 0 if text == "auto" else _positive_int(text)


#: options that define a run's cells; a resumed run keeps the ones in its run.json.
_CELL_OPTIONS = (
    "backend",
    "device",
    "dtype",
    "seeds",
    "steps_scale",
    "steps",
    "epochs",
    "problem",
    "algorithm",
    "deterministic",
)


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", help="suite name (see `msabench list`)")
    p.add_argument("--backend", action="append", help="backend to run (repeatable; default: the suite's)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default auto: cuda when torch sees a GPU")
    p.add_argument("--dtype", choices=("float32", "float64"), help="default float32 (reference always float64)")
    p.add_argument("--out", default="results", help="output root (default: results)")
    p.add_argument(
        "--deterministic",
        action="store_true",
        default=None,
        help="GPU cells with fixed-order arithmetic (torch's deterministic algorithms, XLA's deterministic ops)",
    )
    p.add_argument(
        "--resume", metavar="RUN_ID", help="finish an interrupted run: cells without a part file, or with a skipped one"
    )
    p.add_argument(
        "--jobs",
        type=_jobs,
        default=0,
        help="cells at once (>1: process pool; default auto: one per CPU core on cpu, 1 on cuda, "
        "so that cells never share a GPU)",
    )
    p.add_argument("--seeds", type=_positive_int, help="use seeds 0..N-1 instead of the suite's")
    p.add_argument("--steps-scale", type=_positive_float, help="multiply every budget and eval interval")
    p.add_argument("--steps", type=_positive_int, help="train every cell for N steps instead of its budget")
    p.add_argument("--epochs", type=_positive_float, help="train every cell for E epochs of its problem")
    add_data_dir_argument(p)
    p.add_argument("--problem", action="append", help="only these problems (repeatable)")
    p.add_argument("--algorithm", action="append", help="only these algorithms (repeatable)")
    p.add_argument(
        "--threads",
        type=_positive_int,
        default=1,
        help="intra-op threads per cell (default 1: these small problems step fastest, and time most "
        "reproducibly, on one thread)",
    )
    p.add_argument(
        "--fresh-process",
        action="store_true",
        help="run every cell in a new worker process (no JAX preallocation, caches or peak memory "
        "carried from one cell to the next; costs a process start per cell)",
    )
    p.add_argument(
        "--retry-errors", action="store_true", help="with --resume: also rerun the cells that ended with an error"
    )
    p.add_argument(
        "--checkpoint-every",
        type=_nonnegative_int,
        metavar="N",
        help="besides at every evaluation point, checkpoint a running cell every N steps (0: never "
        "checkpoint); --resume continues a cell from its last checkpoint",
    )
    p.add_argument(
        "--executor",
        choices=("local", "dask"),
        default="local",
        help="where cells run: local (default: in this process, or a process pool for --jobs > 1) or dask "
        "(a Dask LocalCluster of --jobs workers, or the cluster of --scheduler)",
    )
    p.add_argument(
        "--scheduler",
        metavar="tcp://HOST:PORT",
        help="with --executor dask: run the cells on the workers of this Dask scheduler (see README, "
        "Running on a cluster)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_data_dir_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        help="where the papers' data sets are (default: $MSABENCH_DATA_DIR, else ~/.cache/msabench/data)",
    )


def _resume_command(suite: str, out: Path, run_id: str) -> str:
    return shlex.join([PROG, "run", suite, "--out", str(out), "--resume", run_id])


def cmd_run(args: argparse.Namespace) -> int:
    """Run (``runner.start``) or resume (``runner.resume``) the suite and print the run
    file; turn the runner's errors into the exit status and, for a run that had started,
    the command that finishes it."""
    from suites import grids, runner, stopping

    stopping.hold_after_stop()  # this process exits once its run stopped: later Ctrl-Cs wait for that

    try:
        suite = grids.get_suite(args.suite)
    except KeyError as e:
        fail(e.args[0])
    out = Path(args.out)
    if args.scheduler is not None and args.executor != "dask":
        fail("--scheduler needs --executor dask")
    if args.scheduler is not None and args.jobs:
        fail("--jobs cannot be combined with --scheduler (the cluster's worker threads set the cells at once)")
    common = {
        "data_dir": args.data_dir,
        "jobs": args.jobs,
        "threads": args.threads,
        "fresh_process": args.fresh_process,
        "checkpoint_every": args.checkpoint_every,
        "executor": args.executor,
        "scheduler": args.scheduler,
        "show_progress": not args.quiet,
    }
    if args.retry_errors and args.resume is None:
        fail("--retry-errors needs --resume RUN_ID (a new run has no cells to retry)")
    try:
        if args.resume is not None:
            given = [f"--{o.replace('_', '-')}" for o in _CELL_OPTIONS if getattr(args, o) is not None]
            if given:
                fail(
                    f"{', '.join(given)} cannot be combined with --resume (the run's options are fixed in its run.json)"
                )
            path = runner.resume(out, suite.name, args.resume, retry_errors=args.retry_errors, **common)
        else:
            path = runner.start(
                suite,
                out=out,
                backends=args.backend,
                device=args.device or "auto",
                dtype=args.dtype,
                seeds=args.seeds,
                steps_scale=args.steps_scale,
                steps=args.steps,
                epochs=args.epochs,
                problems_filter=args.problem,
                algorithms_filter=args.algorithm,
                deterministic=bool(args.deterministic),
                command=shlex.join([PROG, *args.argv]),
                **common,
            )
    except runner.RunInterrupted as e:
        print(
            f"{PROG}: interrupted; finished cells are kept. Resume with: "
            f"{_resume_command(suite.name, out, e.run.run_id)}",
            file=sys.stderr,
        )
        return 128 + e.signum  # as a shell reports a process ended by that signal: 130 or 143
    except runner.RunError as e:
        if e.run is None:  # nothing was written
            fail(str(e))
        if isinstance(e, runner.CellsLost):  # the other cells finished; the lost ones have no part
            fail(f"{e}; resume with: {_resume_command(suite.name, out, e.run.run_id)}", status=1)
        if isinstance(e, runner.StoreError):
            fail(
                f"{e} (finished cells are kept; once fixed, finish with: {_resume_command(suite.name, out, e.run.run_id)})"
            )
        fail(str(e), status=1)  # parts missing after the cells ran: not the input's fault
    print(path)
    return 0


def _availability(algorithm: str, backend: str) -> str:
    """``ok``, or why the (algorithm, backend) pair cannot run on this machine."""
    import implementations as registry

    reasons = registry.why_not(algorithm, backend)
    if reasons:
        return "; ".join(reasons)
    module = registry.REGISTRY[(algorithm, backend)].split(":")[0]
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        found = False
    return "ok" if found else "not written"


def cmd_list(args: argparse.Namespace) -> int:
    """Print the suites, the problems and which algorithm × backend pairs can run."""
    import implementations as registry
    from suites import grids, problems

    print("suites:")
    for s in grids.SUITES.values():
        n = len(s.entries) * len(s.backends) * len(s.seeds)
        print(
            f"  {s.name:<13} {len(s.entries)} entries x {len(s.backends)} backends ({', '.join(s.backends)})"
            f" x {len(s.seeds)} seeds = {n} cells   {s.description}"
        )
    print("problems:")
    for p in problems.PROBLEMS.values():
        data = p.dataset or "embedded"
        print(
            f"  {p.name:<22} weights={p.weights:<8} loss={p.loss:<8} params={p.n_params:<9} init={p.init:<15}"
            f" data={data}"
        )
    print("algorithms x backends (ok, - = not implemented by that backend, [n] = cannot run here, reason below):")
    width = max(len(b) for b in registry.BACKENDS) + 2
    print("  " + " " * 10 + "".join(f"{b:<{width}}" for b in registry.BACKENDS))
    reasons: list[str] = []
    for alg in registry.ALGORITHMS:
        cells = []
        for b in registry.BACKENDS:
            text = "-" if (alg, b) not in registry.REGISTRY else _availability(alg, b)
            if text not in ("ok", "-"):
                reasons += [text] if text not in reasons else []
                text = f"[{reasons.index(text) + 1}]"
            cells.append(text)
        print(f"  {alg:<10}" + "".join(f"{c:<{width}}" for c in cells))
    for i, reason in enumerate(reasons, start=1):
        print(f"  [{i}] {reason}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    """List every data set: present (checksums verified), incomplete, damaged or absent,
    where, and how to get it; ``--download`` fetches data sets first. Exit 2, before
    anything is fetched, for an unknown name or a data directory that cannot take files;
    exit 1 when a download fails or a data set is damaged or incomplete."""
    from suites import datasets, problems

    root = datasets.use_data_dir(args.data_dir)
    status = 0
    for name in args.download or []:
        try:
            datasets.get_dataset(name)
        except KeyError as e:
            fail(e.args[0])
    if args.download:
        from suites import store

        try:
            store.check_writable(root, "--data-dir")  # before anything is fetched
        except store.StoreError as e:
            fail(str(e))
    for name in args.download or []:
        try:
            found = datasets.download(name, root)
            print(f"downloaded {name} into {found.folder}")
        except datasets.DataError as e:
            print(f"{PROG}: error: {e}", file=sys.stderr)
            status = 1
    print(f"data directory: {root} (--data-dir, or ${datasets.ENV_VAR})")
    for name, ds in datasets.DATASETS.items():
        users = [p.name for p in problems.PROBLEMS.values() if p.dataset == name]
        found = datasets.locate(name, root)
        if found.status == "present":
            try:
                datasets.verify(name, root)
                line = f"present   {found.folder} (checksums verified)"
            except datasets.DataError as e:
                line, status = f"DAMAGED   {e}", 1
        elif found.status == "incomplete":
            line, status = (
                f"INCOMPLETE {found.folder} (missing {', '.join(found.missing)}): {datasets.how_to_get(ds, root)}",
                1,
            )
        else:
            line = f"missing   {datasets.how_to_get(ds, root)}"
        print(f"  {name:<14} {line}")
        print(f"  {'':<14} used by: {', '.join(users)}")
    return status


def build_parser() -> Parser:
    from reports import summary
    from suites import compare, gpucheck, tune

    parser = Parser(prog=PROG, description="MSA training algorithms benchmark")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_run_arguments(sub.add_parser("run", help="run a suite, write results/<suite>/<run_id>.parquet"))
    sub.add_parser("list", help="suites, problems and algorithm x backend availability")
    data = sub.add_parser("data", help="which data sets are present, where, and how to get the others")
    add_data_dir_argument(data)
    data.add_argument(
        "--download", action="append", metavar="NAME", help="download a data set (repeatable; online only)"
    )
    tune.add_arguments(sub.add_parser("tune", help="tune the baselines' learning rates -> suites/tuned.json"))
    summary.add_arguments(sub.add_parser("summary", help="Markdown summary of a run"))
    compare.add_arguments(sub.add_parser("compare", help="what got worse between two runs (BASE NEW)"))
    gpucheck.add_arguments(sub.add_parser("gpu-check", help="the one prepared device check (see suites/gpucheck.py)"))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m suites`` and the ``msabench`` script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # recorded as the run's command
    try:
        return _dispatch(args)
    except BrokenPipeError:
        # the reader went away (`msabench list | head`): stop quietly, as Unix tools do;
        # stdout is pointed at devnull so that the interpreter's final flush cannot raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "run":
        return cmd_run(args)
    if args.command == "list":
        return cmd_list(args)
    if args.command == "data":
        return cmd_data(args)
    if args.command == "tune":
        from suites import tune

        return tune.run_from_args(args)
    if args.command == "compare":
        from suites import compare

        return compare.run_from_args(args)
    if args.command == "gpu-check":
        from suites import gpucheck

        return gpucheck.run(args)
    from reports import summary

    return summary.run_from_args(args)


if __name__ == "__main__":
    sys.exit(main())
