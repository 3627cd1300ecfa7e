"""What every jax trainer shares: placement, the segment layout (residual stacks), the
forward pass with costates, BN running statistics, evaluation and the compiled step.

**Segments.** A run of two or more equal consecutive layers with parameters (the residual
stacks: ``ResDense`` × 20 on the sine toy, ``ResConv`` × 3 on the CNN) is one *stacked*
segment whose parameters carry a leading layer axis; every other layer is a segment of
its own. The forward pass runs a stack with ``lax.scan``, and the MSA family solves the
stack's per-layer maximisations together with ``vmap``. Parameters travel as one tuple
per segment. The scan is fully unrolled (``UNROLL``): measured on this CPU, a rolled scan
over the CNN's 3 residual conv layers made its forward-backward pass 3× slower (36 ms
against 12 ms; XLA does not optimise across the loop boundary), while on the 20-layer
sine net the two are equal (0.15 ms) and only compile time grows (0.6 s against 0.2 s).

**Costates by perturbation.** ``p_t = -∂J/∂x_t`` (implementations/README.md §1.2: the same
numbers as the recursion ``p_t = ∇_x H_t``). To get every p_t from one reverse pass, the
forward pass adds a zero perturbation ε_t to each state,
``x_{t+1} = f_t(x_t, θ_t) + ε_{t+1}``; then ``∂J/∂ε_t = ∂J/∂x_t``, and
``jax.value_and_grad`` over (θ, ε) gives the loss, the parameter gradients and all
costates together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from implementations import spec
from implementations.jax import ops

DTYPES = {"float32": jnp.float32, "float64": jnp.float64}
UNROLL = True  # lax.scan's unroll for residual stacks (module docstring)


class Placement:
    """Where arrays live: ``dtype`` name and ``device`` ("cpu" or "cuda")."""

    def __init__(self, dtype: str, device: str):
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r} (known: {', '.join(DTYPES)})")
        if device not in ("cpu", "cuda"):
            raise ValueError(f"unknown device {device!r} (known: cpu, cuda)")
        self.dtype = DTYPES[dtype]
        self.device = jax.devices("cpu" if device == "cpu" else "gpu")[0]

    def array(self, a) -> jax.Array:
        return jax.device_put(np.asarray(a, dtype=self.dtype), self.device)

    def commit(self, tree):
        """Every array of ``tree`` placed on (committed to) the device. A compiled step's
        outputs are committed; state built by optax's ``init`` is not, and jit would
        compile the step a second time for the committed state it gets back."""
        return jax.device_put(tree, self.device)

    def put(self, batch):
        """Host (x, y) to the device: x in the working dtype; integer labels as int32."""
        x, y = batch
        y = np.asarray(y)
        y = y.astype(np.int32) if np.issubdtype(y.dtype, np.integer) else y.astype(self.dtype)
        return self.array(x), jax.device_put(y, self.device)

    def sync(self, state=None) -> None:
        jax.block_until_ready(state)


# ---------------------------------------------------------------------------------------
# segments
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """Layers ``first .. first + count - 1``, all equal to ``layer``; ``stacked`` when
    their parameters carry a leading layer axis (count ≥ 2)."""

    layer: Any
    first: int
    count: int

    @property
    def stacked(self) -> bool:
        return self.count > 1


def _stackable(layer) -> bool:
    """Real-weight layers with parameters and no batch statistics (BN's running stats and
    the discrete rules' per-layer reductions stay per layer)."""
    return bool(layer.param_names) and not isinstance(layer, spec.BatchNorm) and not layer.quantized


def segments(layers) -> tuple[Segment, ...]:
    out: list[Segment] = []
    for t, layer in enumerate(layers):
        last = out[-1] if out else None
        if last is not None and _stackable(layer) and last.layer == layer:
            out[-1] = Segment(layer, last.first, last.count + 1)
        else:
            out.append(Segment(layer, t, 1))
    return tuple(out)


def to_segments(segs, flat: list, place: Placement) -> list[tuple]:
    """Flat host parameter list (``init_params`` order) -> one tuple per segment."""
    it = iter(flat)
    return [
        pack(seg, [tuple(next(it) for _ in seg.layer.param_names) for _ in range(seg.count)], place) for seg in segs
    ]


def pack(seg: Segment, per_layer: list, place: Placement) -> tuple:
    """One host θ per layer of ``seg`` -> the segment's parameter tuple on the device
    (stacked along a leading layer axis for a stack)."""
    if seg.stacked:
        return tuple(place.array(np.stack(vs)) for vs in zip(*per_layer))
    return tuple(place.array(v) for v in per_layer[0])


def per_layer(segs, params) -> list[tuple]:
    """One θ tuple per layer (stacks unstacked)."""
    out = []
    for seg, theta in zip(segs, params):
        out.extend([tuple(v[i] for v in theta) for i in range(seg.count)] if seg.stacked else [theta])
    return out


def to_numpy(segs, params) -> list[np.ndarray]:
    """Segment parameters -> the flat float64 host list (``init_params`` order)."""
    host = jax.device_get(params)
    return [np.asarray(v, dtype=np.float64) for theta in per_layer(segs, host) for v in theta]


# ---------------------------------------------------------------------------------------
# forward pass, costates, gradients
# ---------------------------------------------------------------------------------------


def forward(segs, params, x0, eps=None) -> list:
    """Each segment's output states (stacked ``(count, ...)`` for a stack); with ``eps``
    (one perturbation per segment, same structure), ``x_{t+1} = f_t(x_t, θ_t) + ε``."""
    x, outs = x0, []
    for s, (seg, theta) in enumerate(zip(segs, params)):
        e = None if eps is None else eps[s]
        if seg.stacked:

            def body(h, theta_e, layer=seg.layer, perturbed=e is not None):
                th, e_l = theta_e
                h = ops.apply(layer, th, h)
                h = h + e_l if perturbed else h
                return h, h

            x, ys = jax.lax.scan(body, x, (theta, e if e is not None else jnp.zeros(seg.count)), unroll=UNROLL)
            outs.append(ys)
        else:
            x = ops.apply(seg.layer, theta, x)
            x = x + e if e is not None else x
            outs.append(x)
    return outs


def final(segs, outs):
    return outs[-1][-1] if segs[-1].stacked else outs[-1]


def layer_io(segs, x0, outs, s: int):
    """Segment s's layer inputs and outputs: ``(x_t, x_{t+1})``, stacked along the layer
    axis for a stack. The same function slices costates (``p0``, per-segment ``ps``)."""
    x_in = x0 if s == 0 else (outs[s - 1][-1] if segs[s - 1].stacked else outs[s - 1])
    if segs[s].stacked:
        return jnp.concatenate([x_in[None], outs[s][:-1]]), outs[s]
    return x_in, outs[s]


def loss_grads_costates(segs, loss: str, params, x, y):
    """``(loss, states, ∂J/∂θ, costates)``: states as ``(x_0, outs)``, costates as
    ``(p_0, ps)`` with ``p = -∂J/∂x`` (module docstring); J is the batch-mean loss."""
    shapes = jax.eval_shape(lambda: forward(segs, params, x))
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def perturbed(params, e0, eps):
        outs = forward(segs, params, x + e0, eps)
        return ops.terminal_loss(loss, final(segs, outs), y), outs

    (value, outs), (g, g0, gs) = jax.value_and_grad(perturbed, argnums=(0, 1, 2), has_aux=True)(
        params, jnp.zeros_like(x), zeros
    )
    neg = lambda a: -a
    return value, (x, outs), g, (neg(g0), jax.tree.map(neg, gs))


def loss_and_grads(segs, loss: str, params, x, y, reg: float = 0.0):
    """``(loss, (x_0, outs), ∂J/∂θ)`` with ``J = batch-mean loss + reg·½‖θ‖²``."""

    def objective(params):
        outs = forward(segs, params, x)
        value = ops.terminal_loss(loss, final(segs, outs), y)
        penalty = 0.5 * reg * sum(jnp.sum(v * v) for v in jax.tree.leaves(params)) if reg else 0.0
        return value + penalty, (value, outs)

    (_, (value, outs)), g = jax.value_and_grad(objective, has_aux=True)(params)
    return value, (x, outs), g


# ---------------------------------------------------------------------------------------
# BN running statistics and evaluation
# ---------------------------------------------------------------------------------------


def init_running(layers, place: Placement) -> dict:
    return {
        t: (place.array(np.zeros(layer.features)), place.array(np.ones(layer.features)))
        for t, layer in enumerate(layers)
        if isinstance(layer, spec.BatchNorm)
    }


def update_running(segs, running: dict, states, unbiased: bool = True) -> dict:
    """``r ← (1 - m) r + m · stat`` from the BN inputs,
    the running variance from the unbiased batch variance (``n/(n-1)`` times the biased one)
    unless ``unbiased`` is False (``conventions.unbiased_running_variance``)."""
    x0, outs = states
    out = {}
    for s, seg in enumerate(segs):
        if seg.first in running:
            x = layer_io(segs, x0, outs, s)[0]
            mean_r, var_r = running[seg.first]
            m = seg.layer.momentum
            mean, var = ops.batch_stats(x)
            n = x.size // x.shape[1]
            correction = n / (n - 1) if unbiased else 1.0
            out[seg.first] = ((1 - m) * mean_r + m * mean, (1 - m) * var_r + m * var * correction)
    return out


def make_predict(layers, place: Placement, chunk: int = 1000):
    """``predict(params_per_layer, running, x_host) -> float64 NumPy`` in eval mode."""

    @jax.jit
    def run(params, running, h):
        for t, (layer, theta) in enumerate(zip(layers, params)):
            h = ops.apply(layer, theta, h, stats=running.get(t))
        return h

    def predict(params, running, x):
        return np.concatenate(
            [
                np.asarray(run(params, running, place.array(x[i : i + chunk])), np.float64)
                for i in range(0, len(x), chunk)
            ]
        )

    return predict


def trainer(
    layers,
    segs,
    place: Placement,
    init,
    step,
    params_of=lambda s: s["params"],
    running_of=lambda s: s["running"],
    state_arrays=None,
    load=None,
) -> spec.Trainer:
    """A jax algorithm's Trainer from its ``init`` and ``step``; ``params_of(state)`` gives
    the segment parameters the forward pass uses, ``running_of(state)`` BN's statistics;
    ``state_arrays`` defaults to ``arrays_of`` on a state whose arrays are ``state`` itself
    (the first-order and E-MSA states), and ``load(state, arrays) -> state``, its inverse
    applied to a fresh ``init``'s state, to ``load_arrays`` on such a state."""
    load = load or (lambda state, arrays: load_arrays(segs, place, state, arrays))
    predict = make_predict(layers, place)
    return spec.Trainer(
        init=init,
        put=place.put,
        step=step,
        get=lambda s: to_numpy(segs, params_of(s)),
        predict=lambda s, x: predict(per_layer(segs, params_of(s)), running_of(s), x),
        sync=place.sync,
        state_arrays=state_arrays or (lambda s: arrays_of(segs, s)),
        restore=lambda arrays: load(init(spec.initial_params_of(arrays)), arrays),
    )


# ---------------------------------------------------------------------------------------
# the backend-neutral view of a state (``spec.Trainer.state_arrays``)
# ---------------------------------------------------------------------------------------

#: optax state fields holding per-parameter trees -> ``spec.STATE_KEYS``'s optimizer slots
_OPTAX_SLOTS = {"mu": "m", "nu": "v", "sum_of_squares": "sum", "trace": "momentum"}


def flat_indices(segs, which) -> list[int]:
    """The flat-parameter-list indices (``init_params`` order) of segments ``which``."""
    offsets, start = [], 0
    for seg in segs:
        offsets.append(start)
        start += seg.count * len(seg.layer.param_names)
    return [offsets[s] + i for s in which for i in range(segs[s].count * len(segs[s].layer.param_names))]


def optax_arrays(segs, opt_state, which=None) -> dict:
    """``opt/<slot>/i`` from an optax state over the parameters of segments ``which`` (all
    by default), and Adam's ``opt/step``; chains and ``inject_hyperparams`` are walked."""
    which = list(range(len(segs))) if which is None else list(which)
    sub, index = [segs[s] for s in which], flat_indices(segs, which)
    out = {}

    def visit(node):
        if hasattr(node, "_fields"):  # an optax state NamedTuple
            for name in node._fields:
                value = getattr(node, name)
                if name in _OPTAX_SLOTS:
                    host = jax.device_get(value)
                    flat = [np.asarray(v) for theta in per_layer(sub, host) for v in theta]
                    out.update({f"opt/{_OPTAX_SLOTS[name]}/{i}": v for i, v in zip(index, flat)})
                elif name == "count" and "mu" in node._fields:
                    out["opt/step"] = np.asarray(jax.device_get(value), np.int64)
                elif name != "hyperparams":
                    visit(value)
        elif isinstance(node, (list, tuple)):
            for v in node:
                visit(v)

    visit(opt_state)
    return out


def arrays_of(segs, arrays: dict, weights: str = "params", opt: str = "opt", opt_segments=None) -> dict:
    """The named host arrays of a jax state's array dict: ``arrays[weights]`` (segment
    parameters) as ``params/i`` or ``latent/i``, ``running``, ``m_bar`` when present, and the
    optax state under ``opt`` (over segments ``opt_segments``, all by default)."""
    host = jax.device_get(arrays)
    out = spec.named_arrays(weights, [np.asarray(v) for theta in per_layer(segs, host[weights]) for v in theta])
    for t, (mean, var) in host["running"].items():
        out |= {f"running/{t}/mean": np.asarray(mean), f"running/{t}/var": np.asarray(var)}
    out |= spec.named_arrays("m_bar", [np.asarray(m) for m in host.get("m_bar", [])])
    if opt in arrays:
        out |= optax_arrays(segs, arrays[opt], opt_segments)
    return out


def load_arrays(
    segs, place: Placement, state: dict, arrays: dict, weights: str = "params", opt: str = "opt", opt_segments=None
) -> dict:
    """The inverse of ``arrays_of``: ``state`` (a fresh ``init``'s array dict) with its
    ``weights``, BN statistics, ``m_bar`` and optax state (under ``opt``, over segments
    ``opt_segments``) read from ``arrays``, committed to the device."""
    count = sum(seg.count * len(seg.layer.param_names) for seg in segs)
    out = dict(state)
    out[weights] = to_segments(segs, [arrays[f"{weights}/{i}"] for i in range(count)], place)
    out["running"] = {
        t: (place.array(arrays[f"running/{t}/mean"]), place.array(arrays[f"running/{t}/var"])) for t in state["running"]
    }
    if "m_bar" in state:
        out["m_bar"] = [place.array(arrays[f"m_bar/{j}"]) for j in range(len(state["m_bar"]))]
    if opt in state:
        out[opt] = load_optax(segs, place, state[opt], arrays, opt_segments)
    return place.commit(out)


def load_optax(segs, place: Placement, opt_state, arrays: dict, which=None):
    """The inverse of ``optax_arrays``: ``opt_state`` with every per-parameter tree
    (``_OPTAX_SLOTS``) and Adam's count read from ``arrays``; fields the arrays do not name
    (hyperparameters, empty states, a slot not saved before the first step) are kept."""
    which = list(range(len(segs))) if which is None else list(which)
    sub, index = [segs[s] for s in which], flat_indices(segs, which)

    def visit(node):
        if hasattr(node, "_fields"):  # an optax state NamedTuple
            fields = {}
            for name in node._fields:
                value = getattr(node, name)
                slot = _OPTAX_SLOTS.get(name)
                if slot is not None and index and f"opt/{slot}/{index[0]}" in arrays:
                    fields[name] = to_segments(sub, [arrays[f"opt/{slot}/{i}"] for i in index], place)
                elif name == "count" and "mu" in node._fields:
                    fields[name] = jnp.asarray(arrays["opt/step"], dtype=value.dtype)
                elif name != "hyperparams":
                    fields[name] = visit(value)
            return node._replace(**fields)
        if isinstance(node, (list, tuple)):
            return type(node)(visit(v) for v in node)
        return node

    return visit(opt_state)
