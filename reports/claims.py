"""The papers' claims as rows with verdicts computed from the results.

Each claim is a function ``(data, backend) -> Verdict`` (``data``: the rows and the run
facts); the report evaluates every claim for every backend in the results (the backends
can disagree where rounding decides: on ``sine-resnet-zero`` only float32 rounding breaks
the symmetry for ``emsa-noperturb``, which no claim reads; the zero-init claim reads
``emsa``, whose perturbed inner starts break it the same way in every backend). A verdict
is ``holds``, ``does not hold`` or ``not measured`` (the run lacks a problem or
configuration the claim needs), with the numbers behind it and the threshold it used. Curves are medians over cells at each
evaluation step, from ``ok`` rows (a diverged cell's last row carries NaN metrics or
the loss it diverged with); a cell is (run_id, cell_id), so the cells of every run given
count as replicates, as in the tables (``reports/load.py``), and a cell's result is its
``schema.final_rows`` row.

Configurations are found by label (``ROLES``: ``emsa``, ``msa``, ``sgd``, ``adagrad``,
``adam``, ``dmsa-binary``, ``bc``, ``dmsa-ternary``, ``twn``, the default suite's names),
and a label counts only when the run records it as the algorithm its role expects (a
suite naming an Adam configuration ``emsa`` does not stand in for E-MSA). Targets and
weight kinds are the run's recorded facts (``schema.RunFacts``).

Budgets. Each claim knows how long the paper trained where it makes it (``PaperBudget``,
per problem: the ICML claims in the epochs of the data set of the problem's logged run,
the JMLR claims in iterations on the sine toy and epochs on the CNNs). Ours is the last
evaluated step of the cells the claim read (its ``labels`` on the problem, ``ok`` or
``diverged``), counted in the paper's unit: iterations are steps, and a paper epoch is the
paper's training split over our problem's batch size (``PaperBudget.epoch_steps``; 550
steps for MNIST at batch 100, also on the MNIST-5k stand-ins). The verdict keeps its first
words and adds where it was measured when that is short of the paper (``qualified``):

- ``holds`` when every measured problem ran the paper's budget, else
  ``holds at 3.8 of 250 epochs`` (the shortest measured problem);
- ``does not hold`` when a failing problem ran the paper's budget, else
  ``does not hold at 3.8 of 250 epochs`` (the longest failing problem): a claim that fails
  only short of the paper's budget is not shown to be false;
- ``not measured`` as before.

``verdict_kind`` reads the first words back (``HOLDS``, ``FAILS``, ``NOT_MEASURED``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from msaresults import schema
from reports import reference, tables

HOLDS, FAILS, NOT_MEASURED = "holds", "does not hold", "not measured"
BASELINES = ("sgd", "adagrad", "adam")
#: thresholds, stated in the report beside each verdict
ACCURACY_TOLERANCE = 0.01  # "reaches X's accuracy": mean final test accuracy at most 1 point below
SPARSITY_RATIO = 0.5  # "far fewer non-zero weights": at most half of TWN's non-zero fraction
ESCAPE_RATIO = 0.5  # "escapes while gradient methods stall": E-MSA's loss at most half of theirs
INSTABILITY_RATIO = 2.0  # "unstable": a seed diverged, or final test loss > 2× the run's best
NOISE_SE = 2.0  # "within noise": 2 standard errors of the difference of two seed means
GAIN_RANK_CORRELATION = 0.5  # "grows with the lr": Spearman correlation of gain and lr at least
#: the label each claim reads, and the algorithm id the run must record for it
ROLES = {
    "emsa": "emsa",
    "emsa-device": "emsa",
    "msa": "msa",
    "sgd": "sgd",
    "adagrad": "adagrad",
    "adam": "adam",
    "dmsa-binary": "dmsa",
    "bc": "ste",
    "dmsa-ternary": "dmsa",
    "twn": "ste",
    "ddpnopt": "ddpnopt",
    "rmsprop": "rmsprop",
}


@dataclass(frozen=True)
class Verdict:
    """``verdict`` is ``HOLDS``, ``FAILS`` or ``NOT_MEASURED``; ``measured``: the problems
    it was judged on, ``failed``: those of them where it does not hold."""

    verdict: str
    numbers: str
    threshold: str
    measured: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()


def verdict_kind(verdict: str) -> str:
    """``HOLDS``, ``FAILS`` or ``NOT_MEASURED``: the first words of a (qualified) verdict."""
    for kind in (FAILS, NOT_MEASURED, HOLDS):
        if verdict == kind or verdict.startswith(kind + " "):
            return kind
    raise ValueError(f"not a claim verdict: {verdict!r}")


# ---------------------------------------------------------------------------------------
# budgets: the paper's and ours
# ---------------------------------------------------------------------------------------

EPOCHS, ITERATIONS = "epochs", "iterations"
#: the papers' budgets, as the paper suites run them (suites/grids.py; tests check they agree)
ICML_EPOCHS = {"mnist": 250, "cifar10": 500, "svhn": 200}  # ICML_SETTINGS, by data set
JMLR_SINE_ITERATIONS = 500  # JMLR_SINE_STEPS: the official config.yml of the sine toy
JMLR_CNN_EPOCHS = 10  # JMLR_CNN_EPOCHS: MNIST and Fashion-MNIST, 55,000 training images
JMLR_FIG1B_ITERATIONS = 10_000  # REPRO_ZERO_STEPS: Fig. 1b's x-axis
#: the problems of the JMLR sine toy (the others of the JMLR claims are its CNNs)
SINE_PROBLEMS = ("sine-resnet", "sine-resnet-zero")


@dataclass(frozen=True)
class PaperBudget:
    """The paper's budget where it makes a claim: ``amount`` ``unit``s (``EPOCHS`` or
    ``ITERATIONS``); an epoch is ``epoch_samples`` training samples (the paper's split)."""

    amount: int
    unit: str
    source: str
    epoch_samples: int | None = None

    def epoch_steps(self, batch_size: int) -> int:
        """Our steps per paper unit at ``batch_size``: 1 per iteration; a paper epoch is
        the paper's split in whole batches (``reference.epoch_steps``'s rule)."""
        return 1 if self.unit == ITERATIONS else self.epoch_samples // batch_size


def icml_budget(problem: str, facts: schema.ProblemFacts) -> PaperBudget:
    """The epochs of the ICML run of the data set the problem's logged run names; a problem
    without one runs the ICML MNIST MLP's setting (the Fashion-MNIST and digits MLPs)."""
    dataset = reference.dataset_of(facts.reference_run) if facts.reference_run else "mnist"
    return PaperBudget(ICML_EPOCHS[dataset], EPOCHS, f"ICML 2018, {dataset}", reference.EPOCH_SAMPLES[dataset])


def jmlr_budget(problem: str, facts: schema.ProblemFacts) -> PaperBudget:
    """500 iterations on the sine toy, 10 epochs of 55,000 images on the CNNs."""
    if problem in SINE_PROBLEMS:
        return PaperBudget(JMLR_SINE_ITERATIONS, ITERATIONS, "JMLR 2018, sine toy")
    return PaperBudget(JMLR_CNN_EPOCHS, EPOCHS, "JMLR 2018, CNN", reference.EPOCH_SAMPLES["mnist"])


def jmlr_fig1b_budget(problem: str, facts: schema.ProblemFacts) -> PaperBudget:
    return PaperBudget(JMLR_FIG1B_ITERATIONS, ITERATIONS, "JMLR 2018, Fig. 1b")


@dataclass(frozen=True)
class Budget:
    """Ours on one problem: ``steps`` run, beside the paper's budget."""

    problem: str
    steps: int
    paper: PaperBudget
    epoch_steps: int  # our steps per paper unit

    @property
    def ours(self) -> float:
        return self.steps / self.epoch_steps

    @property
    def fraction(self) -> float:
        return self.ours / self.paper.amount

    @property
    def complete(self) -> bool:
        return self.ours >= self.paper.amount

    @property
    def at(self) -> str:
        """``at 3.8 of 250 epochs``"""
        return f"at {_amount(self.ours)} of {self.paper.amount:,} {self.paper.unit}"

    @property
    def text(self) -> str:
        """``mnist5k-mlp-ternary: ours 3.8 epochs (2,100 steps), paper 250 epochs (ICML 2018, mnist)``"""
        steps = f" ({self.steps:,} steps)" if self.paper.unit == EPOCHS else ""
        ours = f"{_amount(self.ours)} {self.paper.unit}{steps}"
        return f"{self.problem}: ours {ours}, paper {self.paper.amount:,} {self.paper.unit} ({self.paper.source})"


def _amount(x: float) -> str:
    """Whole numbers with thousands separators; fractions to 2 significant digits below 10
    (3.8 epochs, 0.18 epochs), whole above (16 epochs), so the text stays short."""
    if x == int(x) or x >= 10:
        return f"{round(x):,}"
    return f"{x:.2g}"


@dataclass(frozen=True)
class Claim:
    id: str
    text: str
    source: str
    figure: str  # the figure's anchor in the report
    evaluate: Callable[[Data, str], Verdict]
    labels: tuple[str, ...]  # the configurations it reads: their steps are our budget
    #: the paper's, per problem; None where the paper's budget is not known (ICLR 2021)
    budget: Callable[[str, schema.ProblemFacts], PaperBudget] | None

    def budgets(self, data: Data, backend: str, problems: tuple[str, ...]) -> dict[str, Budget]:
        """Ours beside the paper's on each of ``problems`` (those the claim read)."""
        out = {}
        if self.budget is None:
            return out
        for problem in problems:
            steps = [_last_step(data, problem, label, backend) for label in self.labels]
            steps = [s for s in steps if s is not None]
            if steps:
                facts = data.facts.problems[problem]
                paper = self.budget(problem, facts)
                out[problem] = Budget(problem, max(steps), paper, paper.epoch_steps(facts.batch_size))
        return out


#: the verdict's qualifier where the paper's budget is not known
UNKNOWN_BUDGET = "at our budget (the paper's is not known)"


def qualified(verdict: Verdict, budgets: dict[str, Budget], paper_budget_known: bool = True) -> str:
    """The verdict with where it was measured when that is short of the paper's budget
    (the rule is in the module docstring), or ``UNKNOWN_BUDGET`` when the paper's budget
    is not known."""
    if verdict.verdict == NOT_MEASURED:
        return NOT_MEASURED
    if not paper_budget_known:
        return f"{verdict.verdict} {UNKNOWN_BUDGET}"
    if verdict.verdict == HOLDS:
        short = [budgets[p] for p in verdict.measured if p in budgets and not budgets[p].complete]
        return f"{HOLDS} {min(short, key=lambda b: b.fraction).at}" if short else HOLDS
    failed = [budgets[p] for p in verdict.failed or verdict.measured if p in budgets]
    if not failed or any(b.complete for b in failed):
        return FAILS
    return f"{FAILS} {max(failed, key=lambda b: b.fraction).at}"


# ---------------------------------------------------------------------------------------
# curves and finals
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Data:
    """The rows the claims read and the run facts they interpret them with."""

    df: pd.DataFrame
    facts: schema.RunFacts


def _cells(data: Data, problem: str, label: str, backend: str) -> pd.DataFrame:
    """The rows of ``label`` on ``problem`` and ``backend``; none when the run records the
    label as another algorithm than its role's (``ROLES``)."""
    df = data.df
    if data.facts.labels.get(label) != ROLES[label]:
        return df.iloc[:0]
    return df[(df["problem"] == problem) & (df["label"] == label) & (df["backend"] == backend)]


def median_curve(data: Data, problem: str, label: str, backend: str, metric: str) -> pd.Series:
    """Median over cells of ``metric`` at each evaluation step (``ok`` rows)."""
    rows = _cells(data, problem, label, backend)
    rows = rows[rows["status"] == "ok"]
    return rows.groupby("step")[metric].median().dropna()


def _last_step(data: Data, problem: str, label: str, backend: str) -> int | None:
    """The last step ``label``'s cells trained to on ``problem`` (None: none trained)."""
    rows = _cells(data, problem, label, backend)
    steps = rows.loc[rows["status"].isin(schema.TRAINED), "step"]
    return int(steps.max()) if len(steps) else None


def _final_rows(data: Data, problem: str, label: str, backend: str) -> pd.DataFrame:
    return schema.final_rows(_cells(data, problem, label, backend))


def _fmt(v: float) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3g}"


def _at(curve: pd.Series, step: int) -> float | None:
    return float(curve[step]) if step in curve.index else None


# ---------------------------------------------------------------------------------------
# the claims
# ---------------------------------------------------------------------------------------


def _judged(outcomes: dict[str, bool], numbers: str, threshold: str) -> Verdict:
    """The verdict of per-problem outcomes (problem -> holds there): holds on all of them."""
    failed = tuple(p for p, holds in outcomes.items() if not holds)
    return Verdict(FAILS if failed else HOLDS, numbers, threshold, tuple(outcomes), failed)


#: where the JMLR claims are measured: the sine toy and the residual CNNs (embedded, paper)
EMSA_PROBLEMS = ("sine-resnet", "mnist5k-rescnn", "mnist-rescnn", "fashion-rescnn")


def emsa_faster_per_iteration(data: Data, backend: str) -> Verdict:
    """At the last step in the first half of E-MSA's budget at which E-MSA and a baseline
    were both evaluated, E-MSA's median training loss is below the baseline's; for SGD,
    Adagrad and Adam, on every measured problem of sine and CNN."""
    parts, outcomes = [], {}
    for problem in EMSA_PROBLEMS:
        emsa = median_curve(data, problem, "emsa", backend, "train_loss")
        if emsa.empty:
            continue
        half = int(emsa.index.max()) // 2
        compared = []
        for b in BASELINES:
            theirs = median_curve(data, problem, b, backend, "train_loss")
            common = [s for s in emsa.index if s in theirs.index and 0 < s <= half]
            if common:
                step = max(common)
                compared.append((b, step, float(emsa[step]), float(theirs[step])))
        if not compared:
            continue
        outcomes[problem] = all(mine < theirs for _, _, mine, theirs in compared)
        by_step: dict[int, list] = {}
        for b, step, mine, theirs in compared:
            by_step.setdefault(step, [mine]).append(f"{b} {_fmt(theirs)}")
        parts += [f"{problem} @ step {s}: E-MSA {_fmt(v[0])} vs {', '.join(v[1:])}" for s, v in by_step.items()]
    threshold = (
        "E-MSA's median training loss < each baseline's at their last common evaluation in the first half "
        "of E-MSA's budget"
    )
    if not outcomes:
        return Verdict(NOT_MEASURED, f"needs emsa and a baseline on one of {', '.join(EMSA_PROBLEMS)}", threshold)
    return _judged(outcomes, "; ".join(parts), threshold)


def emsa_escapes_zero_init(data: Data, backend: str) -> Verdict:
    problem = "sine-resnet-zero"
    threshold = f"E-MSA's median test loss at its last step ≤ {ESCAPE_RATIO} × every gradient method's at that step"
    emsa = median_curve(data, problem, "emsa", backend, "test_loss")
    if emsa.empty:
        return Verdict(NOT_MEASURED, f"needs emsa on {problem}", threshold)
    step = int(emsa.index.max())
    others = {b: _at(median_curve(data, problem, b, backend, "test_loss"), step) for b in BASELINES}
    others = {b: v for b, v in others.items() if v is not None}
    if not others:
        return Verdict(NOT_MEASURED, f"needs a gradient method on {problem} evaluated at step {step}", threshold)
    mine = float(emsa[step])
    holds = all(mine <= ESCAPE_RATIO * v for v in others.values())
    numbers = f"step {step}: E-MSA {_fmt(mine)} vs " + ", ".join(f"{b} {_fmt(v)}" for b, v in others.items())
    return _judged({problem: holds}, numbers, threshold)


def _seconds_to_target(data: Data, problem: str, label: str, backend: str) -> float | None:
    """Median over cells of the timed seconds to the problem's target (infinity when
    most cells never reach it; ``tables.to_target``); None when not run."""
    target = data.facts.problems.get(problem)  # absent: the problem is not in the runs
    reached = None if target is None else tables.to_target(_cells(data, problem, label, backend), target)
    return None if reached is None else reached[1]


def _wall_clock_race(data: Data, backend: str, label: str, holds, threshold: str) -> Verdict:
    """E-MSA's ``label`` against the fastest baseline in timed seconds to each problem's
    target; ``holds(mine, best)`` judges a problem; a problem nobody reached is not judged."""
    parts, outcomes = [], {}
    for problem in EMSA_PROBLEMS:
        mine = _seconds_to_target(data, problem, label, backend)
        theirs = {b: _seconds_to_target(data, problem, b, backend) for b in BASELINES}
        theirs = {b: t for b, t in theirs.items() if t is not None}
        if mine is None or not theirs:
            continue
        best = min(theirs, key=theirs.get)
        if math.isinf(mine) and math.isinf(theirs[best]):  # nobody reached the target: no race to judge
            parts.append(f"{problem}: no configuration reached the target")
            continue
        outcomes[problem] = holds(mine, theirs[best])
        timed = _timed(data, problem, label, backend)
        parts.append(f"{problem}: {label} ({timed}) {_seconds(mine)}, best baseline {best} {_seconds(theirs[best])}")
    if not outcomes:
        why = "; ".join(parts) or f"needs {label} and a baseline on one of {', '.join(EMSA_PROBLEMS)}"
        return Verdict(NOT_MEASURED, why, threshold)
    return _judged(outcomes, "; ".join(parts), threshold)


def emsa_not_competitive_in_wall_clock(data: Data, backend: str) -> Verdict:
    threshold = "some baseline reaches the problem's target in fewer timed seconds than E-MSA (median over seeds)"
    return _wall_clock_race(data, backend, "emsa", lambda mine, best: best < mine, threshold)


def _timed(data: Data, problem: str, label: str, backend: str) -> str:
    """What the timed steps of ``label`` were: host-synchronised (``host_sync``: the step
    waits on the host for device values, SciPy's L-BFGS-B) or device-resident."""
    rows = _cells(data, problem, label, backend)
    if "host_sync" not in rows.columns or not len(rows):
        return "?"
    return "host-synchronised steps" if bool(rows["host_sync"].fillna(False).any()) else "device-resident steps"


#: the device-resident E-MSA counts as competitive when it reaches the target within this
#: factor of the fastest baseline's timed seconds
COMPETITIVE_FACTOR = 2.0


def emsa_device_competitive_in_wall_clock(data: Data, backend: str) -> Verdict:
    """Fig. 3's question asked of ``emsa-device`` (``inner="lbfgs-device"``, no host
    synchronisation in the step): does it reach the target within ``COMPETITIVE_FACTOR`` ×
    the fastest baseline's timed seconds (medians over seeds)?"""
    threshold = (
        f"E-MSA with the device solver reaches the problem's target in ≤ {COMPETITIVE_FACTOR:g} × the fastest "
        "baseline's timed seconds (median over seeds); a problem nobody reached is not judged"
    )
    return _wall_clock_race(
        data, backend, "emsa-device", lambda mine, best: mine <= COMPETITIVE_FACTOR * best, threshold
    )


def _seconds(t: float) -> str:
    return "never reached" if math.isinf(t) else f"{t:.3g} s"


def _unstable(data: Data, problem: str, label: str, backend: str) -> tuple[bool, str] | None:
    last = _final_rows(data, problem, label, backend)
    if last.empty or not last["status"].isin(("ok", "diverged")).any():
        return None
    diverged = int((last["status"] == "diverged").sum())
    rows = _cells(data, problem, label, backend)
    rows = rows[rows["status"] == "ok"]
    ratios = [float(c["test_loss"].iloc[-1] / c["test_loss"].min()) for _, c in rows.groupby(schema.CELL_KEY)]
    ratio = float(np.median(ratios)) if ratios else math.nan
    text = f"{diverged}/{len(last)} diverged, final/best test loss {_fmt(ratio)}"
    return diverged > 0 or ratio > INSTABILITY_RATIO, text


def msa_unstable_emsa_not(data: Data, backend: str) -> Verdict:
    problem = "sine-resnet"
    threshold = f"unstable = a seed diverged or the median final/best test loss > {INSTABILITY_RATIO}"
    msa, emsa = (_unstable(data, problem, label, backend) for label in ("msa", "emsa"))
    if msa is None or emsa is None:
        return Verdict(NOT_MEASURED, f"needs msa and emsa on {problem}", threshold)
    holds = msa[0] and not emsa[0]
    return _judged({problem: holds}, f"{problem}: MSA {msa[1]}; E-MSA {emsa[1]}", threshold)


def _mean_final(data: Data, problem: str, label: str, backend: str, metric: str) -> float | None:
    last = _final_rows(data, problem, label, backend)
    last = last[last["status"] == "ok"]
    return float(last[metric].mean()) if len(last) else None


def _discrete_pairs(data: Data, weights: str) -> list[str]:
    """The run's problems whose recorded weight kind is ``weights``, in the run's order."""
    return [n for n in dict.fromkeys(data.df["problem"]) if data.facts.problems[n].weights == weights]


def _authors_near_our_end(data: Data, problem: str, label: str, backend: str) -> str:
    """`` (authors at epoch 4: 97.9%, non-zero 0.509)``: the problem's logged run at the
    whole paper epoch nearest to our last step (``reference.nearest_epoch``), so a short
    run is read against where the authors were then, not at the end of their budget;
    empty when the problem names no logged run or the log stops earlier."""
    facts = data.facts.problems[problem]
    step = _last_step(data, problem, label, backend)
    if facts.reference_run is None or step is None:
        return ""
    epoch = reference.nearest_epoch(step, reference.epoch_steps(facts))
    row = reference.at_epoch(reference.load(facts.reference_run), epoch)
    if row is None:
        return ""
    nonzero = row.get("nonzero_frac", math.nan)
    sparsity = f", non-zero {nonzero:.3f}" if pd.notna(nonzero) else ""
    return f" (authors at epoch {epoch}: {row['test_acc'] * 100:.1f}%{sparsity})"


def binary_msa_matches_bc(data: Data, backend: str) -> Verdict:
    threshold = f"binary MSA's mean final test accuracy ≥ BinaryConnect's − {ACCURACY_TOLERANCE * 100:.0f} point"
    parts, outcomes = [], {}
    for problem in _discrete_pairs(data, "binary"):
        mine, theirs = (_mean_final(data, problem, label, backend, "test_acc") for label in ("dmsa-binary", "bc"))
        if mine is None or theirs is None:
            continue
        outcomes[problem] = mine >= theirs - ACCURACY_TOLERANCE
        authors = _authors_near_our_end(data, problem, "dmsa-binary", backend)
        parts.append(f"{problem}: binary MSA {mine * 100:.1f}% vs BC {theirs * 100:.1f}%{authors}")
    if not outcomes:
        return Verdict(NOT_MEASURED, "needs dmsa-binary and bc on a binary problem", threshold)
    return _judged(outcomes, "; ".join(parts), threshold)


def ternary_msa_matches_twn_sparser(data: Data, backend: str) -> Verdict:
    threshold = (
        f"ternary MSA's mean final test accuracy ≥ TWN's − {ACCURACY_TOLERANCE * 100:.0f} point and its "
        f"non-zero fraction ≤ {SPARSITY_RATIO} × TWN's"
    )
    parts, outcomes = [], {}
    for problem in _discrete_pairs(data, "ternary"):
        acc = [_mean_final(data, problem, label, backend, "test_acc") for label in ("dmsa-ternary", "twn")]
        nz = [_mean_final(data, problem, label, backend, "nonzero_frac") for label in ("dmsa-ternary", "twn")]
        if None in acc or None in nz:
            continue
        outcomes[problem] = acc[0] >= acc[1] - ACCURACY_TOLERANCE and nz[0] <= SPARSITY_RATIO * nz[1]
        authors = _authors_near_our_end(data, problem, "dmsa-ternary", backend)
        parts.append(
            f"{problem}: ternary MSA {acc[0] * 100:.1f}%, non-zero {nz[0]:.3f} vs TWN {acc[1] * 100:.1f}%, "
            f"{nz[1]:.3f}{authors}"
        )
    if not outcomes:
        return Verdict(NOT_MEASURED, "needs dmsa-ternary and twn on a ternary problem", threshold)
    return _judged(outcomes, "; ".join(parts), threshold)


# ---------------------------------------------------------------------------------------
# DDPNOpt (ICLR 2021): its tables' budgets and numbers could not be read, so these claims
# are checked by direction at our budget
# ---------------------------------------------------------------------------------------


def _metric_of(data: Data, problem: str) -> tuple[str, bool]:
    """The problem's target metric (test accuracy, else test loss) and whether higher is
    better."""
    metric = data.facts.problems[problem].target_metric or "test_loss"
    return metric, metric == "test_acc"


def _seed_finals(data: Data, problem: str, label: str, backend: str, metric: str) -> np.ndarray | None:
    """The final ``metric`` of each ``ok`` cell of ``label`` (None: no such cell)."""
    last = _final_rows(data, problem, label, backend)
    values = last.loc[last["status"] == "ok", metric].dropna().to_numpy(float)
    return values if len(values) else None


def _median_ms(data: Data, problem: str, label: str, backend: str) -> float:
    return float(_final_rows(data, problem, label, backend)["ms_per_step"].median())


def _value(v: float, accuracy: bool) -> str:
    return f"{v * 100:.1f}%" if accuracy else _fmt(v)


def ddpnopt_beats_emsa(data: Data, backend: str) -> Verdict:
    """On every problem where both ran: DDPNOpt's mean final test accuracy above E-MSA's
    (test loss below), and its median time per step below E-MSA's."""
    threshold = (
        "DDPNOpt's mean final test accuracy > E-MSA's (test loss <, on regression) and its median ms/step < "
        "E-MSA's, on each problem both ran"
    )
    parts, outcomes = [], {}
    for problem in EMSA_PROBLEMS:
        if problem not in data.facts.problems:
            continue
        metric, accuracy = _metric_of(data, problem)
        mine, theirs = (_seed_finals(data, problem, label, backend, metric) for label in ("ddpnopt", "emsa"))
        if mine is None or theirs is None:
            continue
        ms = [_median_ms(data, problem, label, backend) for label in ("ddpnopt", "emsa")]
        better = mine.mean() > theirs.mean() if accuracy else mine.mean() < theirs.mean()
        outcomes[problem] = bool(better and ms[0] < ms[1])
        steps = [_last_step(data, problem, label, backend) for label in ("ddpnopt", "emsa")]
        parts.append(
            f"{problem}: DDPNOpt {_value(mine.mean(), accuracy)} at {ms[0]:.3g} ms/step ({steps[0]} steps) vs "
            f"E-MSA {_value(theirs.mean(), accuracy)} at {ms[1]:.3g} ms/step ({steps[1]} steps)"
        )
    if not outcomes:
        return Verdict(NOT_MEASURED, f"needs ddpnopt and emsa on one of {', '.join(EMSA_PROBLEMS)}", threshold)
    return _judged(outcomes, "; ".join(parts), threshold)


def _noise(a: np.ndarray, b: np.ndarray) -> float:
    """``NOISE_SE`` standard errors of the difference of the two means (0 with one seed
    each: no spread to estimate)."""
    var = sum(x.var(ddof=1) / len(x) for x in (a, b) if len(x) > 1)
    return NOISE_SE * math.sqrt(var)


def ddpnopt_vs_base(data: Data, backend: str) -> Verdict:
    """On every problem with ``ddpnopt`` (RMSprop preconditioner) and ``rmsprop``: DDPNOpt's
    mean final metric no worse than RMSprop's by more than the seeds' noise."""
    threshold = (
        f"DDPNOpt's mean final test accuracy ≥ RMSprop's − {NOISE_SE:g} standard errors of the difference "
        "(test loss ≤ … + on regression), DDPNOpt preconditioned by RMSprop"
    )
    parts, outcomes = [], {}
    for problem in dict.fromkeys(data.df["problem"]):
        cells = _cells(data, problem, "ddpnopt", backend)
        if cells.empty or not cells["hp_precond"].eq("rmsprop").all():
            continue
        metric, accuracy = _metric_of(data, problem)
        mine, base = (_seed_finals(data, problem, label, backend, metric) for label in ("ddpnopt", "rmsprop"))
        if mine is None or base is None:
            continue
        noise, diff = _noise(mine, base), mine.mean() - base.mean()
        outcomes[problem] = bool(diff >= -noise if accuracy else diff <= noise)
        parts.append(
            f"{problem}: DDPNOpt {_value(mine.mean(), accuracy)} vs RMSprop {_value(base.mean(), accuracy)} "
            f"(noise ±{_value(noise, accuracy)}, {len(mine)}/{len(base)} seeds)"
        )
    if not outcomes:
        return Verdict(NOT_MEASURED, "needs ddpnopt (RMSprop preconditioner) and rmsprop on one problem", threshold)
    return _judged(outcomes, "; ".join(parts), threshold)


def _cell_scores(finals: pd.DataFrame, metric: str) -> pd.Series:
    """Each trained cell's final accuracy, a diverged cell counting as 0."""
    return finals[metric].where(finals["status"] == "ok", 0.0).fillna(0.0)


def ddpnopt_feedback_gain_grows(data: Data, backend: str) -> Verdict:
    """On every classification problem with DDPNOpt cells at ≥ 3 learning rates, each with
    and without the feedback (the same preconditioner and V_xx mode): the gain, mean final
    test accuracy with the feedback minus without, has Spearman correlation with the lr of
    at least ``GAIN_RANK_CORRELATION``, and is larger at the largest lr than at the
    smallest."""
    threshold = (
        f"gain = mean final test accuracy with the feedback − without (diverged cells count 0); Spearman(lr, gain) "
        f"≥ {GAIN_RANK_CORRELATION} and gain at the largest lr > gain at the smallest"
    )
    df = data.df
    ddp_labels = [label for label, algorithm in data.facts.labels.items() if algorithm == "ddpnopt"]
    rows = df[(df["backend"] == backend) & df["label"].isin(ddp_labels)]
    parts, outcomes = [], {}
    for problem, cells in rows.groupby("problem", sort=False):
        metric, accuracy = _metric_of(data, problem)
        finals = schema.trained_finals(cells)
        if not accuracy or finals.empty:
            continue
        scores = finals.assign(score=_cell_scores(finals, metric))
        means = scores.groupby(["hp_precond", "hp_vxx", "hp_lr", "hp_feedback"])["score"].mean()
        for (precond, vxx), by in means.groupby(level=[0, 1]):
            table = by.droplevel([0, 1]).unstack("hp_feedback")
            if True not in table or False not in table:
                continue
            gain = (table[True] - table[False]).dropna().sort_index()
            if len(gain) < 3:
                continue
            # a constant gain has no rank correlation: it does not grow
            constant = gain.nunique() == 1
            rho = (
                0.0
                if constant
                else float(pd.Series(gain.index, dtype=float).corr(pd.Series(gain.to_numpy()), method="spearman"))
            )
            key = f"{problem} ({precond}, {vxx})"
            outcomes[key] = bool(rho >= GAIN_RANK_CORRELATION and gain.iloc[-1] > gain.iloc[0])
            per_lr = ", ".join(f"lr {lr:g}: {g * 100:+.1f}" for lr, g in gain.items())
            parts.append(f"{key}: gain in points {per_lr}; Spearman {rho:.2f}")
    if not outcomes:
        return Verdict(NOT_MEASURED, "needs DDPNOpt with and without feedback at ≥ 3 learning rates", threshold)
    return _judged(outcomes, "; ".join(parts), threshold)


CLAIMS = (
    Claim(
        "emsa-per-iteration",
        "E-MSA has lower loss per iteration than SGD, Adagrad and Adam early in training",
        "JMLR 2018, §5 (sine toy and CNN)",
        "fig-loss-step",
        emsa_faster_per_iteration,
        ("emsa", *BASELINES),
        jmlr_budget,
    ),
    Claim(
        "emsa-escapes-zero-init",
        "From the all-zero init, gradient methods stall while E-MSA escapes",
        "JMLR 2018, Fig. 1b",
        "fig-loss-step",
        emsa_escapes_zero_init,
        ("emsa",),  # judged at E-MSA's last step: the baselines' longer runs are not its budget
        jmlr_fig1b_budget,
    ),
    Claim(
        "emsa-wall-clock",
        "E-MSA is not competitive in wall-clock time",
        "JMLR 2018, Fig. 3",
        "fig-loss-time",
        emsa_not_competitive_in_wall_clock,
        ("emsa", *BASELINES),
        jmlr_budget,  # Fig. 3 plots the runs of the per-iteration figures against time
    ),
    Claim(
        "emsa-device-wall-clock",
        "E-MSA with a device-resident inner solver is competitive in wall-clock time",
        "JMLR 2018, Fig. 3, asked again of this suite's lbfgs-device solver",
        "fig-loss-time",
        emsa_device_competitive_in_wall_clock,
        ("emsa-device", *BASELINES),
        jmlr_budget,
    ),
    Claim(
        "msa-unstable",
        "Basic MSA is unstable where E-MSA is not",
        "JMLR 2018, §3",
        "fig-loss-step",
        msa_unstable_emsa_not,
        ("msa", "emsa"),
        jmlr_budget,
    ),
    Claim(
        "binary-matches-bc",
        "Binary MSA reaches BinaryConnect's accuracy",
        "ICML 2018, Table 1",
        "fig-acc-step",
        binary_msa_matches_bc,
        ("dmsa-binary", "bc"),
        icml_budget,
    ),
    Claim(
        "ternary-sparser-than-twn",
        "Ternary MSA reaches TWN's accuracy with far fewer non-zero weights",
        "ICML 2018, Table 1 and Fig. 3",
        "fig-sparsity",
        ternary_msa_matches_twn_sparser,
        ("dmsa-ternary", "twn"),
        icml_budget,
    ),
    Claim(
        "ddpnopt-beats-emsa",
        "DDPNOpt reaches a better final accuracy or loss than E-MSA, at a lower time per step",
        "Liu, Chen & Theodorou, ICLR 2021: the results tables",
        "fig-loss-step",
        ddpnopt_beats_emsa,
        ("ddpnopt", "emsa"),
        None,
    ),
    Claim(
        "ddpnopt-vs-base",
        "DDPNOpt is within noise of, or better than, its base optimizer",
        "Liu, Chen & Theodorou, ICLR 2021: the results tables",
        "fig-acc-step",
        ddpnopt_vs_base,
        ("ddpnopt", "rmsprop"),
        None,
    ),
    Claim(
        "ddpnopt-feedback-sensitivity",
        "The feedback's gain over the base optimizer grows with the learning rate",
        "Liu, Chen & Theodorou, ICLR 2021: the learning-rate sensitivity study",
        "fig-acc-step",
        ddpnopt_feedback_gain_grows,
        (),
        None,
    ),
)


def _ours_only(data: Data, claim: Claim, verdict: Verdict, backend: str) -> str:
    """The budget text of a claim whose paper budget is not known: our steps per problem
    judged (– when not measured)."""
    if claim.budget is not None or verdict.verdict == NOT_MEASURED:
        return "–"
    parts = []
    for key in verdict.measured:
        problem = key.split(" (")[0]
        steps = [_last_step(data, problem, label, backend) for label in claim.labels]
        if not claim.labels:  # the sensitivity claim reads DDPNOpt's labels by algorithm
            rows = data.df[(data.df["problem"] == problem) & (data.df["backend"] == backend)]
            steps = [int(rows.loc[rows["algorithm"] == "ddpnopt", "step"].max())]
        steps = [s for s in steps if s is not None]
        parts.append(f"{problem}: ours {max(steps):,} steps" if steps else problem)
    return "; ".join(parts) + "; paper: not known (its tables could not be read)"


def evaluate(df: pd.DataFrame, facts: schema.RunFacts) -> pd.DataFrame:
    """One row per claim × backend: id, claim, source, backend, verdict (``qualified`` by
    the budget), numbers, threshold, budget (ours beside the paper's on each problem
    judged; – when not measured), figure."""
    rows = []
    data = Data(df, facts)
    backends = [b for b in dict.fromkeys(df["backend"]) if b]
    for claim in CLAIMS:
        for backend in backends:
            v = claim.evaluate(data, backend)
            budgets = claim.budgets(data, backend, v.measured)
            known = claim.budget is not None
            rows.append(
                {
                    "id": claim.id,
                    "claim": claim.text,
                    "source": claim.source,
                    "backend": backend,
                    "verdict": qualified(v, budgets, known),
                    "numbers": v.numbers,
                    "threshold": v.threshold,
                    "budget": "; ".join(b.text for b in budgets.values()) or _ours_only(data, claim, v, backend),
                    "figure": claim.figure,
                }
            )
    return pd.DataFrame(rows)
