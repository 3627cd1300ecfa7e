"""Suites: declarative grids of problems × labelled hyperparameters × backends × seeds.

A ``Suite`` lists ``Entry``s (a problem, a label, hyperparameters, a step budget and an
evaluation interval); its cells are entries × backends × seeds. The budgets below are
named constants so the main job can be fitted to its time budget in one place.

Baseline learning rates (SGD, Adagrad, Adam, STE) of the ``default`` suite come from
``suites/tuned.json`` when present (written by ``python -m suites tune``, see
``suites/tune.py``), else from the constants here; the label stays the same either way.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from implementations import spec

# ---------------------------------------------------------------------------------------
# Budgets of the default suite (steps; evaluation every ~1/EVAL_POINTS of the budget).
# ---------------------------------------------------------------------------------------
# Baselines take more (cheap) steps than the MSA family so that the wall-clock comparison
# covers the same time span, not only the same iterations.
SINE_BASELINE_STEPS = 1000
SINE_MSA_STEPS = 200
MNIST_BINARY_STEPS = 350  # 10 epochs of 35 batches of 100
# Ternary MSA sparsifies over thousands of steps (the authors' log: 0.86 non-zero after
# 550 steps, 0.51 after 2,200): 60 epochs of 35 batches.
MNIST_TERNARY_STEPS = 2100
MNIST_ADAM_STEPS = 350
# The paper decays 1 - α once per MNIST epoch of 550 steps; the 3,500-image training set
# has 35-step epochs, so the decay is counted in the paper's steps instead.
PAPER_MNIST_EPOCH_STEPS = 550
# Binary/ternary MSA in the paper suites and their stand-ins run the authors' numerics
# (float32 α, TF1 Adam's ε for BN, biased running variance: ``implementations.conventions``),
# under which our steps are the authors' steps; the smoke suite keeps ``standard``.
PAPER_DMSA_NUMERICS = "authors"
RESCNN_BASELINE_STEPS = 300
RESCNN_EMSA_STEPS = 100
# DDPNOpt and RMSprop, its base optimizer, run E-MSA's budget where E-MSA runs (sine and the
# residual CNN) and 200 on the digits MLP, so that their claims compare finals at equal steps.
DDP_SINE_STEPS = SINE_MSA_STEPS
DDP_MLP_STEPS = 200
DDP_RESCNN_STEPS = RESCNN_EMSA_STEPS
EVAL_POINTS = 10
DEFAULT_SEEDS = (0, 1, 2)

# The JMLR official configuration (sine toy): the regulariser is part of the loss there.
JMLR_REG = 1e-3
SINE_SGD_LR = 0.1
SINE_ADAGRAD_LR = 0.1
SINE_ADAM_LR = 0.005
# Its E-MSA and MSA start every inner solve from θ + p·U(-1, 1) (``msa_perturb_init``):
# 0.005 on the sine toy; 0 in its MNIST configuration, so the CNN entries keep the default 0.
JMLR_SINE_PERTURB = 0.005
# The JMLR official configuration of the MNIST residual CNN.
RESCNN_SGD_LR = 0.01
RESCNN_ADAGRAD_LR = 0.01
RESCNN_ADAM_LR = 0.001
MLP_ADAM_LR = 0.001
# RMSprop's and DDPNOpt's grid centres (tuned like the baselines'): Adam's rates
SINE_RMSPROP_LR = SINE_ADAM_LR
MLP_RMSPROP_LR = MLP_ADAM_LR
RESCNN_RMSPROP_LR = RESCNN_ADAM_LR

# Smoke suite: every algorithm × backend, a few steps.
SMOKE_STEPS = 3

TUNED_PATH = Path(__file__).with_name("tuned.json")


@dataclass(frozen=True)
class Entry:
    """One labelled configuration of a problem: ``steps`` training iterations, evaluated
    at step 0, every ``eval_every`` steps and at the last step."""

    problem: str
    label: str
    hp: Any
    steps: int
    eval_every: int

    @property
    def algorithm(self) -> str:
        return spec.algorithm_id(self.hp)

    def scaled(self, factor: float) -> Entry:
        """The entry with its budget and evaluation interval scaled (at least 1 step), so
        the number of evaluation points stays about the same."""
        if factor == 1.0:
            return self
        steps = max(1, round(self.steps * factor))
        return dataclasses.replace(self, steps=steps, eval_every=max(1, min(steps, round(self.eval_every * factor))))


@dataclass(frozen=True)
class Suite:
    """A named grid. ``backends`` and ``seeds`` are the defaults the CLI can override."""

    name: str
    entries: tuple[Entry, ...]
    backends: tuple[str, ...] = ("reference", "torch")
    seeds: tuple[int, ...] = (0,)
    description: str = field(default="", compare=False)
    #: (backend, seeds) pairs: a backend that runs fewer seeds than ``seeds`` when the run
    #: takes the suite's own (``--seeds`` replaces both)
    backend_seeds: tuple[tuple[str, tuple[int, ...]], ...] = ()

    def seeds_of(self, backend: str) -> tuple[int, ...]:
        """The suite's seeds for ``backend``."""
        return dict(self.backend_seeds).get(backend, self.seeds)

    def __post_init__(self) -> None:
        keys = [(e.problem, e.label) for e in self.entries]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise ValueError(f"suite {self.name!r} repeats (problem, label): {dupes}")
        for e in self.entries:
            if e.steps < 1 or e.eval_every < 1:
                raise ValueError(f"suite {self.name!r}: {e.problem}/{e.label} needs steps, eval_every >= 1")


def _entry(problem: str, label: str, hp: Any, steps: int) -> Entry:
    return Entry(problem, label, hp, steps, max(1, steps // EVAL_POINTS))


def _smoke() -> Suite:
    def e(problem: str, label: str, hp: Any) -> Entry:
        return Entry(problem, label, hp, SMOKE_STEPS, SMOKE_STEPS)

    return Suite(
        "smoke",
        (
            e("sine-resnet", "sgd", spec.SGD(lr=SINE_SGD_LR, reg=JMLR_REG)),
            e("sine-resnet", "adagrad", spec.Adagrad(lr=SINE_ADAGRAD_LR, reg=JMLR_REG)),
            e("sine-resnet", "adam", spec.Adam(lr=SINE_ADAM_LR, reg=JMLR_REG)),
            e("sine-resnet", "rmsprop", spec.RMSprop(lr=SINE_ADAM_LR, reg=JMLR_REG)),
            e("sine-resnet", "msa", spec.MSA(inner="gd", inner_steps=2, perturb_init=JMLR_SINE_PERTURB)),
            e("sine-resnet", "emsa", spec.EMSA(rho=1.0, inner="lbfgs", inner_steps=2, perturb_init=JMLR_SINE_PERTURB)),
            e("digits-mlp-binary", "dmsa-binary", spec.DMSA(levels=2, rho=0.5)),
            e("digits-mlp-binary", "bc", spec.STE(kind="bc")),
            e("digits-mlp-ternary", "dmsa-ternary", spec.DMSA(levels=3, rho=0.25)),
            e("digits-mlp-ternary", "twn", spec.STE(kind="twn")),
            e("digits-mlp", "adam", spec.Adam(lr=MLP_ADAM_LR)),
            e("digits-mlp", "ddpnopt", spec.DDPNOpt(lr=MLP_ADAM_LR)),
        ),
        backends=("reference", "torch", "jax"),
        seeds=(0,),
        description="every algorithm on every backend, 3 steps: does everything run?",
    )


def _sine_configs() -> list[tuple[str, Any, int]]:
    """The JMLR toy's configurations (official config.yml) with the default suite's budgets."""
    return [
        ("emsa", spec.EMSA(rho=1.0, reg=JMLR_REG, perturb_init=JMLR_SINE_PERTURB), SINE_MSA_STEPS),
        # the same E-MSA with the device-resident L-BFGS (no host synchronisation)
        (
            "emsa-device",
            spec.EMSA(rho=1.0, inner="lbfgs-device", reg=JMLR_REG, perturb_init=JMLR_SINE_PERTURB),
            SINE_MSA_STEPS,
        ),
        # the same E-MSA with optax's L-BFGS inside the compiled step (jax only; torch skips)
        (
            "emsa-optax-lbfgs",
            spec.EMSA(rho=1.0, inner="optax-lbfgs", reg=JMLR_REG, perturb_init=JMLR_SINE_PERTURB),
            SINE_MSA_STEPS,
        ),
        ("msa", spec.MSA(reg=JMLR_REG, perturb_init=JMLR_SINE_PERTURB), SINE_MSA_STEPS),
        ("sgd", spec.SGD(lr=SINE_SGD_LR, reg=JMLR_REG), SINE_BASELINE_STEPS),
        ("adagrad", spec.Adagrad(lr=SINE_ADAGRAD_LR, reg=JMLR_REG), SINE_BASELINE_STEPS),
        ("adam", spec.Adam(lr=SINE_ADAM_LR, reg=JMLR_REG), SINE_BASELINE_STEPS),
        ("rmsprop", spec.RMSprop(lr=SINE_RMSPROP_LR, reg=JMLR_REG), DDP_SINE_STEPS),
        ("ddpnopt", spec.DDPNOpt(lr=SINE_RMSPROP_LR, weight_decay=JMLR_REG), DDP_SINE_STEPS),
    ]


#: E-MSA without the perturbation, beside ``emsa`` on the all-zero sine init: what the
#: perturbation does there (without it the symmetric init stays symmetric, up to rounding)
EMSA_NOPERTURB = ("emsa-noperturb", spec.EMSA(rho=1.0, reg=JMLR_REG))


def _default() -> Suite:
    sine = _sine_configs()
    zero_labels = ("emsa", "sgd", "adam")
    binary = spec.DMSA(levels=2, rho=0.5, alpha_decay_steps=PAPER_MNIST_EPOCH_STEPS, numerics=PAPER_DMSA_NUMERICS)
    ternary = spec.DMSA(levels=3, rho=0.25, alpha_decay_steps=PAPER_MNIST_EPOCH_STEPS, numerics=PAPER_DMSA_NUMERICS)
    entries = [_entry("sine-resnet", label, hp, steps) for label, hp, steps in sine]
    entries += [_entry("sine-resnet-zero", label, hp, steps) for label, hp, steps in sine if label in zero_labels]
    entries.append(_entry("sine-resnet-zero", *EMSA_NOPERTURB, SINE_MSA_STEPS))
    entries += [
        _entry("mnist5k-mlp-binary", "dmsa-binary", binary, MNIST_BINARY_STEPS),
        _entry("mnist5k-mlp-binary", "bc", spec.STE(kind="bc"), MNIST_BINARY_STEPS),
        _entry("mnist5k-mlp-ternary", "dmsa-ternary", ternary, MNIST_TERNARY_STEPS),
        _entry("mnist5k-mlp-ternary", "twn", spec.STE(kind="twn"), MNIST_TERNARY_STEPS),
        _entry("mnist5k-mlp", "adam", spec.Adam(lr=MLP_ADAM_LR), MNIST_ADAM_STEPS),
        # DDPNOpt and its base optimizer on the digits MLP (the paper's DIGITS), 200 steps
        _entry("digits-mlp", "rmsprop", spec.RMSprop(lr=MLP_RMSPROP_LR), DDP_MLP_STEPS),
        _entry("digits-mlp", "ddpnopt", spec.DDPNOpt(lr=MLP_RMSPROP_LR), DDP_MLP_STEPS),
        _entry("mnist5k-rescnn", "emsa", spec.EMSA(rho=0.03, reg=JMLR_REG), RESCNN_EMSA_STEPS),
        _entry(
            "mnist5k-rescnn", "emsa-device", spec.EMSA(rho=0.03, inner="lbfgs-device", reg=JMLR_REG), RESCNN_EMSA_STEPS
        ),
        _entry("mnist5k-rescnn", "sgd", spec.SGD(lr=RESCNN_SGD_LR, reg=JMLR_REG), RESCNN_BASELINE_STEPS),
        _entry("mnist5k-rescnn", "adagrad", spec.Adagrad(lr=RESCNN_ADAGRAD_LR, reg=JMLR_REG), RESCNN_BASELINE_STEPS),
        _entry("mnist5k-rescnn", "adam", spec.Adam(lr=RESCNN_ADAM_LR, reg=JMLR_REG), RESCNN_BASELINE_STEPS),
        _entry("mnist5k-rescnn", "rmsprop", spec.RMSprop(lr=RESCNN_RMSPROP_LR, reg=JMLR_REG), DDP_RESCNN_STEPS),
        _entry(
            "mnist5k-rescnn", "ddpnopt", spec.DDPNOpt(lr=RESCNN_RMSPROP_LR, weight_decay=JMLR_REG), DDP_RESCNN_STEPS
        ),
    ]
    return Suite(
        "default",
        tuple(entries),
        backends=("torch", "jax", "torch-compile"),
        seeds=DEFAULT_SEEDS,
        description="the main job: E-MSA, discrete MSA and DDPNOpt against tuned baselines, 3 seeds",
        # torch.compile's C++ build costs 20-60 s a configuration on a 2-core CPU: one seed
        # times the compiled step; the eager torch cells carry the seed statistics
        backend_seeds=(("torch-compile", DEFAULT_SEEDS[:1]),),
    )


# ---------------------------------------------------------------------------------------
# Tuned learning rates
# ---------------------------------------------------------------------------------------


def is_baseline(hp: Any) -> bool:
    """Entries whose learning rate is tuned: the gradient baselines, STE and DDPNOpt (whose
    rate is its base optimizer's)."""
    return isinstance(hp, (spec.SGD, spec.Adagrad, spec.Adam, spec.RMSprop, spec.STE, spec.DDPNOpt))


def load_tuned(path: Path = TUNED_PATH) -> dict[str, dict[str, Any]]:
    """``{suite: {"problem/label": record}}`` from a ``tune`` output; ``{}`` when absent.
    Raises ``ValueError`` (one line) for a file that is not a tune output."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        suites = data["suites"]
        if not isinstance(suites, dict):
            raise TypeError("'suites' is not an object")
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a tune output ({type(e).__name__}: {e})") from None
    return suites


def apply_tuned(suite: Suite, tuned: dict[str, dict[str, Any]]) -> Suite:
    """The suite with its baselines' ``lr`` replaced by the tuned choice, where one exists."""
    records = tuned.get(suite.name, {})
    entries = []
    for e in suite.entries:
        record = records.get(f"{e.problem}/{e.label}")
        if record is not None and is_baseline(e.hp) and record.get("choice") is not None:
            e = dataclasses.replace(e, hp=dataclasses.replace(e.hp, lr=float(record["choice"])))
        entries.append(e)
    return dataclasses.replace(suite, entries=tuple(entries))


def _kernels() -> Suite:
    """The kernel backends beside PyTorch eager on the problems their kernels serve: the
    fused discrete update (binary and ternary MLPs) and the one-launch E-MSA gradient (the
    sine net's 20-layer stack, adam inner solver). Without a GPU, the triton and cuda
    cells are skipped with the reason."""
    binary = spec.DMSA(levels=2, rho=0.5, alpha_decay_steps=PAPER_MNIST_EPOCH_STEPS, numerics=PAPER_DMSA_NUMERICS)
    ternary = spec.DMSA(levels=3, rho=0.25, alpha_decay_steps=PAPER_MNIST_EPOCH_STEPS, numerics=PAPER_DMSA_NUMERICS)
    emsa = spec.EMSA(rho=1.0, inner="adam", inner_steps=10, inner_lr=0.01, reg=JMLR_REG)
    return Suite(
        "kernels",
        (
            _entry("mnist5k-mlp-binary", "dmsa-binary", binary, MNIST_BINARY_STEPS),
            _entry("mnist5k-mlp-ternary", "dmsa-ternary", ternary, MNIST_BINARY_STEPS),
            _entry("sine-resnet", "emsa-adam", emsa, SINE_MSA_STEPS),
        ),
        backends=("torch", "triton", "cuda"),
        seeds=(0,),
        description="Triton and CUDA kernels against PyTorch eager (needs a GPU; skipped without one)",
    )


#: the device check's budgets: a few minutes for the whole suite on one GPU (gpu-check)
GPU_CHECK_STEPS = 100
GPU_CHECK_MSA_STEPS = 30


def _gpu() -> Suite:
    """The device check's suite (``msabench gpu-check``): every embedded problem with each
    algorithm family that runs on it, on every backend that runs on CUDA (the kernel
    backends run their algorithms: binary/ternary MSA, and E-MSA with the adam inner solver
    on the sine stack), one seed, short budgets: step times per problem and backend, not
    accuracies. E-MSA keeps both solvers: the host-driven L-BFGS-B and the device one."""
    binary = spec.DMSA(levels=2, rho=0.5, alpha_decay_steps=PAPER_MNIST_EPOCH_STEPS, numerics=PAPER_DMSA_NUMERICS)
    ternary = spec.DMSA(levels=3, rho=0.25, alpha_decay_steps=PAPER_MNIST_EPOCH_STEPS, numerics=PAPER_DMSA_NUMERICS)
    sine_emsa = spec.EMSA(rho=1.0, reg=JMLR_REG, perturb_init=JMLR_SINE_PERTURB)
    n, msa = GPU_CHECK_STEPS, GPU_CHECK_MSA_STEPS
    entries = [
        _entry("sine-resnet", "adam", spec.Adam(lr=SINE_ADAM_LR, reg=JMLR_REG), n),
        _entry("sine-resnet", "emsa", sine_emsa, msa),
        _entry("sine-resnet", "emsa-device", dataclasses.replace(sine_emsa, inner="lbfgs-device"), msa),
        _entry("sine-resnet", "emsa-adam", spec.EMSA(rho=1.0, inner="adam", inner_lr=0.01, reg=JMLR_REG), msa),
        _entry("sine-resnet", "ddpnopt", spec.DDPNOpt(lr=SINE_RMSPROP_LR, weight_decay=JMLR_REG), n),
        _entry("sine-resnet-zero", "emsa-device", dataclasses.replace(sine_emsa, inner="lbfgs-device"), msa),
        _entry("digits-mlp", "rmsprop", spec.RMSprop(lr=MLP_RMSPROP_LR), n),
        _entry("digits-mlp", "ddpnopt", spec.DDPNOpt(lr=MLP_RMSPROP_LR), n),
        _entry("mnist5k-mlp", "adam", spec.Adam(lr=MLP_ADAM_LR), n),
        _entry("mnist5k-mlp-binary", "dmsa-binary", binary, n),
        _entry("mnist5k-mlp-binary", "bc", spec.STE(kind="bc"), n),
        _entry("mnist5k-mlp-ternary", "dmsa-ternary", ternary, n),
        _entry("mnist5k-mlp-ternary", "twn", spec.STE(kind="twn"), n),
        _entry("mnist5k-rescnn", "adam", spec.Adam(lr=RESCNN_ADAM_LR, reg=JMLR_REG), n),
        _entry("mnist5k-rescnn", "emsa-device", spec.EMSA(rho=0.03, inner="lbfgs-device", reg=JMLR_REG), msa),
        _entry("mnist5k-rescnn", "ddpnopt", spec.DDPNOpt(lr=RESCNN_RMSPROP_LR, weight_decay=JMLR_REG), n),
    ]
    return Suite(
        "gpu",
        tuple(entries),
        backends=("torch", "jax", "triton", "cuda"),
        seeds=(0,),
        description="the device check: every embedded problem on every CUDA backend, short budgets (gpu-check)",
    )


# ---------------------------------------------------------------------------------------
# The papers' suites: their data sets (see suites/datasets.py), budgets in epochs
# ---------------------------------------------------------------------------------------
#: ICML paper: epochs and the per-epoch decay d of 1 - α
#: (implementations/README.md §3.3, §3.7).
ICML_SETTINGS = {"mnist-mlp": (250, 0.95), "cifar10-cnn": (500, 0.98), "svhn-cnn": (200, 0.95)}
JMLR_CNN_EPOCHS = 10
#: the sine toy in the JMLR code: 500 steps (its config.yml: 500 epochs of a single batch
#: of 100 samples; our toy's 1,000 samples make an epoch 10 steps, so the budget is in steps)
JMLR_SINE_STEPS = 500
PAPER_EVALS_PER_EPOCH = 5  # JMLR curves: 5 points per epoch; ICML logs: 1 (per epoch)
#: The CPU reproduction on Fashion-MNIST (README): one epoch of 550 steps per cell.
REPRO_EPOCHS = 1


def _steps_per_epoch(problem: str) -> int:
    from suites import problems  # lazy: problems imports the data sets module

    return problems.get_problem(problem).steps_per_epoch


def _epochs(problem: str, label: str, hp: Any, epochs: float, evals_per_epoch: int = 1) -> Entry:
    per_epoch = _steps_per_epoch(problem)
    return Entry(problem, label, hp, max(1, round(epochs * per_epoch)), max(1, per_epoch // evals_per_epoch))


def _icml_entries(prefix: str, epochs: float, decay: float, evals_per_epoch: int = 1) -> list[Entry]:
    """Binary and ternary MSA against BinaryConnect, TWN and full-precision Adam on one
    ICML network (the authors' ρ, α schedule, λ and numerics; BN by Adam at 1e-3)."""
    binary = spec.DMSA(levels=2, rho=0.5, alpha_decay=decay, numerics=PAPER_DMSA_NUMERICS)
    ternary = spec.DMSA(levels=3, rho=0.25, alpha_decay=decay, numerics=PAPER_DMSA_NUMERICS)
    configs = [
        (f"{prefix}-binary", "dmsa-binary", binary),
        (f"{prefix}-binary", "bc", spec.STE(kind="bc")),
        (f"{prefix}-ternary", "dmsa-ternary", ternary),
        (f"{prefix}-ternary", "twn", spec.STE(kind="twn")),
        (prefix, "adam", spec.Adam(lr=MLP_ADAM_LR)),
    ]
    return [_epochs(problem, label, hp, epochs, evals_per_epoch) for problem, label, hp in configs]


def _jmlr_cnn_entries(problem: str, epochs: float) -> list[Entry]:
    """E-MSA against SGD, Adagrad and Adam on a JMLR residual CNN (the official config's
    ρ, regulariser and learning rates)."""
    configs = [
        ("emsa", spec.EMSA(rho=0.03, reg=JMLR_REG)),
        ("sgd", spec.SGD(lr=RESCNN_SGD_LR, reg=JMLR_REG)),
        ("adagrad", spec.Adagrad(lr=RESCNN_ADAGRAD_LR, reg=JMLR_REG)),
        ("adam", spec.Adam(lr=RESCNN_ADAM_LR, reg=JMLR_REG)),
    ]
    return [_epochs(problem, label, hp, epochs, PAPER_EVALS_PER_EPOCH) for label, hp in configs]


def _paper_icml() -> Suite:
    entries = [e for prefix, (epochs, d) in ICML_SETTINGS.items() for e in _icml_entries(prefix, epochs, d)]
    return Suite(
        "paper-icml",
        tuple(entries),
        backends=("torch", "jax"),
        seeds=(0,),
        description="ICML 2018: binary/ternary MSA vs BinaryConnect, TWN, Adam on MNIST, CIFAR-10, SVHN (needs a GPU)",
    )


def _paper_jmlr() -> Suite:
    sine = [(label, hp) for label, hp, _ in _sine_configs() if label in ("emsa", "sgd", "adagrad", "adam")]
    entries = [_entry(p, label, hp, JMLR_SINE_STEPS) for p in ("sine-resnet", "sine-resnet-zero") for label, hp in sine]
    entries += _jmlr_cnn_entries("mnist-rescnn", JMLR_CNN_EPOCHS) + _jmlr_cnn_entries("fashion-rescnn", JMLR_CNN_EPOCHS)
    return Suite(
        "paper-jmlr",
        tuple(entries),
        backends=("torch", "jax"),
        seeds=DEFAULT_SEEDS,
        description="JMLR 2018: E-MSA vs SGD, Adagrad, Adam on sine, MNIST, Fashion-MNIST (10 epochs)",
    )


def _repro_fashion() -> Suite:
    entries = _jmlr_cnn_entries("fashion-rescnn", REPRO_EPOCHS) + _icml_entries(
        "fashion-mlp", REPRO_EPOCHS, 0.95, PAPER_EVALS_PER_EPOCH
    )
    return Suite(
        "repro-fashion",
        tuple(entries),
        backends=("torch",),
        seeds=(0, 1),
        description="CPU reproduction: paper-jmlr's and the ICML MLP's settings on full Fashion-MNIST, 1 epoch",
    )


#: ``repro-sparsity``: epochs of the paper's α schedule (α's 1 - α decays once per epoch of
#: 550 steps, the ICML MNIST epoch, on both data sets), the most that fits this CPU
REPRO_SPARSITY_EPOCHS = 20
#: ``repro-jmlr-zero``: JMLR Fig. 1b's length, in iterations
REPRO_ZERO_STEPS = 10_000
REPRO_ZERO_EVAL_EVERY = 100


def _repro_sparsity() -> Suite:
    """Ternary MSA against TWN, the ICML sparsity claim at 20 of the paper's 250 epochs: the
    ICML MLP on the full Fashion-MNIST (an epoch is the paper's 550 steps), and the MNIST-5k
    stand-in for the same number of the paper's α epochs (α decays every 550 steps there
    too, about 16 of its own epochs). One evaluation per paper epoch, as the authors log."""
    steps = REPRO_SPARSITY_EPOCHS * PAPER_MNIST_EPOCH_STEPS
    ternary = {"levels": 3, "rho": 0.25, "numerics": PAPER_DMSA_NUMERICS}
    entries = [
        Entry(
            "fashion-mlp-ternary",
            "dmsa-ternary",
            spec.DMSA(**ternary, alpha_decay=0.95),
            steps,
            PAPER_MNIST_EPOCH_STEPS,
        ),
        Entry("fashion-mlp-ternary", "twn", spec.STE(kind="twn"), steps, PAPER_MNIST_EPOCH_STEPS),
        Entry(
            "mnist5k-mlp-ternary",
            "dmsa-ternary",
            spec.DMSA(**ternary, alpha_decay=0.95, alpha_decay_steps=PAPER_MNIST_EPOCH_STEPS),
            steps,
            PAPER_MNIST_EPOCH_STEPS,
        ),
        Entry("mnist5k-mlp-ternary", "twn", spec.STE(kind="twn"), steps, PAPER_MNIST_EPOCH_STEPS),
    ]
    return Suite(
        "repro-sparsity",
        tuple(entries),
        backends=("torch",),
        seeds=(0,),
        description="ICML sparsity claim at 20 paper epochs: ternary MSA vs TWN, full Fashion-MNIST and MNIST-5k",
    )


def _repro_jmlr_zero() -> Suite:
    """JMLR Fig. 1b at its length: from the all-zero sine init, E-MSA (with and without the
    authors' perturbation) against SGD and Adam for 10⁴ iterations."""
    configs = [(label, hp) for label, hp, _ in _sine_configs() if label in ("emsa", "sgd", "adam")] + [EMSA_NOPERTURB]
    entries = [Entry("sine-resnet-zero", label, hp, REPRO_ZERO_STEPS, REPRO_ZERO_EVAL_EVERY) for label, hp in configs]
    return Suite(
        "repro-jmlr-zero",
        tuple(entries),
        backends=("torch", "jax"),
        seeds=(0,),
        description="JMLR Fig. 1b at 10^4 iterations: E-MSA vs SGD, Adam from the all-zero sine init",
    )


#: ``ddpnopt``: DDPNOpt's learning-rate sensitivity (ICLR 2021: the feedback lowers it) on a
#: small fully connected net; the grid spans the base optimizer's stable range and past it
DDP_SENSITIVITY_PROBLEM = "digits-mlp"
DDP_SENSITIVITY_LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
DDP_SENSITIVITY_STEPS = 200
DDP_SENSITIVITY_SEEDS = (0, 1, 2, 3, 4)


def ddp_sensitivity_label(lr: float, feedback: bool) -> str:
    """``ddpnopt-lr0.001`` (with the feedback) or ``ddpnopt-open-lr0.001`` (its base optimizer)."""
    return f"ddpnopt{'' if feedback else '-open'}-lr{lr:g}"


def _ddpnopt() -> Suite:
    """DDPNOpt (RMSprop preconditioner, factored V_xx) against its own base optimizer, the
    same trainer with ``feedback=False``, over a learning-rate grid, 5 seeds."""
    entries = [
        _entry(
            DDP_SENSITIVITY_PROBLEM,
            ddp_sensitivity_label(lr, feedback),
            spec.DDPNOpt(lr=lr, feedback=feedback),
            DDP_SENSITIVITY_STEPS,
        )
        for lr in DDP_SENSITIVITY_LRS
        for feedback in (True, False)
    ]
    return Suite(
        "ddpnopt",
        tuple(entries),
        backends=("torch", "jax"),
        seeds=DDP_SENSITIVITY_SEEDS,
        description="ICLR 2021: DDPNOpt's sensitivity to the learning rate against its base optimizer (digits MLP)",
    )


#: suites before tuning (what ``tune`` searches around).
UNTUNED: dict[str, Suite] = {
    s.name: s
    for s in (
        _smoke(),
        _default(),
        _kernels(),
        _paper_icml(),
        _paper_jmlr(),
        _repro_fashion(),
        _repro_sparsity(),
        _repro_jmlr_zero(),
        _ddpnopt(),
        _gpu(),
    )
}


def build_suites(tuned: dict[str, dict[str, Any]]) -> dict[str, Suite]:
    """Every suite with ``tuned`` learning rates applied."""
    return {name: apply_tuned(s, tuned) for name, s in UNTUNED.items()}


#: set when ``tuned.json`` exists but cannot be read; the constants are used then.
TUNED_WARNING: str | None = None
try:
    SUITES: dict[str, Suite] = build_suites(load_tuned())
except ValueError as _e:
    TUNED_WARNING = f"{_e}; using the default learning rates"
    SUITES = dict(UNTUNED)


def get_suite(name: str) -> Suite:
    """The registered suite, or a one-line ``KeyError`` naming the known ones."""
    try:
        return SUITES[name]
    except KeyError:
        raise KeyError(f"unknown suite {name!r} (known: {', '.join(SUITES)})") from None
