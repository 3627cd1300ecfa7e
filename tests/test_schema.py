"""The results schema: round trip, atomic writes, and every way ``read_results`` refuses
a file (each with a one-line ``ResultsError``)."""

from __future__ import annotations

import dataclasses
import json
import math

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from implementations import spec
from suites import schema


def _rows() -> pd.DataFrame:
    base = {
        "suite": "s",
        "run_id": "r",
        "problem": "digits-mlp-ternary",
        "backend": "torch",
        "device": "cpu",
        "dtype": "float32",
        "seed": 0,
        "host": "node-1",
        "device_name": "test CPU",
        "git_sha": "0123456789abcdef",
        "git_dirty": False,
        "versions": "python=3.11 numpy=2.0",
        "concurrency": 1,
    }
    dmsa = {**base, "cell_id": "a", "algorithm": "dmsa", "label": "dmsa", **schema.hp_columns(spec.DMSA(3, 0.25))}
    ste = {**base, "cell_id": "b", "algorithm": "ste", "label": "twn", **schema.hp_columns(spec.STE("twn"))}
    return schema.frame(
        [
            {**dmsa, "step": 0, "epoch": 0.0, "train_loss": 2.3, "flips": 0.0, "layer_nonzero_frac": [0.5, 0.25]},
            {**dmsa, "step": 5, "epoch": 0.5, "train_loss": 1.1, "flips": 17.0, "layer_nonzero_frac": [0.4, 0.2]},
            {**ste, "step": 0, "epoch": 0.0, "status": "error", "reason": "RuntimeError: boom"},
            {**ste, "step": 0, "epoch": 0.0, "status": "skipped", "reason": "no GPU"},
        ]
    ).assign(status=lambda d: d["status"].fillna("ok"))


def test_columns_cover_every_hyperparameter():
    for cls in spec.HYPERPARAMETERS:
        for f in dataclasses.fields(cls):
            assert f"hp_{f.name}" in schema.COLUMNS
    assert schema.COLUMNS[-2:] == ("status", "reason")
    assert set(schema.REQUIRED) <= set(schema.COLUMNS)


def test_round_trip_keeps_types_and_metadata(tmp_path):
    df = _rows()
    df.loc[[0, 1], "status"] = "ok"
    path = schema.write_parquet(df, tmp_path / "x.parquet", {"suite": "s", "note": [1, 2]})
    back, meta = schema.read_results(path)
    assert meta["schema_version"] == schema.SCHEMA_VERSION and meta["note"] == [1, 2]
    assert list(back.columns) == list(schema.COLUMNS)
    assert back["status"].tolist() == ["ok", "ok", "error", "skipped"]
    assert list(back["layer_nonzero_frac"].iloc[1]) == [0.4, 0.2]
    assert back["layer_nonzero_frac"].iloc[2] is None
    assert back["hp_levels"].iloc[0] == 3 and math.isnan(back["hp_levels"].iloc[2])
    assert back["hp_kind"].iloc[2] == "twn" and back["hp_stochastic"].tolist()[2:] == [False, False]
    table = pq.read_table(path)
    assert table.schema.field("hp_levels").type == pa.int64()
    assert table.schema.field("layer_nonzero_frac").type == pa.list_(pa.float64())
    assert not list(tmp_path.glob("*.tmp"))


def test_write_is_atomic(tmp_path, monkeypatch):
    df = _rows()
    path = schema.write_parquet(df, tmp_path / "x.parquet", {})
    before = path.read_bytes()

    def broken(table, where, **kw):
        with open(where, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        schema.write_parquet(df, path, {})
    assert path.read_bytes() == before and not list(tmp_path.glob("*.tmp"))


def _expect(path, pattern):
    with pytest.raises(schema.ResultsError, match=pattern) as info:
        schema.read_results(path)
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path):
    _expect(tmp_path / "nope.parquet", "not found")


def test_empty_file(tmp_path):
    (tmp_path / "e.parquet").write_bytes(b"")
    _expect(tmp_path / "e.parquet", "not a parquet file")


def test_corrupt_bytes(tmp_path):
    path = schema.write_parquet(_rows(), tmp_path / "c.parquet", {})
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64
    data[-6:-4] = b"\x00\x00"  # the footer length
    path.write_bytes(bytes(data))
    _expect(path, "not a parquet file")


def test_no_msabench_metadata(tmp_path):
    path = tmp_path / "plain.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(path)
    _expect(path, "no msabench metadata")


def _rewrite_meta(path, meta):
    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata({b"msabench": json.dumps(meta).encode()}), path)


def test_other_schema_version(tmp_path):
    path = schema.write_parquet(_rows(), tmp_path / "v.parquet", {})
    _rewrite_meta(path, {"schema_version": 99})
    _expect(path, "schema_version 99")


def test_a_version_3_file_without_provenance_columns_is_refused_in_one_line(tmp_path):
    """A run file written before rows carried their provenance (version 3: no ``host``,
    ``device_name``, ``git_sha``, ``git_dirty``, ``versions``) gets the one line every
    other schema version gets, naming both versions."""
    path = schema.write_parquet(_rows(), tmp_path / "v3.parquet", {})
    old = pq.read_table(path).drop_columns([name for name, _ in schema.PROVENANCE])
    pq.write_table(old, path)
    _rewrite_meta(path, {"schema_version": 3, "suite": "s", "problems": {}, "labels": {}})
    _expect(path, "has schema_version 3; this msabench reads versions 4, 5, 6$")
    with pytest.raises(schema.ResultsError, match="schema_version 3"):
        schema.read_run(path)


def test_rows_carry_their_provenance(tmp_path):
    """The provenance columns come back as written, typed, on every row."""
    path = schema.write_parquet(_rows(), tmp_path / "p.parquet", {})
    back, _ = schema.read_results(path)
    assert set(back["host"]) == {"node-1"} and set(back["device_name"]) == {"test CPU"}
    assert set(back["git_sha"]) == {"0123456789abcdef"} and back["git_dirty"].tolist() == [False] * 4
    assert pq.read_table(path).schema.field("git_dirty").type == pa.bool_()
    assert back["versions"].iloc[0] == "python=3.11 numpy=2.0"


@pytest.mark.parametrize("column", ["host", "device_name"])
@pytest.mark.parametrize("value", [None, "", "  "])
def test_a_row_that_does_not_say_where_it_ran_is_refused(column, value):
    df = _rows()
    df.loc[2, column] = value
    with pytest.raises(schema.ResultsError, match=f"rows without a {column}"):
        schema.validate(df)


def test_git_columns_may_be_null():
    """Code installed from a wheel has no commit: null git columns are valid."""
    schema.validate(_rows().assign(git_sha=None, git_dirty=None))


def test_missing_column(tmp_path):
    path = schema.write_parquet(_rows(), tmp_path / "m.parquet", {})
    table = pq.read_table(path)
    pq.write_table(table.drop_columns(["test_acc"]), path)
    _expect(path, "missing columns: test_acc")


def test_bad_status(tmp_path):
    path = schema.write_parquet(_rows(), tmp_path / "b.parquet", {})
    table = pq.read_table(path)
    i = table.schema.get_field_index("status")
    bad = table.set_column(i, "status", pa.array(["ok", "ok", "weird", "skipped"]))
    pq.write_table(bad, path)
    _expect(path, "status values outside .*'weird'")


def test_validate_reason_consistency():
    df = _rows()
    with pytest.raises(schema.ResultsError, match="must give a reason"):
        schema.validate(df.assign(status="error", reason=""))
    with pytest.raises(schema.ResultsError, match="empty reason"):
        schema.validate(df.assign(status="ok", reason="x"))
    with pytest.raises(schema.ResultsError, match="missing columns"):
        schema.write_parquet(df.drop(columns=["seed"]), "/nonexistent/x.parquet", {})


def test_a_run_file_records_the_facts_its_report_reads(tiny, fake_backend, capsys, tmp_path, monkeypatch):
    """The runner records each problem's facts and each label's algorithm; ``read_run``
    reads them back as the registry had them when the run was made."""
    from suites import __main__ as cli
    from suites import executors, problems

    monkeypatch.setattr(executors, "set_threads", lambda n: None)  # keep this process's torch as it is
    assert cli.main(["run", "tiny", "--out", str(tmp_path), "--quiet", "--jobs", "1"]) == 0
    path = capsys.readouterr().out.splitlines()[-1]
    _, _, facts = schema.read_run(path)
    assert facts.problems == {"sine-resnet": schema.ProblemFacts.of(problems.get_problem("sine-resnet"))}
    assert facts.problems["sine-resnet"].target_metric == "test_loss"
    assert facts.labels == {"sgd": "sgd", "adagrad": "adagrad", "adam": "adam"}


def test_wrong_column_type_is_refused(tmp_path):
    path = schema.write_parquet(_rows(), tmp_path / "t.parquet", {})
    table = pq.read_table(path)
    i = table.schema.get_field_index("seed")
    pq.write_table(table.set_column(i, "seed", pa.array(["0"] * table.num_rows)), path)
    _expect(path, "column seed has type string, expected int64")


def test_a_version_4_file_is_read_as_cells_trained_in_one_go(tmp_path):
    """Version 4 predates checkpoints: its rows read with ``resumed_from`` 0, and the
    metadata says the file was upgraded."""
    path = schema.write_parquet(_rows(), tmp_path / "v4.parquet", {})
    pq.write_table(pq.read_table(path).drop_columns(["resumed_from"]), path)
    _rewrite_meta(path, {"schema_version": 4})
    df, meta = schema.read_results(path)
    assert (df["resumed_from"] == 0).all() and len(df) == len(_rows())
    assert meta["schema_version"] == schema.SCHEMA_VERSION and meta["upgraded_from"] == 4


def test_a_version_5_file_reads_host_sync_from_the_inner_solver(tmp_path):
    """Version 5 did not record ``host_sync``: a row of SciPy's L-BFGS-B (``hp_inner ==
    "lbfgs"``) reads as host-synchronised, every other row (other solvers, other
    algorithms, whose ``hp_inner`` is null) as not."""
    emsa = {
        "suite": "s",
        "run_id": "r",
        "problem": "sine-resnet",
        "backend": "torch",
        "device": "cpu",
        "dtype": "float32",
        "seed": 0,
        "host": "node-1",
        "device_name": "test CPU",
        "concurrency": 1,
        "step": 0,
        "epoch": 0.0,
        "status": "ok",
    }
    rows = schema.frame(
        [
            {**emsa, "cell_id": "a", "algorithm": "emsa", "label": "emsa", **schema.hp_columns(spec.EMSA(1.0))},
            {
                **emsa,
                "cell_id": "b",
                "algorithm": "emsa",
                "label": "emsa-device",
                **schema.hp_columns(spec.EMSA(1.0, inner="lbfgs-device")),
            },
            {**emsa, "cell_id": "c", "algorithm": "adam", "label": "adam", **schema.hp_columns(spec.Adam(0.01))},
        ]
    )
    path = schema.write_parquet(rows, tmp_path / "v5.parquet", {})
    pq.write_table(pq.read_table(path).drop_columns(["host_sync"]), path)
    _rewrite_meta(path, {"schema_version": 5})
    df, meta = schema.read_results(path)
    assert df.set_index("cell_id")["host_sync"].to_dict() == {"a": True, "b": False, "c": False}
    assert meta["upgraded_from"] == 5
