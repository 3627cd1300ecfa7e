"""One DDPNOpt iteration on a chain of controlled stages (the oracle's core, float64).

The rules are ``spec.DDPNOpt``'s docstring (shared/ALGORITHMS.md §5); this module knows
nothing of layers: a stage is its ``Dynamics`` over one parameter vector w_t, and the
terminal loss is a per-sample function, so tests can hand it any chain (the linear-
quadratic check of ``tests/test_ddpnopt.py`` does).

Per-sample quantities carry a leading axis of S samples. Vectors in θ-space are flat
(n_w,). ``solve(u) = η M⁻¹ u`` acts on the last axis (a diagonal M divides entry-wise).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class Dynamics(NamedTuple):
    """Stage t's f_t. ``batch(w, X)`` maps the whole batch (batch norm on the batch's own
    statistics); ``frozen(X)`` returns ``(w, x_s) -> x'_s``, one sample's map with any
    coupling between samples held at the nominal batch X (for a per-sample map, the same
    function on a batch of one)."""

    batch: Callable[[Any, Any], Any]
    frozen: Callable[[Any], Callable[[Any, Any], Any]]


#: ``precondition(t, g, curvature) -> (u, solve)``: updates stage t's base-optimizer state
#: from the batch-mean Q_θ ``g`` and returns the vector u its step descends along (g, or
#: Adam's m̂) and ``solve``; ``curvature()`` is the dense Gauss-Newton Q_θθ (dense mode
#: only; None in factored mode), for a test's exact-curvature M.
Precondition = Callable[[int, Any, Callable | None], tuple[Any, Callable]]


class Options(NamedTuple):
    weight_decay: float
    feedback: bool
    vxx: str  # "factored" or "dense"
    vxx_reg: float
    dense_terminal: str = "hessian"  # dense V_T: "hessian" ∇²Φ_s, or "outer" ∇Φ_s ∇Φ_sᵀ (tests)


def _dot(a, b):
    """Per-sample inner product over every axis but the first."""
    return jnp.sum((a * b).reshape(a.shape[0], -1), axis=1)


def _per_sample(c, a):
    """Scale sample s of ``a`` by c_s."""
    return c.reshape((-1,) + (1,) * (a.ndim - 1)) * a


def _pullbacks(f, w, xs, cot):
    """(B_sᵀ c_s, A_sᵀ c_s) for every sample: one vjp of f at (w, x_s)."""
    return jax.vmap(lambda x, c: jax.vjp(f, w, x)[1](c))(xs, cot)


def _pushforward_w(f, w, xs, dw):
    """B_s dw_s for every sample."""
    return jax.vmap(lambda x, d: jax.jvp(lambda w_: f(w_, x), (w,), (d,))[1])(xs, dw)


def _pushforward_x(f, w, xs, dx):
    """A_s dx_s for every sample."""
    return jax.vmap(lambda x, d: jax.jvp(lambda x_: f(w, x_), (x,), (d,))[1])(xs, dx)


def _factored(f, w, xs, z_next, u, solve, eps_v):
    """Factored value update: V' = z zᵀ + ε_V I, only z propagated. Returns v_t, z_t, the
    clamp count and the feedback map δX -> mean_s Q_θx,s δx_s."""
    q, a = _pullbacks(f, w, xs, z_next)  # q = Bᵀz, a = Aᵀz
    k = -solve(u)  # the open-loop step, shared by the samples as θ is
    # Q_θxᵀ k = Aᵀ V' B k = a (q·k) + ε_V Aᵀ(B k)
    _, a_bk = _pullbacks(f, w, xs, _pushforward_w(f, w, xs, jnp.broadcast_to(k, q.shape)))
    value_gain = _per_sample(jnp.sum(q * k, axis=1), a) + eps_v * a_bk
    shrink = 1.0 - jnp.sum(q * solve(q), axis=1)  # 1 - η qᵀM⁻¹q
    z = _per_sample(jnp.sqrt(jnp.maximum(shrink, 0.0)), a)

    def feedback(dx):  # Bᵀ V' A δx = q (a·δx) + ε_V Bᵀ(A δx)
        b_adx, _ = _pullbacks(f, w, xs, _pushforward_x(f, w, xs, dx))
        return jnp.mean(_per_sample(_dot(a, dx), q) + eps_v * b_adx, axis=0)

    return value_gain, z, jnp.sum(shrink < 0), feedback


def _jacobians(f, w, xs):
    """Explicit A_s (S, n_out, n_in) and B_s (S, n_out, n_w): dense mode only."""
    n = xs.shape[0]
    a = jax.vmap(lambda x: jax.jacfwd(f, argnums=1)(w, x))(xs)
    b = jax.vmap(lambda x: jax.jacfwd(f, argnums=0)(w, x))(xs)
    return a.reshape(n, -1, xs[0].size), b.reshape(n, -1, w.size)


def _dense_parts(f, w, xs, vxx_next, eps_v):
    """A_s, B_s, V' = V_{s,t+1} + ε_V I and Q_θx = Bᵀ V' A, explicitly."""
    a, b = _jacobians(f, w, xs)
    vp = vxx_next + eps_v * jnp.eye(vxx_next.shape[-1])
    qtx = jnp.einsum("sow,sop,spi->swi", b, vp, a)  # Q_θx = Bᵀ V' A
    return a, b, vp, qtx


def _gauss_newton_quu(b, vp, weight_decay):
    """The dense Gauss-Newton Q_θθ = wd·I + mean_s B_sᵀ V' B_s (for a test's exact M)."""
    return weight_decay * jnp.eye(b.shape[-1]) + jnp.einsum("sow,sop,spv->wv", b, vp, b) / b.shape[0]


def _dense(xs, a, vp, qtx, u, solve):
    """Dense value update. Returns the value gain Q_θxᵀ k (per-sample states' shape), V_t
    and the feedback map."""
    k = -solve(u)  # the open-loop step, shared by the samples as θ is
    gain = jnp.einsum("swi,w->si", qtx, k).reshape(xs.shape)
    m_inv_qtx = solve(jnp.swapaxes(qtx, 1, 2))  # [s, j, :] = η M⁻¹ Q_θx[s, :, j]
    vxx = jnp.einsum("soi,sop,spj->sij", a, vp, a) - jnp.einsum("swi,sjw->sij", qtx, m_inv_qtx)

    def feedback(dx):
        return jnp.mean(jnp.einsum("swi,si->sw", qtx, dx.reshape(dx.shape[0], -1)), axis=0)

    return gain, vxx, feedback


def _terminal(phi, x_t, y, opts: Options):
    v = jax.vmap(jax.grad(phi))(x_t, y)
    if not opts.feedback:
        return v, None
    if opts.vxx == "factored":
        return v, v
    flat = v.reshape(v.shape[0], -1)
    if opts.dense_terminal == "outer":
        return v, jnp.einsum("si,sj->sij", flat, flat)
    hess = jax.vmap(jax.hessian(phi))(x_t, y)
    return v, hess.reshape(flat.shape[0], flat.shape[1], flat.shape[1])


def step(dynamics: list[Dynamics], ws: list, x0, y, phi, precondition: Precondition, opts: Options):
    """One iteration from parameters ``ws`` (one vector per stage) on the batch (x0, y);
    ``phi(x_s, y_s)`` is one sample's terminal loss Φ_s. Returns the new parameters and
    ``{"states": nominal X_0..X_T, "new_states": x̂_0..x̂_T (feedback only), "clamps"}``."""
    xs = [x0]
    for dyn, w in zip(dynamics, ws):
        xs.append(dyn.batch(w, xs[-1]))
    v, curv = _terminal(phi, xs[-1], y, opts)
    n, steps, clamps = x0.shape[0], [None] * len(ws), 0
    for t in reversed(range(len(ws))):
        dyn, w, x = dynamics[t], ws[t], xs[t]
        # first-order terms from the batch map: backprop's numbers, through BN's statistics
        g_sum, q_x = jax.vjp(dyn.batch, w, x)[1](v)
        g = opts.weight_decay * w + g_sum / n
        if not opts.feedback:
            u, solve = precondition(t, g, None)
            steps[t], v = (u, solve, None), q_x
            continue
        f = dyn.frozen(x)
        if opts.vxx == "factored":
            u, solve = precondition(t, g, None)
            gain, curv, clamp, feedback = _factored(f, w, x, curv, u, solve, opts.vxx_reg)
            clamps += clamp
        else:
            a, b, vp, qtx = _dense_parts(f, w, x, curv, opts.vxx_reg)
            u, solve = precondition(t, g, functools.partial(_gauss_newton_quu, b, vp, opts.weight_decay))
            gain, curv, feedback = _dense(x, a, vp, qtx, u, solve)
        steps[t], v = (u, solve, feedback), q_x + gain
    new_ws, new_xs = _feedback_forward(dynamics, ws, xs, steps, opts.feedback)
    return new_ws, {"states": xs, "new_states": new_xs, "clamps": clamps}


def _feedback_forward(dynamics, ws, xs, steps, feedback: bool):
    """θ_t ← θ_t - η M⁻¹ (u_t + mean_s Q_θx,s δx_s) along the new trajectory x̂."""
    new_ws, new_xs = [], [xs[0]]
    for t, (dyn, w) in enumerate(zip(dynamics, ws)):
        u, solve, fb = steps[t]
        d = u + fb(new_xs[-1] - xs[t]) if feedback else u
        new_ws.append(w - solve(d))
        if feedback:
            new_xs.append(dyn.batch(new_ws[-1], new_xs[-1]))
    return new_ws, new_xs if feedback else None
