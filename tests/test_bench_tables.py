"""The benchmark tables read pytest-benchmark's JSON: the DDPNOpt table's ratios are
DDPNOpt's median over RMSprop's and E-MSA's on the same problem and backend."""

from __future__ import annotations

import json

from tests.bench import ratios


def _bench(problem, label, backend, median_s):
    return {"extra_info": {"problem": problem, "label": label, "backend": backend}, "stats": {"median": median_s}}


def test_ddpnopt_table_divides_on_the_same_problem_and_backend(tmp_path, capsys):
    data = {
        "benchmarks": [
            _bench("mnist5k-rescnn", "ddpnopt", "torch", 0.030),
            _bench("mnist5k-rescnn", "rmsprop", "torch", 0.010),
            _bench("mnist5k-rescnn", "emsa", "torch", 0.300),
            _bench("mnist5k-rescnn", "ddpnopt", "jax", 0.040),
            _bench("mnist5k-mlp", "rmsprop", "jax", 0.005),
        ]
    }
    lines = ratios.ddpnopt_table(data).splitlines()
    assert "| mnist5k-rescnn | torch | 30 | 10 | 300 | 3.00 | 0.10 |" in lines
    assert "| mnist5k-rescnn | jax | 40 | – | – | – | – |" in lines  # nothing to divide by
    assert "| mnist5k-mlp | jax | – | 5 | – | – | – |" in lines
    path = tmp_path / "b.json"
    path.write_text(json.dumps(data))
    assert ratios.main([str(path), "--ddpnopt"]) == 0
    assert "DDPNOpt / RMSprop" in capsys.readouterr().out


def test_unreadable_benchmark_json_is_one_line_and_exit_2(tmp_path, capsys):
    path = tmp_path / "b.json"
    path.write_text("{not json")
    assert ratios.main([str(path), "--ddpnopt"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_backends_table_puts_the_three_backends_side_by_side_and_the_goals_below():
    data = {
        "benchmarks": [
            _bench("sine-resnet", "adam", "torch", 0.002),
            _bench("sine-resnet", "adam", "jax", 0.001),
            _bench("sine-resnet", "adam", "torch-compile", 0.0005),
            _bench("sine-resnet", "emsa-device", "torch", 0.006),
            _bench("sine-resnet", "emsa-device", "jax", 0.010),
            _bench("mnist5k-mlp-binary", "dmsa-binary", "jax", 0.0033),
            _bench("mnist5k-mlp-binary", "bc", "jax", 0.003),
        ]
    }
    lines = ratios.table(data).splitlines()
    assert "| sine-resnet | adam | 2 | 1 | 0.5 | 2.00 | 4.00 |" in lines
    assert "| sine-resnet | emsa-device | 6 | 10 | skipped | 0.60 | – |" in lines
    # goals: the same problem and backend only, each against its own goal
    assert "| sine-resnet | emsa-device / adam | torch | 3.00 | ≤ 4 |" in lines
    assert "| sine-resnet | emsa-device / adam | jax | 10.00 | ≤ 8 |" in lines
    assert "| mnist5k-mlp-binary | dmsa-binary / bc | jax | 1.10 | ≤ 1.1 |" in lines
    assert not any("torch-compile | " in line and "emsa-device / adam" in line for line in lines)
