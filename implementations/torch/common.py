"""What every torch trainer shares: dtype/device placement, the stored forward pass, BN
running statistics, evaluation and synchronisation."""

from __future__ import annotations

import numpy as np
import torch

from implementations import spec
from implementations.torch import ops

DTYPES = {"float32": torch.float32, "float64": torch.float64}


class Placement:
    """Where tensors live: ``dtype`` name and ``device`` ("cpu" or "cuda")."""

    def __init__(self, dtype: str, device: str):
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r} (known: {', '.join(DTYPES)})")
        self.dtype = DTYPES[dtype]
        self.device = torch.device(device)

    def tensor(self, a) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a), dtype=self.dtype, device=self.device)

    def put(self, batch):
        """Host (x, y) to the device: x in the working dtype; integer labels as int64."""
        x, y = batch
        y = np.asarray(y)
        yt = torch.as_tensor(y, device=self.device) if np.issubdtype(y.dtype, np.integer) else self.tensor(y)
        return self.tensor(x), yt

    def sync(self, state=None) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def per_layer(layers, flat: list) -> list[tuple]:
    """Flat parameter list -> one θ tuple per layer."""
    return [tuple(flat[s]) for s in spec.layer_slices(layers)]


def forward(layers, params, x0) -> list[torch.Tensor]:
    """States ``[x_0, ..., x_T]`` (autograd records them when θ or x_0 requires grad)."""
    xs = [x0]
    for layer, theta in zip(layers, params):
        xs.append(ops.apply(layer, theta, xs[-1]))
    return xs


def regulariser(theta, reg: float):
    """``reg · ½‖θ‖²`` over the layer's variables."""
    return reg * 0.5 * sum((v * v).sum() for v in theta) if theta and reg else 0.0


def init_running(layers, place: Placement) -> dict:
    return {
        t: (
            torch.zeros(layer.features, dtype=place.dtype, device=place.device),
            torch.ones(layer.features, dtype=place.dtype, device=place.device),
        )
        for t, layer in enumerate(layers)
        if isinstance(layer, spec.BatchNorm)
    }


@torch.no_grad()
def update_running(layers, running: dict, xs, unbiased: bool = True) -> None:
    """In place: ``r ← (1 - m) r + m · stat`` from the BN inputs,
    the running variance from the unbiased batch variance (``n/(n-1)`` times the biased one)
    unless ``unbiased`` is False (``conventions.unbiased_running_variance``)."""
    for t, (mean_r, var_r) in running.items():
        x, m = xs[t].detach(), layers[t].momentum
        mean, var = ops.batch_stats(x)
        n = x.numel() // x.shape[1]
        correction = n / (n - 1) if unbiased else 1.0
        mean_r.mul_(1 - m).add_(m * mean)
        var_r.mul_(1 - m).add_(m * var * correction)


@torch.no_grad()
def predict(layers, params, running: dict, place: Placement, x, chunk: int = 1000) -> np.ndarray:
    """Eval-mode outputs (BN running statistics) for a host input, as float64 NumPy."""
    outs = []
    for i in range(0, len(x), chunk):
        h = place.tensor(x[i : i + chunk])
        for t, (layer, theta) in enumerate(zip(layers, params)):
            h = ops.apply(layer, theta, h, stats=running.get(t))
        outs.append(h.double().cpu().numpy())
    return np.concatenate(outs)


def to_numpy(per_layer_params) -> list[np.ndarray]:
    return [v.detach().double().cpu().numpy() for theta in per_layer_params for v in theta]


def trainer(
    layers, place: Placement, init, step, params_of=lambda s: s["params"], state_arrays=None, load=None
) -> spec.Trainer:
    """A torch algorithm's Trainer from its ``init`` and ``step``; ``params_of(state)``
    gives the per-layer parameters the forward pass uses (the state keeps BN's running
    statistics under ``"running"``). ``state_arrays`` defaults to ``conventional_arrays``,
    which reads the state's conventional keys, and
    ``load(state, arrays) -> state``, its inverse applied to a fresh ``init``'s state, to
    ``load_arrays`` (DDPNOpt, whose optimizer slots are plain tensors, passes its own)."""
    load = load or load_arrays
    return spec.Trainer(
        init=init,
        put=place.put,
        step=step,
        get=lambda s: to_numpy(params_of(s)),
        predict=lambda s, x: predict(layers, params_of(s), s["running"], place, x),
        sync=place.sync,
        state_arrays=state_arrays or conventional_arrays,
        restore=lambda arrays: load(init(spec.initial_params_of(arrays)), arrays),
    )


def host(v) -> np.ndarray:
    """A tensor (or Python number) as a host NumPy array, its dtype kept: a copy, since the
    torch trainers update their tensors in place and a state view must be a snapshot."""
    return v.detach().cpu().numpy().copy() if isinstance(v, torch.Tensor) else np.asarray(v)


#: each torch.optim optimizer's per-parameter state names -> ``spec.STATE_KEYS``'s
#: optimizer slots (Adam's exp_avg_sq and RMSprop's square_avg are both ``v``)
_OPTIMIZER_SLOTS = {
    torch.optim.SGD: {"momentum_buffer": "momentum"},
    torch.optim.Adagrad: {"sum": "sum"},
    torch.optim.Adam: {"exp_avg": "m", "exp_avg_sq": "v"},
    torch.optim.RMSprop: {"square_avg": "v"},
}


def _slots(opt: torch.optim.Optimizer) -> dict[str, str]:
    """``opt``'s state names and the slots they are saved under."""
    for cls, names in _OPTIMIZER_SLOTS.items():
        if isinstance(opt, cls):
            return names
    raise TypeError(f"no state slots are defined for {type(opt).__name__}")


def optimizer_arrays(opt: torch.optim.Optimizer, flat: list) -> dict:
    """``opt/<slot>/i`` for every parameter ``flat[i]`` the optimizer keeps state for, and
    Adam's ``opt/step`` (its bias-correction count; the other optimizers' counts change
    nothing)."""
    out, names = {}, _slots(opt)
    for i, v in enumerate(flat):
        held = opt.state.get(v, {})
        out |= {f"opt/{slot}/{i}": host(held[name]) for name, slot in names.items() if held.get(name) is not None}
        if isinstance(opt, torch.optim.Adam) and "step" in held:
            out["opt/step"] = np.asarray(int(held["step"]))
    return out


def conventional_arrays(state: dict) -> dict:
    """``spec.Trainer.state_arrays`` of every torch algorithm's state dict, whose keys are
    shared: ``params`` or ``latent`` (per-layer tensors), ``running``, optionally ``m_bar``,
    ``alpha``, ``k`` (the step count) and a ``torch.optim`` optimizer under ``opt`` (or
    ``bn_opt``, binary/ternary MSA's optimizer of BN's γ, β)."""
    weights = "latent" if "latent" in state else "params"
    flat = [v for theta in state[weights] for v in theta]
    out = spec.named_arrays(weights, [host(v) for v in flat])
    for t, (mean, var) in state["running"].items():
        out |= {f"running/{t}/mean": host(mean), f"running/{t}/var": host(var)}
    out |= spec.named_arrays("m_bar", [host(m) for m in state.get("m_bar", [])])
    if "alpha" in state:
        out["alpha"] = np.asarray(state["alpha"], np.float64)
    if "k" in state:
        out["step"] = np.asarray(state["k"], np.int64)
    opt = state.get("opt") or state.get("bn_opt")
    if opt is not None:
        out |= optimizer_arrays(opt, flat)
    return out


def leaf_params(params: list, place: Placement) -> list[tuple]:
    """Per-layer tuples of fresh leaf tensors that require grad."""
    return [tuple(place.tensor(v).requires_grad_(True) for v in theta) for theta in params]


@torch.no_grad()
def load_arrays(state: dict, arrays: dict) -> dict:
    """``state`` (a fresh ``init``'s, of the right shapes) with every array of ``arrays``
    (``state_arrays``'s names) copied in: the inverse of ``conventional_arrays``. Tensors are
    overwritten in place (their dtype and device kept); α and the step count take the
    type ``init`` gave them (a float32 α under the authors' numerics stays one)."""
    weights = "latent" if "latent" in state else "params"
    flat = [v for theta in state[weights] for v in theta]
    for i, v in enumerate(flat):
        v.copy_(torch.as_tensor(arrays[f"{weights}/{i}"]))
    for t, (mean, var) in state["running"].items():
        mean.copy_(torch.as_tensor(arrays[f"running/{t}/mean"]))
        var.copy_(torch.as_tensor(arrays[f"running/{t}/var"]))
    for j, m in enumerate(state.get("m_bar", [])):
        m.copy_(torch.as_tensor(arrays[f"m_bar/{j}"]))
    if "alpha" in state:
        state["alpha"] = type(state["alpha"])(arrays["alpha"])
    if "k" in state:
        state["k"] = int(arrays["step"])
    opt = state.get("opt") or state.get("bn_opt")
    if opt is not None:
        load_optimizer(opt, flat, arrays)
    return state


def load_optimizer(opt: torch.optim.Optimizer, flat: list, arrays: dict) -> None:
    """The inverse of ``optimizer_arrays``: each parameter's slots set in ``opt.state``
    (created as torch creates them at its first step; Adam's ``step`` from ``opt/step``).
    Adagrad's and RMSprop's own counts are not saved: Adagrad's only scales a
    learning-rate decay that the suite's Adagrad does not use (``lr_decay = 0``), and
    RMSprop's enters no update."""
    names = _slots(opt)
    for i, v in enumerate(flat):
        held = {name: arrays[f"opt/{slot}/{i}"] for name, slot in names.items() if f"opt/{slot}/{i}" in arrays}
        if not held:
            continue
        entry = opt.state[v]
        for name, a in held.items():
            entry[name] = torch.as_tensor(a).to(dtype=v.dtype, device=v.device).clone()
        if isinstance(opt, torch.optim.Adam):
            entry["step"] = torch.tensor(float(arrays["opt/step"]))  # torch's own type: a float scalar
        elif isinstance(opt, torch.optim.RMSprop):
            # torch keeps a step count beside the mean square; without momentum or a
            # learning-rate schedule it enters no update, so it is not saved
            entry.setdefault("step", torch.tensor(0.0))
