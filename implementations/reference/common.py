"""What every reference trainer shares: host/device moves, BN running statistics, eval."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from implementations import spec
from implementations.reference import pmp


def check_dtype(dtype: str) -> None:
    """The oracle is float64 only: a float32 oracle would hide the errors it must expose."""
    if dtype != "float64":
        raise ValueError(f"the reference backend runs in float64 only, not {dtype}")


def put(batch):
    x, y = batch
    y = jnp.asarray(y) if np.issubdtype(np.asarray(y).dtype, np.integer) else jnp.asarray(y, jnp.float64)
    return jnp.asarray(x, jnp.float64), y


def to_jax(params):
    return [jnp.asarray(p, jnp.float64) for p in params]


def flat(per_layer_params) -> list:
    return [v for theta in per_layer_params for v in theta]


def init_running(layers) -> dict:
    """BN running statistics: mean 0, variance 1, keyed by layer index."""
    return {
        t: (jnp.zeros(layer.features), jnp.ones(layer.features))
        for t, layer in enumerate(layers)
        if isinstance(layer, spec.BatchNorm)
    }


def update_running(layers, running: dict, xs, unbiased: bool = True) -> dict:
    """``r ← (1 - m) r + m · stat`` from the stored states (BN inputs),
    the running variance from the unbiased batch variance (``n/(n-1)`` times the biased one)
    unless ``unbiased`` is False (``conventions.unbiased_running_variance``)."""
    out = {}
    for t, (mean_r, var_r) in running.items():
        x, m = xs[t], layers[t].momentum
        mean, var = pmp.batch_stats(x)
        n = x.size // x.shape[1]
        correction = n / (n - 1) if unbiased else 1.0
        out[t] = ((1 - m) * mean_r + m * mean, (1 - m) * var_r + m * var * correction)
    return out


def predict(layers, params, running: dict, x) -> np.ndarray:
    """Eval-mode forward: BN uses its running statistics."""
    h = jnp.asarray(x, jnp.float64)
    for t, (layer, theta) in enumerate(zip(layers, params)):
        h = pmp.apply(layer, theta, h, stats=running.get(t))
    return np.asarray(h)


def sync(state) -> None:
    jax.block_until_ready(state)


def trainer(layers, init, step, params_of=lambda s: s["params"], state_arrays=None, load=None) -> spec.Trainer:
    """A reference algorithm's Trainer from its ``init`` and ``step``; ``params_of(state)``
    gives the per-layer θ tuples the forward pass uses (BN statistics under ``"running"``);
    ``state_arrays`` defaults to ``base_arrays`` (parameters and BN statistics: E-MSA's
    whole state), and ``load(state, arrays) -> state``, its inverse applied to a fresh
    ``init``'s state, to ``load_base``."""
    load = load or load_base
    return spec.Trainer(
        init=init,
        put=put,
        step=step,
        get=lambda s: to_numpy(params_of(s)),
        predict=lambda s, x: predict(layers, params_of(s), s["running"], x),
        sync=sync,
        state_arrays=state_arrays or base_arrays,
        restore=lambda arrays: load(init(spec.initial_params_of(arrays)), arrays),
    )


def base_arrays(state: dict, weights: str = "params") -> dict:
    """``params/i`` (or ``latent/i``: ``weights``) from a flat or per-layer parameter list,
    and ``running/t/{mean,var}``."""
    values = state[weights]
    values = flat(values) if values and isinstance(values[0], tuple) else values
    out = spec.named_arrays(weights, [np.asarray(v) for v in values])
    for t, (mean, var) in state["running"].items():
        out |= {f"running/{t}/mean": np.asarray(mean), f"running/{t}/var": np.asarray(var)}
    return out


def load_base(state: dict, arrays: dict, weights: str = "params") -> dict:
    """The inverse of ``base_arrays``: ``state`` with its ``weights`` (flat or per layer, as
    the state keeps them) and BN statistics read from ``arrays``."""
    values = state[weights]
    it = iter(jnp.asarray(a, jnp.float64) for a in spec.initial_params_of(arrays))
    per_layer = bool(values) and isinstance(values[0], tuple)
    restored = [tuple(next(it) for _ in theta) for theta in values] if per_layer else list(it)
    running = {
        t: (jnp.asarray(arrays[f"running/{t}/mean"]), jnp.asarray(arrays[f"running/{t}/var"])) for t in state["running"]
    }
    return {**state, weights: restored, "running": running}


def load_slots(arrays: dict, slot: str, index) -> list:
    """The inverse of ``optimizer_slots`` for one slot: ``opt/<slot>/i`` for each ``i`` of
    ``index``, as float64 arrays."""
    return [jnp.asarray(arrays[f"opt/{slot}/{i}"], jnp.float64) for i in index]


def optimizer_slots(slots: dict, index: list[int] | None = None) -> dict:
    """``opt/<slot>/i`` from ``{slot: list of arrays}``, the lists' j-th entry belonging to
    flat parameter ``index[j]`` (``j`` itself by default)."""
    out = {}
    for slot, values in slots.items():
        idx = range(len(values)) if index is None else index
        out |= {f"opt/{slot}/{i}": np.asarray(v) for i, v in zip(idx, values)}
    return out


def to_numpy(per_layer_params) -> list[np.ndarray]:
    return [np.asarray(v) for v in flat(per_layer_params)]
