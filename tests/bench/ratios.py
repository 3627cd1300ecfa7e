"""Step-time tables from a pytest-benchmark JSON.

    python tests/bench/ratios.py results/bench/backends.json [--markdown OUT.md]
    python tests/bench/ratios.py results/bench/ddpnopt.json --ddpnopt [--markdown OUT.md]

``test_backends.py``'s JSON gives two tables: one row per (problem, label) with the median
ms/step of torch eager, jax and torch-compile, ``torch / jax`` and ``torch / compiled``
(above 1: the other is faster); then the goals, each a ratio of two labels' medians on the
same problem and backend (``GOALS``). The DDPNOpt JSON gives DDPNOpt against RMSprop and
E-MSA. The machine pytest-benchmark recorded heads the first table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BACKENDS = ("torch", "jax", "torch-compile")
#: (problem, label, base label, goal per backend): ratios the suite tracks (issue 18)
GOALS = (
    ("sine-resnet", "emsa-device", "adam", {"torch": 4.0, "jax": 8.0}),
    ("mnist5k-rescnn", "emsa-device", "adam", {"torch": 10.0, "jax": 10.0}),
    ("sine-resnet", "emsa", "adam", {}),
    ("mnist5k-rescnn", "emsa", "adam", {}),
    ("mnist5k-mlp-binary", "dmsa-binary", "bc", {"torch": 1.1, "jax": 1.1}),
    ("mnist5k-mlp-ternary", "dmsa-ternary", "twn", {"torch": 1.1, "jax": 1.1}),
)


def _fmt(v: float | None) -> str:
    return f"{v:.3g}" if v else "skipped"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else "–"


def table(data: dict) -> str:
    ms = _medians(data)
    labels = list(dict.fromkeys((problem, label) for problem, label, _ in ms))
    machine = data.get("machine_info", {})
    cpu = machine.get("cpu", {}).get("brand_raw", machine.get("processor", "?"))
    lines = [
        f"machine: {cpu}, python {machine.get('python_version', '?')}; median over timed steps, float32",
        "",
        "| problem | label | torch ms/step | jax ms/step | torch-compile ms/step | torch / jax | torch / compiled |",
        "|---|---|---|---|---|---|---|",
    ]
    for problem, label in labels:
        t, j, c = (ms.get((problem, label, b)) for b in BACKENDS)
        lines.append(f"| {problem} | {label} | {_fmt(t)} | {_fmt(j)} | {_fmt(c)} | {_ratio(t, j)} | {_ratio(t, c)} |")
    lines += ["", "| problem | ratio | backend | ratio measured | goal |", "|---|---|---|---|---|"]
    for problem, label, base, goal in GOALS:
        for backend in BACKENDS:
            mine, theirs = ms.get((problem, label, backend)), ms.get((problem, base, backend))
            if mine and theirs:
                wanted = f"≤ {goal[backend]:g}" if backend in goal else "–"
                lines.append(f"| {problem} | {label} / {base} | {backend} | {mine / theirs:.2f} | {wanted} |")
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
