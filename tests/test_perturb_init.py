"""The perturbed inner start of E-MSA and MSA (``spec.EMSA.perturb_init``, the JMLR
authors' ``msa_perturb_init``): the draw rule, the same draws in every backend, the start
being exactly θ + δ for every inner solver, nothing drawn at 0, and what it is for: from
the all-zero sine init, float64 E-MSA stays on the symmetric saddle without it and leaves
it with it.

Parity of whole runs with ``perturb_init > 0`` (losses, parameters, states within the
parity tolerances) is in the parity table (``tests/test_parity.py``, its ``perturbed``
cases), which also drives the checkpoint tests: a resumed run draws what the straight one
does only if the step count is restored.
"""

from __future__ import annotations

import numpy as np
import pytest

import implementations
from implementations import draws, solvers, spec
from implementations.reference import common, pmp
from suites import problems
from tests import tiny

BACKENDS = ("reference", "torch", "jax")
P = 0.01  # the perturbation scale of these tests (the authors' sine value is 0.005)
STEPS = 3


def _trainer(backend: str, problem, hp, dtype: str = "float64"):
    return tiny.make_trainer(backend, spec.algorithm_id(hp), problem, hp, dtype=dtype)


def _supported(backend: str, hp, problem) -> bool:
    return not [r for r in implementations.why_not(hp, backend, problem) if "is not installed" not in r]


def _per_layer(problem, flat: list) -> dict[int, list[np.ndarray]]:
    """Layer index -> its parameters, for the layers that have some."""
    return {t: flat[s] for t, s in enumerate(spec.layer_slices(problem.layers)) if problem.layers[t].param_names}


# ---------------------------------------------------------------------------------------
# the draw rule
# ---------------------------------------------------------------------------------------


def test_draw_is_scaled_uniform_over_the_packed_variables():
    """δ = p · U(-1, 1) over the layer's packed variables: one vector from NumPy's
    generator seeded with [seed, step, layer, 2], split into the parameter shapes."""
    shapes = [(3, 4), (4,)]
    got = draws.inner_start_perturbation(P, 5, 7, 2, shapes)
    packed = P * np.random.default_rng([5, 7, 2, draws.INNER_START_STREAM]).uniform(-1.0, 1.0, 16)
    assert [g.shape for g in got] == shapes
    assert np.array_equal(np.concatenate([g.ravel() for g in got]), packed)
    assert all(np.all(np.abs(g) <= P) for g in got)
    # another step, layer or seed is another draw; and not stochastic BinaryConnect's stream
    for args in ((6, 7, 2), (5, 8, 2), (5, 7, 3)):
        other = draws.inner_start_perturbation(P, *args, shapes)
        assert not np.array_equal(other[0], got[0]), args
    assert not np.allclose(draws.stochastic_uniforms(5, 7, 2, 12), (got[0].ravel() / P + 1) / 2)


def test_negative_scale_is_refused():
    with pytest.raises(ValueError, match="perturb_init must be >= 0"):
        spec.EMSA(rho=1.0, perturb_init=-0.01)
    with pytest.raises(ValueError, match="perturb_init must be >= 0"):
        spec.MSA(perturb_init=float("nan"))


def test_rows_record_the_scale():
    from msaresults import schema

    assert schema.hp_columns(spec.EMSA(rho=1.0, perturb_init=0.005))["hp_perturb_init"] == 0.005
    assert schema.hp_columns(spec.MSA())["hp_perturb_init"] == 0.0
    assert "hp_perturb_init" in schema.HP_TYPES


# ---------------------------------------------------------------------------------------
# every backend draws the same numbers and starts every solve from θ + δ
# ---------------------------------------------------------------------------------------

DRAW_CASES = [
    ("lbfgs-sine", spec.EMSA(rho=5.0, inner="lbfgs", inner_steps=2, perturb_init=P), tiny.SINE),
    ("gd-cnn", spec.EMSA(rho=0.5, inner="gd", inner_steps=2, inner_lr=0.05, perturb_init=P), tiny.CNN),
    ("msa-adam-sine", spec.MSA(inner="adam", inner_steps=2, inner_lr=0.01, perturb_init=P), tiny.SINE),
    ("optax-lbfgs-sine", spec.EMSA(rho=1.0, inner="optax-lbfgs", inner_steps=2, perturb_init=P), tiny.SINE),
]


_DRAW = draws.inner_start_perturbation  # the real one, whatever a test has patched in


def _recorded_draws(backend: str, hp, problem, monkeypatch) -> dict:
    """``{(step, layer): (scale, seed, shapes, arrays)}`` of every draw a backend makes in
    ``STEPS`` steps."""
    seen: dict = {}

    def spy(scale, seed, step, layer, shapes):
        out = _DRAW(scale, seed, step, layer, shapes)
        assert (step, layer) not in seen, f"{backend}: step {step}, layer {layer} drawn twice"
        seen[(step, layer)] = (scale, seed, [tuple(s) for s in shapes], out)
        return out

    monkeypatch.setattr(draws, "inner_start_perturbation", spy)
    trainer = _trainer(backend, problem, hp)
    state = trainer.init(problem.init_params(0))
    for batch in tiny.first_batches(problem, STEPS):
        state, _ = trainer.step(state, trainer.put(batch))
    return seen


@pytest.mark.parametrize(("name", "hp", "problem"), DRAW_CASES, ids=[c[0] for c in DRAW_CASES])
def test_every_backend_draws_the_same_numbers(name, hp, problem, monkeypatch):
    """The draws each backend makes, per (step, layer), are the reference's: one per
    layer with parameters per step, same scale, seed, shapes, and the same numbers."""
    reference = _recorded_draws("reference", hp, problem, monkeypatch)
    layers = [t for t, layer in enumerate(problem.layers) if layer.param_names]
    assert sorted(reference) == [(k, t) for k in range(1, STEPS + 1) for t in layers]
    for backend in ("torch", "jax"):
        if not _supported(backend, hp, problem):
            continue
        got = _recorded_draws(backend, hp, problem, monkeypatch)
        assert sorted(got) == sorted(reference), backend
        for key, (scale, seed, shapes, arrays) in reference.items():
            g_scale, g_seed, g_shapes, g_arrays = got[key]
            assert (g_scale, g_seed, g_shapes) == (scale, seed, shapes), (backend, key)
            assert all(np.array_equal(a, b) for a, b in zip(g_arrays, arrays)), (backend, key)


def _unmoved_cases():
    """Zero inner iterations: the solver returns its start, so the new θ *is* the start."""
    for inner in ("gd", "adam", "optax-lbfgs"):
        for problem in (tiny.SINE, tiny.CNN):
            hp = spec.EMSA(rho=1.0, inner=inner, inner_steps=0, perturb_init=P)
            for backend in BACKENDS:
                if _supported(backend, hp, problem):
                    for dtype in ("float64",) if backend == "reference" else ("float64", "float32"):
                        if (inner, problem, dtype) == ("optax-lbfgs", tiny.CNN, "float32"):
                            continue  # optax's L-BFGS promotes a float32 conv to float64 and fails, perturbed or not
                        yield pytest.param(backend, hp, problem, dtype, id=f"{backend}-{inner}-{problem.name}-{dtype}")


@pytest.mark.parametrize(("backend", "hp", "problem", "dtype"), list(_unmoved_cases()))
def test_in_graph_solvers_start_from_theta_plus_draw(backend, hp, problem, dtype):
    """With no inner iterations, step k leaves layer t at exactly fl(θ_t + fl(δ_{k,t})),
    δ rounded to the working dtype and added in it (an elementwise add: exact, the same
    in every backend)."""
    np_dtype = np.dtype(dtype)
    trainer = _trainer(backend, problem, hp, dtype)
    state = trainer.init(problem.init_params(0))
    for k, batch in enumerate(tiny.first_batches(problem, STEPS), start=1):
        before = _per_layer(problem, [p.astype(np_dtype) for p in trainer.get(state)])
        state, _ = trainer.step(state, trainer.put(batch))
        after = _per_layer(problem, trainer.get(state))
        for t, theta in before.items():
            deltas = draws.inner_start_perturbation(P, 0, k, t, [v.shape for v in theta])
            for v, d, new in zip(theta, deltas, after[t]):
                assert np.array_equal(new.astype(np_dtype), v + d.astype(np_dtype)), f"step {k}, layer {t}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_lbfgs_starts_from_theta_plus_draw(backend, monkeypatch):
    """Every L-BFGS-B solve is handed fl(θ_t + δ_{k,t}), packed as the layer's variables."""
    problem = tiny.SINE
    hp = spec.EMSA(rho=5.0, inner="lbfgs", inner_steps=2, perturb_init=P)
    starts = []
    original = solvers.lbfgs_maximise
    monkeypatch.setattr(
        solvers, "lbfgs_maximise", lambda vag, x0, n: (starts.append(x0.copy()), original(vag, x0, n))[1]
    )
    trainer = _trainer(backend, problem, hp)
    state = trainer.init(problem.init_params(0))
    for k, batch in enumerate(tiny.first_batches(problem, STEPS), start=1):
        before, starts[:] = _per_layer(problem, trainer.get(state)), []
        state, _ = trainer.step(state, trainer.put(batch))
        assert len(starts) == len(before)
        for start, (t, theta) in zip(starts, before.items()):
            deltas = draws.inner_start_perturbation(P, 0, k, t, [v.shape for v in theta])
            assert np.array_equal(start, np.concatenate([(v + d).ravel() for v, d in zip(theta, deltas)])), (k, t)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nothing_is_drawn_without_perturbation(backend, monkeypatch):
    """perturb_init = 0 (the default) makes no draw: the unperturbed algorithm, unchanged."""

    def refuse(*args):
        raise AssertionError("drew a perturbation with perturb_init = 0")

    monkeypatch.setattr(draws, "inner_start_perturbation", refuse)
    for hp in (spec.EMSA(rho=1.0, inner="gd", inner_steps=2), spec.MSA(inner="lbfgs", inner_steps=2)):
        trainer = _trainer(backend, tiny.SINE, hp)
        state = trainer.init(tiny.SINE.init_params(0))
        for batch in tiny.first_batches(tiny.SINE, 2):
            state, _ = trainer.step(state, trainer.put(batch))


# ---------------------------------------------------------------------------------------
# the zero-init sine net in float64: the perturbation decides the escape
# ---------------------------------------------------------------------------------------

ZERO_STEPS = 40
#: without the perturbation: every W_t and b_t keeps equal entries up to rounding (measured
#: spread after 40 steps: 0 in torch, 4e-13 in jax, whose reductions round the equal
#: coordinates differently) and the test loss stays on the symmetric net's plateau
#: (measured 0.262; the data's variance is 0.5)
SYMMETRIC_SPREAD = 1e-9
SADDLE_LOSS = 0.25
#: with the authors' 0.005: the test loss after 40 steps (measured 0.0099 in both
#: backends; 0.0188 after 30) is far below the plateau, and the entries have split
ESCAPED_LOSS = 0.05
ESCAPED_SPREAD = 0.1


def _zero_init_run(backend: str, perturb_init: float) -> tuple[float, float]:
    """(test loss, largest spread of entries within one parameter array) after
    ``ZERO_STEPS`` steps of the default suite's E-MSA from the all-zero sine init, float64;
    the test loss by the reference's forward pass, one evaluator for both backends."""
    problem = problems.get_problem("sine-resnet-zero")
    hp = spec.EMSA(rho=1.0, reg=1e-3, perturb_init=perturb_init)
    trainer = _trainer(backend, problem, hp)
    state = trainer.init(problem.init_params(0))
    batches = problem.batches("train", 0)
    for _ in range(ZERO_STEPS):
        state, _ = trainer.step(state, trainer.put(next(batches)))
    params = trainer.get(state)
    x, y = problem.arrays("test")
    z = common.predict(problem.layers, pmp.per_layer(problem.layers, common.to_jax(params)), {}, x)
    return problem.loss_value(z, y), max(float(np.ptp(p)) for p in params)


@pytest.mark.parametrize("backend", ("torch", "jax"))
def test_zero_init_escapes_only_with_the_perturbation(backend):
    """float64, where rounding cannot break the all-zero init's symmetry (every coordinate
    of every state equal): E-MSA without the perturbation stays symmetric, on the saddle's
    plateau; with the authors' perturbation it leaves it within 40 steps."""
    assert all(not np.any(p) for p in problems.get_problem("sine-resnet-zero").init_params(0))
    loss, spread = _zero_init_run(backend, 0.0)
    assert spread <= SYMMETRIC_SPREAD and loss >= SADDLE_LOSS, f"unperturbed: loss {loss:.4f}, spread {spread:.1e}"
    loss, spread = _zero_init_run(backend, 0.005)
    assert loss <= ESCAPED_LOSS and spread >= ESCAPED_SPREAD, f"perturbed: loss {loss:.4f}, spread {spread:.1e}"
