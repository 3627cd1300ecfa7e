"""One training step of every configuration of the default suite, per backend, timed by
asv; its peak memory; and, after a fixed budget, the test error and the dense fraction.

One class per embedded problem (``Step_sine_resnet``, ``Step_mnist5k_mlp_binary``, ...),
parametrised by (configuration label, backend), so ``asv run -b Step_sine_resnet`` runs a
problem alone. The hyperparameters are the default suite's (tuned rates included).

- ``time_step``: one steady-state step and the backend's sync (the first step, which
  compiles, runs in ``setup``);
- ``peakmem_step``: the peak resident memory of the process that built the trainer and
  took a step (asv measures it in a process of its own);
- ``track_test_error`` / ``track_dense_fraction``: after ``BUDGET`` steps from seed 0, the
  test error (1 - accuracy; the test loss for regression) and the non-zero fraction
  (ICML measure). asv treats lower as better, as both are here.

Cells that cannot run here (``why_not``: a backend's missing package or solver, no GPU)
raise asv's ``SkipNotImplemented``: asv records them as skipped, with the reason.
"""

from __future__ import annotations

import os

BUDGET = 20  # steps before the track_ benchmarks evaluate
DEVICE = os.environ.get("MSABENCH_DEVICE", "cpu")


def _entries(problem: str) -> list[str]:
    from suites import grids

    return [e.label for e in grids.get_suite("default").entries if e.problem == problem]


def _trainer(problem_name: str, label: str, backend: str):
    import implementations
    from suites import executors, grids, problems

    executors.set_threads(1)  # as the suite's cells run
    entry = next(e for e in grids.get_suite("default").entries if (e.problem, e.label) == (problem_name, label))
    problem = problems.get_problem(problem_name)
    reasons = implementations.why_not(entry.hp, backend, problem, DEVICE)
    if reasons:
        from asv_runner.benchmarks.mark import SkipNotImplemented

        raise SkipNotImplemented("; ".join(reasons))
    make = implementations.get(implementations.spec.algorithm_id(entry.hp), backend)
    return problem, make(problem, entry.hp, dtype="float32", device=DEVICE, seed=0)


class _StepBenchmarks:
    problem = ""
    param_names = ("label", "backend")
    timeout = 300.0
    number = 1  # one step per sample: a step is milliseconds to a third of a second
    repeat = (3, 20, 10.0)
    warmup_time = 0.0

    def setup(self, label, backend):
        problem, self.trainer = _trainer(self.problem, label, backend)
        self.state = self.trainer.init(problem.init_params(0))
        stream = problem.batches("train", 0)
        self.batches = [self.trainer.put(next(stream)) for _ in range(2)]
        self.k = 0
        self.state, _ = self.trainer.step(self.state, self.batches[0])  # compile / warm up
        self.trainer.sync(self.state)

    def time_step(self, label, backend):
        self.k += 1
        self.state, _ = self.trainer.step(self.state, self.batches[self.k % 2])
        self.trainer.sync(self.state)

    def peakmem_step(self, label, backend):
        self.state, _ = self.trainer.step(self.state, self.batches[1])
        self.trainer.sync(self.state)


class _TrackBenchmarks:
    problem = ""
    param_names = ("label", "backend")
    timeout = 600.0

    def setup_cache(self):
        """Train every configuration once for ``BUDGET`` steps; both track_ benchmarks read it."""
        from asv_runner.benchmarks.mark import SkipNotImplemented

        out = {}
        for label in _entries(self.problem):
            for backend in ("torch", "jax"):
                try:
                    problem, trainer = _trainer(self.problem, label, backend)
                except SkipNotImplemented:
                    continue
                state = trainer.init(problem.init_params(0))
                stream = problem.batches("train", 0)
                for _ in range(BUDGET):
                    state, _ = trainer.step(state, trainer.put(next(stream)))
                x, y = problem.arrays("test")
                z = trainer.predict(state, x)
                error = problem.loss_value(z, y) if problem.n_classes is None else 1.0 - problem.accuracy(z, y)
                out[(label, backend)] = (float(error), float(problem.nonzero_frac(trainer.get(state))))
        return out

    def setup(self, cache, label, backend):
        if (label, backend) not in cache:
            from asv_runner.benchmarks.mark import SkipNotImplemented

            raise SkipNotImplemented("not available here (see why_not)")

    def track_test_error(self, cache, label, backend):
        return cache[(label, backend)][0]

    def track_dense_fraction(self, cache, label, backend):
        return cache[(label, backend)][1]


def _define() -> None:
    """One Step_* and one Track_* class per problem of the default suite."""
    from suites import grids

    names = list(dict.fromkeys(e.problem for e in grids.get_suite("default").entries))
    for name in names:
        safe = name.replace("-", "_")
        params = [_entries(name), ["torch", "jax"]]
        globals()[f"Step_{safe}"] = type(f"Step_{safe}", (_StepBenchmarks,), {"problem": name, "params": params})
        globals()[f"Track_{safe}"] = type(f"Track_{safe}", (_TrackBenchmarks,), {"problem": name, "params": params})


_define()
