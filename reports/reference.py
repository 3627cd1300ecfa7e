"""The authors' logged runs, carried into the project as reference data
(``reports/data/li_hao_2018/``, provenance in its README).

``load(name)`` reads ``reports/data/<name>.csv`` (columns epoch, train_loss, train_acc,
test_loss, test_acc, nonzero_frac) and adds ``samples``: training samples seen at the end
of the epoch, from the paper's training-split sizes, so that curves from data sets of
other sizes (the embedded stand-ins) can share an axis.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

DATA = Path(__file__).with_name("data")
#: training-split size of the paper's data sets (ICML 2018 §4: 55k/5k/10k MNIST, …)
EPOCH_SAMPLES = {"mnist": 55_000, "cifar10": 45_000, "svhn": 68_257}
COLUMNS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "nonzero_frac")


def load(name: str) -> pd.DataFrame:
    path = DATA / f"{name}.csv"
    df = pd.read_csv(path)
    missing = [c for c in COLUMNS[:5] if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {', '.join(missing)}")
    dataset = Path(name).name.split("_")[0]
    df["samples"] = df["epoch"] * EPOCH_SAMPLES[dataset]
    return df
