"""The ``torch-compile`` backend: the torch backend's algorithm files, each training step
under ``torch.compile`` (TorchInductor; on the CPU it generates C++ and needs a compiler,
which ``why_not`` checks).

Nothing of the algorithms is rewritten: ``make`` builds the torch trainer and compiles its
``step``. The first call traces and compiles (seconds to minutes; the runner records it as
the cell's ``compile_s``), later calls run the generated code, and a changed input (a
new shape, an integer that grew) recompiles where dynamo must. Inductor caches what it
generated on disk (``TORCHINDUCTOR_CACHE_DIR``), so a second cell of the same graph, or
the next run, compiles in a fraction of the time.

What cannot be compiled is refused by ``why_not`` and becomes a ``skipped`` cell: E-MSA
and basic MSA, whose step takes its costates as ``torch.autograd.grad`` of the loss with
respect to the step's own intermediate states x_t (dynamo's trace drops them from the
graph: "the differentiated Tensor ... appears to not have been used"), and whose SciPy
inner solver is a host loop in any case.
"""

from __future__ import annotations

import importlib
import shutil

from implementations import spec

#: algorithms whose step differentiates with respect to its own intermediate states
NOT_COMPILABLE = ("emsa", "msa")


def why_not(hp) -> list[str]:
    """Reasons this configuration cannot run compiled (empty when it can)."""
    reasons = []
    if spec.algorithm_id(hp) in NOT_COMPILABLE:
        reasons.append(
            "its costates are torch.autograd.grad with respect to the step's own intermediate states, "
            "which torch.compile does not trace"
        )
    if shutil.which("c++") is None and shutil.which("g++") is None and shutil.which("cc") is None:
        reasons.append("TorchInductor needs a C++ compiler on the CPU (none on PATH)")
    return reasons


def make(problem, hp, *, dtype="float32", device="cpu", seed=0):
    """The torch backend's trainer for ``hp`` with its ``step`` compiled."""
    import torch

    reasons = why_not(hp)
    if reasons:
        raise ValueError("; ".join(reasons))
    algorithm = spec.algorithm_id(hp)
    eager = importlib.import_module(f"implementations.torch.{algorithm}").make
    trainer = eager(problem, hp, dtype=dtype, device=device, seed=seed)
    compiled = torch.compile(trainer.step)
    working = getattr(torch, dtype)

    def in_working_dtype(fn):
        """``fn`` with torch's default dtype set to the run's: torch.optim makes its scalar
        state (Adagrad's and Adam's step counts) in the default dtype, and under compile
        that state and the float hyperparameters dynamo lifts into tensors enter the
        arithmetic as tensors, so a float64 run under float32's default stepped with
        float32 scalars (2e-8 relative, measured)."""

        def wrapped(*args):
            previous = torch.get_default_dtype()
            torch.set_default_dtype(working)
            try:
                return fn(*args)
            finally:
                torch.set_default_dtype(previous)

        return wrapped

    return trainer._replace(
        init=in_working_dtype(trainer.init), step=in_working_dtype(compiled), restore=in_working_dtype(trainer.restore)
    )
