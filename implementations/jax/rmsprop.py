"""RMSprop as the suite defines it (``spec.RMSprop``, torch's rule):

    v ← α v + (1-α) g²   (v₀ = 0),      θ ← θ - lr · g / (√v + eps)

``optax.rmsprop`` puts eps inside the root by default (``g / √(v + eps)``);
``eps_in_sqrt=False`` gives torch's formula, and its state's ``nu`` is the ``v`` slot."""

import optax

from implementations.jax.firstorder import make_first_order


def make(problem, hp, *, dtype="float32", device="cpu", seed=0):
    transform = optax.rmsprop(hp.lr, decay=hp.alpha, eps=hp.eps, eps_in_sqrt=False)
    return make_first_order(problem, transform, hp.reg, dtype=dtype, device=device)
