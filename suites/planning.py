"""Planning: a suite's cells, checked before anything runs.

A *cell* is one training run (problem, labelled hyperparameters, backend, seed, budget,
dtype, device). ``plan`` turns a suite and the run's options into cells, checking every
name and budget (``MAX_STEPS``, ``MAX_CELLS``); ``resolve_device`` and ``check_data``
are the other checks a run makes before it creates anything. Nothing here writes a file.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import implementations as registry
from implementations import spec
from suites import datasets, grids, problems
from suites.errors import RunError

#: the largest budget a cell may have (``--steps``, ``--epochs`` and ``--steps-scale`` alike):
#: 444x the longest budget of any suite (paper-icml's CIFAR-10, 500 epochs x 450 = 225,000
#: steps), and about 5 hours of steps alone at the fastest step measured (jax SGD on the
#: sine net, 0.18 ms). A larger one cannot be a run that finishes; it is a typo.
MAX_STEPS = 10**8
#: the most cells a plan may have (entries x backends x seeds): about 926x the default suite's 108.
#: run.json holds every cell (about 0.35 KB each: 35 MB at the bound) and the runner keeps
#: every finished cell's rows in memory until it writes the run file.
MAX_CELLS = 100_000


@dataclass(frozen=True)
class Cell:
    """One training run. ``dtype`` is the dtype actually used (the reference backend
    always runs float64)."""

    problem: str
    label: str
    hp: Any
    backend: str
    seed: int
    steps: int
    eval_every: int
    dtype: str
    device: str
    #: run under ``suites.determinism``'s settings (``--deterministic``)
    deterministic: bool = False

    @property
    def algorithm(self) -> str:
        return spec.algorithm_id(self.hp)

    @property
    def cell_id(self) -> str:
        """A stable, file-name-safe slug, e.g. ``sine-resnet.emsa.torch.float32.s0``."""
        raw = f"{self.problem}.{self.label}.{self.backend}.{self.dtype}.s{self.seed}"
        return re.sub(r"[^a-z0-9._-]+", "-", raw.lower())

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["hp"] = {"algorithm": self.algorithm, "fields": spec.hp_fields(self.hp)}
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Cell:
        hp_cls = spec.BY_ID.get(d["hp"]["algorithm"])
        if hp_cls is None:
            raise RunError(f"run.json names an unknown algorithm {d['hp']['algorithm']!r}")
        return cls(**{**d, "hp": hp_cls(**d["hp"]["fields"])})


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``."""
    if device not in ("auto", "cpu", "cuda"):
        raise RunError(f"unknown device {device!r} (choose from auto, cpu, cuda)")
    if device != "auto":
        return device
    if importlib.util.find_spec("torch") is None:
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _known(kind: str, names: Iterable[str], known: Iterable[str]) -> tuple[str, ...]:
    """``names`` as a tuple, or a ``RunError`` naming the first unknown one."""
    names, known = tuple(names), tuple(known)
    for name in names:
        if name not in known:
            raise RunError(f"unknown {kind} {name!r} (known: {', '.join(known)})")
    return names


def plan(
    suite: grids.Suite,
    *,
    backends: Iterable[str] | None = None,
    seeds: Iterable[int] | None = None,
    steps_scale: float = 1.0,
    steps: int | None = None,
    epochs: float | None = None,
    dtype: str = "float32",
    device: str = "cpu",
    problems_filter: Iterable[str] | None = None,
    algorithms_filter: Iterable[str] | None = None,
    deterministic: bool = False,
) -> list[Cell]:
    """The suite's cells (entries × backends × seeds), after checking every name.

    Budgets: each entry's own, multiplied by ``steps_scale``, or replaced by ``steps``
    training steps or ``epochs`` epochs of its problem (one of the three); evaluation
    intervals are scaled alike, so every cell keeps about as many evaluation points, up to
    ``MAX_EVALS_PER_EPOCH`` per epoch when ``steps`` or ``epochs`` shortens a run.

    Raises ``RunError`` for unknown backends, problems or algorithms in a filter, a bad
    dtype or budget (more than ``MAX_STEPS`` steps in a cell), more than ``MAX_CELLS``
    cells, or a plan with no cells left. ``seeds`` may be a ``range``: it is counted before
    any cell is built, so a huge one is refused at once.
    """
    backends = tuple(backends) if backends else suite.backends
    own_seeds = seeds is None  # the suite's: a backend may run fewer (``Suite.backend_seeds``)
    seeds = suite.seeds if seeds is None else seeds if isinstance(seeds, Sequence) else tuple(seeds)
    for b in backends:
        if b not in registry.BACKENDS:
            raise RunError(f"unknown backend {b!r} (known: {', '.join(registry.BACKENDS)})")
    if dtype not in ("float32", "float64"):
        raise RunError(f"unknown dtype {dtype!r} (choose from float32, float64)")
    if not (math.isfinite(steps_scale) and steps_scale > 0):
        raise RunError(f"--steps-scale must be a positive number, got {steps_scale!r}")
    if sum(x is not None for x in (steps, epochs)) + (steps_scale != 1.0) > 1:
        raise RunError("--steps-scale, --steps and --epochs are alternatives: give one")
    if steps is not None and steps < 1:
        raise RunError(f"--steps must be a positive integer, got {steps!r}")
    if epochs is not None and not (math.isfinite(epochs) and epochs > 0):
        raise RunError(f"--epochs must be a positive number, got {epochs!r}")
    if not seeds:
        raise RunError("at least one seed is needed")
    entries = list(suite.entries)
    if problems_filter:
        problems_filter = _known("problem", problems_filter, problems.PROBLEMS)
        entries = [e for e in entries if e.problem in problems_filter]
    if algorithms_filter:
        algorithms_filter = _known("algorithm", algorithms_filter, registry.ALGORITHMS)
        entries = [e for e in entries if e.algorithm in algorithms_filter]
    seeds_of = {b: suite.seeds_of(b) if own_seeds else seeds for b in backends}
    n_cells = len(entries) * sum(len(seeds_of[b]) for b in backends)
    if n_cells > MAX_CELLS:
        raise RunError(
            f"the plan has {n_cells:,} cells; at most {MAX_CELLS:,} are allowed (use fewer seeds or filters)"
        )
    cells = [
        Cell(
            problem=e.problem,
            label=e.label,
            hp=e.hp,
            backend=b,
            seed=int(s),
            steps=e.steps,
            eval_every=e.eval_every,
            dtype="float64" if b == "reference" else dtype,
            device=device,
            deterministic=deterministic,
        )
        for e in (_budgeted(x, steps_scale, steps, epochs) for x in entries)
        for b in backends
        for s in seeds_of[b]
    ]
    if not cells:
        raise RunError(f"no cells of suite {suite.name!r} match the filters")
    return cells


#: the densest evaluation a ``--steps``/``--epochs`` override may scale an entry to
#: (paper-jmlr's own CNN cadence): below it a shortened paper run would mostly evaluate
#: (each evaluation reads 16,000 images; 1,000 train, 5,000 val, 10,000 test).
MAX_EVALS_PER_EPOCH = grids.PAPER_EVALS_PER_EPOCH


def _budgeted(entry: grids.Entry, scale: float, steps: int | None, epochs: float | None) -> grids.Entry:
    """The entry with the run's budget. ``--steps`` and ``--epochs`` scale the evaluation
    interval with the budget, but never to more than ``MAX_EVALS_PER_EPOCH`` evaluations
    per epoch of the problem, unless the entry itself evaluated more often than that:
    ``paper-icml --epochs 1`` evaluates CIFAR-10 every 90 steps, not at every step."""
    if steps is None and epochs is None:
        _check_budget(entry.steps * scale, "--steps-scale")
        return entry.scaled(scale)
    per_epoch = problems.get_problem(entry.problem).steps_per_epoch
    _check_budget(steps if steps is not None else epochs * per_epoch, "--steps" if steps is not None else "--epochs")
    budget = steps if steps is not None else max(1, round(epochs * per_epoch))
    shortened = entry.scaled(budget / entry.steps)
    floor = min(entry.eval_every, math.ceil(per_epoch / MAX_EVALS_PER_EPOCH), shortened.steps)
    return dataclasses.replace(shortened, eval_every=max(shortened.eval_every, floor))


def _check_budget(steps: float, option: str) -> None:
    """``RunError`` when a cell's budget would exceed ``MAX_STEPS`` (checked on the float,
    before rounding: ``--epochs 1e308`` overflows to inf)."""
    if not steps <= MAX_STEPS:
        raise RunError(f"{option} gives a cell {steps:.3g} steps; at most {MAX_STEPS:,} are allowed")


def check_data(cells: list[Cell]) -> list[str]:
    """Before any cell runs: every data set the cells need is read and checksummed.

    Returns the names of absent data sets (their cells will be ``skipped``); raises
    ``RunError`` (one line with the path and the fix) for an incomplete data set, a
    truncated file or a checksum mismatch, so no cell trains on damaged data."""
    needed = sorted({p.dataset for p in map(problems.get_problem, {c.problem for c in cells}) if p.dataset})
    absent = []
    for name in needed:
        try:
            if datasets.locate(name).status == "absent":
                absent.append(name)
            else:
                datasets.verify(name)
        except datasets.DataError as e:
            raise RunError(str(e)) from None
    return absent
