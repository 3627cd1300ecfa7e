"""Extended MSA in PyTorch eager, JMLR Algorithm 3 (see ``implementations.reference.emsa``).

One forward pass stores x_0..x_T, one backward pass the costates ``p_t = -∂J/∂x_t`` (the
same numbers as the recursion ``p_t = ∇_x H_t``: implementations/README.md §1.2), then each
layer with parameters maximises, from the stored values (Jacobi),

    H̃_t(θ) = Σ p_{t+1}·f_t(x_t, θ) - reg·½‖θ‖² - ρ/2 ‖x_{t+1} - f_t(x_t, θ)‖²
              - ρ/2 ‖p_t - ∇_x H_t(x_t, p_{t+1}, θ)‖²

Residual layers (``ResDense``, ``ResConv``) use the closed form of H̃ and its gradient
(``ops.emsa_dense_value_and_grad``, ``ops.emsa_conv_value_and_grad``), every run of equal
ones solved as one stack; any other layer builds ∇_x H_t with ``create_graph=True`` so that
its θ-gradient (second order) flows into the inner solver. Inner solvers:

- ``lbfgs``: SciPy L-BFGS-B on host float64, as the official code, layer after layer;
- ``lbfgs-device``: ``spec.DeviceLBFGS`` (``device_lbfgs.py``), a stack's layers as one
  batched problem, no host synchronisation;
- ``gd`` (ascent steps) and ``adam`` (``torch.optim.Adam(maximize=True)``: moments from
  zero for every layer at every MSA step, carried across that step's ``inner_steps``
  iterations), elementwise on a stack's stacked (W, b), the same numbers as per layer.

With ρ = 0 this is basic MSA and the second-order term vanishes. With ``perturb_init`` > 0
every solve (stacks included) starts from θ_t + δ_{k,t}, ``draws.inner_start_perturbation``'s
draw for step k and layer t rounded to the parameters' dtype (``spec.EMSA``); the state
counts the steps.

Timing note: ``lbfgs`` is host-side by nature (SciPy drives it), so each of its function
evaluations waits for the device; ``lbfgs-device``, ``gd`` and ``adam`` never leave it
(``spec.host_synchronises``).

Kernel backends (triton, cuda) pass ``kernels``, a module with ``emsa_dense_grad``: a
dense stack's ``gd``/``adam`` iterations then call the kernel (one launch for the stack)
instead of ``ops``' plain-torch closed form.
"""

from __future__ import annotations

import numpy as np
import torch

from implementations import draws, solvers, spec
from implementations.torch import common, device_lbfgs, ops


def augmented_hamiltonian(layer, theta, x, x_next, p, p_next, rho: float, reg: float):
    """``H̃_t(θ)`` for fixed stored (x_t, x_{t+1}, p_t, p_{t+1}); differentiable in θ."""
    x = x.detach().requires_grad_(rho != 0)
    f = ops.apply(layer, theta, x)
    h = (p_next * f).sum() - common.regulariser(theta, reg)
    if rho == 0:
        return h
    (dh_dx,) = torch.autograd.grad(h, x, create_graph=True)
    return h - 0.5 * rho * ((x_next - f) ** 2).sum() - 0.5 * rho * ((p - dh_dx) ** 2).sum()


def maximise(h, theta: tuple, inner: str, steps: int, lr: float) -> tuple:
    """Approximate ``argmax h`` from ``theta`` (a tuple of tensors) with the inner solver."""
    theta = tuple(v.detach().clone().requires_grad_(True) for v in theta)
    if inner == "gd":
        for _ in range(steps):
            grads = torch.autograd.grad(h(theta), theta)
            theta = tuple((v + lr * g).detach().requires_grad_(True) for v, g in zip(theta, grads))
        return tuple(v.detach() for v in theta)
    if inner == "adam":
        opt = torch.optim.Adam(theta, lr=lr, maximize=True)
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            grads = torch.autograd.grad(h(theta), theta)
            for v, g in zip(theta, grads):
                v.grad = g
            opt.step()
        return tuple(v.detach() for v in theta)
    if inner == "lbfgs-device":
        shapes, sizes = [v.shape for v in theta], [v.numel() for v in theta]

        def negated(flat):  # (1, n) -> (-H̃ (1,), -∇H̃ (1, n)), on the device
            th = tuple(p.reshape(sh).requires_grad_(True) for p, sh in zip(flat[0].split(sizes), shapes))
            value = h(th)
            grads = torch.autograd.grad(value, th)
            return -value.detach()[None], -torch.cat([g.reshape(-1) for g in grads])[None]

        flat = device_lbfgs.minimise(negated, torch.cat([v.detach().reshape(-1) for v in theta])[None], steps)[0]
        return tuple(p.reshape(sh) for p, sh in zip(flat.split(sizes), shapes))
    if inner == "lbfgs":
        like = theta[0]
        sizes = [v.numel() for v in theta]

        def unflatten(vec: np.ndarray) -> tuple:
            parts = torch.as_tensor(vec, dtype=like.dtype, device=like.device).split(sizes)
            return tuple(p.reshape(v.shape).requires_grad_(True) for p, v in zip(parts, theta))

        def value_and_grad(vec: np.ndarray):
            th = unflatten(vec)
            value = h(th)
            grads = torch.autograd.grad(value, th)
            return value.item(), torch.cat([g.reshape(-1) for g in grads]).double().cpu().numpy()

        start = torch.cat([v.detach().reshape(-1) for v in theta]).double().cpu().numpy()
        return tuple(v.detach() for v in unflatten(solvers.lbfgs_maximise(value_and_grad, start, steps)))
    raise ValueError(f"inner solver {inner!r} is not implemented in torch (it has: lbfgs, lbfgs-device, adam, gd)")


def residual_runs(layers, kinds=(spec.ResDense, spec.ResConv)) -> list[tuple[int, int]]:
    """``(first, count)`` of every run of equal consecutive residual layers of ``kinds``
    (a lone layer is a run of one): the layers whose H̃ has a closed form."""
    runs: list[list[int]] = []
    for t, layer in enumerate(layers):
        if not isinstance(layer, kinds):
            continue
        if runs and layers[runs[-1][0]] == layer and runs[-1][0] + runs[-1][1] == t:
            runs[-1][1] += 1
        else:
            runs.append([t, 1])
    return [(first, count) for first, count in runs]


def dense_stacks(layers) -> list[tuple[int, int]]:
    """``(first, count)`` of every run of two or more equal consecutive ``ResDense`` layers."""
    return [(first, count) for first, count in residual_runs(layers, (spec.ResDense,)) if count > 1]


def closed_form(layer):
    """``ops``' closed-form ``(H̃, ∇_W, ∇_b)`` of a stack of ``layer``."""
    return ops.emsa_dense_value_and_grad if isinstance(layer, spec.ResDense) else ops.emsa_conv_value_and_grad


def maximise_stack(kernels, layer, thetas, xs, ps, first: int, count: int, rho: float, hp) -> list[tuple]:
    """The inner maximisation of a run of equal residual layers with the closed-form
    H̃ (``ops``; the kernel's ``emsa_dense_grad`` for ``gd``/``adam`` on a dense stack when
    ``kernels`` is given), from the layers' (perturbed) starts ``thetas``: ``gd`` and
    ``adam`` update the stacked (W, b) elementwise (the same numbers as layer by layer),
    ``lbfgs-device`` solves the layers as one batch, ``lbfgs`` (SciPy) one after another."""
    span = slice(first, first + count)
    w = torch.stack([th[0].detach() for th in thetas]).clone()
    b = torch.stack([th[1].detach() for th in thetas]).clone()
    stored = [torch.stack(v[span]) for v in (xs, xs[1:], ps, ps[1:])]
    evaluate = closed_form(layer)
    fused = kernels.emsa_dense_grad if kernels is not None and isinstance(layer, spec.ResDense) else None
    kw = {"delta": layer.delta, "rho": rho, "reg": hp.reg}
    n_w = w[0].numel()

    def grads():
        return fused(w, b, *stored, **kw) if fused is not None else evaluate(w, b, *stored, **kw)[1:]

    if hp.inner == "gd":
        for _ in range(hp.inner_steps):
            gw, gb = grads()
            w, b = w + hp.inner_lr * gw, b + hp.inner_lr * gb
    elif hp.inner == "adam":
        opt = torch.optim.Adam([w, b], lr=hp.inner_lr, maximize=True)
        for _ in range(hp.inner_steps):
            w.grad, b.grad = grads()
            opt.step()
    elif hp.inner == "lbfgs-device":

        def negated(flat, stored=stored):  # (L', n) -> (-H̃, -∇H̃) of the layers given
            value, gw, gb = evaluate(flat[:, :n_w].reshape(-1, *w.shape[1:]), flat[:, n_w:], *stored, **kw)
            return -value, -torch.cat([gw.flatten(1), gb], dim=1)

        flat = device_lbfgs.minimise(negated, torch.cat([w.flatten(1), b], dim=1), hp.inner_steps)
        w, b = flat[:, :n_w].reshape(w.shape), flat[:, n_w:]
    elif hp.inner == "lbfgs":  # SciPy on the host, layer after layer, from the closed form
        solved = []
        for i in range(count):
            one = [v[i : i + 1] for v in stored]

            def value_and_grad(vec, one=one):
                flat = torch.as_tensor(vec, dtype=w.dtype, device=w.device)
                value, gw, gb = evaluate(flat[:n_w].reshape(1, *w.shape[1:]), flat[None, n_w:], *one, **kw)
                return value.item(), torch.cat([gw.reshape(-1), gb.reshape(-1)]).double().cpu().numpy()

            start = torch.cat([w[i].reshape(-1), b[i]]).double().cpu().numpy()
            flat = torch.as_tensor(solvers.lbfgs_maximise(value_and_grad, start, hp.inner_steps), dtype=w.dtype)
            flat = flat.to(w.device)
            solved.append((flat[:n_w].reshape(w.shape[1:]), flat[n_w:]))
        return solved
    else:
        raise ValueError(f"the closed-form E-MSA path runs gd, adam, lbfgs and lbfgs-device, not {hp.inner!r}")
    return [(w[i].detach(), b[i].detach()) for i in range(count)]


def make(problem, hp, *, dtype="float32", device="cpu", seed=0, rho=None, kernels=None):
    """``rho`` overrides ``hp.rho`` (basic MSA passes 0); ``kernels``: a module with
    ``emsa_dense_grad`` for the fused path (module docstring)."""
    place = common.Placement(dtype, device)
    layers = problem.layers
    rho = hp.rho if rho is None else rho
    if kernels is not None and (not dense_stacks(layers) or hp.inner not in ("gd", "adam")):
        raise ValueError("the fused E-MSA path needs a stack of dense residual layers and the gd or adam inner solver")
    if hp.inner not in spec.INNER_SOLVERS or hp.inner == "optax-lbfgs":
        raise ValueError(
            f"inner solver {hp.inner!r} is not implemented in torch (it has: lbfgs, lbfgs-device, adam, gd)"
        )
    stacked = {t: (first, count) for first, count in residual_runs(layers) for t in range(first, first + count)}

    def init(params):
        theta = [tuple(place.tensor(v) for v in th) for th in common.per_layer(layers, params)]
        return {"params": theta, "running": common.init_running(layers, place), "k": 0}

    def start(theta: tuple, k: int, t: int) -> tuple:
        """Layer t's inner-solve start at step k: θ_t, perturbed when ``perturb_init`` > 0."""
        if not hp.perturb_init:
            return theta
        deltas = draws.inner_start_perturbation(hp.perturb_init, seed, k, t, [tuple(v.shape) for v in theta])
        return tuple(v.detach() + place.tensor(d) for v, d in zip(theta, deltas))

    def step(state, batch):
        x, y = batch
        k = state["k"] + 1
        params = [tuple(v.requires_grad_(True) for v in th) for th in state["params"]]
        x0 = x.detach().requires_grad_(True)  # p_0 enters layer 0's ∇ₓH penalty
        xs = common.forward(layers, params, x0)
        loss = ops.terminal_loss(problem.loss, xs[-1], y)
        ps = [-g for g in torch.autograd.grad(loss, xs)]
        xs = [v.detach() for v in xs]
        new = []
        for t, (layer, theta) in enumerate(zip(layers, params)):
            if t in stacked:
                first, count = stacked[t]
                if t == first:
                    starts = [start(params[i], k, i) for i in range(first, first + count)]
                    new += maximise_stack(kernels, layer, starts, xs, ps, first, count, rho, hp)
                continue
            if not theta:
                new.append(theta)
                continue
            theta = start(theta, k, t)

            def h(th, t=t, layer=layer):
                return augmented_hamiltonian(layer, th, xs[t], xs[t + 1], ps[t], ps[t + 1], rho, hp.reg)

            new.append(maximise(h, theta, hp.inner, hp.inner_steps, hp.inner_lr))
        common.update_running(layers, state["running"], xs)
        return {"params": new, "running": state["running"], "k": k}, {"loss": loss.detach()}

    return common.trainer(layers, place, init, step)
