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
from tests import thresholds

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
    """The kernels against the torch op on the device, float32, with the CPU tests' rule:
    inputs drawn so that every decision is ``thresholds.MARGIN`` (~80 float32 ulps) from
    its threshold, then W', flips and non-zeros exactly equal; M̄' within twice torch's own
    float32 error against float64 (plus one float32 ulp of max|M̄'|)."""
    ops = _kernel_ops(backend)
    alpha = 0.9
    m_bar, m, w = (torch.tensor(a, device="cuda") for a in thresholds.clear_inputs((n,), levels, seed=n, alpha=alpha))
    kw = {"alpha": alpha, "one_minus_alpha": 1 - alpha, "rho": thresholds.RHO[levels], "levels": levels}
    kw["lam"] = thresholds.LAM
    exact = torch_ops.dmsa_update(m_bar, m, w, **kw)
    ref = torch_ops.dmsa_update(m_bar.float(), m.float(), w.float(), **kw)
    got = ops.dmsa_update(m_bar.float(), m.float(), w.float(), **kw)
    err_ref = float((ref[0].double() - exact[0]).abs().max())
    err_got = float((got[0].double() - exact[0]).abs().max())
    assert err_got <= 2 * err_ref + float(exact[0].abs().max()) * 2**-23
    assert torch.equal(got[1], ref[1]) and torch.equal(got[1].double(), exact[1])
    assert int(got[2]) == int(ref[2]) == int(exact[2])


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
    and parameters stay within 1e-9 (relative) of the torch backend's.

    Why 1e-9: in float64 the kernels and torch evaluate the same sums in other orders, a
    few ulps (1e-16) apart per op; on the CPU the parity table measures ≤ 2e-15 after 7
    steps for E-MSA with adam and exact discrete decisions for binary/ternary MSA (whose
    M̄ entries sit far above 1e-9 of their thresholds at these scales), so 20 steps leave
    10⁴× headroom; a wrong term or a float32 parameter (the Triton scalar defect) moves
    the result by ≥ 1e-8."""
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


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_float64_parameters_stay_float64(backend):
    """A float64 update with α that float32 cannot hold: M̄' equals torch's float64 to the
    last few ulps (a float32 α, as Triton types a Python float, would be ~1e-8 off)."""
    ops = _kernel_ops(backend)
    alpha = 0.9990000123456789
    m_bar, m, w = (torch.tensor(a, device="cuda") for a in thresholds.clear_inputs((5000,), 3, seed=5, alpha=alpha))
    kw = {"alpha": alpha, "one_minus_alpha": 1 - alpha, "rho": thresholds.RHO[3], "levels": 3, "lam": thresholds.LAM}
    torch.testing.assert_close(
        ops.dmsa_update(m_bar, m, w, **kw)[0], torch_ops.dmsa_update(m_bar, m, w, **kw)[0], rtol=1e-14, atol=0
    )


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_emsa_dense_grad_is_run_to_run_identical(backend):
    """Fixed-order sums: the same inputs give bit-identical gradients on every call (the
    CUDA kernel once accumulated with atomicAdd, whose order varies between launches)."""
    ops = _kernel_ops(backend)
    g = torch.Generator(device="cuda").manual_seed(1)
    shapes = [(20, 5, 5), (20, 5)] + [(20, 1000, 5)] * 4
    inputs = [torch.randn(s, device="cuda", generator=g) for s in shapes]
    kw = {"delta": 0.25, "rho": 1.0, "reg": 1e-3}
    first = ops.emsa_dense_grad(*inputs, **kw)
    for _ in range(5):
        again = ops.emsa_dense_grad(*inputs, **kw)
        assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_binding_refuses_mixed_devices_and_dtypes():
    """The CUDA binding's emsa_dense_grad names the problem in one line instead of reading
    a CPU pointer or the wrong element size on the device."""
    from implementations.cuda import ops

    shapes = [(2, 3, 3), (2, 3)] + [(2, 4, 3)] * 4
    on_gpu = [torch.randn(s, device="cuda") for s in shapes]
    kw = {"delta": 0.25, "rho": 1.0, "reg": 1e-3}
    with pytest.raises(RuntimeError, match="one CUDA device"):
        ops.emsa_dense_grad(*on_gpu[:-1], on_gpu[-1].cpu(), **kw)
    with pytest.raises(RuntimeError, match="one dtype"):
        ops.emsa_dense_grad(*on_gpu[:-1], on_gpu[-1].double(), **kw)
