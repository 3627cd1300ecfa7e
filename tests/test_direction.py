"""Every convergent algorithm moves downhill; basic MSA is recorded, not required to.

**Criterion.** For each algorithm we compare the training objective on the *whole*
training split, in training mode (BN normalises with the split's own statistics), at the
effective parameters ``get(state)`` right after ``init`` and after 20 steps, evaluated
in float64 by the reference's ``pmp.objective`` (mean loss, no regulariser). Why this and
not the step losses or an eval-mode loss:

- it is deterministic (fixed seeds, fixed batches), so the test cannot flake, and it is
  not the noisy mean of a few minibatch losses whose ordering depends on which samples
  came first;
- it measures what the net computes with the weights it would be evaluated with (the
  discrete weights for MSA, the quantized ones for the STE baselines);
- it avoids BN's running statistics, which after 20 steps with momentum 0.1 still carry
  0.9²⁰ ≈ 12% of their (0, 1) initial values, so an eval-mode loss "before" and "after"
  would compare two different functions, not the effect of training;
- one evaluator for every backend: a backend's own loss code cannot hide an error.

We require a relative decrease of at least ``MIN_DECREASE`` (5%): comfortably above
float32 rounding, well below the decreases these settings reach (measured J_after/J_before:
0.30-0.62 on the sine and BN nets, 0.84 on the CNN, 0.83 for stochastic
BinaryConnect), so a real regression (wrong sign, no update) fails and tuning noise does
not.

The torch backend runs in float32 (its production dtype); two cheap cases also run on the
float64 reference.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from implementations import spec
from implementations.reference import common, pmp
from suites.problems import Problem
from tests import tiny

STEPS = 20
MIN_DECREASE = 0.05


@dataclass(frozen=True)
class Case:
    id: str
    algorithm: str
    hp: Any
    problem: Problem
    backend: str = "torch"


CASES = [
    Case("sgd-sine", "sgd", spec.SGD(lr=0.02), tiny.SINE),
    Case("sgd-momentum-bn", "sgd", spec.SGD(lr=0.05, momentum=0.9), tiny.BN_REAL),
    Case("sgd-cnn", "sgd", spec.SGD(lr=0.1), tiny.CNN),
    Case("adagrad-sine", "adagrad", spec.Adagrad(lr=0.05), tiny.SINE),
    Case("adam-bn", "adam", spec.Adam(lr=0.01), tiny.BN_REAL),
    Case("adam-cnn", "adam", spec.Adam(lr=0.01), tiny.CNN),
    Case("emsa-lbfgs-sine", "emsa", spec.EMSA(rho=1.0), tiny.SINE),
    Case("emsa-adam-sine", "emsa", spec.EMSA(rho=1.0, inner="adam", inner_steps=5, inner_lr=0.01), tiny.SINE),
    Case("emsa-gd-bn", "emsa", spec.EMSA(rho=1.0, inner="gd", inner_steps=5, inner_lr=0.05), tiny.BN_REAL),
    Case("dmsa-binary", "dmsa", spec.DMSA(levels=2, rho=0.5), tiny.BN_BINARY),
    Case("dmsa-ternary", "dmsa", spec.DMSA(levels=3, rho=0.25), tiny.BN_TERNARY),
    Case("ste-bc", "ste", spec.STE(kind="bc", lr=0.01), tiny.BN_BINARY),
    Case("ste-bc-stochastic", "ste", spec.STE(kind="bc", lr=0.01, stochastic=True), tiny.BN_BINARY),
    Case("ste-twn", "ste", spec.STE(kind="twn", lr=0.01), tiny.BN_TERNARY),
    Case("sgd-sine-reference", "sgd", spec.SGD(lr=0.02), tiny.SINE, "reference"),
    Case("dmsa-binary-reference", "dmsa", spec.DMSA(levels=2, rho=0.5), tiny.BN_BINARY, "reference"),
]


def make(backend: str, algorithm: str, problem: Problem, hp):
    """The backend's trainer: float32 for torch, float64 for the reference."""
    return tiny.make_trainer(backend, algorithm, problem, hp, dtype="float32" if backend == "torch" else "float64")


def train_objective(problem: Problem, params: list[np.ndarray]) -> float:
    """Mean loss on the whole training split, training-mode BN, float64 (see above)."""
    x, y = common.put(problem.arrays("train"))
    theta = pmp.per_layer(problem.layers, common.to_jax([np.asarray(p, np.float64) for p in params]))
    return float(pmp.objective(problem.layers, theta, x, y, problem.loss))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_training_objective_decreases(case: Case):
    """J(get(state)) on the training split drops by ≥ 5% within 20 steps."""
    trainer = make(case.backend, case.algorithm, case.problem, case.hp)
    state = trainer.init(case.problem.init_params(0))
    before = train_objective(case.problem, trainer.get(state))
    losses = []
    for batch in tiny.first_batches(case.problem, STEPS):
        state, metrics = trainer.step(state, trainer.put(batch))
        losses.append(float(metrics["loss"]))
    after = train_objective(case.problem, trainer.get(state))
    assert all(math.isfinite(v) for v in losses), f"{case.id}: non-finite step loss {losses}"
    assert after < (1 - MIN_DECREASE) * before, f"{case.id}: J {before:.4g} -> {after:.4g} (step losses {losses})"


# ---------------------------------------------------------------------------------------
# basic MSA: an outcome to record, not a method required to converge
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend, steps", [("torch", 5), ("reference", 2)], ids=["torch-float32", "reference-float64"])
def test_basic_msa_runs_and_reports_a_loss(backend, steps):
    """Basic MSA (``MSA()``: L-BFGS, 10 iterations, reg 1e-3, the official settings) on the
    tiny sine net never raises, every step reports one scalar loss and moves the
    parameters. The loss's value is not asserted: finite or not, that is the outcome the
    suite records (``diverged`` for non-finite), not a failure of the implementation."""
    trainer = make(backend, "msa", tiny.SINE, spec.MSA())
    state = trainer.init(tiny.SINE.init_params(0))
    for batch in tiny.first_batches(tiny.SINE, steps):
        before = trainer.get(state)
        state, metrics = trainer.step(state, trainer.put(batch))
        assert np.ndim(np.asarray(metrics["loss"])) == 0
        after = trainer.get(state)
        assert [a.shape for a in after] == [b.shape for b in before]
        assert any(not np.array_equal(a, b) for a, b in zip(after, before)), "the step left θ unchanged"


def test_basic_msa_diverges_on_linear_layers():
    """The JMLR paper's claim that basic MSA generally diverges, made concrete. In the BN
    MLP the dense layers are linear in W, so Σ_s H_t = ⟨M_t, W⟩ - reg·½‖W‖² and its argmax
    is W = M_t/reg: a gradient step of size 1/reg = 1000. Ten L-BFGS iterations get close
    to it, and the loss explodes (measured, torch float32: 0.90 → 107 → 195 → 345 → 437;
    the float64 reference gives the same numbers). We assert the loss grows more than 20×
    within 5 steps, or becomes non-finite; E-MSA with ρ = 1 on the same problem and batches
    stays near its start (0.90 → 1.13 → 1.11 → 0.77 → 0.97, measured) because its
    penalties keep θ near the stored trajectory."""
    trainer = make("torch", "msa", tiny.BN_REAL, spec.MSA())
    state = trainer.init(tiny.BN_REAL.init_params(0))
    losses = []
    for batch in tiny.first_batches(tiny.BN_REAL, 5):
        state, metrics = trainer.step(state, trainer.put(batch))
        losses.append(float(metrics["loss"]))
    assert math.isfinite(losses[0])
    exploded = [v for v in losses[1:] if not math.isfinite(v) or v > 20 * losses[0]]
    assert exploded, f"basic MSA did not diverge: {losses}"


# ---------------------------------------------------------------------------------------
# E-MSA, JMLR Theorem 4: large ρ, full batch → monotone loss
# ---------------------------------------------------------------------------------------


def test_emsa_large_rho_is_monotone_full_batch():
    """Theorem 4: for ρ large enough (ρ > 2C), E-MSA decreases J monotonically on a full
    batch. On the tiny sine toy with batch = the whole training split (32 samples), the
    reference (float64) with ρ = 5 and 5 L-BFGS iterations per layer takes 6 steps; the
    total objective J = mean loss + reg·½‖θ‖² (what the Hamiltonian's -L_t maximises),
    evaluated at every iterate, must never increase and must fall overall.

    Measured: 28.64 → 21.45 → 16.80 → 13.81 → 11.75 → 10.42 → 9.61. For contrast, basic
    MSA (ρ = 0) on the same problem goes 28.64 → 8.93 → 9.30 → 8.84 → 9.35: not monotone,
    which is why the penalty is there. "Non-increasing" is asserted with a 1e-12
    relative slack for float64 rounding of J itself."""
    problem = tiny.SINE_FULL
    assert problem.batch_size == len(problem.arrays("train")[0]), "Theorem 4 is a full-batch statement"
    hp = spec.EMSA(rho=5.0, inner="lbfgs", inner_steps=5)
    trainer = make("reference", "emsa", problem, hp)
    x, y = common.put(problem.arrays("train"))

    def objective(state):
        theta = pmp.per_layer(problem.layers, common.to_jax(trainer.get(state)))
        return float(pmp.objective(problem.layers, theta, x, y, problem.loss, hp.reg))

    state = trainer.init(problem.init_params(0))
    values = [objective(state)]
    for batch in tiny.first_batches(problem, 6):
        state, _ = trainer.step(state, trainer.put(batch))
        values.append(objective(state))
    increases = [(k, a, b) for k, (a, b) in enumerate(itertools.pairwise(values), 1) if b > a * (1 + 1e-12)]
    assert not increases, f"J increased at (step, before, after): {increases}; all: {values}"
    assert values[-1] < 0.5 * values[0], values
