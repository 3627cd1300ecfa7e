"""The registry: which (algorithm, backend) pairs exist, and why a cell cannot run.

The algorithms are ``spec.HYPERPARAMETERS`` (one table: id, hyperparameters, module
name, weights trained); ``REGISTRY`` maps ``(algorithm, backend)`` to the
``"implementations.<backend>.<algorithm>:make"`` that builds its trainer. Modules are
imported only when asked for, so a machine without JAX can still run the torch backend. The kernel
backends (triton, cuda) register only the algorithms their ops serve (dmsa, emsa), and an
algorithm of ``PARTIAL_ALGORITHMS`` only the backends written so far (none at present:
DDPNOpt, the last one, now runs in every backend); a pair left out is ``why_not``'s reason and a ``skipped`` row, never a crash.

    make = implementations.get("emsa", "torch")
    trainer = make(problem, EMSA(rho=1.0), dtype="float32", device="cpu", seed=0)

``make(problem, hp, *, dtype, device, seed) -> spec.Trainer``. ``seed`` feeds only the
algorithm's own randomness (binary/ternary MSA's initial M̄, stochastic BinaryConnect),
drawn from NumPy so that every backend draws the same numbers.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
from collections.abc import Callable
from typing import Any

from implementations import spec

ALGORITHMS = tuple(spec.BY_ID)
BACKENDS = ("reference", "torch", "jax", "triton", "cuda", "torch-compile")
#: kernel backends swap ops, not algorithms: they implement these algorithms only.
KERNEL_BACKENDS = ("triton", "cuda")
KERNEL_ALGORITHMS = ("dmsa", "emsa")

#: algorithms written so far in some backends only (algorithm -> those backends); empty
#: now, kept for the next algorithm that lands one backend at a time
PARTIAL_ALGORITHMS: dict[str, tuple[str, ...]] = {}


def _registered(alg: str, backend: str) -> bool:
    if alg in PARTIAL_ALGORITHMS:
        return backend in PARTIAL_ALGORITHMS[alg]
    return backend not in KERNEL_BACKENDS or alg in KERNEL_ALGORITHMS


def _maker(alg: str, backend: str) -> str:
    """``"module:make"``: one file per algorithm and backend, except torch-compile, whose
    one ``make`` compiles the torch backend's trainer of any algorithm."""
    if backend == "torch-compile":
        return "implementations.torch_compile:make"
    return f"implementations.{backend}.{alg}:make"


#: (algorithm, backend) -> "module:make"
REGISTRY: dict[tuple[str, str], str] = {
    (alg, backend): _maker(alg, backend) for backend in BACKENDS for alg in ALGORITHMS if _registered(alg, backend)
}

#: packages a backend imports; a missing one makes its cells ``skipped``.
_BACKEND_PACKAGES = {
    "reference": ("jax", "optax"),
    "torch": ("torch",),
    "jax": ("jax", "optax"),
    "triton": ("torch", "triton"),
    "cuda": ("torch",),
    "torch-compile": ("torch",),
}

#: inner solvers (MSA, E-MSA) that only some backends implement, and which.
_INNER_SOLVER_BACKENDS = {"optax-lbfgs": ("reference", "jax")}


def _check_names(algorithm: str, backend: str) -> None:
    if algorithm not in ALGORITHMS:
        raise KeyError(f"unknown algorithm {algorithm!r} (known: {', '.join(ALGORITHMS)})")
    if backend not in BACKENDS:
        raise KeyError(f"unknown backend {backend!r} (known: {', '.join(BACKENDS)})")


def get(algorithm: str, backend: str) -> Callable[..., spec.Trainer]:
    """The ``make`` of an (algorithm, backend) pair, imported now."""
    _check_names(algorithm, backend)
    if (algorithm, backend) not in REGISTRY:
        raise KeyError(_not_implemented(algorithm, backend))
    module, name = REGISTRY[(algorithm, backend)].split(":")
    return getattr(importlib.import_module(module), name)


def _missing_packages(backend: str) -> list[str]:
    return [p for p in _BACKEND_PACKAGES[backend] if importlib.util.find_spec(p) is None]


def _not_implemented(algorithm: str, backend: str) -> str:
    if algorithm in PARTIAL_ALGORITHMS:
        return f"{algorithm} is implemented in the {' and '.join(PARTIAL_ALGORITHMS[algorithm])} backend only so far"
    return f"the {backend} backend implements {' and '.join(KERNEL_ALGORITHMS)} only, not {algorithm}"


def _cuda_available(backend: str) -> bool:
    """Whether ``backend``'s framework sees a CUDA device."""
    if backend == "jax":
        if importlib.util.find_spec("jax") is None:
            return False
        import jax

        try:
            return bool(jax.devices("gpu"))
        except RuntimeError:  # no GPU backend in this jaxlib, or no device
            return False
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def why_not(hp: Any, backend: str, problem: Any = None, device: str = "cpu") -> list[str]:
    """Reasons the cell (hyperparameters ``hp`` or an algorithm id, on ``backend``,
    ``problem``, ``device``) cannot run here; empty when it can."""
    algorithm = hp if isinstance(hp, str) else spec.algorithm_id(hp)
    _check_names(algorithm, backend)
    if (algorithm, backend) not in REGISTRY:
        return [_not_implemented(algorithm, backend)]
    reasons = [f"package {p!r} is not installed" for p in _missing_packages(backend)]
    if backend in KERNEL_BACKENDS and device != "cuda":
        reasons.append("needs a CUDA device (the kernels run on a GPU; this run is on the CPU)")
    if device == "cuda":
        if backend == "reference":
            reasons.append("the reference backend runs on the CPU only")
        elif not _cuda_available(backend):
            reasons.append("needs a CUDA device, and none is visible")
    inner = getattr(hp, "inner", None)
    if inner in _INNER_SOLVER_BACKENDS and backend not in _INNER_SOLVER_BACKENDS[inner]:
        reasons.append(
            f"inner solver {inner!r} runs in the {' and '.join(_INNER_SOLVER_BACKENDS[inner])} backends only"
        )
    if backend == "torch-compile" and not isinstance(hp, str):
        from implementations import torch_compile

        reasons += torch_compile.why_not(hp)
    if backend in KERNEL_BACKENDS and algorithm == "emsa" and not isinstance(hp, str):
        if problem is not None and not _has_dense_stack(problem.layers):
            reasons.append(f"the {backend} E-MSA kernel needs a stack of dense residual layers")
        if getattr(hp, "inner", None) not in ("gd", "adam"):
            reasons.append(f"the {backend} E-MSA kernel runs the gd and adam inner solvers, not {hp.inner!r}")
    if problem is not None and not isinstance(hp, str):
        wanted = hp.weights_trained()
        if problem.weights != wanted:
            reasons.append(
                f"{algorithm} trains {wanted} weights; problem {problem.name!r} has {problem.weights} weights"
            )
    return reasons


def _has_dense_stack(layers) -> bool:
    return any(isinstance(a, spec.ResDense) and a == b for a, b in itertools.pairwise(layers))
