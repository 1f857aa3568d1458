"""The DFL network (paper Sec. 3.2-3.3, Fig. 2): Flax modules only.

Imports nothing from training, evaluation, serving, weight files or tools; ``dfl_jax.conventions``
is the only project module below it.
"""
