"""dfl-jax: Decoupled Feature Learning (DFL) for 3D interacting-hand pose in JAX/Flax."""

import os

# TensorFlow serves tf.data only; its C++ INFO and WARNING lines (oneDNN, CPU features) would
# bury the one-line messages of dfl_jax.errors. TF_CPP_MIN_LOG_LEVEL=0 shows them again.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
