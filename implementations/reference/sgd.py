"""SGD (oracle): ``v ← μ v + ∇J``, ``θ ← θ - lr v``."""

from implementations.reference import common, optim
from implementations.reference.firstorder import make_first_order


def make(problem, hp, *, dtype="float64", device="cpu", seed=0):
    def update(params, grads, buf, k):
        return optim.sgd(params, grads, buf, lr=hp.lr, momentum=hp.momentum)

    def opt_slots(buf, k):
        # without momentum the buffer is only the last gradient; before the first step, none
        return {"momentum": buf} if hp.momentum and buf and buf[0] is not None else {}

    def load_opt(buf, arrays):
        return common.load_slots(arrays, "momentum", range(len(buf))) if "opt/momentum/0" in arrays else buf

    return make_first_order(problem, hp.reg, lambda p: [None] * len(p), update, dtype, opt_slots, load_opt)
