"""DDPNOpt in torch: one differential-dynamic-programming sweep per step on the layer
chain (shared/ALGORITHMS.md §5; every rule and choice is ``spec.DDPNOpt``'s docstring,
the same as the float64 oracle ``reference/ddp.py`` + ``reference/ddpnopt.py``).

Layout: the layers are cut into controlled stages (``spec.ddp_stages``); each stage's
parameters travel as one flat vector w_t, and per-sample quantities carry a leading axis
of S samples. The factored mode takes every product with A_t and B_t from the stage
linearised in closed form over the whole batch (``linearised.Stage``: A δx, Aᵀc, B dw,
Σ_s B_sᵀc_s, and the per-sample norms ‖B_sᵀ z_s‖²_{M⁻¹} as GEMMs), never forming A_t, B_t
or any per-sample parameter-sized vector; ``torch.func``'s transforms, which it replaced,
cost 40× RMSprop's step in Python overhead alone. The dense mode (small nets, the oracle's
check) forms A_s and B_s with ``func.jacfwd`` and V_T with ``func.hessian``.

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
from implementations.torch import common, linearised, ops

_ravel, _unravel = linearised.ravel, linearised.unravel


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
        nominal batch's BN input (the dense mode's Jacobians linearise this map)."""
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


def _factored(lin: linearised.Stage, v_next, z_next, u, solve, eps_v, first: bool):
    """Factored value update, V' = z zᵀ + ε_V I with only z propagated. Returns the new
    v = Q_x + Q_θxᵀ k, the new z, the clamp count and the feedback map
    δX -> mean_s Q_θx δx_s; for the ``first`` stage only the clamp count (v_0 and z_0
    are never used, and δx_0 = 0).

    Every per-sample product is one product of the stage linearised over the whole batch
    (``linearised.Stage``: BatchNorm's statistics held, so that sample s of its output
    depends on sample s of its input only): with q_s = B_sᵀ z_s, a_s = A_sᵀ z_s and the
    shared k,

        q_s·k = z_s·(B k)_s,
        Q_θx,sᵀ k = a_s (q_s·k) + ε_V A_sᵀ(B k)_s = A_sᵀ (z_s (q_s·k) + ε_V (B k)_s),
        Σ_s Q_θx,s δx_s = Σ_s B_sᵀ (z_s (a_s·δx_s) + ε_V (A δx)_s),

    and the shrink's η q_sᵀM⁻¹q_s is ``Stage.sqnorms``' closed form. Nothing of size
    S × θ is formed (but inside the conv layers' norms)."""
    k = -solve(u)  # the open-loop step, shared by the samples as θ is
    shrink = 1.0 - lin.sqnorms(z_next, solve(torch.ones_like(k)))  # 1 - η qᵀM⁻¹q
    if first:
        return None, None, (shrink < 0).sum(), None
    bk = lin.push_w(k)
    a = lin.pull_x(z_next)
    v = lin.pull_x_value(v_next, _per_sample(_dot(z_next, bk), z_next) + eps_v * bk)
    z = _per_sample(torch.sqrt(torch.clamp(shrink, min=0.0)), a)
    n = z_next.shape[0]

    def feedback(dx):  # mean_s Bᵀ V' A δx_s = mean_s Bᵀ(z_s (a_s·δx_s) + ε_V (A δx)_s)
        return lin.pull_w(_per_sample(_dot(a, dx), z_next) + eps_v * lin.push_x(dx)) / n

    return v, z, (shrink < 0).sum(), feedback


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
    factored; ∇²Φ_s, or ∇Φ_s∇Φ_sᵀ for ``dense_terminal="outer"``, dense). ``phi`` is the
    batch's mean loss (every loss in ``spec.LOSSES`` is a mean over samples, so
    ∇_{x_s}Φ_s = S ∇_{x_s} mean Φ: one backward pass, not S)."""
    x_t = x_t.detach().requires_grad_(True)
    with torch.enable_grad():
        v = torch.autograd.grad(phi(x_t, y), x_t)[0] * x_t.shape[0]
    x_t = x_t.detach()
    if not hp.feedback:
        return v, None
    if hp.vxx == "factored":
        return v, v
    flat = v.reshape(v.shape[0], -1)
    if dense_terminal == "outer":
        return v, torch.einsum("si,sj->sij", flat, flat)
    one = lambda x, t: phi(x[None], t[None])
    hess = func.vmap(func.hessian(one))(x_t, y)
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


def sweep(maps, lins, ws, xs, y, phi, precondition, hp: spec.DDPNOpt, dense_terminal: str = "hessian"):
    """One DDPNOpt iteration from stage vectors ``ws``; ``xs`` are the nominal stage inputs
    x_0..x_{T-1} and the terminal state x_T, ``lins`` the stages linearised along them.
    Returns the new vectors and the clamp count."""
    v, curv = _terminal(phi, xs[-1], y, hp, dense_terminal)
    n, steps = xs[0].shape[0], [None] * len(ws)
    clamps = torch.zeros((), dtype=torch.int64, device=xs[0].device)
    for t in reversed(range(len(ws))):
        lin, w = lins[t], ws[t]
        # first-order terms: backprop's numbers, through BN's batch statistics
        u, solve = precondition(t, lin.pull_w(v) / n + hp.weight_decay * w)
        if not hp.feedback:
            steps[t], v = (u, solve, None), lin.pull_x_live(v)
            continue
        if hp.vxx == "factored":
            v, curv, clamp, feedback = _factored(lin, v, curv, u, solve, hp.vxx_reg, first=t == 0)
            clamps = clamps + clamp
        else:
            gain, curv, feedback = _dense(maps[t].frozen(xs[t]), w, xs[t], curv, u, solve, hp.vxx_reg)
            v = lin.pull_x_live(v) + gain
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
    stages, tail = spec.ddp_stages(layers)
    controlled = [s.stop - 1 for s in stages]

    def phi(x, y):
        return ops.terminal_loss(problem.loss, _run(layers[tail:], x), y)

    def init(params):
        theta = [tuple(place.tensor(v) for v in th) for th in common.per_layer(layers, params)]
        slots = {name: [tuple(torch.zeros_like(v) for v in th) for th in theta] for name in spec.DDP_SLOTS[hp.precond]}
        return {"params": theta, "running": common.init_running(layers, place), "slots": slots, "k": 0}

    def step(state, batch):
        x, y = batch
        k, params = state["k"] + 1, state["params"]
        lin_layers = linearised.forward(layers, params, x)
        xs = [x] + [lin.out for lin in lin_layers]
        shapes = [[v.shape for v in params[i]] for i in controlled]
        maps = [StageMap(layers, s, sh) for s, sh in zip(stages, shapes)]
        slots = {name: [_ravel(per_layer[i]) for i in controlled] for name, per_layer in state["slots"].items()}
        lins = [linearised.stage(lin_layers, s, sh) for s, sh in zip(stages, shapes)]
        ws, clamps = sweep(
            maps,
            lins,
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
