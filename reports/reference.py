"""The authors' logged runs, carried into the project as reference data
(``reports/data/li_hao_2018/``, provenance in its README).

``load(name)`` reads ``reports/data/<name>.csv`` (columns epoch, train_loss, train_acc,
test_loss, test_acc, nonzero_frac) and adds ``samples``: training samples seen at the end
of the epoch, from the paper's training-split sizes, so that curves from data sets of
other sizes (the embedded stand-ins) can share an axis.

``epoch_steps(problem)`` is the one rule for counting our steps in the authors' epochs: a
paper epoch is one pass over the paper's training split of the logged run's data set, so
at our problem's batch size it is ``EPOCH_SAMPLES[data set] // batch_size`` steps (550 for
the MNIST runs at batch 100, whatever the size of our own training set: the MNIST-5k
stand-ins count 550-step epochs, not their own 35-step ones, as their α schedule does
with ``alpha_decay_steps``). Floor division, as ``Problem.steps_per_epoch`` counts whole
batches.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from msaresults import schema

DATA = Path(__file__).with_name("data")
#: training-split size of the paper's data sets (ICML 2018 §4: 55k/5k/10k MNIST, …)
EPOCH_SAMPLES = {"mnist": 55_000, "cifar10": 45_000, "svhn": 68_257}
#: the configuration label of our run of the authors' algorithm, by weight kind
MSA_LABELS = {"binary": "dmsa-binary", "ternary": "dmsa-ternary"}
COLUMNS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "nonzero_frac")


def load(name: str) -> pd.DataFrame:
    path = DATA / f"{name}.csv"
    df = pd.read_csv(path)
    missing = [c for c in COLUMNS[:5] if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {', '.join(missing)}")
    df["samples"] = df["epoch"] * EPOCH_SAMPLES[dataset_of(name)]
    return df


def dataset_of(name: str) -> str:
    """The data set of a logged run, the first word of its file name
    (``li_hao_2018/mnist_fc_ternary_per_epoch`` -> ``mnist``)."""
    return Path(name).name.split("_")[0]


def epoch_steps(problem: schema.ProblemFacts) -> int | None:
    """Steps of one epoch of the authors' run that ``problem`` matches or stands in for,
    at the problem's batch size; None when the problem names no logged run."""
    if problem.reference_run is None:
        return None
    return EPOCH_SAMPLES[dataset_of(problem.reference_run)] // problem.batch_size


def at_epoch(log: pd.DataFrame, epoch: int) -> pd.Series | None:
    """The logged row of ``epoch`` (the authors log whole epochs from 1); None when the log
    stops earlier (the CIFAR-10 notebooks' logs end at epoch 81 and 55)."""
    rows = log[log["epoch"] == epoch]
    return rows.iloc[0] if len(rows) else None


def nearest_epoch(step: int, epoch_steps: int) -> int:
    """The whole logged epoch nearest to ``step`` (at least 1, the authors' first log line;
    halves round up, so 275 of 550 steps compares with epoch 1)."""
    return max(1, math.floor(step / epoch_steps + 0.5))
