"""Binary and ternary MSA (oracle), ICML paper §3 as in the authors' code.

Per iteration: one forward pass storing x_t, one backward pass storing p_t, then every
layer from the stored values (Jacobi):

- quantized layer t: ``M_t = ∂/∂W Σ p_{t+1} · f_t(x_t; W)`` (never applied as a gradient
  step), then ``dmsa_update``: ``M̄ ← α M̄ + (1-α) M``, the adaptive ρ_k and the discrete
  argmax (``dmsa_update``'s docstring has the rules);
- every other parameter (BN's γ, β): one Adam(bn_lr) step on ``-H_t``, i.e. on
  ``-∂H_t/∂θ = ∂J/∂θ``.

α starts at ``alpha0``; after every epoch (``problem.steps_per_epoch`` steps, or
``hp.alpha_decay_steps``) ``1 - α ← d (1 - α)``. The rounding of α, the ε of BN's Adam and
BN's running variance follow ``hp.numerics`` (``implementations.conventions``). M̄ starts i.i.d. U(-1e-6, 1e-6) from NumPy's generator seeded with
``[seed, 1]``, the same numbers in every backend. The discrete weights start as the
quantized latent init of the problem: ``sgn(W)`` (binary, sgn(0) = +1) or
``clip(round(1.5 W), -1, 1)`` (ternary), i.i.d. uniform on the allowed set for W ~ U(-1, 1).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from implementations import conventions, spec
from implementations.draws import initial_m_bar
from implementations.reference import common, optim, pmp


def sgn(x):
    """Binary sign, with sgn(0) = +1 (``jnp.sign(0) = 0`` would make the net ternary)."""
    return jnp.where(x >= 0, 1.0, -1.0)


def quantize_init(w, levels: int):
    """Discrete initial weights from the problem's latent U(-1, 1) init."""
    return sgn(w) if levels == 2 else jnp.clip(jnp.round(1.5 * w), -1.0, 1.0)


def dmsa_update(m_bar, m, w, *, alpha, one_minus_alpha, rho, levels, lam):
    """One layer's discrete MSA update; returns ``(m_bar_new, w_new, flips)``.

    ``M̄' = α M̄ + (1-α) M``, the two weights as ``conventions.ema_weights`` forms them; wrong-signed entries: ``W ≠ sgn(M̄')`` (binary, sgn(0)=+1) or
    ``W ≠ sign(M̄')`` (ternary, sign(0)=0); ``ρ_k = ρ · max |M̄'|`` over them; none → W stays.

    - binary: ``W ← sgn(M̄')`` where ``|M̄'| > ρ_k``, else unchanged (= argmax over {±1} of
      ``M̄' w - (ρ_k/2)(w - W)²``: the authors' code; why not ρ_k/4:
      implementations/README.md §3.4);
    - ternary: ``W ← +1`` if ``M̄' > ρ_k(1 - 2W) + λ``, ``-1`` if ``M̄' < -ρ_k(1 + 2W) - λ``,
      else 0 (= argmax over {-1, 0, 1} of ``M̄' w - λ|w| - ρ_k (w - W)²``).

    ``flips``: how many entries of W changed.
    """
    m_bar = alpha * m_bar + one_minus_alpha * m
    target = sgn(m_bar) if levels == 2 else jnp.sign(m_bar)
    wrong = w != target
    if not bool(jnp.any(wrong)):
        return m_bar, w, 0
    rho_k = rho * jnp.max(jnp.where(wrong, jnp.abs(m_bar), 0.0))
    if levels == 2:
        w_new = jnp.where(jnp.abs(m_bar) > rho_k, target, w)
    elif levels == 3:
        w_new = jnp.where(
            m_bar > rho_k * (1 - 2 * w) + lam, 1.0, jnp.where(m_bar < -rho_k * (1 + 2 * w) - lam, -1.0, 0.0)
        )
    else:
        raise ValueError(f"levels must be 2 (binary) or 3 (ternary), not {levels}")
    return m_bar, w_new, int(jnp.sum(w_new != w))


def make(problem, hp, *, dtype="float64", device="cpu", seed=0):
    common.check_dtype(dtype)
    layers = problem.layers
    quantized = [t for t, layer in enumerate(layers) if layer.quantized]

    def init(params):
        per_layer = pmp.per_layer(layers, common.to_jax(params))
        per_layer = [
            (quantize_init(th[0], hp.levels),) + th[1:] if layers[t].quantized else th for t, th in enumerate(per_layer)
        ]
        m_bar = initial_m_bar([per_layer[t][0].shape for t in quantized], seed)
        others = [v for t, th in enumerate(per_layer) if not layers[t].quantized for v in th]
        return {
            "params": per_layer,
            "m_bar": [jnp.asarray(m) for m in m_bar],
            "adam": ([jnp.zeros_like(v) for v in others], [jnp.zeros_like(v) for v in others]),
            "alpha": conventions.initial_alpha(hp),
            "k": 0,
            "running": common.init_running(layers),
        }

    def step(state, batch):
        x, y = batch
        params = state["params"]
        xs = pmp.forward(layers, params, x)
        ps = pmp.costates(layers, params, xs, y, problem.loss)
        new = list(params)
        m_bars, flips = [], 0
        alpha, one_minus_alpha = conventions.ema_weights(hp, state["alpha"])
        for i, t in enumerate(quantized):
            m = jax.grad(pmp.hamiltonian, argnums=1)(layers[t], params[t], xs[t], ps[t + 1])[0]
            m_bar, w, f = dmsa_update(
                state["m_bar"][i],
                m,
                params[t][0],
                alpha=alpha,
                one_minus_alpha=one_minus_alpha,
                rho=hp.rho,
                levels=hp.levels,
                lam=hp.lam,
            )
            m_bars.append(m_bar)
            new[t] = (w,)
            flips += f
        # every non-quantized parameter: Adam on -H (its gradient is -∂H/∂θ = ∂J/∂θ)
        others = [t for t, th in enumerate(params) if th and not layers[t].quantized]
        grads = [
            -g for t in others for g in jax.grad(pmp.hamiltonian, argnums=1)(layers[t], params[t], xs[t], ps[t + 1])
        ]
        k = state["k"] + 1
        flat_others, m1, m2 = optim.adam(
            [v for t in others for v in params[t]],
            grads,
            *state["adam"],
            k,
            lr=hp.bn_lr,
            b1=conventions.BN_ADAM_B1,
            b2=conventions.BN_ADAM_B2,
            eps=conventions.bn_adam_eps(hp, k),
        )
        it = iter(flat_others)
        for t in others:
            new[t] = tuple(next(it) for _ in params[t])
        new_state = {
            "params": new,
            "m_bar": m_bars,
            "adam": (m1, m2),
            "alpha": conventions.alpha_after_step(hp, state["alpha"], k, problem.steps_per_epoch),
            "k": k,
            "running": common.update_running(layers, state["running"], xs, conventions.unbiased_running_variance(hp)),
        }
        return new_state, {"loss": pmp.terminal_loss(problem.loss, xs[-1], y), "flips": flips}

    #: the flat-parameter indices BN's Adam trains (every parameter but the discrete W)
    bn_index = [i for i, q in enumerate(layer.quantized for layer in layers for _ in layer.param_names) if not q]

    def state_arrays(state):
        m, v = state["adam"]
        out = common.base_arrays(state) | common.optimizer_slots({"m": m, "v": v}, bn_index)
        out |= spec.named_arrays("m_bar", [np.asarray(a) for a in state["m_bar"]])
        k = np.asarray(state["k"], np.int64)
        return out | {"alpha": np.asarray(state["alpha"], np.float64), "step": k, "opt/step": k}

    def load(state, arrays):
        state = common.load_base(state, arrays)
        m_bar = [jnp.asarray(arrays[f"m_bar/{j}"], jnp.float64) for j in range(len(state["m_bar"]))]
        adam = (common.load_slots(arrays, "m", bn_index), common.load_slots(arrays, "v", bn_index))
        alpha = type(state["alpha"])(arrays["alpha"])
        return {**state, "m_bar": m_bar, "adam": adam, "alpha": alpha, "k": int(arrays["step"])}

    return common.trainer(layers, init, step, state_arrays=state_arrays, load=load)
