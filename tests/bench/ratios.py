"""The torch/jax step-time table from a pytest-benchmark JSON (``test_backends.py``).

    python tests/bench/ratios.py results/bench/backends.json [--markdown OUT.md]
    python tests/bench/ratios.py results/bench/ddpnopt.json --ddpnopt [--markdown OUT.md]

One row per (problem, label): median ms/step for torch and jax and ``torch / jax`` (above
1: jax is faster), plus the machine pytest-benchmark recorded.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def table(data: dict) -> str:
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for b in data["benchmarks"]:
        info = b["extra_info"]
        rows.setdefault((info["problem"], info["label"]), {})[info["backend"]] = b["stats"]["median"] * 1e3
    machine = data.get("machine_info", {})
    cpu = machine.get("cpu", {}).get("brand_raw", machine.get("processor", "?"))
    lines = [
        f"machine: {cpu}, python {machine.get('python_version', '?')}; median over timed steps, float32",
        "",
        "| problem | label | torch ms/step | jax ms/step | torch / jax |",
        "|---|---|---|---|---|",
    ]
    for (problem, label), times in rows.items():
        t, j = times.get("torch"), times.get("jax")
        ratio = f"{t / j:.2f}" if t and j else "–"
        fmt = lambda v: f"{v:.3g}" if v else "skipped"
        lines.append(f"| {problem} | {label} | {fmt(t)} | {fmt(j)} | {ratio} |")
    return "\n".join(lines) + "\n"


def _medians(data: dict) -> dict[tuple[str, str, str], float]:
    """(problem, label, backend) -> median ms/step."""
    return {
        (b["extra_info"]["problem"], b["extra_info"]["label"], b["extra_info"]["backend"]): b["stats"]["median"] * 1e3
        for b in data["benchmarks"]
    }


def ddpnopt_table(data: dict) -> str:
    """One row per (problem, backend): DDPNOpt's, RMSprop's and E-MSA's median ms/step and
    DDPNOpt's ratios to them (``test_ddpnopt_step.py``; the goal is ≤ 3× RMSprop)."""
    ms = _medians(data)
    rows = dict.fromkeys((problem, backend) for problem, _, backend in ms)
    fmt = lambda v: f"{v:.3g}" if v else "–"
    ratio = lambda a, b: f"{a / b:.2f}" if a and b else "–"
    lines = [
        "| problem | backend | DDPNOpt ms/step | RMSprop ms/step | E-MSA ms/step | DDPNOpt / RMSprop | DDPNOpt / E-MSA |",
        "|---|---|---|---|---|---|---|",
    ]
    for problem, backend in rows:
        d, r, e = (ms.get((problem, label, backend)) for label in ("ddpnopt", "rmsprop", "emsa"))
        lines.append(f"| {problem} | {backend} | {fmt(d)} | {fmt(r)} | {fmt(e)} | {ratio(d, r)} | {ratio(d, e)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path)
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    parser.add_argument("--ddpnopt", action="store_true", help="the DDPNOpt table (test_ddpnopt_step.py's JSON)")
    args = parser.parse_args(argv)
    try:
        data = json.loads(args.json.read_text())
        text = ddpnopt_table(data) if args.ddpnopt else table(data)
    except (OSError, ValueError, KeyError) as e:
        print(f"error: cannot read benchmark results {args.json}: {e}", file=sys.stderr)
        return 2
    print(text, end="")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
