"""Extended MSA in JAX, JMLR Algorithm 3 (see ``implementations.reference.emsa``).

One compiled step: the forward pass and every costate from one ``value_and_grad``
(``common.loss_grads_costates``), then each layer with parameters maximises, from the
stored values (Jacobi),

    H̃_t(θ) = Σ p_{t+1}·f_t(x_t, θ) - reg·½‖θ‖² - ρ/2 ‖x_{t+1} - f_t(x_t, θ)‖²
              - ρ/2 ‖p_t - ∇_x H_t(x_t, p_{t+1}, θ)‖²

with ∇_x H_t and its θ-gradient (second order) by JAX's own autodiff
(``ops.augmented_hamiltonian``). The layers' problems are independent given the stored
(x, p), so a residual stack's are solved together: ``vmap`` of the solver over the
stacked parameters and the stacked (x_t, x_{t+1}, p_t, p_{t+1}).

Inner solvers:

- ``gd``, ``adam`` (``optax.adam``: moments from zero for every layer at
  every MSA step, carried across its ``inner_steps`` iterations) and ``optax-lbfgs``
  (``optax.lbfgs``: memory 10, zoom line search) run inside the compiled step, as a
  ``lax.fori_loop`` of ``inner_steps`` iterations;
- ``lbfgs`` is SciPy's L-BFGS-B on the host, the official code's solver and the one the
  reference and torch run, so all three backends take the same inner steps. The stored
  (x, p) come from one compiled call; each layer's value and gradient is one compiled
  call (compiled once per segment, the layer picked by a traced index), driven by SciPy.

With ρ = 0 this is basic MSA and H̃ is the plain Hamiltonian.

With ``perturb_init`` > 0 every solve starts from θ_t + δ_{k,t} (``spec.EMSA``): the
draws are made on the host from NumPy (``draws.inner_start_perturbation``, step k, layer
t), as in every backend, and enter the compiled step as arguments (stacked like the
segment's parameters); the state keeps the step count beside the donated arrays.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from implementations import draws, solvers, spec
from implementations.jax import common, device_lbfgs, ops

IN_GRAPH_SOLVERS = ("gd", "adam", "optax-lbfgs", "lbfgs-device")


def layer_objective(layer, rho: float, reg: float):
    """``h(θ, x_t, x_{t+1}, p_t, p_{t+1}) = H̃_t(θ)`` (the plain H_t when ρ = 0)."""

    def h(theta, x, x_next, p, p_next):
        if rho == 0:
            return ops.hamiltonian(layer, theta, x, p_next, reg)
        return ops.augmented_hamiltonian(layer, theta, x, x_next, p, p_next, rho, reg)

    return h


def stack_value_and_grad(layer, rho: float, reg: float):
    """``(θ, x_t, x_{t+1}, p_t, p_{t+1}) -> (H̃ (L,), ∇θ)`` for L layers of kind ``layer``,
    every argument with a leading layer axis: the closed form for residual layers
    (``ops.emsa_dense_value_and_grad``, ``ops.emsa_conv_value_and_grad``; at ρ = 0 it is the
    plain H_t), autodiff of ``layer_objective`` under ``vmap`` for the others."""
    if isinstance(layer, (spec.ResDense, spec.ResConv)):
        closed = ops.emsa_dense_value_and_grad if isinstance(layer, spec.ResDense) else ops.emsa_conv_value_and_grad

        def value_and_grad(theta, *stored):
            value, grad_w, grad_b = closed(*theta, *stored, delta=layer.delta, rho=rho, reg=reg)
            return value, (grad_w, grad_b)

        return value_and_grad
    one = jax.value_and_grad(layer_objective(layer, rho, reg))

    def per_layer(theta, *stored):  # unrolled over the (short) layer axis, as the conv form
        outs = [one(tuple(v[i] for v in theta), *(a[i] for a in stored)) for i in range(theta[0].shape[0])]
        return jnp.stack([v for v, _ in outs]), tuple(jnp.stack(g) for g in zip(*(g for _, g in outs)))

    return per_layer


def maximise_in_graph(value_and_grad, theta: tuple, inner: str, steps: int, lr: float) -> tuple:
    """Approximate ``argmax H̃`` of L layers at once from ``theta`` (leading layer axis)
    with ``steps`` iterations; traceable. ``gd``/``adam`` act elementwise, so a stack's
    numbers are its layers' one by one; ``lbfgs-device`` solves the layers as one batch."""
    grad = lambda th: value_and_grad(th)[1]
    if inner == "gd":

        def ascend(_, th):
            return jax.tree.map(lambda v, g: v + lr * g, th, grad(th))

        return jax.lax.fori_loop(0, steps, ascend, theta)
    if inner == "adam":
        opt = optax.adam(lr)

        def adam_step(_, carry):
            th, st = carry
            updates, st = opt.update(jax.tree.map(jnp.negative, grad(th)), st)
            return optax.apply_updates(th, updates), st

        return jax.lax.fori_loop(0, steps, adam_step, (theta, opt.init(theta)))[0]
    if inner == "lbfgs-device":
        n_layers = theta[0].shape[0]
        shapes = [v.shape[1:] for v in theta]
        cuts = np.cumsum([int(np.prod(sh)) for sh in shapes])[:-1]
        unflat = lambda flat: tuple(p.reshape(n_layers, *sh) for p, sh in zip(jnp.split(flat, cuts, axis=1), shapes))

        def negated(flat):
            value, grads = value_and_grad(unflat(flat))
            return -value, -jnp.concatenate([g.reshape(n_layers, -1) for g in grads], axis=1)

        flat = jnp.concatenate([v.reshape(n_layers, -1) for v in theta], axis=1)
        return unflat(device_lbfgs.minimise(negated, flat, steps))
    raise ValueError(f"unknown inner solver {inner!r} (known: {', '.join(spec.INNER_SOLVERS)})")


def maximise_optax_lbfgs(h, theta: tuple, steps: int) -> tuple:
    """``steps`` iterations of optax's L-BFGS on -h from one layer's ``theta``; traceable."""
    opt = optax.lbfgs()
    neg = lambda th: -h(th)
    value_and_grad = optax.value_and_grad_from_state(neg)

    def lbfgs_step(_, carry):
        th, st = carry
        value, grad = value_and_grad(th, state=st)
        updates, st = opt.update(grad, st, th, value=value, grad=grad, value_fn=neg)
        return optax.apply_updates(th, updates), st

    return jax.lax.fori_loop(0, steps, lbfgs_step, (theta, opt.init(theta)))[0]


def make(problem, hp, *, dtype="float32", device="cpu", seed=0, rho=None):
    """``rho`` overrides ``hp.rho`` (basic MSA passes 0)."""
    if hp.inner not in spec.INNER_SOLVERS:
        raise ValueError(f"unknown inner solver {hp.inner!r} (known: {', '.join(spec.INNER_SOLVERS)})")
    place = common.Placement(dtype, device)
    layers = problem.layers
    segs = common.segments(layers)
    rho = hp.rho if rho is None else rho
    objectives = [layer_objective(seg.layer, rho, hp.reg) for seg in segs]
    stack_vags = [stack_value_and_grad(seg.layer, rho, hp.reg) for seg in segs]

    def init(params):
        arrays = {"params": common.to_segments(segs, params, place), "running": common.init_running(layers, place)}
        return {"arrays": place.commit(arrays), "k": 0}

    def perturbations(k: int) -> list:
        """Per segment, the host draws δ_{k,t} of its layers as one float64 array per
        parameter (stacked for a stack); None where nothing is perturbed."""
        if not hp.perturb_init:
            return [None] * len(segs)
        out = []
        for seg in segs:
            shapes = seg.layer.param_shapes()
            if not shapes:
                out.append(None)
                continue
            per_layer = [
                draws.inner_start_perturbation(hp.perturb_init, seed, k, seg.first + i, shapes)
                for i in range(seg.count)
            ]
            out.append(tuple(np.stack(vs) if seg.stacked else vs[0] for vs in zip(*per_layer)))
        return out

    def trainer(step):
        return common.trainer(
            layers,
            segs,
            place,
            init,
            step,
            params_of=lambda s: s["arrays"]["params"],
            running_of=lambda s: s["arrays"]["running"],
            state_arrays=lambda s: common.arrays_of(segs, s["arrays"]) | {"step": np.asarray(s["k"], np.int64)},
            load=lambda s, arrays: {
                "arrays": common.load_arrays(segs, place, s["arrays"], arrays),
                "k": int(arrays["step"]),
            },
        )

    def stored(state, x, y):
        """Loss, per-segment layer inputs/outputs and costates, new BN running stats."""
        loss, states, _, costates = common.loss_grads_costates(segs, problem.loss, state["params"], x, y)
        io = [
            common.layer_io(segs, *states, s) + common.layer_io(segs, *costates, s) if theta else None
            for s, theta in enumerate(state["params"])
        ]
        return loss, io, common.update_running(segs, state["running"], states)

    if hp.inner in IN_GRAPH_SOLVERS:

        def _step(arrays, x, y, deltas):
            loss, io, running = stored(arrays, x, y)
            new = []
            for seg, theta, h, vag, stored_s, delta in zip(segs, arrays["params"], objectives, stack_vags, io, deltas):
                if not theta:
                    new.append(theta)
                    continue
                if delta is not None:
                    theta = tuple(v + d for v, d in zip(theta, delta))
                if not seg.stacked:  # a layer axis of one
                    theta, stored_s = tuple(v[None] for v in theta), tuple(v[None] for v in stored_s)
                if hp.inner == "optax-lbfgs":

                    def solve(th, xi, xo, pi, po, h=h):
                        return maximise_optax_lbfgs(lambda t: h(t, xi, xo, pi, po), th, hp.inner_steps)

                    solved = jax.vmap(solve)(theta, *stored_s)
                else:
                    solved = maximise_in_graph(
                        lambda th, vag=vag, st=stored_s: vag(th, *st), theta, hp.inner, hp.inner_steps, hp.inner_lr
                    )
                new.append(solved if seg.stacked else tuple(v[0] for v in solved))
            return {"params": new, "running": running}, {"loss": loss}

        compiled = jax.jit(_step, donate_argnums=0)

        def in_graph_step(state, batch):
            k = state["k"] + 1
            deltas = [None if d is None else tuple(place.array(v) for v in d) for d in perturbations(k)]
            arrays, metrics = compiled(state["arrays"], *batch, deltas)
            return {"arrays": arrays, "k": k}, metrics

        return trainer(in_graph_step)

    # inner == "lbfgs": SciPy drives each layer's solve from the host
    compiled_stored = jax.jit(stored)
    value_and_grads = [
        _host_value_and_grad(seg, vag, place) if seg.layer.param_names else None for seg, vag in zip(segs, stack_vags)
    ]

    def step(state, batch):
        k = state["k"] + 1
        loss, io, running = compiled_stored(state["arrays"], *batch)
        new = []
        for seg, theta, vag, stored_s, delta in zip(
            segs, state["arrays"]["params"], value_and_grads, io, perturbations(k)
        ):
            if not theta:
                new.append(theta)
                continue
            host = [np.asarray(v) for v in jax.device_get(theta)]
            if delta is not None:  # δ rounded to the parameters' dtype, added in it
                host = [v + d.astype(v.dtype) for v, d in zip(host, delta)]
            solved = []
            for i in range(seg.count):
                start = np.concatenate([(v[i] if seg.stacked else v).ravel() for v in host]).astype(np.float64)

                def value_and_grad(vec, i=i, vag=vag, stored_s=stored_s):
                    value, grad = vag(vec, i, *stored_s)
                    return float(value), np.asarray(grad)

                solved.append(solvers.lbfgs_maximise(value_and_grad, start, hp.inner_steps))
            new.append(_unflatten_host(seg, solved, place))
        return {"arrays": {"params": new, "running": running}, "k": k}, {"loss": loss}

    return trainer(step)


def _host_value_and_grad(seg, stack_vag, place):
    """Compiled ``(vec, i, X_in, X_out, P_in, P_out) -> (H̃, ∇H̃ as float64)`` for layer i
    of the segment (the stored values of a stack are indexed in the graph), from the
    segment's ``stack_value_and_grad`` on a layer axis of one."""
    shapes = seg.layer.param_shapes()
    sizes = [int(np.prod(s)) for s in shapes]

    @jax.jit
    def vag(vec, i, xi, xo, pi, po):
        if seg.stacked:
            xi, xo, pi, po = (a[i] for a in (xi, xo, pi, po))
        parts = jnp.split(vec.astype(place.dtype), np.cumsum(sizes)[:-1])
        theta = tuple(p.reshape(1, *s) for p, s in zip(parts, shapes))
        value, grads = stack_vag(theta, *(a[None] for a in (xi, xo, pi, po)))
        return value[0], jnp.concatenate([g.ravel() for g in grads]).astype(jnp.float64)

    return vag


def _unflatten_host(seg, solved: list[np.ndarray], place) -> tuple:
    """Per-layer flat float64 solutions -> the segment's parameter tuple on the device."""
    shapes = seg.layer.param_shapes()
    sizes = np.cumsum([int(np.prod(s)) for s in shapes])[:-1]
    per_layer = [[p.reshape(s) for p, s in zip(np.split(vec, sizes), shapes)] for vec in solved]
    return common.pack(seg, per_layer, place)
