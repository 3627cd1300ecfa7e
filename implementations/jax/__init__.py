"""JAX jit backend: every step compiled once (``jax.jit``, state donated), residual stacks
run with ``lax.scan`` and their per-layer maximisations solved together with ``vmap``."""
