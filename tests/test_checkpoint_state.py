"""``Trainer.restore`` against ``Trainer.state_arrays``, for every algorithm × backend.

For each case of the parity table (``tests/test_parity.py``: every algorithm, its
variants, on the tiny problems) and each backend that runs it, in float64 and float32:
train ``STEPS`` steps straight, saving the state after ``STEPS // 2`` as a checkpoint
does (``state_arrays`` through an ``.npz`` file); restore that into a *fresh* trainer, and
train the rest on the same batches. The two must agree exactly — losses,
effective parameters, the whole state — because the resumed trainer runs the same code on
the same numbers: any difference means a piece of state that ``state_arrays`` does not
carry or ``restore`` does not put back (an optimizer's moment, a step count, α, BN's
statistics, M̄). One case is restored in a fresh Python process, as a resumed run is.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests import tiny
from tests.test_parity import CASES, Case, _supported

STEPS = 4  # two steps before the checkpoint, two after: the first step after a restore shows a missing piece
BACKENDS = ("reference", "torch", "jax")
# torch and jax in float64 repeat their float32 cases (the runs' dtype) with other
# numbers and the same state: marked slow, left out of CI (``nox -s tests -- -m slow``)
PAIRS = [
    pytest.param(
        backend,
        case,
        dtype,
        id=f"{backend}-{case.id}-{dtype}",
        marks=[pytest.mark.slow] if backend != "reference" and dtype == "float64" else [],
    )
    for backend in BACKENDS
    for case in CASES
    if _supported(backend, case)
    for dtype in (("float64",) if backend == "reference" else ("float64", "float32"))
]


def _make(backend: str, case: Case, dtype: str):
    return tiny.make_trainer(backend, case.algorithm, case.problem, case.hp, dtype=dtype)


def _train(trainer, state, batches) -> tuple[object, list[float]]:
    losses = []
    for batch in batches:
        state, metrics = trainer.step(state, trainer.put(batch))
        losses.append(float(np.asarray(metrics["loss"])))  # torch's is detached, so NumPy can read it
    return state, losses


def _saved(trainer, state, path: Path) -> dict:
    """The state as a checkpoint keeps it: written to ``path`` and read back."""
    np.savez(path, **trainer.state_arrays(state))
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def _assert_same_state(straight: dict, resumed: dict, where: str) -> None:
    assert sorted(straight) == sorted(resumed), f"{where}: keys differ: {sorted(set(straight) ^ set(resumed))}"
    for key, a in straight.items():
        b = resumed[key]
        assert a.dtype == b.dtype and a.shape == b.shape, f"{where}: {key}: {b.dtype}{b.shape} vs {a.dtype}{a.shape}"
        assert np.array_equal(a, b), f"{where}: {key}: max |diff| {np.max(np.abs(a.astype(float) - b.astype(float)))}"


@pytest.mark.parametrize(("backend", "case", "dtype"), PAIRS)
def test_restore_continues_exactly(backend: str, case: Case, dtype: str, tmp_path: Path) -> None:
    problem, half = case.problem, STEPS // 2
    batches = tiny.first_batches(problem, STEPS)

    # the straight run saves its state halfway, as the runner's checkpoints do mid-run
    trainer = _make(backend, case, dtype)
    state, _ = _train(trainer, trainer.init(problem.init_params(0)), batches[:half])
    arrays = _saved(trainer, state, tmp_path / "state.npz")
    straight_state, straight_late = _train(trainer, state, batches[half:])
    straight = trainer.state_arrays(straight_state)

    fresh = _make(backend, case, dtype)
    restored = fresh.restore(arrays)
    _assert_same_state(arrays, fresh.state_arrays(restored), f"{case.id}: restored state")
    state, late = _train(fresh, restored, batches[half:])

    assert late == straight_late, f"{case.id}: losses after the restore {late} vs {straight_late}"
    _assert_same_state(straight, fresh.state_arrays(state), f"{case.id}: after {STEPS} steps")
    for a, b in zip(trainer.get(straight_state), fresh.get(state), strict=True):
        assert np.array_equal(a, b), f"{case.id}: effective parameters differ"


_FRESH_PROCESS = textwrap.dedent(
    """
    import sys
    import numpy as np
    from tests import tiny
    from tests.test_checkpoint_state import STEPS, _make, _train
    from tests.test_parity import CASES

    case = next(c for c in CASES if c.id == sys.argv[1])
    with np.load(sys.argv[2]) as f:
        arrays = {k: f[k] for k in f.files}
    trainer = _make("torch", case, "float32")
    state, _ = _train(trainer, trainer.restore(arrays), tiny.first_batches(case.problem, STEPS)[STEPS // 2 :])
    np.savez(sys.argv[3], **trainer.state_arrays(state))
    """
)


@pytest.mark.parametrize("case_id", ["dmsa-ternary-authors", "adam-bn"])
def test_restore_in_a_fresh_process(case_id: str, tmp_path: Path) -> None:
    """The checkpoint of one process, restored by another (a resumed run), trains on to
    the straight run's state."""
    pytest.importorskip("torch")
    case = next(c for c in CASES if c.id == case_id)
    batches = tiny.first_batches(case.problem, STEPS)
    trainer = _make("torch", case, "float32")  # the straight run, saved halfway
    state, _ = _train(trainer, trainer.init(case.problem.init_params(0)), batches[: STEPS // 2])
    _saved(trainer, state, tmp_path / "half.npz")
    state, _ = _train(trainer, state, batches[STEPS // 2 :])
    straight = trainer.state_arrays(state)
    root = Path(__file__).resolve().parents[1]
    subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS, case_id, str(tmp_path / "half.npz"), str(tmp_path / "out.npz")],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        check=True,
        timeout=300,
    )
    with np.load(tmp_path / "out.npz") as f:
        _assert_same_state(straight, {k: f[k] for k in f.files}, f"{case_id}: fresh process")


def test_a_torch_checkpoint_restores_in_jax(tmp_path: Path) -> None:
    """The states map one to one between torch and jax (the same ``state_arrays`` keys), so
    a torch checkpoint restores in jax and trains on to what jax's straight run reaches, up
    to the backends' float64 parity tolerance (``tests/test_parity.py``'s RTOL: the two
    differ only by operation order)."""
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    case = next(c for c in CASES if c.id == "dmsa-ternary")
    batches = tiny.first_batches(case.problem, STEPS)
    jax_trainer = _make("jax", case, "float64")
    state, _ = _train(jax_trainer, jax_trainer.init(case.problem.init_params(0)), batches)
    straight = jax_trainer.state_arrays(state)

    torch_trainer = _make("torch", case, "float64")
    state, _ = _train(torch_trainer, torch_trainer.init(case.problem.init_params(0)), batches[: STEPS // 2])
    arrays = _saved(torch_trainer, state, tmp_path / "torch.npz")
    state, _ = _train(jax_trainer, jax_trainer.restore(arrays), batches[STEPS // 2 :])
    resumed = jax_trainer.state_arrays(state)
    assert sorted(resumed) == sorted(straight)
    for key, a in straight.items():
        np.testing.assert_allclose(
            resumed[key], a, rtol=case.rtol, atol=case.rtol * float(np.max(np.abs(a))), err_msg=key
        )
