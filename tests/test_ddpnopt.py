"""DDPNOpt's exact properties (shared/ALGORITHMS.md §5) on the float64 oracle, and the
ones that hold exactly in every backend (open loop = the base optimizer, one controlled
layer = the base optimizer, factored = dense from ∇Φ∇Φᵀ) in torch and jax too; their
step-by-step agreement with the oracle is ``tests/test_parity.py``'s (DDPNOpt's rows),
float32 and compile-once are ``tests/test_jax.py``'s, save/restore is
``tests/test_checkpoint_state.py``'s, all driven by the parity table.

Tolerances: float64 ε ≈ 2.2e-16. Each comparison evaluates the same formulas in a
different operation order (torch.optim against the oracle, the rank-one factored update
against dense matrices, a closed-form solve against the backward recursion), so single
ops differ by a few ulp. Measured worst relative differences: 2.4e-15 (open loop against
torch.optim, 5 steps), 1.0e-15 (factored against dense, 3 steps), ~1e-13 (the
linear-quadratic solve, whose random 6×6 system is mildly ill-conditioned). ``RTOL =
1e-10`` leaves ≥ 1000× headroom; a wrong term (a missing 1/S, ε_V in the wrong place, a
batch-mean δx) changes the result by the size of that term, far above it.
"""

from __future__ import annotations

import numpy as np
import pytest

import implementations
from implementations import spec
from implementations.reference import ddp, ddpnopt, pmp
from suites.problems import Problem
from tests import tiny

RTOL = 1e-10  # see module docstring
PRECONDS = spec.DDP_PRECONDITIONERS
BACKENDS = ("reference", "torch", "jax")
ONE_LAYER = Problem(
    "tiny-one-layer", (spec.Tanh(), spec.Dense(6, 3)), "xent", "real", 15, "glorot", tiny.load_vectors, n_classes=3
)


def _base(precond: str, lr: float, wd: float):
    """The base optimizer of a DDPNOpt preconditioner, with the same fields."""
    if precond == "sgd":
        return "sgd", spec.SGD(lr=lr, reg=wd)
    if precond == "rmsprop":
        return "rmsprop", spec.RMSprop(lr=lr, alpha=0.9, eps=1e-8, reg=wd)
    return "adam", spec.Adam(lr=lr, b1=0.8, b2=0.99, eps=1e-8, reg=wd)


def _ddp_hp(precond: str, lr: float, wd: float, **kw) -> spec.DDPNOpt:
    """DDPNOpt with ``_base``'s optimizer fields (α, b1, b2 away from the defaults, so a
    field passed to the wrong place shows)."""
    return spec.DDPNOpt(
        **{"lr": lr, "precond": precond, "rms_alpha": 0.9, "b1": 0.8, "b2": 0.99, "eps": 1e-8, "weight_decay": wd} | kw
    )


def _ddp_trainer(backend: str, problem: Problem, hp: spec.DDPNOpt, **kw):
    """A float64 DDPNOpt trainer of ``backend`` (``kw``: the test-only ``dense_terminal``)."""
    if backend != "reference":
        pytest.importorskip(backend)
    return implementations.get("ddpnopt", backend)(problem, hp, dtype="float64", device="cpu", seed=0, **kw)


def _close(a, b, what: str, rtol: float = RTOL) -> None:
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * float(np.max(np.abs(b), initial=0.0)), err_msg=what)


def _trajectory(trainer, problem, steps: int, batches=None):
    """The state arrays after each step, and the losses."""
    state, out = trainer.init(problem.init_params(0)), []
    for batch in batches or tiny.first_batches(problem, steps):
        state, metrics = trainer.step(state, trainer.put(batch))
        out.append((trainer.state_arrays(state), float(np.asarray(metrics["loss"])), metrics))
    return out


def _assert_same_trajectory(got, want, label: str, rtol: float = RTOL) -> None:
    for k, ((a, loss_a, _), (b, loss_b, _)) in enumerate(zip(got, want, strict=True)):
        assert sorted(a) == sorted(b), f"{label}: step {k}: keys {sorted(set(a) ^ set(b))}"
        _close(loss_a, loss_b, f"{label}: step {k}: loss", rtol)
        for key in b:
            _close(a[key], b[key], f"{label}: step {k}: {key}", rtol)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("problem", [tiny.SINE, tiny.BN_REAL], ids=lambda p: p.name)
@pytest.mark.parametrize("precond", PRECONDS)
def test_open_loop_is_the_base_optimizer(precond: str, problem: Problem, backend: str) -> None:
    """``feedback=False``: every step equals torch.optim's SGD / RMSprop / Adam step, in
    the parameters, BN's statistics and the optimizer's state, for 5 steps."""
    name, base_hp = _base(precond, 0.01, 1e-3)
    want = _trajectory(tiny.make_trainer("torch", name, problem, base_hp, "float64"), problem, 5)
    got = _trajectory(_ddp_trainer(backend, problem, _ddp_hp(precond, 0.01, 1e-3, feedback=False)), problem, 5)
    _assert_same_trajectory(got, want, f"{backend}: {precond} on {problem.name}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("vxx", spec.DDP_VXX)
@pytest.mark.parametrize("precond", PRECONDS)
def test_one_controlled_layer_is_the_base_optimizer(precond: str, vxx: str, backend: str) -> None:
    """One controlled stage (a Tanh folded into it): δx_0 = 0, so with feedback and ε_V
    the step is still the base optimizer's (the same backend's baseline: torch.optim in
    torch, optax in jax)."""
    name, base_hp = _base(precond, 0.05, 1e-3)
    want = _trajectory(tiny.make_trainer(backend, name, ONE_LAYER, base_hp, "float64"), ONE_LAYER, 5)
    hp = _ddp_hp(precond, 0.05, 1e-3, vxx=vxx, vxx_reg=0.1)
    got = _trajectory(_ddp_trainer(backend, ONE_LAYER, hp), ONE_LAYER, 5)
    _assert_same_trajectory(got, want, f"{backend}: {precond}, {vxx}")


def _linear_stage(a: np.ndarray, b: np.ndarray) -> ddp.Dynamics:
    """x' = A x + B u, u the stage's parameter vector."""

    def batch(u, x):
        return x @ a.T + u @ b.T

    return ddp.Dynamics(batch, lambda x_nominal: batch)


def test_linear_quadratic_problem_is_solved_in_one_step() -> None:
    """Linear dynamics, quadratic Φ and ℓ, one sample, M = the exact Q_θθ, η = 1, ε_V = 0:
    one dense DDP step lands on the minimiser, computed here in closed form."""
    rng = np.random.default_rng(7)
    dims, n_u, wd = [3, 4, 2, 3], 2, 0.3
    a_mats = [rng.normal(size=(dims[t + 1], dims[t])) for t in range(3)]
    b_mats = [rng.normal(size=(dims[t + 1], n_u)) for t in range(3)]
    root = rng.normal(size=(dims[-1], dims[-1]))
    q, c = root @ root.T + np.eye(dims[-1]), rng.normal(size=dims[-1])
    x0, u0 = rng.normal(size=(1, dims[0])), [rng.normal(size=n_u) for _ in range(3)]

    def phi(x, y):
        return 0.5 * x @ q @ x + c @ x

    def exact_curvature(t, g, curvature):  # M_t = η Q_θθ with η = 1
        m_inv = np.linalg.inv(np.asarray(curvature()))
        return g, lambda r: r @ m_inv.T

    opts = ddp.Options(weight_decay=wd, feedback=True, vxx="dense", vxx_reg=0.0)
    stages = [_linear_stage(a, b) for a, b in zip(a_mats, b_mats)]
    new_u, _ = ddp.step(stages, [pmp.jnp.asarray(u) for u in u0], x0, np.zeros(1), phi, exact_curvature, opts)

    # x_T = F x0 + G u (u stacked): minimise ½ x_Tᵀ Q x_T + cᵀ x_T + wd/2 ‖u‖²
    f_mat, g_blocks = np.eye(dims[0]), []
    for t in range(3):
        g_blocks = [a_mats[t] @ blk for blk in g_blocks] + [b_mats[t]]
        f_mat = a_mats[t] @ f_mat
    g_mat, free = np.hstack(g_blocks), f_mat @ x0[0]
    u_star = -np.linalg.solve(g_mat.T @ q @ g_mat + wd * np.eye(3 * n_u), g_mat.T @ (q @ free + c))
    _close(np.concatenate([np.asarray(u) for u in new_u]), u_star, "one DDP step vs the minimiser")


#: (backend, problem) pairs of the factored-equals-dense test: every net in the oracle;
#: the BN net (BN's frozen statistics) and the CNN (conv, pooling) in torch and jax
FACTORED_DENSE = [("reference", p) for p in (tiny.SINE, tiny.BN_REAL, tiny.CNN)] + [
    (b, p) for b in ("torch", "jax") for p in (tiny.BN_REAL, tiny.CNN)
]


@pytest.mark.parametrize(("backend", "problem"), FACTORED_DENSE, ids=[f"{b}-{p.name}" for b, p in FACTORED_DENSE])
@pytest.mark.parametrize("precond", PRECONDS)
def test_factored_equals_dense_with_outer_terminal(precond: str, backend: str, problem: Problem) -> None:
    """ε_V = 0 and no clamp: the rank-one factored value update is the dense one started
    from V_T = ∇Φ∇Φᵀ, for 3 steps (the clamp count is checked to be 0, so the property
    applies)."""
    # a small lr and, for RMSprop/Adam, eps = 0.1 keep η qᵀM⁻¹q < 1 (measured: no clamp)
    settings = {"lr": 1e-3, "wd": 1e-3, "vxx_reg": 0.0}
    factored = _ddp_trainer(backend, problem, _ddp_hp(precond, **settings, vxx="factored", eps=0.1))
    hp_dense = _ddp_hp(precond, **settings, vxx="dense", eps=0.1)
    dense = _ddp_trainer(backend, problem, hp_dense, dense_terminal="outer")
    got = _trajectory(factored, problem, 3)
    assert all(int(m["clamps"]) == 0 for _, _, m in got)
    _assert_same_trajectory(got, _trajectory(dense, problem, 3), f"{backend}: {precond} on {problem.name}")


@pytest.mark.parametrize("vxx", spec.DDP_VXX)
@pytest.mark.parametrize("problem", [tiny.BN_REAL, tiny.CNN], ids=lambda p: p.name)
def test_feedback_pass_is_a_plain_forward_pass(problem: Problem, vxx: str) -> None:
    """δx_0 = 0, and a plain forward pass with the new θ (BN on its new batch) reproduces
    the feedback pass's x̂_T."""
    hp = _ddp_hp("rmsprop", 0.01, 1e-3, vxx=vxx)
    stages, tail = ddpnopt.stages_of(problem.layers)
    params = [pmp.jnp.asarray(p) for p in problem.init_params(0)]
    slices = spec.layer_slices(problem.layers)
    per_stage = [params[slices[s.stop - 1]] for s in stages]
    x, y = tiny.first_batches(problem, 1)[0]
    slots = {"v": [pmp.jnp.zeros(sum(a.size for a in p)) for p in per_stage]}
    dynamics = [ddpnopt.layer_dynamics(problem.layers, s, p) for s, p in zip(stages, per_stage)]
    ws, info = ddp.step(
        dynamics,
        [ddpnopt.ravel(p) for p in per_stage],
        pmp.jnp.asarray(x),
        pmp.jnp.asarray(y),
        lambda xs, ys: pmp.terminal_loss(problem.loss, ddpnopt._run(problem.layers[tail:], xs[None]), ys[None]),
        ddpnopt.base_precondition(hp, slots, 1),
        ddp.Options(hp.weight_decay, True, vxx, hp.vxx_reg),
    )
    assert np.array_equal(info["new_states"][0], info["states"][0])
    new_params = list(params)
    for s, w in zip(stages, ws):
        new_params[slices[s.stop - 1]] = ddpnopt.unravel(w, params[slices[s.stop - 1]])
    plain = pmp.forward(problem.layers, pmp.per_layer(problem.layers, new_params), pmp.jnp.asarray(x))
    _close(info["new_states"][-1], plain[tail], "x̂_T vs a plain forward pass")
    assert not np.allclose(info["new_states"][-1], info["states"][-1])  # the step moved the trajectory


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("vxx", spec.DDP_VXX)
def test_loss_falls_within_20_steps(vxx: str, backend: str) -> None:
    """One fixed batch of the BN net: after 20 DDPNOpt steps the loss is at least 10%
    lower (measured in the oracle: 0.90 -> 0.31 factored with RMSprop at lr 1e-3, 0.36
    dense with SGD at lr 0.05; the backends agree to rounding). Dense V_xx runs with SGD:
    with RMSprop's η M⁻¹ (large where the mean gradient is small) its Schur complement
    A V' A - η Q_θxᵀ M⁻¹ Q_θx turns strongly indefinite, which the factored mode's clamp
    prevents and the dense mode does not (the loss is NaN by step 20 at lr 1e-3)."""
    problem = tiny.BN_REAL
    batch = tiny.first_batches(problem, 1)[0]
    hp = spec.DDPNOpt(lr=1e-3) if vxx == "factored" else spec.DDPNOpt(lr=0.05, precond="sgd", vxx="dense")
    trainer = _ddp_trainer(backend, problem, hp)
    steps = _trajectory(trainer, problem, 21, [batch] * 21)
    first, last = steps[0][1], steps[-1][1]
    assert last < 0.9 * first, f"{backend}, {vxx}: loss {first:.4g} -> {last:.4g}"


def test_bad_settings_are_one_line_errors() -> None:
    with pytest.raises(ValueError, match="unknown DDPNOpt precond 'kfac'"):
        spec.DDPNOpt(lr=0.1, precond="kfac")
    with pytest.raises(ValueError, match="unknown DDPNOpt vxx"):
        spec.DDPNOpt(lr=0.1, vxx="diag")
    with pytest.raises(ValueError, match="DDPNOpt needs at least one layer with parameters"):
        spec.ddp_stages((spec.Tanh(), spec.Flatten()))


def test_every_full_precision_backend_registers_it() -> None:
    """DDPNOpt runs in the reference, torch and jax backends, and compiled in torch-compile
    (none of the kernel backends, whose ops serve only binary/ternary MSA and E-MSA)."""
    assert {b for a, b in implementations.REGISTRY if a == "ddpnopt"} == {*BACKENDS, "torch-compile"}
    assert "ddpnopt" not in implementations.PARTIAL_ALGORITHMS
