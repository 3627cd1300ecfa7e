"""The suite's framework-neutral types: layers, hyperparameters and the Trainer.

Nothing here imports a framework, so suites, the runner and every backend can share it.

Notation (implementations/README.md §1.1): a network is the discrete dynamical system
``x_{t+1} = f_t(x_t, θ_t)``, t = 0..T-1, one *layer* per time step. Every operation is
its own layer (a dense map, a batch norm, a ReLU, ...), so the states ``x_t`` and costates
``p_t`` exist at every operation boundary, as in the authors' code.

Parameters travel between backends as a flat ``list[np.ndarray]``: the layers' parameters
in layer order, each layer's in the order of its ``param_names``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

# ---------------------------------------------------------------------------------------
# Layers: what f_t is. Backends give each kind its forward map; shapes live here.
# Tensors are (N, features) for dense data and (N, C, H, W) for images.
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dense:
    """``f(x) = x W (+ b)``; W has shape (n_in, n_out). ``quantized`` marks the discrete
    weights of binary/ternary problems (the layers binary/ternary MSA, BinaryConnect and
    TWN act on)."""

    n_in: int
    n_out: int
    bias: bool = True
    quantized: bool = False

    @property
    def param_names(self) -> tuple[str, ...]:
        return ("W", "b") if self.bias else ("W",)

    def param_shapes(self) -> tuple[tuple[int, ...], ...]:
        return ((self.n_in, self.n_out), (self.n_out,))[: len(self.param_names)]


@dataclass(frozen=True)
class Conv:
    """``f(x) = conv(x, W) (+ b)``: 'same' padding, stride 1, W of shape (c_out, c_in, k, k)
    (cross-correlation, as every framework computes it)."""

    c_in: int
    c_out: int
    k: int = 3
    bias: bool = True
    quantized: bool = False

    @property
    def param_names(self) -> tuple[str, ...]:
        return ("W", "b") if self.bias else ("W",)

    def param_shapes(self) -> tuple[tuple[int, ...], ...]:
        return ((self.c_out, self.c_in, self.k, self.k), (self.c_out,))[: len(self.param_names)]


@dataclass(frozen=True)
class ResDense:
    """JMLR residual layer ``f(x) = x + δ · tanh(x W + b)``, W of shape (width, width)."""

    width: int
    delta: float
    quantized: bool = False
    param_names: tuple[str, ...] = ("W", "b")

    def param_shapes(self) -> tuple[tuple[int, ...], ...]:
        return ((self.width, self.width), (self.width,))


@dataclass(frozen=True)
class ResConv:
    """JMLR residual conv layer ``f(x) = x + δ · tanh(conv3x3(x, W) + b)``."""

    channels: int
    delta: float
    k: int = 3
    quantized: bool = False
    param_names: tuple[str, ...] = ("W", "b")

    def param_shapes(self) -> tuple[tuple[int, ...], ...]:
        return ((self.channels, self.channels, self.k, self.k), (self.channels,))


@dataclass(frozen=True)
class BatchNorm:
    """Batch norm over the batch (and spatial) axes, per feature/channel:
    ``f(x) = γ (x - mean_B x) / sqrt(var_B x + ε) + β`` with the biased batch variance in
    training; running statistics ``r ← (1 - m) r + m · batch_stat`` (unbiased variance for
    the running variance, as torch does) are used at test time."""

    features: int
    eps: float = 1e-4
    momentum: float = 0.1
    quantized: bool = False
    param_names: tuple[str, ...] = ("gamma", "beta")

    def param_shapes(self) -> tuple[tuple[int, ...], ...]:
        return ((self.features,), (self.features,))


@dataclass(frozen=True)
class _NoParams:
    quantized: bool = False
    param_names: tuple[str, ...] = ()

    def param_shapes(self) -> tuple[tuple[int, ...], ...]:
        return ()


@dataclass(frozen=True)
class ReLU(_NoParams):
    """``f(x) = max(x, 0)``."""


@dataclass(frozen=True)
class Tanh(_NoParams):
    """``f(x) = tanh(x)``."""


@dataclass(frozen=True)
class MaxPool2(_NoParams):
    """2×2 max pooling, stride 2, on (N, C, H, W)."""


@dataclass(frozen=True)
class AvgPool2(_NoParams):
    """2×2 average pooling, stride 2, on (N, C, H, W) (the JMLR code's pooling)."""


@dataclass(frozen=True)
class Flatten(_NoParams):
    """(N, C, H, W) -> (N, C·H·W), C-order."""


@dataclass(frozen=True)
class SumFeatures(_NoParams):
    """``f(x) = Σ_i x^i`` kept as (N, 1): the sine toy's read-out."""


Layer = Dense | Conv | ResDense | ResConv | BatchNorm | ReLU | Tanh | MaxPool2 | AvgPool2 | Flatten | SumFeatures

#: Losses Φ(z, y) averaged over the batch (the 1/S lives inside the costates):
#: ``mse``: mean_s (z_s - y_s)² with z, y of shape (S, 1) (the JMLR toy's
#: ``tf.losses.mean_squared_error``); ``xent``: mean_s of softmax cross-entropy, y integer
#: labels; ``sqhinge``: mean over samples *and* classes of relu(1 - ỹ·z)², ỹ ∈ {-1, +1}
#: the one-hot labels mapped to ±1 (BinaryConnect's and the ICML code's loss).
LOSSES = ("mse", "xent", "sqhinge")


def layer_slices(layers: tuple[Layer, ...]) -> list[slice]:
    """Where each layer's parameters sit in the flat parameter list."""
    out, start = [], 0
    for layer in layers:
        n = len(layer.param_names)
        out.append(slice(start, start + n))
        start += n
    return out


class DDPStage(NamedTuple):
    """DDPNOpt's controlled stage: layers ``start .. stop-1``, the last one with parameters."""

    start: int
    stop: int


def ddp_stages(layers: tuple[Layer, ...]) -> tuple[list[DDPStage], int]:
    """DDPNOpt's controlled stages (a layer with parameters ends a stage; parameter-free
    layers join the next one) and the index where the layers folded into Φ begin."""
    stages, start = [], 0
    for i, layer in enumerate(layers):
        if layer.param_names:
            stages.append(DDPStage(start, i + 1))
            start = i + 1
    if not stages:
        raise ValueError("DDPNOpt needs at least one layer with parameters")
    return stages, start


# ---------------------------------------------------------------------------------------
# Hyperparameters: one frozen dataclass per algorithm; the id is the lowercase class name.
# ---------------------------------------------------------------------------------------

#: The MSA family's inner maximisers: ``lbfgs`` is SciPy's L-BFGS-B driven from the host
#: (the JMLR authors' solver, in every backend); ``adam`` and ``gd`` are ascent steps;
#: ``optax-lbfgs`` is optax's L-BFGS (memory 10, zoom line search) inside the compiled
#: step, in the jax backend (and the reference, eagerly) only: a different line search
#: from L-BFGS-B's, so its iterates differ from ``lbfgs``'s; ``lbfgs-device`` is
#: ``DeviceLBFGS``, an L-BFGS with a fixed budget and no host synchronisation, every layer
#: of a step solved at once (torch, jax; the reference runs it layer by layer).
INNER_SOLVERS = ("lbfgs", "adam", "gd", "optax-lbfgs", "lbfgs-device")


class DeviceLBFGS:
    """The ``lbfgs-device`` inner solver: ``inner_steps`` iterations of L-BFGS on F = -H̃,
    each one evaluation of (F, ∇F), with no data-dependent control flow, so that a whole
    E-MSA step runs on the device and the layers' problems run as one batch.

    From θ₀ with (F₀, g₀), iteration i:

    - direction d = -H g, H the L-BFGS inverse-Hessian approximation from the last
      ``MEMORY`` accepted pairs (s, y) with H₀ = γI, γ = sᵀy / yᵀy of the newest pair
      (γ = 1 without pairs); if gᵀd ≥ 0 (never with valid pairs), d = -g;
    - trial θ' = θ + α d, one evaluation (F', g');
    - accept when F' ≤ F + ``ARMIJO`` · α gᵀd (and F' is finite): θ, F, g ← θ', F', g';
      the pair (s, y) = (θ' - θ, g' - g) joins the memory when also sᵀy > ε yᵀy (ε the
      dtype's machine epsilon; L-BFGS-B's curvature test);
    - step length: α₀ = 1/‖g₀‖ (a first move of unit length, as L-BFGS-B's); after an
      acceptance α = 1 (α = 1/‖g‖ while the memory is still empty), after a rejection
      α · ``SHRINK`` (backtracking spread over the iterations: the next iteration retries
      the same direction shorter).

    So F never increases, the budget is exactly ``inner_steps`` + 1 evaluations, and each
    layer keeps its own α, memory and acceptances. The backends form H g by the compact
    representation (Byrd, Nocedal & Schnabel 1994) as a few batched small matrix products;
    the reference by the two-loop recursion, the same H.
    """

    MEMORY = 10
    ARMIJO = 1e-4
    SHRINK = 0.25


def host_synchronises(hp: Any) -> bool:
    """Whether a training step of ``hp`` waits on the host for values the device computed
    inside the step: only the ``lbfgs`` inner solver, SciPy's L-BFGS-B, which reads every
    value and gradient of its line search back. Every other step leaves the device only at
    the edges of a timed block (host-made inputs such as the perturbation draws, stochastic
    BinaryConnect's uniforms or binary/ternary MSA's α travel to the device without a
    wait). Recorded in every result row as ``host_sync``."""
    return getattr(hp, "inner", None) == "lbfgs"


class _TrainsRealWeights:
    """Mixin of the full-precision algorithms: they train a problem's real weights."""

    def weights_trained(self) -> str:
        return "real"


@dataclass(frozen=True)
class SGD(_TrainsRealWeights):
    """Plain (momentum) SGD on J = mean loss + reg·½‖θ‖²:
    ``v ← μ v + ∇J`` (v₀ = ∇J at the first step), ``θ ← θ - lr v`` (torch's convention)."""

    lr: float
    momentum: float = 0.0
    reg: float = 0.0


@dataclass(frozen=True)
class Adagrad(_TrainsRealWeights):
    """Adagrad on J: ``G ← G + g²`` (G₀ = initial_accumulator), ``θ ← θ - lr g/(√G + eps)``.
    G₀ = 0.1 is TensorFlow's default, which the JMLR code ran."""

    lr: float
    initial_accumulator: float = 0.1
    eps: float = 1e-10
    reg: float = 0.0


@dataclass(frozen=True)
class Adam(_TrainsRealWeights):
    """Adam on J: ``m ← b1 m + (1-b1) g``, ``v ← b2 v + (1-b2) g²``,
    ``θ ← θ - lr m̂/(√v̂ + eps)`` with m̂ = m/(1-b1ᵏ), v̂ = v/(1-b2ᵏ)."""

    lr: float
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    reg: float = 0.0


@dataclass(frozen=True)
class RMSprop(_TrainsRealWeights):
    """RMSprop on J, torch.optim.RMSprop's rule without momentum or centring:
    ``v ← α v + (1-α) g²`` (v₀ = 0), ``θ ← θ - lr g / (√v + eps)``, eps outside the root."""

    lr: float
    alpha: float = 0.99
    eps: float = 1e-8
    reg: float = 0.0


class _PerturbsInnerStart:
    """Mixin of the MSA family's real-weight algorithms: the perturbed start of every inner
    solve, the JMLR authors' ``msa_perturb_init`` (their ``config.yml``: 0.005 on the sine
    toy).

    With ``perturb_init = p > 0``, every inner solve (every layer t with parameters, at
    every step k = 1, 2, ...) starts from ``θ_t + δ_{k,t}`` instead of θ_t, with
    ``δ_{k,t} = p · U(-1, 1)`` i.i.d. over the layer's packed variables (its parameters
    raveled in ``param_names`` order and concatenated), drawn from NumPy's generator
    seeded with ``[seed, k, t, 2]`` (``implementations.draws.inner_start_perturbation``)
    and rounded to the parameters' dtype before it is added, so every backend starts from
    the same point. The step count k is part of the training state, so a resumed run
    draws what the uninterrupted one would. ``p = 0``: from θ_t exactly, nothing drawn.
    The perturbation is what breaks the symmetry of an all-zero init (JMLR Fig. 1b)."""

    def __post_init__(self) -> None:
        if not self.perturb_init >= 0:
            raise ValueError(f"perturb_init must be >= 0, not {self.perturb_init!r}")


@dataclass(frozen=True)
class MSA(_PerturbsInnerStart, _TrainsRealWeights):
    """Basic MSA (JMLR §3): ``θ_t ← argmax_θ Σ_s H_t(x_t, p_{t+1}, θ)``, the argmax
    approximated by ``inner_steps`` iterations of ``inner`` from the current θ (perturbed
    by ``perturb_init``: ``_PerturbsInnerStart``)."""

    inner: str = "lbfgs"
    inner_steps: int = 10
    inner_lr: float = 0.1
    reg: float = 1e-3
    perturb_init: float = 0.0


@dataclass(frozen=True)
class EMSA(_PerturbsInnerStart, _TrainsRealWeights):
    """Extended MSA (JMLR Algorithm 3): argmax of the augmented Hamiltonian
    ``H_t - ρ/2 ‖x_{t+1} - f_t(x_t, θ)‖² - ρ/2 ‖p_t - ∇_x H_t(x_t, p_{t+1}, θ)‖²``, each
    inner solve started from θ_t perturbed by ``perturb_init`` (``_PerturbsInnerStart``)."""

    rho: float
    inner: str = "lbfgs"
    inner_steps: int = 10
    inner_lr: float = 0.1
    reg: float = 1e-3
    perturb_init: float = 0.0


#: DDPNOpt's preconditioners (the wrapped base optimizer) and value-curvature modes.
DDP_PRECONDITIONERS = ("sgd", "rmsprop", "adam")
DDP_VXX = ("factored", "dense")
#: the base-optimizer slots DDPNOpt keeps per parameter (``opt/<slot>/i``), per precond
DDP_SLOTS = {"sgd": (), "rmsprop": ("v",), "adam": ("m", "v")}


@dataclass(frozen=True)
class DDPNOpt(_TrainsRealWeights):
    """DDPNOpt (Liu, Chen & Theodorou, ICLR 2021; shared/ALGORITHMS.md §5): one step of
    differential dynamic programming on the layer chain, θ_t the control of stage t.

    Stages: every layer with parameters (Dense, Conv, ResDense, ResConv, BatchNorm's γ, β)
    is a controlled stage ``x_{t+1} = f_t(x_t, θ_t)``; parameter-free layers (activations,
    pooling, Flatten, SumFeatures) are folded into the next stage's f_t, and those after
    the last controlled layer into the terminal loss Φ. Per sample s, with η = ``lr`` and
    M_t the base optimizer's preconditioner (SGD: I; RMSprop: diag(√v) + eps; Adam:
    diag(√v̂) + eps), the curvature Q̃_θθ = M_t/η is used in the policy and the value
    update alike:

    - backward: Q_θ = wd·θ + B_tᵀ v_{s,t+1}, Q_x = A_tᵀ v_{s,t+1}, Gauss-Newton
      Q_θx = B_tᵀ V' A_t; M_t is updated from mean_s Q_θ as the base optimizer updates
      from a gradient; k = -η M⁻¹ u, the open-loop step (u = mean_s Q_θ, Adam's m̂),
      v_{s,t} = Q_x + Q_θxᵀ k, V_{s,t} = A_tᵀ V' A_t - η Q_θxᵀ M⁻¹ Q_θx;
      V' = V_{s,t+1} + ``vxx_reg``·I;
    - ``vxx="factored"``: V_{s,t} = z zᵀ, z_T = ∇Φ_s,
      z_{s,t} = √max(0, 1 - η qᵀM⁻¹q)·A_tᵀ z with q = B_tᵀ z (a clamp when the root's
      argument is negative, counted in the ``clamps`` metric); ``vxx_reg`` enters only the
      products with V' (Q_θx in the value update and in the feedback), never z;
      ``vxx="dense"``: V_{s,T} = ∇²Φ_s as matrices (small nets only);
    - forward: θ_t ← θ_t - η M⁻¹ mean_s(Q_θ + Q_θx δx_s), δx_s = x̂_{s,t} - x_{s,t} on the
      new trajectory x̂; for Adam the mean Q_θ there is its bias-corrected first moment
      m̂ (so ``feedback=False`` is Adam exactly); no line search.

    k is one vector for the batch, as θ is (DDP on the batch's joint state with one shared
    control): a per-sample k_s = -η M⁻¹ Q_θ,s (ALGORITHMS.md §5's literal reading) puts
    -η‖Q_θ,s‖²_M⁻¹, the per-sample gradient's squared norm, into each v_s; measured on
    ``digits-mlp`` it drives the loss from 2.9 to 6.4 in 30 steps at lr 1e-3 (RMSprop
    alone: 0.43), where the shared k gives 0.58 (and 0.19 against RMSprop's 0.20 at lr
    1e-2). The curvature update keeps the per-sample form above (no 1/S on its Q_θx
    term; with it, fewer clamps, and RMSprop at lr 1e-2 diverged).

    ``feedback=False`` sets Q_θx ≡ 0 in the policy and the value update: the base
    optimizer's step. A_t, B_t are used through vjp/jvp only in factored mode. BatchNorm:
    the first-order terms (v, Q_θ) are backprop's, through the batch statistics; the
    second-order terms (q, A_tᵀz, Q_θx) linearise each sample's map with the nominal
    pass's batch statistics held fixed, and the feedback pass runs BN on the new batch.
    ``weight_decay`` is ℓ_t(θ) = wd·½‖θ‖² (torch's weight_decay)."""

    lr: float
    precond: str = "rmsprop"
    feedback: bool = True
    vxx: str = "factored"
    vxx_reg: float = 1e-3
    rms_alpha: float = 0.99
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.precond not in DDP_PRECONDITIONERS:
            raise ValueError(f"unknown DDPNOpt precond {self.precond!r} (known: {', '.join(DDP_PRECONDITIONERS)})")
        if self.vxx not in DDP_VXX:
            raise ValueError(f"unknown DDPNOpt vxx {self.vxx!r} (known: {', '.join(DDP_VXX)})")


#: DMSA's numerical conventions (``implementations.conventions`` has the rules):
#: ``standard`` forms 1 - α in float64, steps BN with Adam's usual ε and keeps the unbiased
#: running variance; ``authors`` follows the ICML authors' TensorFlow 1 code exactly.
DMSA_NUMERICS = ("standard", "authors")


@dataclass(frozen=True)
class DMSA:
    """Binary (levels=2) or ternary (levels=3) MSA, implementations/README.md §3.
    ``alpha_decay`` is d: after every epoch 1 - α is multiplied by d; ``alpha_decay_steps``
    > 0 counts that "epoch" in steps instead (550 = the paper's MNIST epoch, 55,000 samples
    / batch 100, so a small data set keeps the paper's schedule per step). BN's γ, β are
    trained by Adam(bn_lr) on -H. ``numerics`` (``DMSA_NUMERICS``) picks how α is rounded,
    which ε BN's Adam adds and which running variance BN keeps
    (``implementations.conventions``)."""

    levels: int
    rho: float
    alpha0: float = 0.999
    alpha_decay: float = 0.95
    alpha_decay_steps: int = 0
    lam: float = 1e-7
    bn_lr: float = 1e-3
    numerics: str = "standard"

    def __post_init__(self) -> None:
        if self.numerics not in DMSA_NUMERICS:
            raise ValueError(f"unknown DMSA numerics {self.numerics!r} (known: {', '.join(DMSA_NUMERICS)})")

    def decay_period(self, steps_per_epoch: int) -> int:
        """Steps between two decays of 1 - α."""
        return self.alpha_decay_steps or steps_per_epoch

    def weights_trained(self) -> str:
        return {2: "binary", 3: "ternary"}.get(self.levels, f"{self.levels}-level")


@dataclass(frozen=True)
class STE:
    """Straight-through baselines (implementations/README.md §4.2, §4.3): BinaryConnect
    (``kind="bc"``, deterministic or ``stochastic``) or TWN (``kind="twn"``). Latent real
    weights are trained by Adam(lr) on the loss of the quantized net; BC scales the
    quantized layers' lr by Glorot's 1/sqrt(1.5/(fan_in + fan_out)) (``glorot_lr_scale``)
    and clips W to [-1, 1]. Non-quantized parameters (BN's γ, β) use Adam(lr) unscaled."""

    kind: str
    lr: float = 1e-3
    stochastic: bool = False
    glorot_lr_scale: bool = True

    def weights_trained(self) -> str:
        return {"bc": "binary", "twn": "ternary"}.get(self.kind, f"kind={self.kind}")


#: The one table of algorithms. An algorithm's id is its class name in lowercase; each
#: backend implements it in the module of that name (``implementations/<backend>/<id>.py``,
#: whose ``make`` builds its trainer), and ``hp.weights_trained()`` names the problem
#: weights it trains (``real``, ``binary``, ``ternary``).
HYPERPARAMETERS = (SGD, Adagrad, Adam, RMSprop, MSA, EMSA, DMSA, STE, DDPNOpt)
BY_ID: dict[str, type] = {cls.__name__.lower(): cls for cls in HYPERPARAMETERS}


def algorithm_id(hp: Any) -> str:
    """The algorithm's id: its hyperparameter class name in lowercase (``emsa``, ``dmsa``)."""
    return type(hp).__name__.lower()


def hp_fields(hp: Any) -> dict[str, Any]:
    """The hyperparameters as a flat dict (for the results' ``hp_*`` columns)."""
    return dataclasses.asdict(hp)


# ---------------------------------------------------------------------------------------
# Trainer: what ``make(problem, hp, ...)`` returns.
# ---------------------------------------------------------------------------------------


class Trainer(NamedTuple):
    """Pure-ish functions over an opaque backend state.

    - ``init(params) -> state``: params are ``problem.init_params(seed)``.
    - ``put(batch) -> batch``: host NumPy (x, y) to the backend's device and dtype.
    - ``step(state, batch) -> (state, metrics)``: one training iteration. ``metrics`` holds
      device scalars (``loss`` before the step, ``flips`` for discrete algorithms); reading
      them is left to the caller, outside the clock.
    - ``get(state) -> list[np.ndarray]``: the *effective* parameters the forward pass uses
      (the discrete weights for MSA, the quantized ones for STE), same order and shapes as
      ``init_params``.
    - ``predict(state, x) -> np.ndarray``: network outputs in evaluation mode (BN's running
      statistics, quantized weights) for a host NumPy input.
    - ``sync(state)``: wait for the device (block edges of the clock).
    - ``state_arrays(state) -> dict[str, np.ndarray]``: the *whole* training state as host
      arrays under backend-neutral names (``STATE_KEYS``), the same keys and meanings in
      every backend, so that parity tests compare all of it and checkpoints can save it.
    - ``restore(arrays) -> state``: the inverse of ``state_arrays``: a state that trains on
      exactly as the one the arrays were read from (a checkpoint's resumption). Nothing
      else is needed, because no trainer keeps hidden random state: the draws of
      stochastic BinaryConnect are seeded by (seed, step, layer) and the step is in the
      arrays; inner solvers restart from zero at every step, and the MSA family's
      perturbed inner starts are seeded by (seed, step, layer) too. The arrays may come from
      another backend where the states map one to one (the same keys).
    """

    init: Callable[[list], Any]
    put: Callable[[tuple], tuple]
    step: Callable[[Any, tuple], tuple[Any, dict]]
    get: Callable[[Any], list]
    predict: Callable[[Any, Any], Any]
    sync: Callable[[Any], None]
    state_arrays: Callable[[Any], dict]
    restore: Callable[[dict], Any] | None = None  # None only in test doubles


def initial_params_of(arrays: dict) -> list:
    """The flat parameter list a checkpoint's trainer is first built from (``restore``
    overwrites every array afterwards): ``params/i`` or, for the straight-through
    baselines, ``latent/i``, in index order."""
    prefix = "latent" if "latent/0" in arrays else "params"
    count = sum(1 for k in arrays if k.startswith(prefix + "/"))
    return [arrays[f"{prefix}/{i}"] for i in range(count)]


#: What ``Trainer.state_arrays`` names, ``i`` an index into the flat parameter list
#: (``init_params`` order), ``t`` a layer index, ``j`` the j-th quantized layer:
#:
#: - ``params/i``: the parameters the algorithm keeps (the discrete weights for binary and
#:   ternary MSA); ``latent/i`` instead for the straight-through baselines' latent weights;
#: - ``running/t/mean``, ``running/t/var``: BN layer t's running statistics;
#: - ``m_bar/j``: binary/ternary MSA's moving average M̄; ``alpha``: its α; ``step``: the
#:   steps taken, where the algorithm counts them;
#: - ``opt/<slot>/i``: the optimizer's per-parameter state for parameter i, ``slot`` one
#:   of ``m``, ``v`` (Adam's moments; RMSprop's mean square), ``sum`` (Adagrad's G), ``momentum`` (SGD's v);
#:   ``opt/step``: the optimizer's own step count (Adam's bias correction).
STATE_KEYS = ("params", "latent", "running", "m_bar", "alpha", "step", "opt")


def named_arrays(prefix: str, arrays) -> dict:
    """``{f"{prefix}/{i}": array}`` for the i-th array of ``arrays`` (None entries skipped)."""
    return {f"{prefix}/{i}": a for i, a in enumerate(arrays) if a is not None}
