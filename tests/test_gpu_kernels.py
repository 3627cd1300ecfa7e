"""On a CUDA device only (skipped elsewhere, with the reason): the Triton and CUDA ops
against the torch ops on the device, and whole binary-MSA and E-MSA runs of the kernel
backends against the torch backend's trajectory."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none visible here)")

import implementations
from implementations import spec
from implementations.torch import ops as torch_ops
from suites import problems

KERNEL_BACKENDS = ("triton", "cuda")


def _kernel_ops(backend: str):
    if backend == "triton":
        pytest.importorskip("triton")
        from implementations.triton import ops
    else:
        from implementations.cuda import ops
    return ops


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("levels", [2, 3])
@pytest.mark.parametrize("n", [1, 1000, 4097, 1 << 20])
def test_dmsa_update_on_device(backend, levels, n):
    ops = _kernel_ops(backend)
    g = torch.Generator(device="cuda").manual_seed(n)
    m_bar = torch.randn(n, device="cuda", generator=g) * 1e-3
    m = torch.randn(n, device="cuda", generator=g) * 1e-3
    w = torch.randint(-1, 2, (n,), device="cuda", generator=g).float()
    w = w if levels == 3 else torch.where(w >= 0, 1.0, -1.0)
    kw = {"alpha": 0.9, "one_minus_alpha": 1 - 0.9, "rho": 0.5, "levels": levels, "lam": 1e-5}
    ref = torch_ops.dmsa_update(m_bar, m, w, **kw)
    got = ops.dmsa_update(m_bar, m, w, **kw)
    torch.testing.assert_close(got[0], ref[0], rtol=0, atol=2 * float(ref[0].abs().max()) * 2**-23)
    # discrete outputs: equal except where M̄' is within float32 rounding of a threshold
    differ = int((got[1] != ref[1]).sum())
    assert differ <= max(1, n // 100_000), f"{differ} weights differ"
    assert abs(int(got[2]) - int(ref[2])) <= differ


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_emsa_dense_grad_on_device(backend):
    ops = _kernel_ops(backend)
    g = torch.Generator(device="cuda").manual_seed(0)
    shapes = [(20, 5, 5), (20, 5)] + [(20, 100, 5)] * 4
    inputs = [torch.randn(s, device="cuda", generator=g) for s in shapes]
    kw = {"delta": 0.25, "rho": 1.0, "reg": 1e-3}
    exact = torch_ops.emsa_dense_grad(*(t.double() for t in inputs), **kw)
    theirs = torch_ops.emsa_dense_grad(*inputs, **kw)
    mine = ops.emsa_dense_grad(*inputs, **kw)
    for e, t, m in zip(exact, theirs, mine):
        err_t, err_m = float((t.double() - e).abs().max()), float((m.double() - e).abs().max())
        assert err_m <= 2 * err_t + 4 * float(e.abs().max()) * 2**-23


CASES = [
    ("mnist5k-mlp-binary", spec.DMSA(levels=2, rho=0.5)),
    ("mnist5k-mlp-ternary", spec.DMSA(levels=3, rho=0.25)),
    ("sine-resnet", spec.EMSA(rho=1.0, inner="adam", inner_steps=10, inner_lr=0.01)),
]


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize(("problem_name", "hp"), CASES, ids=[c[0] for c in CASES])
def test_whole_run_matches_torch(backend, problem_name, hp):
    """20 float64 steps from the same parameters and batches: the kernel backend's losses
    and parameters stay within 1e-9 (relative) of the torch backend's."""
    problem = problems.get_problem(problem_name)
    algorithm = spec.algorithm_id(hp)
    if backend == "triton":
        pytest.importorskip("triton")
    runs = []
    for b in ("torch", backend):
        trainer = implementations.get(algorithm, b)(problem, hp, dtype="float64", device="cuda", seed=0)
        state, stream, losses = trainer.init(problem.init_params(0)), problem.batches("train", 0), []
        for _ in range(20):
            state, metrics = trainer.step(state, trainer.put(next(stream)))
            losses.append(float(metrics["loss"]))
        runs.append((losses, trainer.get(state)))
    np.testing.assert_allclose(runs[1][0], runs[0][0], rtol=1e-9)
    for a, b in zip(runs[0][1], runs[1][1]):
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-9 * float(np.max(np.abs(a))))
