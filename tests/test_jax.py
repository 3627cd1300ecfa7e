"""The jax backend beyond float64 parity (``test_parity.py``): float32 accuracy against
the torch backend's, and compile-once steps. (Torch and jax agreeing in float64 follows from
both matching the reference in ``test_parity.py``, so it has no test of its own.)

**float32.** Each trainer's error against the float64 reference after each of 7 steps
(the largest relative difference of the loss or of any parameter, as in
``test_parity``) may be at most twice the torch float32 trainer's, plus a floor of
8 float32 ulps (8 · 2⁻²³ ≈ 9.5e-7): single ops round differently in XLA and in torch
(fused multiply-adds, reduction order), and over 7 steps both backends' errors measured
1e-7 to 1e-6 on the first-order, MSA-gd, E-MSA-gd/adam, discrete and STE cases, a few
ulps apart (TWN's ``Δ = 0.7 mean|W|`` sums in another order: jax 1.0e-6, torch 4.1e-7).

"torch's error" is its *rounding envelope*: the largest error of torch's float32 run
from the shared init and from that init moved by one float32 ulp per entry (three
draws). One run is one draw of how rounding falls, and where a step amplifies rounding
the draws differ by more than 2×: on ``emsa-adam-sine`` (Adam's m/√v on near-zero
inner gradients) torch's error measured 8.9e-6 unperturbed and 1.5e-5 to 2.4e-5
perturbed, jax's 1.9e-5 (and 1.2e-5 to 1.8e-5 perturbed), on an Intel Xeon; the same
code's unperturbed draws fell within 2× on an AMD EPYC. Where nothing amplifies, the
perturbed draws stay at the unperturbed run's few ulps, so the bound stays as tight.

Two cases are left out, for reasons measured, not guessed:

- E-MSA with L-BFGS-B on the sine net: float32 rounding changes SciPy's line-search path
  in both backends (error ≈ 2 against the float64 reference, torch and jax alike), so
  the comparison would be between two unrelated trajectories;
- optax's L-BFGS has no torch implementation to calibrate the factor 2 against.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests import tiny
from tests.test_parity import BACKENDS, LBFGS_RTOL, PAIRS, STEPS, Case, _make, _perturbed_init, _supported

pytest.importorskip("jax")
pytest.importorskip("optax")

FLOAT32_FLOOR = 8 * 2.0**-23  # see module docstring

JAX_CASES = [c for b, c in PAIRS if b == "jax"]
BOTH = [c for c in JAX_CASES if all(_supported(b, c) for b in BACKENDS)]
FLOAT32_CASES = [c for c in BOTH if c.rtol != LBFGS_RTOL]


ULP_DRAWS = (0, 1, 2)  # seeds of the one-ulp perturbations of torch's envelope


def _trajectory(
    backend: str, case: Case, dtype: str, ulp_seed: int | None = None
) -> list[tuple[float, list[np.ndarray]]]:
    """(loss, parameters) after each of the first ``STEPS`` steps from the shared init,
    or from it with every entry moved by ±1 float32 ulp (random signs from ``ulp_seed``)."""
    trainer = _make(backend, case, dtype)
    if ulp_seed is None:
        params = case.problem.init_params(0)
    else:
        params = _perturbed_init(case.problem, ulp_seed, eps=float(np.finfo(np.float32).eps))
    state, out = trainer.init(params), []
    for batch in tiny.first_batches(case.problem, STEPS):
        state, metrics = trainer.step(state, trainer.put(batch))
        out.append((float(metrics["loss"]), trainer.get(state)))
    return out


def _worst_error(reference, got) -> float:
    """Largest relative difference of the loss or of any parameter over all steps."""
    worst = 0.0
    for (loss_r, params_r), (loss_g, params_g) in zip(reference, got):
        worst = max(worst, abs(loss_g - loss_r) / abs(loss_r))
        for r, g in zip(params_r, params_g):
            worst = max(worst, float(np.max(np.abs(g - r))) / max(float(np.max(np.abs(r))), 1e-30))
    return worst


@pytest.mark.parametrize("case", FLOAT32_CASES, ids=lambda c: c.id)
def test_float32_error_at_most_twice_torchs(case: Case):
    reference = _trajectory("reference", case, "float64")
    err_jax = _worst_error(reference, _trajectory("jax", case, "float32"))
    err_torch = max(
        _worst_error(reference, _trajectory("torch", case, "float32", ulp_seed)) for ulp_seed in (None, *ULP_DRAWS)
    )
    assert err_jax <= 2 * err_torch + FLOAT32_FLOOR, (
        f"{case.id}: jax float32 error {err_jax:.2e} > 2 × torch's envelope {err_torch:.2e} + {FLOAT32_FLOOR:.1e}"
    )


class CompileCounter:
    """Counts compilations while active (JAX's monitoring event): jax records it for an XLA
    compile and for a load from the persistent compilation cache alike, which the test
    session turns on (``tests/conftest.py``)."""

    EVENT = "/jax/core/compile/backend_compile_duration"
    CACHE_LOAD = "/jax/compilation_cache/cache_retrieval_time_sec"

    def __init__(self):
        self.count = 0
        self.cache_loads = 0  # of those, the ones the persistent cache served

    def __call__(self, event: str, duration: float, **kwargs) -> None:
        self.count += event == self.EVENT
        self.cache_loads += event == self.CACHE_LOAD

    def __enter__(self):
        import jax

        jax.monitoring.register_event_duration_secs_listener(self)
        return self

    def __exit__(self, *exc):
        import jax

        jax.monitoring.unregister_event_duration_listener(self)


def test_compile_counter_sees_a_compilation():
    """The counter is live: a fresh jitted function compiles once, a second call does not."""
    import jax
    import jax.numpy as jnp

    f = jax.jit(lambda v: jnp.sin(v) * 3.0 + 0.123456)
    v = jnp.ones(7).block_until_ready()
    with CompileCounter() as first:
        f(v).block_until_ready()
    with CompileCounter() as second:
        f(v).block_until_ready()
    assert (first.count, second.count) == (1, 0)


def test_compile_counter_sees_a_load_from_the_compilation_cache():
    """A second jitted function with the same computation misses jit's own cache and is
    loaded from the session's persistent cache: that counts as a compilation too."""
    import jax
    import jax.numpy as jnp

    v = jnp.ones(5).block_until_ready()
    jax.jit(lambda v: jnp.cos(v) * 2.0 + 0.654321)(v).block_until_ready()  # compiled and cached
    with CompileCounter() as again:
        jax.jit(lambda v: jnp.cos(v) * 2.0 + 0.654321)(v).block_until_ready()
    assert (again.count, again.cache_loads) == (1, 1)  # the session's cache (tests/conftest.py) served it


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", JAX_CASES, ids=lambda c: c.id)
def test_steps_compile_once(case: Case, dtype: str):
    """Steps 2 to 5 (batches moved to the device and stepped) trigger no compilation."""
    trainer = _make("jax", case, dtype)
    batches = tiny.first_batches(case.problem, 5)
    state, _ = trainer.step(trainer.init(case.problem.init_params(0)), trainer.put(batches[0]))
    trainer.sync(state)
    with CompileCounter() as counter:
        for batch in batches[1:]:
            state, metrics = trainer.step(state, trainer.put(batch))
        trainer.sync(state)
    assert counter.count == 0, f"{case.id}: {counter.count} compilations in steps 2-5"
    assert np.isfinite(float(metrics["loss"]))
