"""DDPNOpt in jax: one differential-dynamic-programming sweep per step on the layer chain
(shared/ALGORITHMS.md §5; every rule and choice is ``spec.DDPNOpt``'s docstring, the same
as the float64 oracle ``reference/ddp.py`` + ``reference/ddpnopt.py``), the whole step
one ``jax.jit`` with the state donated.

Layout: **per-layer parameters**, every layer a segment of its own (``common.Segment``
with count 1), not the backend's stacked residual segments. DDP's backward sweep visits
the controlled layers one at a time, each with its own value function, preconditioner
and feedback term, so a residual stack would be unstacked at every step anyway; per-layer
tuples keep the stage cut (``spec.ddp_stages``) a plain index and the trace as long as the
stack is deep. Each stage's parameters are raveled into one vector w_t inside the step.

Per-sample quantities carry a leading axis of S samples. The factored mode takes every
product with A_t and B_t as one ``jvp`` or ``vjp`` of the whole batch's stage map (BN's
statistics held, so that the map is per sample), and the per-sample norms
‖B_sᵀ z_s‖²_{M⁻¹} from ``persample``'s closed forms: it never forms A_t, B_t or a
parameter-sized vector per sample (``vmap`` of per-sample vjps did, and cost 14× the base
optimizer's step on the MLP). The dense mode (small nets) forms A_s and B_s with
``jacfwd`` and V_T with ``hessian``.

The base optimizer's slots are arrays updated by torch.optim's formulas (as the torch
backend's, not optax's: DDPNOpt updates M from the batch-mean Q_θ during the backward
sweep and steps along u + mean_s Q_θx δx_s in the feedback pass, which no optax transform
does); Adam's bias corrections are formed in float64 from the traced step count and cast
to the working dtype, as torch forms them in Python floats.

State: ``params`` (per-layer tuples), ``running`` (BN), ``slots`` (``{slot: per-layer
tuples}``, ``spec.DDP_SLOTS``) and ``k`` (steps taken, an int32 array, so that the step
compiles once); ``state_arrays`` names them as the reference does (``opt/<slot>/i``, and
``opt/step`` for Adam).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from implementations import spec
from implementations.jax import common, ops, persample


def _run(layers, x):
    """Parameter-free ``layers`` on x."""
    for layer in layers:
        x = ops.apply(layer, (), x)
    return x


class StageMap:
    """Stage t's f_t over its flat parameter vector w: the folded parameter-free layers,
    then the controlled layer (``unravel`` rebuilds its θ tuple from w)."""

    def __init__(self, layers, stage: spec.DDPStage, unravel):
        self.folded = layers[stage.start : stage.stop - 1]
        self.controlled = layers[stage.stop - 1]
        self.unravel = unravel

    def batch(self, w, x, stats=None):
        """The whole batch's map (BN on the batch's own statistics unless ``stats``)."""
        return ops.apply(self.controlled, self.unravel(w), _run(self.folded, x), stats)

    def held_stats(self, x_nominal):
        """BN's statistics of the nominal batch's BN input (None for other layers): the
        second-order terms linearise each sample's map with them held fixed."""
        if isinstance(self.controlled, spec.BatchNorm):
            return ops.batch_stats(_run(self.folded, x_nominal))
        return None

    def frozen(self, x_nominal):
        """One sample's map ``(w, x_s) -> x'_s`` with ``held_stats`` (the dense mode's
        Jacobians linearise it)."""
        stats = self.held_stats(x_nominal)
        return lambda w, x: self.batch(w, x[None], stats)[0]

    def sqnorms(self, w, x, z, diag, stats):
        """``‖B_sᵀ z_s‖²_D`` per sample, D the diagonal ``diag`` (flat like w)."""
        theta, d = self.unravel(w), self.unravel(diag)
        return persample.weighted_sqnorms(self.controlled, theta, _run(self.folded, x), z, d, stats)


# ---------------------------------------------------------------------------------------
# per-sample products (leading axis: samples)
# ---------------------------------------------------------------------------------------


def _dot(a, b):
    """Per-sample inner product over every axis but the first."""
    return jnp.sum((a * b).reshape(a.shape[0], -1), axis=1)


def _per_sample(c, a):
    """Sample s of ``a`` scaled by c_s."""
    return c.reshape((-1,) + (1,) * (a.ndim - 1)) * a


def _factored(stage: StageMap, w, xs, v_next, z_next, u, solve, eps_v, first: bool):
    """Factored value update, V' = z zᵀ + ε_V I with only z propagated. Returns the new
    v = Q_x + Q_θxᵀ k, the new z, the clamp count and the feedback map
    δX -> mean_s Q_θx δx_s; for the ``first`` stage only the clamp count (v_0 and z_0
    are never used, and δx_0 = 0).

    Every per-sample product is one product of the whole batch's map F (BN's statistics
    held, so that sample s of F's output depends on sample s of its input only): with
    q_s = B_sᵀ z_s, a_s = A_sᵀ z_s and the shared k,

        q_s·k = z_s·(B k)_s,                       (B k: one jvp of F along w)
        Q_θx,sᵀ k = a_s (q_s·k) + ε_V A_sᵀ(B k)_s = A_sᵀ (z_s (q_s·k) + ε_V (B k)_s),
        Σ_s Q_θx,s δx_s = Σ_s B_sᵀ (z_s (a_s·δx_s) + ε_V (A δx)_s),

    and the shrink's η q_sᵀM⁻¹q_s is ``persample``'s closed form; nothing of size S × θ
    is formed (but the conv layers' per-sample weight gradients inside the norm)."""
    stats = stage.held_stats(xs)

    def held(w_, x_):
        return stage.batch(w_, x_, stats)

    k = -solve(u)  # the open-loop step, shared by the samples as θ is
    shrink = 1.0 - stage.sqnorms(w, xs, z_next, solve(jnp.ones_like(w)), stats)  # 1 - η qᵀM⁻¹q
    clamps = jnp.sum(shrink < 0, dtype=jnp.int32)
    if first:
        return None, None, clamps, None
    bk = jax.jvp(lambda w_: held(w_, xs), (w,), (k,))[1]
    cot = _per_sample(_dot(z_next, bk), z_next) + eps_v * bk  # Q_θxᵀk = Aᵀ cot
    pull = jax.vjp(held, w, xs)[1]
    a = pull(z_next)[1]
    if stats is None:  # held and live maps coincide: one pullback of v + cot
        v = pull(v_next + cot)[1]
    else:
        v = jax.vjp(stage.batch, w, xs)[1](v_next)[1] + pull(cot)[1]
    z = _per_sample(jnp.sqrt(jnp.maximum(shrink, 0.0)), a)
    n = xs.shape[0]

    def feedback(dx):  # mean_s Bᵀ V' A δx_s = mean_s Bᵀ(z_s (a_s·δx_s) + ε_V (A δx)_s)
        a_dx = jax.jvp(lambda x_: held(w, x_), (xs,), (dx,))[1]
        return pull(_per_sample(_dot(a, dx), z_next) + eps_v * a_dx)[0] / n

    return v, z, clamps, feedback


def _dense(f, w, xs, vxx_next, u, solve, eps_v):
    """Dense value update with explicit A_s, B_s (small nets only). Returns the value gain,
    V_t and the feedback map."""
    n = xs.shape[0]
    a = jax.vmap(lambda x: jax.jacfwd(f, argnums=1)(w, x))(xs).reshape(n, -1, xs[0].size)
    b = jax.vmap(lambda x: jax.jacfwd(f, argnums=0)(w, x))(xs).reshape(n, -1, w.size)
    vp = vxx_next + eps_v * jnp.eye(vxx_next.shape[-1], dtype=w.dtype)
    qtx = jnp.einsum("sow,sop,spi->swi", b, vp, a)  # Q_θx = Bᵀ V' A
    k = -solve(u)  # the open-loop step, shared by the samples as θ is
    gain = jnp.einsum("swi,w->si", qtx, k).reshape(xs.shape)
    m_inv_qtx = solve(jnp.swapaxes(qtx, 1, 2))  # [s, j, :] = η M⁻¹ Q_θx[s, :, j]
    vxx = jnp.einsum("soi,sop,spj->sij", a, vp, a) - jnp.einsum("swi,sjw->sij", qtx, m_inv_qtx)

    def feedback(dx):
        return jnp.mean(jnp.einsum("swi,si->sw", qtx, dx.reshape(n, -1)), axis=0)

    return gain, vxx, feedback


def _terminal(phi, x_t, y, hp: spec.DDPNOpt, dense_terminal: str):
    """Per-sample v_T = ∇Φ_s and the curvature the sweep starts from (None open loop; z_T
    factored; ∇²Φ_s, or ∇Φ_s∇Φ_sᵀ for ``dense_terminal="outer"``, dense)."""
    v = jax.vmap(jax.grad(phi))(x_t, y)
    if not hp.feedback:
        return v, None
    if hp.vxx == "factored":
        return v, v
    flat = v.reshape(v.shape[0], -1)
    if dense_terminal == "outer":
        return v, jnp.einsum("si,sj->sij", flat, flat)
    hess = jax.vmap(jax.hessian(phi))(x_t, y)
    return v, hess.reshape(flat.shape[0], flat.shape[1], flat.shape[1])


# ---------------------------------------------------------------------------------------
# the base optimizer's preconditioner
# ---------------------------------------------------------------------------------------


def base_precondition(hp: spec.DDPNOpt, slots: dict, k):
    """``precondition(t, g) -> (u, solve)``: stage t's slots (raveled, ``slots[name][t]``,
    replaced in the dict at trace time) updated from the batch-mean Q_θ ``g`` by
    torch.optim's rule, the vector u the step descends along (g, or Adam's m̂) and
    ``solve(r) = η M⁻¹ r``. ``k`` is the traced 1-based step count."""

    def precondition(t, g):
        if hp.precond == "sgd":
            return g, lambda r: hp.lr * r
        if hp.precond == "rmsprop":
            slots["v"][t] = slots["v"][t] * hp.rms_alpha + (1 - hp.rms_alpha) * (g * g)
            denom = jnp.sqrt(slots["v"][t]) + hp.eps
            return g, lambda r: hp.lr * r / denom
        slots["m"][t] = slots["m"][t] + (1 - hp.b1) * (g - slots["m"][t])  # torch's lerp
        slots["v"][t] = slots["v"][t] * hp.b2 + (1 - hp.b2) * (g * g)
        kf = k.astype(jnp.float64)
        bc1, bc2 = (1 - hp.b1**kf).astype(g.dtype), jnp.sqrt(1 - hp.b2**kf).astype(g.dtype)
        denom = jnp.sqrt(slots["v"][t]) / bc2 + hp.eps
        return slots["m"][t] / bc1, lambda r: hp.lr * r / denom

    return precondition


# ---------------------------------------------------------------------------------------
# one sweep
# ---------------------------------------------------------------------------------------


def sweep(maps, ws, xs, y, phi, precondition, hp: spec.DDPNOpt, dense_terminal: str = "hessian"):
    """One DDPNOpt iteration from stage vectors ``ws``; ``xs`` are the nominal stage inputs
    x_0..x_{T-1} and the terminal state x_T. Returns the new vectors and the clamp count."""
    v, curv = _terminal(phi, xs[-1], y, hp, dense_terminal)
    n, steps, clamps = xs[0].shape[0], [None] * len(ws), jnp.zeros((), jnp.int32)
    for t in reversed(range(len(ws))):
        stage, w, x = maps[t], ws[t], xs[t]
        # first-order terms from the batch map: backprop's numbers, through BN's statistics
        g_sum, q_x = jax.vjp(stage.batch, w, x)[1](v)
        u, solve = precondition(t, g_sum / n + hp.weight_decay * w)
        if not hp.feedback:
            steps[t], v = (u, solve, None), q_x
            continue
        if hp.vxx == "factored":
            v, curv, clamp, feedback = _factored(stage, w, x, v, curv, u, solve, hp.vxx_reg, first=t == 0)
            clamps = clamps + clamp
        else:
            gain, curv, feedback = _dense(stage.frozen(x), w, x, curv, u, solve, hp.vxx_reg)
            v = q_x + gain
        steps[t] = (u, solve, feedback)
    return _feedback_forward(maps, ws, xs, steps, hp.feedback), clamps


def _feedback_forward(maps, ws, xs, steps, feedback: bool) -> list:
    """θ_t ← θ_t - η M⁻¹ (u_t + mean_s Q_θx,s δx_s), δx_s on the new trajectory x̂ (no
    feedback term where δx_t ≡ 0: the first stage, and the open loop)."""
    new_ws, x_hat = [], xs[0]
    for t, (stage, w) in enumerate(zip(maps, ws)):
        u, solve, fb = steps[t]
        d = u if fb is None else u + fb(x_hat - xs[t])
        new_ws.append(w - solve(d))
        if feedback and t + 1 < len(ws):
            x_hat = stage.batch(new_ws[-1], x_hat)
    return new_ws


# ---------------------------------------------------------------------------------------
# the Trainer
# ---------------------------------------------------------------------------------------


def make(problem, hp, *, dtype="float32", device="cpu", seed=0, dense_terminal="hessian"):
    """``dense_terminal="outer"`` (tests only) starts dense mode from V_T = ∇Φ∇Φᵀ, the
    curvature the factored mode keeps, so that the two can be compared."""
    place = common.Placement(dtype, device)
    layers = problem.layers
    segs = tuple(common.Segment(layer, t, 1) for t, layer in enumerate(layers))  # per layer (docstring)
    stages, tail = spec.ddp_stages(layers)
    controlled = [s.stop - 1 for s in stages]

    def phi(x, y):
        return ops.terminal_loss(problem.loss, _run(layers[tail:], x[None]), y[None])

    def init(params):
        theta = common.to_segments(segs, params, place)
        slots = {name: jax.tree.map(jnp.zeros_like, theta) for name in spec.DDP_SLOTS[hp.precond]}
        running = common.init_running(layers, place)
        return place.commit({"params": theta, "running": running, "slots": slots, "k": jnp.zeros((), jnp.int32)})

    def _step(state, x, y):
        k, params = state["k"] + 1, state["params"]
        xs = [x, *common.forward(segs, params, x)]
        raveled = [ravel_pytree(params[i]) for i in controlled]
        maps = [StageMap(layers, s, unravel) for s, (_, unravel) in zip(stages, raveled)]
        slots = {name: [ravel_pytree(tree[i])[0] for i in controlled] for name, tree in state["slots"].items()}
        ws, clamps = sweep(
            maps,
            [w for w, _ in raveled],
            [xs[s.start] for s in stages] + [xs[tail]],
            y,
            phi,
            base_precondition(hp, slots, k),
            hp,
            dense_terminal,
        )
        unravels = [unravel for _, unravel in raveled]
        new = {
            "params": _replace_controlled(params, ws, unravels),
            "running": common.update_running(segs, state["running"], (x, xs[1:])),
            "slots": {name: _replace_controlled(state["slots"][name], vs, unravels) for name, vs in slots.items()},
            "k": k,
        }
        return new, {"loss": ops.terminal_loss(problem.loss, xs[-1], y), "clamps": clamps}

    def _replace_controlled(per_layer, vectors, unravels):
        out = list(per_layer)
        for i, w, unravel in zip(controlled, vectors, unravels):
            out[i] = unravel(w)
        return out

    def state_arrays(state):
        out = common.arrays_of(segs, {"params": state["params"], "running": state["running"]})
        for name, tree in jax.device_get(state["slots"]).items():
            out |= spec.named_arrays(f"opt/{name}", [np.asarray(v) for theta in tree for v in theta])
        return out | ({"opt/step": np.asarray(jax.device_get(state["k"]), np.int64)} if hp.precond == "adam" else {})

    def load(state, arrays):
        base = common.load_arrays(segs, place, {"params": state["params"], "running": state["running"]}, arrays)
        count = len(common.to_numpy(segs, state["params"]))
        slots = {
            name: common.to_segments(segs, [arrays[f"opt/{name}/{i}"] for i in range(count)], place)
            for name in state["slots"]
        }
        k = jnp.asarray(arrays.get("opt/step", 0), jnp.int32)
        return place.commit({**base, "slots": slots, "k": k})

    step = jax.jit(_step, donate_argnums=0)
    return common.trainer(
        layers, segs, place, init, lambda state, batch: step(state, *batch), state_arrays=state_arrays, load=load
    )
