"""One training step, timed by asv: the cheapest end-to-end signal of a backend's speed."""


class SGDStep:
    """One SGD step (lr 0.1) on ``digits-mlp`` with the torch backend, CPU, float32.

    The first step (compile/warm-up time in the suite's terms) runs in ``setup``, so the
    timed call is a steady-state step followed by the backend's sync.
    """

    timeout = 120.0

    def setup(self):
        import implementations
        from implementations import spec
        from suites import problems

        problem = problems.get_problem("digits-mlp")
        make = implementations.get("sgd", "torch")
        self.trainer = make(problem, spec.SGD(lr=0.1), dtype="float32", device="cpu", seed=0)
        self.state = self.trainer.init(problem.init_params(0))
        self.batch = self.trainer.put(next(problem.batches("train", 0)))
        self.state, _ = self.trainer.step(self.state, self.batch)
        self.trainer.sync(self.state)

    def time_step(self):
        self.state, _ = self.trainer.step(self.state, self.batch)
        self.trainer.sync(self.state)
