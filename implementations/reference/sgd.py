"""SGD (oracle): ``v ← μ v + ∇J``, ``θ ← θ - lr v``."""

from implementations.reference import optim
from implementations.reference.firstorder import make_first_order


def make(problem, hp, *, dtype="float64", device="cpu", seed=0):
    def update(params, grads, buf, k):
        return optim.sgd(params, grads, buf, lr=hp.lr, momentum=hp.momentum)

    def opt_slots(buf, k):
        return {"momentum": buf} if hp.momentum and k else {}

    return make_first_order(problem, hp.reg, lambda p: [None] * len(p), update, dtype, opt_slots)
