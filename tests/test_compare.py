"""``msabench compare``: regressions flagged, seed noise not, exit code on request, and
runs that do not compare refused."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from suites import __main__ as cli
from suites import compare, schema

META = {"suite": "cmp", "device": "cpu", "device_name": "test CPU"}


def _rows(run_id: str, configs: dict[str, dict], device: str = "cpu", device_name: str = "test CPU") -> list[dict]:
    """One final row per seed of each label: ``configs[label]`` lists per-seed values,
    and ``configs[label]["on"]`` optionally the device name of each seed's cell."""
    rows = []
    for label, values in configs.items():
        for seed, ms in enumerate(values["ms"]):
            rows.append(
                {
                    "suite": "cmp",
                    "run_id": run_id,
                    "cell_id": f"p.{label}.torch.float32.s{seed}",
                    "problem": "p",
                    "algorithm": "sgd",
                    "label": label,
                    "backend": "torch",
                    "device": device,
                    "dtype": "float32",
                    "seed": seed,
                    "host": "bench-host",
                    "device_name": values.get("on", [device_name] * len(values["ms"]))[seed],
                    "step": 100,
                    "ms_per_step": ms,
                    "compile_s": 1.0,
                    "peak_rss_mib": 500.0,
                    "test_acc": values.get("acc", [0.95] * 3)[seed],
                    "test_loss": 0.2,
                    "nonzero_frac": 1.0,
                    "status": "ok",
                    "reason": "",
                }
            )
    return rows


BASE = {
    "slowed": {"ms": [10.0, 10.5, 11.0]},
    "wobbly": {"ms": [10.0, 11.0, 12.0]},
    "less-accurate": {"ms": [5.0, 5.0, 5.0], "acc": [0.95, 0.95, 0.95]},
}
NEW = {
    "slowed": {"ms": [13.0, 13.65, 14.3]},  # 30% slower, far outside the seeds' spread
    "wobbly": {"ms": [10.3, 11.33, 12.36]},  # 3% slower, inside the 2 ms spread
    "less-accurate": {"ms": [5.0, 5.0, 5.0], "acc": [0.93, 0.93, 0.93]},  # 2 points down
}


def _write(tmp_path, name: str, run_id: str, configs: dict, **meta) -> str:
    """A run file; ``device``/``device_name`` in ``meta`` set the rows' device too."""
    on = {k: meta[k] for k in ("device", "device_name") if k in meta}
    df = schema.frame(_rows(run_id, configs, **on))
    return str(schema.write_parquet(df, tmp_path / "cmp" / f"{name}.parquet", {**META, "run_id": run_id, **meta}))


def test_slowdown_and_accuracy_drop_flagged_wobble_not(tmp_path):
    base, new = _write(tmp_path, "20260101T000000Z-a", "a", BASE), _write(tmp_path, "20260102T000000Z-b", "b", NEW)
    b, n, _, _ = compare.load_pair(Path(base), Path(new))
    table = compare.compare(b, n).set_index("label")
    assert table.loc["slowed", "verdict"] == compare.REGRESSED and "ms/step" in table.loc["slowed", "what"]
    assert "+30%" in table.loc["slowed", "ms/step"]
    assert table.loc["wobbly", "verdict"] == compare.UNCHANGED
    assert table.loc["less-accurate", "verdict"] == compare.REGRESSED
    assert table.loc["less-accurate", "what"] == "test acc %"


def test_improvement_is_the_mirror_image(tmp_path):
    base, new = _write(tmp_path, "x1", "x1", NEW), _write(tmp_path, "x2", "x2", BASE)
    b, n, _, _ = compare.load_pair(Path(base), Path(new))
    table = compare.compare(b, n).set_index("label")
    assert table.loc["slowed", "verdict"] == compare.IMPROVED
    assert table.loc["less-accurate", "verdict"] == compare.IMPROVED
    assert table.loc["wobbly", "verdict"] == compare.UNCHANGED


def test_exit_code_follows_fail_on_regression(tmp_path, capsys):
    base, new = _write(tmp_path, "r1", "r1", BASE), _write(tmp_path, "r2", "r2", NEW)
    assert cli.main(["compare", base, new]) == 0
    out = capsys.readouterr().out
    assert "regressed" in out and "2 regressed, 0 improved, 1 unchanged" in out
    assert cli.main(["compare", base, new, "--fail-on-regression"]) == 1
    same = _write(tmp_path, "r3", "r3", BASE)
    assert cli.main(["compare", base, same, "--fail-on-regression"]) == 0


def test_default_pair_is_the_previous_run_on_the_same_device(tmp_path, capsys):
    _write(tmp_path, "20260101T000000Z-aaaa", "20260101T000000Z-aaaa", BASE)
    _write(tmp_path, "20260102T000000Z-bbbb", "20260102T000000Z-bbbb", BASE, device="cuda", device_name="GPU")
    _write(tmp_path, "20260103T000000Z-cccc", "20260103T000000Z-cccc", NEW)
    pair = compare.default_pair(tmp_path, "cmp")
    assert [p.stem for p in pair] == ["20260101T000000Z-aaaa", "20260103T000000Z-cccc"]
    # by run id, and with a single run of the suite there is nothing to compare
    assert cli.main(["compare", "20260101T000000Z-aaaa", "20260103T000000Z-cccc", "--results-dir", str(tmp_path)]) == 0
    lonely = tmp_path / "lonely"
    _write(lonely, "20260101T000000Z-only", "20260101T000000Z-only", BASE)
    assert cli.main(["compare", "--suite", "cmp", "--results-dir", str(lonely)]) == 0
    assert "no earlier run" in capsys.readouterr().out


def _fail_message(capsys, argv) -> str:
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    return err[0]


def test_runs_from_different_devices_are_refused(tmp_path, capsys):
    base = _write(tmp_path, "d1", "d1", BASE)
    new = _write(tmp_path, "d2", "d2", NEW, device="cuda", device_name="NVIDIA H100")
    assert "different devices" in _fail_message(capsys, ["compare", base, new])


def test_runs_of_different_schema_versions_are_refused(tmp_path, capsys):
    base, new = _write(tmp_path, "v1", "v1", BASE), _write(tmp_path, "v2", "v2", NEW)
    table = pq.read_table(base)
    meta = json.loads(table.schema.metadata[schema.METADATA_KEY])
    meta["schema_version"] = 3  # older than any version this msabench upgrades
    pq.write_table(table.replace_schema_metadata({schema.METADATA_KEY: json.dumps(meta).encode()}), base)
    message = _fail_message(capsys, ["compare", base, new])
    assert "schema version 3" in message and f"schema version {schema.SCHEMA_VERSION}" in message


def test_missing_run_is_one_line(tmp_path, capsys):
    assert "not found" in _fail_message(capsys, ["compare", str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")])


def _refused(tmp_path, capsys, base_meta: dict, new_meta: dict, new_configs=NEW) -> str:
    base = _write(tmp_path, "m1", "m1", BASE, **base_meta)
    new = _write(tmp_path, "m2", "m2", new_configs, **new_meta)
    return _fail_message(capsys, ["compare", base, new, "--fail-on-regression"])


def test_runs_of_different_suites_or_budgets_are_refused(tmp_path, capsys):
    assert "different suites" in _refused(tmp_path, capsys, {}, {"suite": "other"})
    budget = _refused(tmp_path, capsys, {"options": {"steps": 100}}, {"options": {"steps": 50}})
    assert "different budgets" in budget


def test_empty_run_or_nothing_in_common_fails(tmp_path, capsys):
    empty = str(schema.write_parquet(schema.frame([]), tmp_path / "cmp" / "e.parquet", {**META, "run_id": "e"}))
    base = _write(tmp_path, "f1", "f1", BASE)
    assert "run has no rows" in _fail_message(capsys, ["compare", base, empty, "--fail-on-regression"])
    other = _write(tmp_path, "f2", "f2", {"renamed": BASE["slowed"]})
    assert "no configuration" in _fail_message(capsys, ["compare", base, other, "--fail-on-regression"])


def test_bad_metadata_is_one_line(tmp_path, capsys):
    base, new = _write(tmp_path, "j1", "j1", BASE), _write(tmp_path, "j2", "j2", NEW)
    table = pq.read_table(new)
    pq.write_table(table.replace_schema_metadata({schema.METADATA_KEY: b"{not json"}), new)
    assert "not valid JSON" in _fail_message(capsys, ["compare", base, new])


def _timed_cell(run_id: str, label: str, interval_ms: list[float]) -> list[dict]:
    """One seed, evaluated at steps 0, 11, 21, ...: ``interval_ms[i]`` is the ms per step
    of the i-th interval (the first holds 10 timed steps: step 1 is compile)."""
    base = _rows(run_id, {label: {"ms": [statistics.median(interval_ms)]}})[0]
    rows, seconds = [{**base, "step": 0, "time_s": 0.0}], 0.0
    for i, ms in enumerate(interval_ms):
        seconds += 10 * ms / 1000
        rows.append({**base, "step": 11 + 10 * i, "time_s": seconds})
    return rows


def _one_seed_runs(tmp_path, base_ms: dict, new_ms: dict) -> pd.DataFrame:
    paths = []
    for name, configs in (("o1", base_ms), ("o2", new_ms)):
        rows = [r for label, ms in configs.items() for r in _timed_cell(name, label, ms)]
        path = schema.write_parquet(schema.frame(rows), tmp_path / "cmp" / f"{name}.parquet", {**META, "run_id": name})
        paths.append(path)
    b, n, _, _ = compare.load_pair(*paths)
    return compare.compare(b, n).set_index("label")


def test_one_seed_speed_is_judged_against_the_timing_spread_inside_cells(tmp_path):
    """Two runs of one seed: a 12% slowdown inside the blocks' own 2 ms spread is noise
    (before: "regressed" for any change past the threshold), a 50% one is not."""
    table = _one_seed_runs(
        tmp_path,
        {"noisy": [9.0, 11.0, 10.0], "slowed": [10.0, 10.2, 10.1]},
        {"noisy": [10.2, 12.3, 11.2], "slowed": [15.0, 15.3, 15.2]},
    )
    assert table.loc["noisy", "verdict"] == compare.UNCHANGED
    assert table.loc["slowed", "verdict"] == compare.REGRESSED and "ms/step" in table.loc["slowed", "what"]


def test_one_seed_without_a_noise_estimate_is_not_judged(tmp_path, capsys):
    """One seed and one row per cell: no spread at all, so speed is "not judged" and
    ``--fail-on-regression`` passes (before: two identical runs read "regressed")."""
    one = {"slowed": {"ms": [10.0]}}
    base = _write(tmp_path, "n1", "n1", one)
    new = _write(tmp_path, "n2", "n2", {"slowed": {"ms": [13.0]}})
    b, n, _, _ = compare.load_pair(Path(base), Path(new))
    row = compare.compare(b, n).set_index("label").loc["slowed"]
    assert row["verdict"] == compare.UNCHANGED and "ms/step" in row["not judged"]
    assert "not judged" in row["ms/step"]
    assert cli.main(["compare", base, new, "--fail-on-regression"]) == 0
    capsys.readouterr()


def test_a_configuration_whose_cells_ran_on_other_devices_is_not_judged(tmp_path, capsys):
    """Devices are matched per cell: ``moved`` ran on another CPU in each run, so its 3x
    slowdown is no regression (nor a verdict at all), and the output says why; ``slowed``
    ran on the same CPU in both and is judged as ever."""
    base_cfg = {**BASE, "moved": {"ms": [5.0, 5.0, 5.0], "on": ["CPU A"] * 3}}
    new_cfg = {**NEW, "moved": {"ms": [15.0, 15.0, 15.0], "on": ["CPU B"] * 3}}
    base, new = _write(tmp_path, "p1", "p1", base_cfg), _write(tmp_path, "p2", "p2", new_cfg)
    b, n, _, _ = compare.load_pair(Path(base), Path(new))
    table = compare.compare(b, n).set_index("label")
    moved = table.loc["moved"]
    assert moved["verdict"] == compare.NOT_JUDGED and moved["what"] == ""
    assert "base cpu/CPU A" in moved["not judged"] and "new cpu/CPU B" in moved["not judged"]
    assert table.loc["slowed", "verdict"] == compare.REGRESSED and table.loc["slowed", "device"] == "cpu/test CPU"
    assert cli.main(["compare", base, new]) == 0
    out = capsys.readouterr().out
    assert "2 regressed, 0 improved, 1 unchanged, 1 not judged" in out and "cells ran on other devices" in out


def test_only_cells_on_a_shared_device_are_compared(tmp_path):
    """New's third seed ran on another machine (10x slower, 45 points less accurate): it
    is left out, and named, and the two seeds on the shared CPU show no regression."""
    base = _write(tmp_path, "q1", "q1", {"mixed": {"ms": [10.0, 10.5, 11.0]}})
    elsewhere = {"ms": [10.0, 10.5, 110.0], "acc": [0.95, 0.95, 0.5], "on": ["test CPU"] * 2 + ["slow CPU"]}
    new = _write(tmp_path, "q2", "q2", {"mixed": elsewhere})
    b, n, _, _ = compare.load_pair(Path(base), Path(new))
    row = compare.compare(b, n).set_index("label").loc["mixed"]
    assert row["verdict"] == compare.UNCHANGED, row.to_dict()
    assert "10.5 → 10.2" in row["ms/step"] and "95 → 95" in row["test acc %"]
    assert "cells on cpu/slow CPU (no counterpart)" in row["not judged"]


def test_the_rows_devices_decide_not_the_metadata(tmp_path):
    """A run started on one machine whose cells ran on another (a cluster's driver): its
    metadata names the driver's CPU, its rows the workers'; the rows are compared."""
    base = _write(tmp_path, "w1", "w1", BASE)
    df = schema.frame(_rows("w2", NEW))
    new = schema.write_parquet(df, tmp_path / "cmp" / "w2.parquet", {**META, "run_id": "w2", "device_name": "driver"})
    b, n, _, _ = compare.load_pair(Path(base), new)
    assert compare.compare(b, n).set_index("label").loc["slowed", "verdict"] == compare.REGRESSED
    assert compare.default_pair(tmp_path, "cmp") == (Path(base), new)
