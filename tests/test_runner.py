"""The runner against a fake backend: timing protocol, outcomes as rows, part files,
resume, executors; plus the grids and the tuner built on it."""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import tiny_suite

import implementations
from implementations import spec
from suites import executors, grids, memory, planning, problems, provenance, runner, schema, store, training, tune


def _cells(suite, **kw):
    return planning.plan(suite, **kw)


def _run_one(cell, suite="tiny"):
    return training.run_cell(cell, store.Run(suite, "test", None))


def test_rows_at_eval_points_with_timing(fake_backend):
    cell = _cells(tiny_suite(steps=7, eval_every=3))[0]
    df = _run_one(cell)
    schema.validate(df)
    assert df["step"].tolist() == [0, 3, 6, 7]
    assert (df["status"] == "ok").all() and (df["reason"] == "").all()
    assert df["epoch"].tolist() == pytest.approx([s / 10 for s in (0, 3, 6, 7)])  # 1000 samples / batch 100
    assert df["time_s"].iloc[0] == 0.0
    assert df["time_s"].is_monotonic_increasing and df["time_s"].iloc[-1] > 0
    assert df["compile_s"].nunique() == 1 and df["compile_s"].iloc[0] > 0
    assert df["ms_per_step"].nunique() == 1 and df["ms_per_step"].iloc[0] > 0
    assert df["flips"].isna().all()  # the algorithm reports none
    assert (df["concurrency"] == 1).all()
    assert df["nonzero_frac"].tolist() == [1.0] * 4
    assert [len(v) for v in df["layer_nonzero_frac"]] == [20] * 4  # 20 residual layers with W
    assert df["train_loss"].notna().all() and df["test_acc"].isna().all()  # regression: no accuracy
    assert df["hp_lr"].tolist() == [0.1] * 4 and df["hp_rho"].isna().all()


def test_timing_protocol(fake_backend):
    """The first step is a block of its own; blocks are bracketed by syncs; step metrics
    are read only after the block's closing sync."""
    _run_one(_cells(tiny_suite(steps=7, eval_every=3))[0])
    blocks, inside, current = [], False, 0
    for ev in fake_backend.events:
        if ev == "sync":
            if inside:
                blocks.append(current)
            inside, current = not inside, 0
        elif ev == "step":
            assert inside, "a step ran outside a timed block"
            current += 1
        elif ev == "read":
            assert not inside, "a metric was read inside a timed block"
    assert not inside
    assert blocks == [1, 2, 3, 1]


def test_long_blocks_are_split():
    assert list(training._blocks(120, 120)) == [(1, False), (51, False), (101, False), (120, True)]
    assert list(training._blocks(5, 2)) == [(1, False), (2, True), (4, True), (5, True)]


@pytest.mark.parametrize(
    "steps, eval_every", [(s, e) for s in (1, 2, 7, 50, 51, 120, 301) for e in (1, 3, 50, 64, 400)]
)
def test_blocks_follow_the_rule(steps, eval_every):
    """The first step alone; blocks of at most MAX_BLOCK steps ending at every evaluation
    point (every eval_every steps, and the last step) and flagged exactly there."""
    blocks = list(training._blocks(steps, eval_every))
    ends = [end for end, _ in blocks]
    assert ends[0] == 1 and ends[-1] == steps and ends == sorted(set(ends))
    assert all(b - a <= training.MAX_BLOCK for a, b in itertools.pairwise(ends))
    evals = set(range(eval_every, steps + 1, eval_every)) | {steps}
    assert {end for end, is_eval in blocks if is_eval} == evals


def test_diverged_cell_stops_with_reason(fake_backend):
    fake_backend.modes["sgd"] = "diverge"
    fake_backend.bad_step = 4
    df = _run_one(_cells(tiny_suite(steps=7, eval_every=3))[0])
    assert df["step"].tolist() == [0, 3, 6]
    assert df["status"].tolist() == ["ok", "ok", "diverged"]
    assert df["reason"].iloc[-1] == "non-finite training loss at step 4"


def test_error_cell_keeps_rows_and_one_line_reason(fake_backend):
    fake_backend.modes["sgd"] = "error"
    fake_backend.bad_step = 5
    df = _run_one(_cells(tiny_suite(steps=7, eval_every=3))[0])
    assert df["status"].tolist() == ["ok", "ok", "error"]
    assert df["step"].tolist() == [0, 3, 3]  # the failing block's steps did not complete
    assert df["reason"].iloc[-1] == "RuntimeError: fake failure on two lines"


def test_skipped_by_why_not_and_by_missing_module(fake_backend):
    fake_backend.modes.update(sgd="skip", adagrad="missing")
    cells = _cells(tiny_suite())
    skipped = _run_one(cells[0])
    assert skipped["status"].tolist() == ["skipped"]
    assert skipped["reason"].iloc[0] == "the fake accelerator is unplugged"
    missing = _run_one(cells[1])
    assert missing["status"].tolist() == ["skipped"]
    assert "implementations.fake.adagrad" in missing["reason"].iloc[0]
    assert not fake_backend.events  # nothing was built or stepped


def test_flips_counted_between_eval_points(fake_backend):
    fake_backend.modes["sgd"] = "flips"
    df = _run_one(_cells(tiny_suite(steps=7, eval_every=3))[0])
    assert df["flips"].tolist() == [0.0, 9.0, 9.0, 3.0]


def test_suite_continues_past_failures_and_writes_parts(fake_backend, tmp_path):
    fake_backend.modes.update(sgd="error", adagrad="diverge")
    suite = tiny_suite()
    cells = _cells(suite)
    log = io.StringIO()
    path = runner.run_suite(suite, cells, out=tmp_path, options={"x": 1}, show_progress=False, log=log)
    assert path == tmp_path / "tiny" / f"{path.stem}.parquet"
    df, meta = schema.read_results(path)
    last = df.groupby("cell_id", sort=False)["status"].last().tolist()
    assert last == ["error", "diverged", "ok"]
    assert "sine-resnet.sgd.fake.float32.s0: error: RuntimeError" in log.getvalue()
    for cell in cells:
        assert store.Run("tiny", path.stem, tmp_path).part_path(cell).is_file()
    assert not list(tmp_path.rglob("*.tmp"))
    traces = list(tmp_path.rglob("*.traceback.txt"))
    assert len(traces) == 1 and "fake failure" in traces[0].read_text()
    for key in ("schema_version", "suite", "run_id", "created", "git_sha", "git_dirty", "versions"):
        assert key in meta
    assert meta["options"] == {"x": 1} and meta["problems"]["sine-resnet"]["init"] == "good"
    assert meta["threads"]["cpu_count"] >= 1 and meta["device_name"]


def test_git_provenance_only_from_the_checkout_itself(monkeypatch, tmp_path):
    """Installed from a wheel, the code sits in site-packages; a work tree above it (a venv
    under .nox/ here) is not its source, so the run records no commit."""
    sha = provenance._git("rev-parse", "HEAD")
    if sha is None:
        pytest.skip("not running from a git checkout")
    assert len(sha.strip()) == 40
    monkeypatch.setattr(provenance, "REPO_ROOT", provenance.REPO_ROOT / "suites")  # inside the work tree, not its top
    assert provenance._git("rev-parse", "HEAD") is None
    monkeypatch.setattr(provenance, "REPO_ROOT", tmp_path)  # no work tree at all
    assert provenance._git("status", "--porcelain") is None


@pytest.fixture
def fresh_provenance():
    """``cell_provenance`` asked anew in this test (its answers are cached per process),
    and forgotten afterwards so no faked commit outlives the test."""
    provenance.clear_cache()
    yield
    provenance.clear_cache()


def _at_commit(monkeypatch, sha: str) -> None:
    """Pretend this process's code is the checkout at ``sha``, clean."""
    monkeypatch.setattr(provenance, "_git", lambda *args: f"{sha}\n" if args[0] == "rev-parse" else "")
    provenance.clear_cache()


def test_rows_carry_the_provenance_of_the_process_that_trained_them(
    fake_backend, tmp_path, monkeypatch, fresh_provenance
):
    """Every row names this process's host, CPU, commit and versions; a cell rerun by a
    resume at another commit says so, while the others (and the run's metadata, its start)
    keep the commit they ran at."""
    import socket

    _at_commit(monkeypatch, "a" * 40)
    suite = tiny_suite()
    cells = _cells(suite)
    path = runner.run_suite(suite, cells, out=tmp_path, options={}, show_progress=False)
    rows, _ = schema.read_results(path)
    assert set(rows["host"]) == {socket.gethostname()}
    assert set(rows["device_name"]) == {provenance.device_name("cpu")} and rows["device_name"].iloc[0]
    assert set(rows["git_sha"]) == {"a" * 40} and not rows["git_dirty"].any()
    versions = rows["versions"].iloc[0].split()
    assert versions[0].startswith("python=") and versions[-1].startswith("msabench=")
    assert any(v.startswith("numpy=") for v in versions)
    # interrupted before its last cell; resumed at another commit
    store.Run("tiny", path.stem, tmp_path).part_path(cells[-1]).unlink()
    path.unlink()
    _at_commit(monkeypatch, "b" * 40)
    runner.resume(tmp_path, "tiny", path.stem, show_progress=False)
    rows, meta = schema.read_results(path)
    by_cell = rows.groupby("cell_id", sort=False)["git_sha"].agg(set).to_dict()
    assert by_cell == {**{c.cell_id: {"a" * 40} for c in cells[:-1]}, cells[-1].cell_id: {"b" * 40}}
    assert meta["git_sha"] == "a" * 40  # the run's start, as before


def test_a_worker_process_records_its_own_provenance(monkeypatch, fresh_provenance):
    """A cell trained in a pool worker carries the worker's provenance, not the driver's:
    the driver pretends to be another commit, the spawned worker asks git itself."""
    real = provenance._code()  # what any process running this checkout finds
    _at_commit(monkeypatch, "d" * 40)
    assert provenance.cell_provenance("cuda")["git_sha"] == "d" * 40
    cell = planning.Cell("sine-resnet", "sgd", spec.SGD(lr=0.1), "torch", 0, 4, 2, "float32", "cuda")
    pool = executors.process_executor(1, threads=1)
    try:
        rows = pool.submit(training.run_cell, cell, store.Run("tiny", "test", None)).result(timeout=240)
    finally:
        pool.terminate()  # kills and reaps its workers: none outlives the test
    assert len(rows) >= 1  # skipped without a GPU: even then the row says where it was asked
    assert all((sha, dirty) == real for sha, dirty in zip(rows["git_sha"], rows["git_dirty"]))
    assert rows["device_name"].iloc[0] == provenance.device_name("cuda")


def test_resume_runs_only_missing_cells(fake_backend, tmp_path):
    suite = tiny_suite(seeds=(0, 1))
    cells = _cells(suite)
    path = runner.run_suite(suite, cells, out=tmp_path, options={}, show_progress=False)
    first, _ = schema.read_results(path)
    run = store.Run("tiny", path.stem, tmp_path)
    # simulate an interruption: one cell's part never written, no run file
    lost = cells[3]
    run.part_path(lost).unlink()
    path.unlink()
    fake_backend.made.clear()
    resumed = runner.resume(tmp_path, "tiny", path.stem, show_progress=False)
    assert resumed == path
    assert len(fake_backend.made) == 1 and fake_backend.made[0][0] == lost.algorithm
    again, meta = schema.read_results(path)
    assert len(again) == len(first)
    assert again["cell_id"].drop_duplicates().tolist() == [c.cell_id for c in cells]
    assert len(meta["resumed"]) == 1


def test_resume_retries_skipped_cells(fake_backend, tmp_path):
    """A cell skipped for what this machine lacked (a data set, a GPU) runs on resume once
    it is there; finished cells are not rerun."""
    fake_backend.modes["sgd"] = "skip"
    suite = tiny_suite()
    cells = _cells(suite)
    path = runner.run_suite(suite, cells, out=tmp_path, options={}, show_progress=False)
    assert set(schema.read_results(path)[0].query("algorithm == 'sgd'")["status"]) == {"skipped"}
    fake_backend.modes["sgd"] = "ok"
    fake_backend.made.clear()
    runner.resume(tmp_path, "tiny", path.stem, show_progress=False)
    assert [alg for alg, _ in fake_backend.made] == ["sgd"]
    assert set(schema.read_results(path)[0].query("algorithm == 'sgd'")["status"]) == {"ok"}


def test_resume_of_unknown_run_is_an_error(tmp_path):
    with pytest.raises(runner.RunError, match="no run"):
        store.load_run(tmp_path, "tiny", "20260101T000000Z-abcd")
    with pytest.raises(runner.RunError, match="malformed"):
        store.load_run(tmp_path, "tiny", "../etc")


def test_thread_pool_executor_records_concurrency(fake_backend, tmp_path):
    suite = tiny_suite()
    cells = _cells(suite)
    with store.started_run(tmp_path, "tiny", cells, {}) as (run, _), ThreadPoolExecutor(2) as pool:
        rows = executors.execute(run, cells, executor=pool, concurrency=2, show_progress=False)
    assert set(rows) == {c.cell_id for c in cells}
    assert all((df["concurrency"] == 2).all() for df in rows.values())


def test_plan_checks_names_and_scales(fake_backend):
    suite = tiny_suite(steps=100, eval_every=10)
    cells = planning.plan(suite, steps_scale=0.05, seeds=(0, 1), dtype="float64")
    assert len(cells) == 6 and cells[0].steps == 5 and cells[0].eval_every == 1
    assert all(c.dtype == "float64" for c in cells)
    assert planning.plan(suite, algorithms_filter=["adam"])[0].label == "adam"
    assert planning.plan(suite, backends=["reference"])[0].dtype == "float64"  # reference runs float64
    for kw, msg in (
        ({"backends": ["nope"]}, "unknown backend"),
        ({"problems_filter": ["nope"]}, "unknown problem"),
        ({"algorithms_filter": ["nope"]}, "unknown algorithm"),
        ({"algorithms_filter": ["emsa"]}, "no cells"),
        ({"dtype": "float16"}, "unknown dtype"),
        ({"steps_scale": 0.0}, "steps-scale"),
    ):
        with pytest.raises(runner.RunError, match=msg):
            planning.plan(suite, **kw)


def test_cell_json_round_trip():
    cell = planning.Cell(
        "digits-mlp-ternary", "dmsa", spec.DMSA(levels=3, rho=0.25), "torch", 2, 10, 5, "float32", "cpu"
    )
    back = planning.Cell.from_json(json.loads(json.dumps(cell.to_json())))
    assert back == cell and back.cell_id == "digits-mlp-ternary.dmsa.torch.float32.s2"


# ---------------------------------------------------------------------------------------
# Grids
# ---------------------------------------------------------------------------------------


def test_smoke_suite_covers_every_algorithm_and_backend():
    smoke = grids.UNTUNED["smoke"]
    assert {e.algorithm for e in smoke.entries} == set(implementations.ALGORITHMS)
    # the kernel backends need a GPU (the kernels suite holds them); torch-compile's C++
    # build takes 20-60 s a configuration, so the default suite and its own tests hold it
    assert set(smoke.backends) == set(implementations.BACKENDS) - set(implementations.KERNEL_BACKENDS) - {
        "torch-compile"
    }
    assert "torch-compile" in grids.UNTUNED["default"].backends
    assert smoke.seeds == (0,)
    assert set(implementations.KERNEL_BACKENDS) <= set(grids.UNTUNED["kernels"].backends)
    assert all(e.steps == 3 and e.eval_every == 3 for e in smoke.entries)
    assert {(e.hp.levels, e.problem) for e in smoke.entries if isinstance(e.hp, spec.DMSA)} == {
        (2, "digits-mlp-binary"),
        (3, "digits-mlp-ternary"),
    }


def test_default_suite_shape():
    d = grids.UNTUNED["default"]
    assert d.backends == ("torch", "jax", "torch-compile") and d.seeds == (0, 1, 2)
    assert d.seeds_of("torch-compile") == (0,) and d.seeds_of("jax") == d.seeds  # one compiled seed
    labels = {(e.problem, e.label) for e in d.entries}
    assert ("sine-resnet", "emsa") in labels and ("mnist5k-mlp-ternary", "twn") in labels
    emsa = next(e for e in d.entries if (e.problem, e.label) == ("sine-resnet", "emsa"))
    assert emsa.hp == spec.EMSA(rho=1.0, reg=1e-3, perturb_init=0.005) and emsa.steps == grids.SINE_MSA_STEPS
    # from the zero init, E-MSA with and without the authors' perturbation of the inner start
    zero = {e.label: e.hp for e in d.entries if e.problem == "sine-resnet-zero"}
    assert zero["emsa"] == emsa.hp and zero["emsa-noperturb"] == spec.EMSA(rho=1.0, reg=1e-3)
    adam = next(e for e in d.entries if (e.problem, e.label) == ("sine-resnet", "adam"))
    assert adam.hp.lr == 0.005 and adam.hp.reg == 1e-3
    assert all(1 <= e.eval_every <= e.steps for e in d.entries)
    # the authors' host-driven L-BFGS-B and the device solver side by side, same budget
    for problem in ("sine-resnet", "mnist5k-rescnn"):
        scipy, device = (
            next(e for e in d.entries if (e.problem, e.label) == (problem, label)) for label in ("emsa", "emsa-device")
        )
        assert device.hp == dataclasses.replace(scipy.hp, inner="lbfgs-device") and device.steps == scipy.steps
    # DDPNOpt beside its base optimizer, at the same budget, where E-MSA or Adam runs
    for problem in ("sine-resnet", "digits-mlp", "mnist5k-rescnn"):
        ddp, rms = (
            next(e for e in d.entries if (e.problem, e.label) == (problem, label)) for label in ("ddpnopt", "rmsprop")
        )
        assert isinstance(ddp.hp, spec.DDPNOpt) and ddp.hp.precond == "rmsprop" and ddp.hp.feedback
        assert isinstance(rms.hp, spec.RMSprop) and ddp.steps == rms.steps
        assert grids.is_baseline(ddp.hp) and grids.is_baseline(rms.hp)  # both rates are tuned


def test_ddpnopt_suite_pairs_each_rate_with_its_open_loop():
    s = grids.UNTUNED["ddpnopt"]
    assert len(s.seeds) >= 3
    pairs = {(e.hp.lr, e.hp.feedback) for e in s.entries}
    assert pairs == {(lr, fb) for lr in grids.DDP_SENSITIVITY_LRS for fb in (True, False)}
    assert len({e.problem for e in s.entries}) == 1 and len({e.steps for e in s.entries}) == 1


def test_tuned_learning_rates_are_applied(tmp_path):
    path = tmp_path / "tuned.json"
    assert grids.load_tuned(path) == {}
    tune.write_tuned(path, "default", {"sine-resnet/sgd": {"choice": 0.3}, "sine-resnet/adam": {"choice": None}})
    suite = grids.apply_tuned(grids.UNTUNED["default"], grids.load_tuned(path))
    by = {(e.problem, e.label): e for e in suite.entries}
    assert by["sine-resnet", "sgd"].hp.lr == 0.3
    assert by["sine-resnet", "adam"].hp.lr == grids.SINE_ADAM_LR  # no choice: default kept
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not a tune output"):
        grids.load_tuned(path)


# ---------------------------------------------------------------------------------------
# Tuning
# ---------------------------------------------------------------------------------------


def test_pick_prefers_best_then_lower_lr():
    assert tune.pick({0.1: 0.5, 0.3: 0.5, 1.0: 0.9}, maximise=False) == 0.1
    assert tune.pick({0.1: 0.5, 0.3: 0.9, 1.0: 0.9}, maximise=True) == 0.3
    assert tune.pick({0.1: None, 0.3: math.nan}, maximise=True) is None
    assert tune.lr_grid(0.1) == [0.01, 0.03333, 0.1, 0.3, 1.0]


def test_tune_picks_the_lr_with_best_val_loss(fake_backend, tmp_path):
    fake_backend.best_lr = 0.3
    suite = tiny_suite(steps=2, eval_every=1)
    records = tune.tune_suite(suite, backend="fake", labels=["sgd"], show_progress=False, command="msabench tune")
    rec = records["sine-resnet/sgd"]
    assert rec["choice"] == 0.3 and rec["metric"] == "val_loss" and rec["grid"] == tune.lr_grid(0.1)
    assert set(rec["status"].values()) == {"ok,ok"} and rec["seeds"] == list(tune.TUNE_SEEDS)
    assert sorted(lr for _, lr in fake_backend.made) == sorted(rec["grid"] * len(tune.TUNE_SEEDS))
    out = tune.write_tuned(tmp_path / "tuned.json", "tiny", records)
    doc = json.loads(out.read_text())
    assert doc["suites"]["tiny"]["sine-resnet/sgd"]["choice"] == 0.3
    tuned = grids.apply_tuned(suite, grids.load_tuned(out))
    assert tuned.entries[0].hp.lr == 0.3 and tuned.entries[0].label == "sgd"


def test_tune_never_picks_a_diverged_lr(fake_backend):
    fake_backend.modes["adam"] = "diverge"
    fake_backend.bad_step = 1
    records = tune.tune_suite(tiny_suite(steps=2, eval_every=1), backend="fake", labels=["adam"], show_progress=False)
    assert records["sine-resnet/adam"]["choice"] is None
    assert set(records["sine-resnet/adam"]["status"].values()) == {"diverged,diverged"}


def test_as_float_sums_and_reads_numpy():
    assert training._as_float(np.float32(2.5)) == 2.5
    assert training._as_float(np.array([1, 2, 3])) == 6.0


def test_tune_grows_the_grid_past_a_winning_edge(fake_backend):
    """The best rate (3.0) lies outside the initial grid (0.01..1.0): the tuner steps ×3
    past the winning edge, finds 3.0, tries 9.0, which is worse, and stops there."""
    fake_backend.best_lr = 3.0
    records = tune.tune_suite(tiny_suite(steps=2, eval_every=1), backend="fake", labels=["sgd"], show_progress=False)
    rec = records["sine-resnet/sgd"]
    assert rec["grid"] == [*tune.lr_grid(0.1), 3.0, 9.0]
    assert rec["choice"] == 3.0
    assert tune.extend_at_edge({0.1: 0.5, 0.3: 0.2, 1.0: 0.4}, maximise=False) is None
    assert tune.extend_at_edge({0.1: 0.9, 0.3: 0.2}, maximise=True) == 0.03333


def test_tune_disqualifies_a_rate_that_fails_on_one_seed(fake_backend):
    """The best rate on seed 0 (0.3) diverges on seed 1: the tuner must not pick it."""
    fake_backend.best_lr = 0.3
    fake_backend.bad_step = 1
    fake_backend.unstable = {(0.3, 1)}
    records = tune.tune_suite(tiny_suite(steps=2, eval_every=1), backend="fake", labels=["sgd"], show_progress=False)
    rec = records["sine-resnet/sgd"]
    assert rec["status"]["0.3"] == "ok,diverged" and rec["scores"]["0.3"] is None
    assert rec["choice"] not in (0.3, None)


def test_why_not_names_backends_an_inner_solver_runs_in():
    """optax's L-BFGS exists in the jax and reference backends only; the torch cell says so."""
    hp = spec.EMSA(rho=1.0, inner="optax-lbfgs")
    reasons = implementations.why_not(hp, "torch")
    assert reasons == ["inner solver 'optax-lbfgs' runs in the reference and jax backends only"]
    assert not [r for r in implementations.why_not(hp, "jax") if "optax-lbfgs" in r]
    assert not [r for r in implementations.why_not(spec.EMSA(rho=1.0), "torch") if "inner solver" in r]


@pytest.mark.skipif(
    not memory._reset_host_peak(), reason="this kernel refuses to reset the peak RSS (/proc/self/clear_refs)"
)
def test_peak_memory_is_per_cell(fake_backend):
    """The peak RSS is reset at each cell's start: a cell that allocates 200 MiB reports at
    least 150 MiB more than a cell that does not, though it ran first in the same process."""
    fake_backend.modes.update(sgd="allocate")
    big, small = _cells(tiny_suite())[:2]  # sgd, then adagrad
    first, second = _run_one(big), _run_one(small)
    assert first["peak_rss_mib"].nunique() == 1 and second["peak_rss_mib"].nunique() == 1
    assert first["peak_rss_mib"].iloc[0] - second["peak_rss_mib"].iloc[0] > 150
    assert first["peak_gpu_mib"].isna().all()  # CPU: not measured


def test_skipped_cell_has_no_peak_memory(fake_backend):
    fake_backend.modes.update(sgd="skip")
    assert _run_one(_cells(tiny_suite())[0])["peak_rss_mib"].isna().all()


def test_kernel_backends_skip_without_a_gpu_and_say_why():
    """On a machine without CUDA the triton and cuda cells are skipped with the reason;
    algorithms they do not implement, and E-MSA settings their kernel lacks, say so too."""
    sine = problems.get_problem("sine-resnet")
    digits = problems.get_problem("digits-mlp-binary")
    for backend in implementations.KERNEL_BACKENDS:
        assert "needs a CUDA device" in implementations.why_not(spec.DMSA(levels=2, rho=0.5), backend, digits)[0]
        assert implementations.why_not("sgd", backend) == [
            f"the {backend} backend implements dmsa and emsa only, not sgd"
        ]
        lbfgs = implementations.why_not(spec.EMSA(rho=1.0), backend, digits)
        assert any("dense residual" in r for r in lbfgs) and any("gd and adam" in r for r in lbfgs)
        assert not [
            r for r in implementations.why_not(spec.EMSA(rho=1.0, inner="adam"), backend, sine) if "E-MSA kernel" in r
        ]
        with pytest.raises(KeyError, match="implements dmsa and emsa only"):
            implementations.get("sgd", backend)


def test_one_thread_sets_only_flags_xla_accepts():
    """``set_threads(1)`` in a fresh process: every XLA_FLAGS token is a ``--flag`` (XLA
    reads a bare token as a flags file and aborts, or ignores it beside other flags) and a
    jax computation runs under them."""
    code = (
        "import os; from suites import executors; executors.set_threads(1); "
        "flags = os.environ['XLA_FLAGS'].split(); assert flags and all(f.startswith('--') for f in flags), flags; "
        "import jax.numpy as jnp; print(float(jnp.arange(4.0).sum()))"
    )
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "6.0"
