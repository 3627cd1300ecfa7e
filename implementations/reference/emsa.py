"""Extended MSA (oracle), JMLR Algorithm 3, discrete time.

Per iteration, with x_0..x_T from the forward pass and p_0..p_T from the costates:

    θ_t ← argmax_θ  H_t(x_t, p_{t+1}, θ) - ρ/2 ‖x_{t+1} - f_t(x_t, θ)‖²
                                         - ρ/2 ‖p_t - ∇_x H_t(x_t, p_{t+1}, θ)‖²

for every layer with parameters, all from the same stored (x, p) (Jacobi, as the authors'
code). The argmax is approximate, from the current θ: ``inner="lbfgs"`` runs SciPy's
L-BFGS-B for ``inner_steps`` iterations (the official code); ``"gd"`` takes ``inner_steps``
ascent steps ``θ ← θ + inner_lr ∇H̃``; ``"adam"`` takes ``inner_steps`` Adam ascent steps
whose moments start at zero for every layer at every MSA step; ``"optax-lbfgs"`` runs optax's L-BFGS for ``inner_steps`` iterations. With ρ = 0 this is basic MSA.

With ``perturb_init = p > 0`` every solve starts from θ_t + δ_{k,t} instead,
``δ_{k,t} = p · U(-1, 1)`` drawn by ``draws.inner_start_perturbation`` for step k and layer
t (``spec.EMSA``); the state counts the steps for it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from implementations import draws, solvers, spec
from implementations.reference import common, device_lbfgs, optim, pmp


def maximise(h, theta: tuple, inner: str, steps: int, lr: float) -> tuple:
    """Approximate ``argmax h`` from ``theta`` with the named inner solver."""
    if inner == "gd":
        for _ in range(steps):
            g = jax.grad(h)(theta)
            theta = tuple(v + lr * gv for v, gv in zip(theta, g))
        return theta
    if inner == "adam":
        params, m, v = list(theta), [jnp.zeros_like(a) for a in theta], [jnp.zeros_like(a) for a in theta]
        for k in range(1, steps + 1):
            neg_grad = [-g for g in jax.grad(h)(tuple(params))]
            params, m, v = optim.adam(params, neg_grad, m, v, k, lr=lr)
        return tuple(params)
    if inner == "lbfgs-device":
        shapes, sizes = [a.shape for a in theta], [a.size for a in theta]

        def unflat(vec):
            return tuple(
                jnp.asarray(p.reshape(s)) for p, s in zip(np.split(np.asarray(vec), np.cumsum(sizes)[:-1]), shapes)
            )

        value_and_grad = jax.value_and_grad(h)

        def negated(vec):
            value, grads = value_and_grad(unflat(vec))
            return -float(value), -np.concatenate([np.asarray(g).ravel() for g in grads])

        return unflat(device_lbfgs.minimise(negated, np.concatenate([np.asarray(a).ravel() for a in theta]), steps))
    if inner == "lbfgs":
        shapes = [a.shape for a in theta]
        sizes = [a.size for a in theta]

        def unflatten(vec):
            parts = np.split(np.asarray(vec), np.cumsum(sizes)[:-1])
            return tuple(jnp.asarray(p.reshape(s)) for p, s in zip(parts, shapes))

        value_and_grad = jax.value_and_grad(h)

        def host_value_and_grad(vec):
            value, grads = value_and_grad(unflatten(vec))
            return float(value), np.concatenate([np.asarray(g).ravel() for g in grads])

        start = np.concatenate([np.asarray(a).ravel() for a in theta])
        return unflatten(solvers.lbfgs_maximise(host_value_and_grad, start, steps))
    raise ValueError(f"unknown inner solver {inner!r} (known: {', '.join(spec.INNER_SOLVERS)})")


@functools.cache
def optax_lbfgs_solver(layer, rho: float, reg: float, steps: int):
    """``(θ, x_t, x_{t+1}, p_t, p_{t+1}) -> argmax`` by ``steps`` iterations of optax's
    L-BFGS on -H̃_t, one Python iteration at a time: the oracle of the jax backend's
    compiled, layer-batched use of the same solver. The one exception to "never jitted":
    optax's line search is a ``while_loop``, which eager JAX would re-trace and compile
    at every call (seconds each), so the solve is compiled once per layer kind."""

    def solve(theta, x, x_next, p, p_next):
        neg = lambda th: -pmp.augmented_hamiltonian(layer, th, x, x_next, p, p_next, rho, reg)
        opt = optax.lbfgs()
        state = opt.init(theta)
        for _ in range(steps):
            value, grad = jax.value_and_grad(neg)(theta)
            updates, state = opt.update(grad, state, theta, value=value, grad=grad, value_fn=neg)
            theta = optax.apply_updates(theta, updates)
        return theta

    return jax.jit(solve)


def make(problem, hp, *, dtype="float64", device="cpu", seed=0, rho=None):
    """``rho`` overrides ``hp.rho`` (basic MSA passes 0)."""
    common.check_dtype(dtype)
    layers = problem.layers
    rho = hp.rho if rho is None else rho

    def init(params):
        return {"params": pmp.per_layer(layers, common.to_jax(params)), "running": common.init_running(layers), "k": 0}

    def start(theta: tuple, k: int, t: int) -> tuple:
        """Layer t's inner-solve start at step k: θ_t, perturbed when ``perturb_init`` > 0."""
        if not hp.perturb_init:
            return theta
        deltas = draws.inner_start_perturbation(hp.perturb_init, seed, k, t, [v.shape for v in theta])
        return tuple(v + jnp.asarray(d) for v, d in zip(theta, deltas))

    def step(state, batch):
        x, y = batch
        params, k = state["params"], state["k"] + 1
        xs = pmp.forward(layers, params, x)
        ps = pmp.costates(layers, params, xs, y, problem.loss)
        new = []
        for t, (layer, theta) in enumerate(zip(layers, params)):
            if not theta:
                new.append(theta)
                continue
            theta = start(theta, k, t)

            if hp.inner == "optax-lbfgs":
                solve = optax_lbfgs_solver(layer, rho, hp.reg, hp.inner_steps)
                new.append(solve(theta, xs[t], xs[t + 1], ps[t], ps[t + 1]))
                continue

            def h(th, t=t, layer=layer):
                return pmp.augmented_hamiltonian(layer, th, xs[t], xs[t + 1], ps[t], ps[t + 1], rho, hp.reg)

            new.append(maximise(h, theta, hp.inner, hp.inner_steps, hp.inner_lr))
        running = common.update_running(layers, state["running"], xs)
        return {"params": new, "running": running, "k": k}, {"loss": pmp.terminal_loss(problem.loss, xs[-1], y)}

    def state_arrays(state):
        return common.base_arrays(state) | {"step": np.asarray(state["k"], np.int64)}

    def load(state, arrays):
        return {**common.load_base(state, arrays), "k": int(arrays["step"])}

    return common.trainer(layers, init, step, state_arrays=state_arrays, load=load)
