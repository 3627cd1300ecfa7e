"""DDPNOpt in torch: one differential-dynamic-programming sweep per step on the layer
chain (shared/ALGORITHMS.md §5; every rule and choice is ``spec.DDPNOpt``'s docstring,
the same as the float64 oracle ``reference/ddp.py`` + ``reference/ddpnopt.py``).

Layout: the layers are cut into controlled stages (``spec.ddp_stages``); each stage's
parameters travel as one flat vector w_t, and per-sample quantities carry a leading axis
of S samples. They come from ``torch.func``: ``vmap`` over the samples of a ``vjp`` of
the stage's one-sample map (Bᵀc and Aᵀc together) or of a ``jvp`` (B dw, A dx). The
factored mode never forms A_t or B_t; the dense mode (small nets) forms them with
``jacfwd`` and V_T with ``hessian``.

The base optimizer's slots are plain tensors, not a ``torch.optim`` object: DDPNOpt
updates the preconditioner from the batch-mean Q_θ during the backward sweep, but steps
along u + mean_s Q_θx δx_s during the feedback pass, which no ``torch.optim`` step does.
The slot updates are torch.optim's formulas and operations (RMSprop's
``v·α + (1-α)g²``, Adam's ``m.lerp(g, 1-b1)`` and ``√v/√bc2 + eps``), so that
``feedback=False`` is its SGD, RMSprop or Adam step.

State: ``params`` (per-layer tuples), ``running`` (BN), ``slots`` (``{slot: per-layer
tuples}``, ``spec.DDP_SLOTS``) and ``k`` (steps taken); ``state_arrays`` names them as the
reference does (``opt/<slot>/i``, and ``opt/step`` for Adam).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import func

from implementations import spec
from implementations.torch import common, ops


def _ravel(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _unravel(w: torch.Tensor, shapes) -> tuple:
    out, start = [], 0
    for shape in shapes:
        size = math.prod(shape)
        out.append(w[start : start + size].reshape(shape))
        start += size
    return tuple(out)


def _run(layers, x):
    """Parameter-free ``layers`` on x."""
    for layer in layers:
        x = ops.apply(layer, (), x)
    return x


class StageMap:
    """Stage t's f_t over its flat parameter vector w: the folded parameter-free layers,
    then the controlled layer."""

    def __init__(self, layers, stage: spec.DDPStage, shapes):
        self.folded = layers[stage.start : stage.stop - 1]
        self.controlled = layers[stage.stop - 1]
        self.shapes = shapes

    def batch(self, w, x, stats=None):
        """The whole batch's map (BN on the batch's own statistics unless ``stats``)."""
        return ops.apply(self.controlled, _unravel(w, self.shapes), _run(self.folded, x), stats)

    def frozen(self, x_nominal):
        """One sample's map ``(w, x_s) -> x'_s``, BN's statistics held at those of the
        nominal batch's BN input (the second-order terms linearise this map)."""
        is_bn = isinstance(self.controlled, spec.BatchNorm)
        stats = ops.batch_stats(_run(self.folded, x_nominal)) if is_bn else None
        return lambda w, x: self.batch(w, x[None], stats)[0]


# ---------------------------------------------------------------------------------------
# per-sample products (leading axis: samples)
# ---------------------------------------------------------------------------------------


def _dot(a, b):
    """Per-sample inner product over every axis but the first."""
    return (a * b).reshape(a.shape[0], -1).sum(dim=1)


def _per_sample(c, a):
    """Sample s of ``a`` scaled by c_s."""
    return c.reshape((-1,) + (1,) * (a.ndim - 1)) * a


def _pullbacks(f, w, xs, cot):
    """(B_sᵀ c_s, A_sᵀ c_s) for every sample: one vjp of f at (w, x_s)."""
    return func.vmap(lambda x, c: func.vjp(f, w, x)[1](c))(xs, cot)


def _pushforward_w(f, w, xs, dw):
    """B_s dw_s for every sample."""
    return func.vmap(lambda x, d: func.jvp(lambda w_: f(w_, x), (w,), (d,))[1])(xs, dw)


def _pushforward_x(f, w, xs, dx):
    """A_s dx_s for every sample."""
    return func.vmap(lambda x, d: func.jvp(lambda x_: f(w, x_), (x,), (d,))[1])(xs, dx)


def _factored(f, w, xs, z_next, u, solve, eps_v):
    """Factored value update, V' = z zᵀ + ε_V I with only z propagated. Returns the value
    gain Q_θxᵀ k, the new z, the clamp count and the feedback map δX -> mean_s Q_θx δx_s."""
    q, a = _pullbacks(f, w, xs, z_next)  # q = Bᵀz, a = Aᵀz
    k = -solve(u)  # the open-loop step, shared by the samples as θ is
    # Q_θxᵀ k = Aᵀ V' B k = a (q·k) + ε_V Aᵀ(B k)
    a_bk = _pullbacks(f, w, xs, _pushforward_w(f, w, xs, k.expand_as(q)))[1]
    gain = _per_sample((q * k).sum(dim=1), a) + eps_v * a_bk
    shrink = 1.0 - (q * solve(q)).sum(dim=1)  # 1 - η qᵀM⁻¹q
    z = _per_sample(torch.sqrt(torch.clamp(shrink, min=0.0)), a)

    def feedback(dx):  # Bᵀ V' A δx = q (a·δx) + ε_V Bᵀ(A δx)
        b_adx = _pullbacks(f, w, xs, _pushforward_x(f, w, xs, dx))[0]
        return (_per_sample(_dot(a, dx), q) + eps_v * b_adx).mean(dim=0)

    return gain, z, (shrink < 0).sum(), feedback


def _dense(f, w, xs, vxx_next, u, solve, eps_v):
    """Dense value update with explicit A_s, B_s (small nets only). Returns the value gain,
    V_t and the feedback map."""
    n = xs.shape[0]
    a = func.vmap(lambda x: func.jacfwd(f, argnums=1)(w, x))(xs).reshape(n, -1, xs[0].numel())
    b = func.vmap(lambda x: func.jacfwd(f, argnums=0)(w, x))(xs).reshape(n, -1, w.numel())
    vp = vxx_next + eps_v * torch.eye(vxx_next.shape[-1], dtype=w.dtype, device=w.device)
    qtx = torch.einsum("sow,sop,spi->swi", b, vp, a)  # Q_θx = Bᵀ V' A
    k = -solve(u)  # the open-loop step, shared by the samples as θ is
    gain = torch.einsum("swi,w->si", qtx, k).reshape(xs.shape)
    m_inv_qtx = solve(qtx.transpose(1, 2))  # [s, j, :] = η M⁻¹ Q_θx[s, :, j]
    vxx = torch.einsum("soi,sop,spj->sij", a, vp, a) - torch.einsum("swi,sjw->sij", qtx, m_inv_qtx)

    def feedback(dx):
        return torch.einsum("swi,si->sw", qtx, dx.reshape(n, -1)).mean(dim=0)

    return gain, vxx, feedback


def _terminal(phi, x_t, y, hp: spec.DDPNOpt, dense_terminal: str):
    """Per-sample v_T = ∇Φ_s and the curvature the sweep starts from (None open loop; z_T
    factored; ∇²Φ_s, or ∇Φ_s∇Φ_sᵀ for ``dense_terminal="outer"``, dense)."""
    v = func.vmap(func.grad(phi))(x_t, y)
    if not hp.feedback:
        return v, None
    if hp.vxx == "factored":
        return v, v
    flat = v.reshape(v.shape[0], -1)
    if dense_terminal == "outer":
        return v, torch.einsum("si,sj->sij", flat, flat)
    hess = func.vmap(func.hessian(phi))(x_t, y)
    return v, hess.reshape(flat.shape[0], flat.shape[1], flat.shape[1])


# ---------------------------------------------------------------------------------------
# the base optimizer's preconditioner
# ---------------------------------------------------------------------------------------


def base_precondition(hp: spec.DDPNOpt, slots: dict, k: int):
    """``precondition(t, g) -> (u, solve)``: stage t's slots (raveled, ``slots[name][t]``)
    updated from the batch-mean Q_θ ``g`` by torch.optim's rule, the vector u the step
    descends along (g, or Adam's m̂) and ``solve(r) = η M⁻¹ r``."""

    def precondition(t, g):
        if hp.precond == "sgd":
            return g, lambda r: hp.lr * r
        if hp.precond == "rmsprop":
            slots["v"][t] = slots["v"][t].mul(hp.rms_alpha).addcmul_(g, g, value=1 - hp.rms_alpha)
            denom = slots["v"][t].sqrt().add_(hp.eps)
            return g, lambda r: hp.lr * r / denom
        slots["m"][t] = slots["m"][t].lerp(g, 1 - hp.b1)
        slots["v"][t] = slots["v"][t].mul(hp.b2).addcmul_(g, g, value=1 - hp.b2)
        denom = (slots["v"][t].sqrt() / math.sqrt(1 - hp.b2**k)).add_(hp.eps)
        return slots["m"][t] / (1 - hp.b1**k), lambda r: hp.lr * r / denom

    return precondition


# ---------------------------------------------------------------------------------------
# one sweep
# ---------------------------------------------------------------------------------------


def sweep(maps, ws, xs, y, phi, precondition, hp: spec.DDPNOpt, dense_terminal: str = "hessian"):
    """One DDPNOpt iteration from stage vectors ``ws``; ``xs`` are the nominal stage inputs
    x_0..x_{T-1} and the terminal state x_T. Returns the new vectors and the clamp count."""
    v, curv = _terminal(phi, xs[-1], y, hp, dense_terminal)
    n, steps = xs[0].shape[0], [None] * len(ws)
    clamps = torch.zeros((), dtype=torch.int64, device=xs[0].device)
    for t in reversed(range(len(ws))):
        stage, w, x = maps[t], ws[t], xs[t]
        # first-order terms from the batch map: backprop's numbers, through BN's statistics
        g_sum, q_x = func.vjp(stage.batch, w, x)[1](v)
        u, solve = precondition(t, g_sum / n + hp.weight_decay * w)
        if not hp.feedback:
            steps[t], v = (u, solve, None), q_x
            continue
        f = stage.frozen(x)
        if hp.vxx == "factored":
            gain, curv, clamp, feedback = _factored(f, w, x, curv, u, solve, hp.vxx_reg)
            clamps = clamps + clamp
        else:
            gain, curv, feedback = _dense(f, w, x, curv, u, solve, hp.vxx_reg)
        steps[t], v = (u, solve, feedback), q_x + gain
    return _feedback_forward(maps, ws, xs, steps, hp.feedback), clamps


def _feedback_forward(maps, ws, xs, steps, feedback: bool) -> list:
    """θ_t ← θ_t - η M⁻¹ (u_t + mean_s Q_θx,s δx_s), δx_s on the new trajectory x̂."""
    new_ws, x_hat = [], xs[0]
    for t, (stage, w) in enumerate(zip(maps, ws)):
        u, solve, fb = steps[t]
        d = u + fb(x_hat - xs[t]) if feedback else u
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
    stages, tail = spec.ddp_stages(layers)
    controlled = [s.stop - 1 for s in stages]

    def phi(x, y):
        return ops.terminal_loss(problem.loss, _run(layers[tail:], x[None]), y[None])

    def init(params):
        theta = [tuple(place.tensor(v) for v in th) for th in common.per_layer(layers, params)]
        slots = {name: [tuple(torch.zeros_like(v) for v in th) for th in theta] for name in spec.DDP_SLOTS[hp.precond]}
        return {"params": theta, "running": common.init_running(layers, place), "slots": slots, "k": 0}

    def step(state, batch):
        x, y = batch
        k, params = state["k"] + 1, state["params"]
        xs = common.forward(layers, params, x)
        shapes = [[v.shape for v in params[i]] for i in controlled]
        maps = [StageMap(layers, s, sh) for s, sh in zip(stages, shapes)]
        slots = {name: [_ravel(per_layer[i]) for i in controlled] for name, per_layer in state["slots"].items()}
        ws, clamps = sweep(
            maps,
            [_ravel(params[i]) for i in controlled],
            [xs[s.start] for s in stages] + [xs[tail]],
            y,
            phi,
            base_precondition(hp, slots, k),
            hp,
            dense_terminal,
        )
        common.update_running(layers, state["running"], xs)
        new = {
            "params": _replace_controlled(params, ws, shapes),
            "running": state["running"],
            "slots": {name: _replace_controlled(state["slots"][name], vs, shapes) for name, vs in slots.items()},
            "k": k,
        }
        return new, {"loss": ops.terminal_loss(problem.loss, xs[-1], y), "clamps": clamps}

    def _replace_controlled(per_layer, vectors, shapes):
        out = list(per_layer)
        for i, w, sh in zip(controlled, vectors, shapes):
            out[i] = _unravel(w, sh)
        return out

    def state_arrays(state):
        out = common.conventional_arrays({"params": state["params"], "running": state["running"]})
        for name, per_layer in state["slots"].items():
            out |= spec.named_arrays(f"opt/{name}", [common.host(v) for th in per_layer for v in th])
        return out | ({"opt/step": np.asarray(state["k"], np.int64)} if hp.precond == "adam" else {})

    def load(state, arrays):
        common.load_arrays({"params": state["params"], "running": state["running"]}, arrays)
        slots = {
            name: [tuple(place.tensor(arrays[f"opt/{name}/{i}"]) for i in range(s.start, s.stop)) for s in flat_slices]
            for name in state["slots"]
        }
        return {**state, "slots": slots, "k": int(arrays.get("opt/step", 0))}

    flat_slices = spec.layer_slices(layers)
    return common.trainer(layers, place, init, step, state_arrays=state_arrays, load=load)
