"""Tiny problems for the test suite: the suite's model families at toy sizes.

Each is a ``suites.problems.Problem`` built directly, with a small in-memory data set, so
a reference (eager JAX, float64) step takes milliseconds and a whole test file runs in
seconds on two CPU cores. The load functions live at module level because
``Problem.arrays`` caches on the load function (``functools.cache``).

| name | layers | loss | weights |
|---|---|---|---|
| ``tiny-sine`` | 4 × ResDense(3, δ=0.25) + SumFeatures | mse | real, "good" init |
| ``tiny-sine-full`` | same, batch = the whole train split (full-batch E-MSA) | mse | real |
| ``tiny-bn-real`` | [Dense(6→10, no bias) BN ReLU]×2, Dense(10→3) BN | xent | real (Glorot) |
| ``tiny-bn-binary`` | same, quantized Dense | sqhinge | binary |
| ``tiny-bn-ternary`` | same, quantized Dense | xent | ternary |
| ``tiny-cnn`` | Conv(1→2) Tanh MaxPool2 ResConv(2, δ=0.5) Flatten Dense(18→3) | xent | real |

Training splits have 3 minibatches per epoch (so epoch-end logic, e.g. dmsa's α decay,
runs inside a 7-step test); the BN nets' batches have odd size (see ``BN_BATCH``). Classification labels come from a fixed random linear
teacher, so the problems are learnable and loss-decrease tests are meaningful.
"""

from __future__ import annotations

import numpy as np
import pytest

import implementations
from implementations import spec
from suites.architectures import bn_mlp
from suites.problems import Problem

_SIZES = {"train": 24, "val": 8, "test": 8}


def _split_seed(base: int, split: str) -> list[int]:
    return [base, ("train", "val", "test").index(split)]


def load_sine() -> dict:
    """x ~ U[-π, π] copied into 3 coordinates, y = sin x (the JMLR toy, width 3)."""
    out = {}
    for split, n in _SIZES.items():
        x = np.random.default_rng(_split_seed(101, split)).uniform(-np.pi, np.pi, (n, 1))
        out[split] = (np.repeat(x, 3, axis=1), np.sin(x))
    return out


def load_sine_full() -> dict:
    """The sine toy with 32 training samples (one full batch)."""
    out = {}
    for split, n in (("train", 32), ("val", 8), ("test", 8)):
        x = np.random.default_rng(_split_seed(102, split)).uniform(-np.pi, np.pi, (n, 1))
        out[split] = (np.repeat(x, 3, axis=1), np.sin(x))
    return out


def _teacher_labels(x: np.ndarray, n_classes: int, seed: int) -> np.ndarray:
    flat = x.reshape(len(x), -1)
    a = np.random.default_rng(seed).normal(size=(flat.shape[1], n_classes))
    return np.argmax(flat @ a, axis=1).astype(np.int64)


def load_vectors() -> dict:
    """45 training vectors in R⁶, labels from a random linear teacher, 3 classes."""
    out = {}
    for split, n in (("train", 45), ("val", 15), ("test", 15)):
        x = np.random.default_rng(_split_seed(103, split)).normal(size=(n, 6))
        out[split] = (x, _teacher_labels(x, 3, seed=203))
    return out


def load_images() -> dict:
    """24 training 1×6×6 images (standard normal pixels), teacher labels, 3 classes."""
    out = {}
    for split, n in _SIZES.items():
        x = np.random.default_rng(_split_seed(104, split)).normal(size=(n, 1, 6, 6))
        out[split] = (x, _teacher_labels(x, 3, seed=204))
    return out


def _sine_layers() -> tuple:
    return tuple(spec.ResDense(3, 0.25) for _ in range(4)) + (spec.SumFeatures(),)


def _bn_mlp(quantized: bool) -> tuple:
    return bn_mlp([6, 10, 10, 3], quantized)


def _cnn_layers() -> tuple:
    return (
        spec.Conv(1, 2),
        spec.Tanh(),
        spec.MaxPool2(),
        spec.ResConv(2, 0.5),
        spec.Flatten(),
        spec.Dense(2 * 3 * 3, 3),
    )


#: Odd on purpose: with squared hinge, BN's β_c starts at 0 and while every hinge of class c
#: is active ∂J/∂β_c ∝ Σ_s (z_sc - ỹ_sc) = -Σ_s ỹ_sc, which is exactly 0 whenever a batch
#: holds as many positives as negatives for c. Adam then turns the rounding noise of a zero
#: gradient (~1e-17) into a step of lr·noise/eps ≈ 1e-10 whose sign differs between
#: backends. An odd batch makes Σ_s ỹ_sc odd, never 0.
BN_BATCH = 15

SINE = Problem("tiny-sine", _sine_layers(), "mse", "real", 8, "good", load_sine)
SINE_FULL = Problem("tiny-sine-full", _sine_layers(), "mse", "real", 32, "good", load_sine_full)
BN_REAL = Problem("tiny-bn-real", _bn_mlp(False), "xent", "real", BN_BATCH, "glorot", load_vectors, n_classes=3)
BN_BINARY = Problem(
    "tiny-bn-binary", _bn_mlp(True), "sqhinge", "binary", BN_BATCH, "latent-uniform", load_vectors, n_classes=3
)
BN_TERNARY = Problem(
    "tiny-bn-ternary", _bn_mlp(True), "xent", "ternary", BN_BATCH, "latent-uniform", load_vectors, n_classes=3
)
CNN = Problem("tiny-cnn", _cnn_layers(), "xent", "real", 8, "good", load_images, n_classes=3)

PROBLEMS = {p.name: p for p in (SINE, SINE_FULL, BN_REAL, BN_BINARY, BN_TERNARY, CNN)}


def first_batches(problem: Problem, n: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """The first ``n`` training minibatches every backend sees for ``seed``."""
    it = problem.batches("train", seed)
    return [next(it) for _ in range(n)]


def make_trainer(backend: str, algorithm: str, problem: Problem, hp, dtype: str):
    """A trainer from the registry; a backend's tests skip cleanly where its package is missing."""
    needs = {
        "torch": ("torch",),
        "torch-compile": ("torch",),
        "jax": ("jax", "optax"),
        "triton": ("torch", "triton"),
        "cuda": ("torch",),
    }
    for package in needs.get(backend, ()):
        pytest.importorskip(package)
    return implementations.get(algorithm, backend)(problem, hp, dtype=dtype, device="cpu", seed=0)
