"""The oracle backend: JAX in float64, eager (never jitted), written as the math reads.

``pmp`` holds the maximum-principle objects; one file per algorithm builds its Trainer.
"""
