"""Shared fixtures: a fake backend for testing the runner, the CLI and tuning without
training anything.

``fake_backend`` registers a backend named ``fake`` (by monkeypatching the registry's
``BACKENDS``, ``get`` and ``why_not``) whose trainers run in microseconds on NumPy. Each
algorithm's behaviour is set per test through ``fake.modes[algorithm]``:

- ``ok``: loss 1/k at step k;
- ``diverge``: the step loss is NaN from step ``fake.bad_step`` on;
- ``error``: ``step`` raises at step ``fake.bad_step``;
- ``flips``: like ``ok`` and reports 3 flips per step;
- ``skip``: ``why_not`` gives a reason;
- ``missing``: ``get`` raises ``ModuleNotFoundError`` for the backend module.

``fake.events`` logs ``sync``, ``step`` and ``read`` (a step metric turned into a float)
in order, so tests can check the timing protocol; ``fake.made`` lists the (algorithm, lr)
of every trainer built.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import pytest

import implementations
from suites import grids


# One persistent XLA compilation cache for the whole test session, shared by the
# pytest-xdist workers and every process the tests start (they inherit the environment):
# the parity, checkpoint and jax tests build the same jitted steps again and again (two
# trainers per checkpoint case), and a cache hit skips XLA's compile, which was most of
# those tests' time. The session that creates the folder removes it at the end, so each
# test session starts cold and a cache never outlives the jax that wrote it. Tests that
# count compilations count cache loads too (``tests/test_jax.py``'s ``CompileCounter``).
def _session_compilation_cache() -> str | None:
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:  # a worker of this session, or the user's own
        return None
    folder = tempfile.mkdtemp(prefix="msabench-test-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = folder
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"  # the default, 1 s, skips most
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    if "jax" in sys.modules:  # imported before this file (a plugin): its config read the env already
        jax = sys.modules["jax"]
        jax.config.update("jax_compilation_cache_dir", folder)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder


_CREATED_CACHE = _session_compilation_cache()


# Each pytest-xdist worker gets its share of the cores for its intra-op threads, as the
# runner gives each cell (``executors.set_threads``): with torch's, XLA's and OpenBLAS's
# default pools of one thread per core in every worker, two workers on two cores fought
# over them (the torch parity and checkpoint tests: 133 s against 99 s with one thread
# each). Without xdist nothing changes.
if os.environ.get("PYTEST_XDIST_WORKER"):
    from threadpoolctl import threadpool_limits

    from suites import executors

    _WORKER_THREADS = executors.worker_threads(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    executors.set_threads(_WORKER_THREADS)
    threadpool_limits(_WORKER_THREADS)  # the BLAS pools already loaded (NumPy's OpenBLAS)


def pytest_unconfigure(config):
    if _CREATED_CACHE is not None and not hasattr(config, "workerinput"):
        shutil.rmtree(_CREATED_CACHE, ignore_errors=True)


class Scalar:
    """A device-scalar stand-in that logs when the runner reads it."""

    def __init__(self, value: float, events: list[str]):
        self.value = value
        self.events = events

    def __array__(self, dtype=None, copy=None):
        self.events.append("read")
        return np.asarray(self.value, dtype=dtype)


@dataclass
class Fake:
    modes: dict[str, str] = field(default_factory=dict)
    bad_step: int = 4
    events: list[str] = field(default_factory=list)
    made: list[tuple[str, float | None]] = field(default_factory=list)
    #: predict's output for a trainer of learning rate lr: val_target + 10 (lr - best_lr)
    best_lr: float = 0.1
    #: (lr, seed) pairs that diverge whatever the mode (a rate unstable on one seed only)
    unstable: set[tuple[float, int]] = field(default_factory=set)

    def mode(self, algorithm: str) -> str:
        return self.modes.get(algorithm, "ok")

    def make(self, algorithm: str):
        fake = self

        def make(problem, hp, *, dtype, device, seed):
            lr = getattr(hp, "lr", None)
            mode = "diverge" if (lr, seed) in fake.unstable else fake.mode(algorithm)
            fake.made.append((algorithm, lr))
            # a constant prediction whose validation loss is smallest at lr == best_lr
            y_val = problem.arrays("val")[1]
            offset = float(np.mean(y_val)) + 10.0 * ((lr if lr is not None else fake.best_lr) - fake.best_lr)

            def init(params):
                return {"params": [np.array(p, dtype=np.float64) for p in params], "k": 0}

            def put(batch):
                return batch

            def step(state, batch):
                fake.events.append("step")
                k = state["k"] + 1
                if mode == "error" and k >= fake.bad_step:
                    raise RuntimeError("fake failure\non two lines")
                time.sleep(0.0005)
                if mode == "allocate":  # 200 MiB, touched so that it is resident, then freed
                    np.ones(200 * 1024 * 1024 // 8).sum()
                loss = float("nan") if mode == "diverge" and k >= fake.bad_step else 1.0 / k
                metrics = {"loss": Scalar(loss, fake.events)}
                if mode == "flips":
                    metrics["flips"] = Scalar(3.0, fake.events)
                params = [p * 0.5 for p in state["params"]]
                return {"params": params, "k": k}, metrics

            def get(state):
                return state["params"]

            def predict(state, x):
                bad = mode == "diverge" and state["k"] >= fake.bad_step
                return np.full((len(x), 1), np.nan if bad else offset)

            def sync(state):
                fake.events.append("sync")

            def state_arrays(state):
                return implementations.spec.named_arrays("params", state["params"]) | {"step": np.asarray(state["k"])}

            def restore(arrays):
                fake.events.append(f"restore@{int(arrays['step'])}")
                return {"params": implementations.spec.initial_params_of(arrays), "k": int(arrays["step"])}

            return implementations.spec.Trainer(init, put, step, get, predict, sync, state_arrays, restore)

        return make


@pytest.fixture
def fake_backend(monkeypatch) -> Fake:
    """Register the ``fake`` backend for the duration of a test."""
    fake = Fake()
    real_get, real_why_not = implementations.get, implementations.why_not

    def get(algorithm, backend):
        if backend != "fake":
            return real_get(algorithm, backend)
        if fake.mode(algorithm) == "missing":
            name = f"implementations.fake.{algorithm}"
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return fake.make(algorithm)

    def why_not(hp, backend, problem=None, device="cpu"):
        if backend != "fake":
            return real_why_not(hp, backend, problem, device)
        algorithm = hp if isinstance(hp, str) else implementations.spec.algorithm_id(hp)
        return ["the fake accelerator is unplugged"] if fake.mode(algorithm) == "skip" else []

    monkeypatch.setattr(implementations, "BACKENDS", (*implementations.BACKENDS, "fake"))
    monkeypatch.setattr(implementations, "get", get)
    monkeypatch.setattr(implementations, "why_not", why_not)
    return fake


def tiny_suite(name: str = "tiny", steps: int = 7, eval_every: int = 3, seeds=(0,)) -> grids.Suite:
    """Three entries on the (cheap, generated) sine problem, on the fake backend."""
    spec = implementations.spec
    return grids.Suite(
        name,
        (
            grids.Entry("sine-resnet", "sgd", spec.SGD(lr=0.1), steps, eval_every),
            grids.Entry("sine-resnet", "adagrad", spec.Adagrad(lr=0.1), steps, eval_every),
            grids.Entry("sine-resnet", "adam", spec.Adam(lr=0.005), steps, eval_every),
        ),
        backends=("fake",),
        seeds=seeds,
    )


@pytest.fixture
def tiny(monkeypatch, fake_backend) -> grids.Suite:
    """``tiny_suite()`` registered as the suite ``tiny`` (for CLI tests)."""
    suite = tiny_suite()
    monkeypatch.setitem(grids.SUITES, "tiny", suite)
    return suite
