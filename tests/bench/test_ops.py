"""Op- and step-level microbenchmarks (pytest-benchmark, pedantic, warmed up): the hot
operations of the MSA family in each backend, and one training step per algorithm family
on a small problem. ``nox -s microbench`` saves each run under ``.benchmarks/`` and fails
when a median is past the threshold against the previous saved run.

    MSABENCH_BENCHMARKS=1 pytest tests/bench/test_ops.py --benchmark-only
"""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest

import implementations
from implementations import spec
from suites import problems

DEVICE = os.environ.get("MSABENCH_DEVICE", "cpu")
SIZES = (256, 1024)  # a square quantized layer: 65k and 1M weights


def _dmsa_inputs(n: int, levels: int):
    rng = np.random.default_rng(0)
    m_bar, m = rng.normal(size=(n, n)) * 1e-3, rng.normal(size=(n, n)) * 1e-3
    w = rng.integers(-1 if levels == 3 else 0, 2, size=(n, n)).astype(np.float64)
    return m_bar, m, (w if levels == 3 else 2 * w - 1)


def _dmsa_callable(backend: str, n: int, levels: int):
    """``run()`` applies dmsa_update once and waits for the result."""
    m_bar, m, w = _dmsa_inputs(n, levels)
    kwargs = {"alpha": 0.99, "one_minus_alpha": 1 - 0.99, "rho": 0.5, "levels": levels, "lam": 1e-7}
    if backend == "torch":
        torch = pytest.importorskip("torch")
        from implementations.torch import ops

        dev = torch.device(DEVICE)
        args = [torch.as_tensor(a, dtype=torch.float32, device=dev) for a in (m_bar, m, w)]

        def run():
            out = ops.dmsa_update(*args, **kwargs)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            return out

        return run
    jax = pytest.importorskip("jax")
    from implementations.jax import ops

    rest = {k: v for k, v in kwargs.items() if k not in ("alpha", "one_minus_alpha")}
    # α and 1 - α traced: one compile
    update = jax.jit(lambda a, b, c, alpha, beta: ops.dmsa_update(a, b, c, alpha=alpha, one_minus_alpha=beta, **rest))
    args = [jax.numpy.asarray(a, dtype=jax.numpy.float32) for a in (m_bar, m, w)]
    alpha, beta = np.float32(0.99), np.float32(1 - 0.99)

    def run():
        return jax.block_until_ready(update(*args, alpha, beta))

    return run


@pytest.mark.parametrize("levels", [2, 3], ids=["binary", "ternary"])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_dmsa_update(benchmark, backend, n, levels):
    run = _dmsa_callable(backend, n, levels)
    benchmark.group = f"dmsa_update {n}x{n} levels={levels}"
    benchmark.extra_info.update(op="dmsa_update", backend=backend, n=n, levels=levels, device=DEVICE)
    benchmark.pedantic(run, rounds=30, iterations=1, warmup_rounds=3)
    # a benchmark of a broken op is worthless: its output stays on the allowed levels
    _, w_new, flips = run()
    allowed = {-1.0, 1.0} if levels == 2 else {-1.0, 0.0, 1.0}
    assert set(np.unique(np.asarray(w_new, dtype=np.float64)).tolist()) <= allowed
    assert 0 <= int(flips) <= n * n


STEP_CASES = [
    ("digits-mlp-binary", spec.DMSA(levels=2, rho=0.5)),
    ("digits-mlp-ternary", spec.STE(kind="twn")),
    ("digits-mlp", spec.Adam(lr=1e-3)),
    ("sine-resnet", spec.EMSA(rho=1.0, inner="adam", inner_steps=5, inner_lr=0.01)),
]


@pytest.mark.parametrize("backend", ["torch", "jax"])
@pytest.mark.parametrize(("problem_name", "hp"), STEP_CASES, ids=[f"{p}-{spec.algorithm_id(h)}" for p, h in STEP_CASES])
def test_step(benchmark, backend, problem_name, hp):
    problem = problems.get_problem(problem_name)
    reasons = implementations.why_not(hp, backend, problem, DEVICE)
    if reasons:
        pytest.skip("; ".join(reasons))
    trainer = implementations.get(spec.algorithm_id(hp), backend)(problem, hp, dtype="float32", device=DEVICE, seed=0)
    stream = problem.batches("train", 0)
    ring = itertools.cycle([trainer.put(next(stream)) for _ in range(4)])
    box = {"state": trainer.init(problem.init_params(0))}

    def one_step():
        box["state"], box["metrics"] = trainer.step(box["state"], next(ring))
        trainer.sync(box["state"])

    benchmark.group = f"step {problem_name} {spec.algorithm_id(hp)}"
    benchmark.extra_info.update(problem=problem_name, algorithm=spec.algorithm_id(hp), backend=backend, device=DEVICE)
    benchmark.pedantic(one_step, rounds=30, iterations=1, warmup_rounds=3)
    assert np.isfinite(float(box["metrics"]["loss"]))  # timed steps that trained, not ones that broke
