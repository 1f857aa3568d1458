"""dfl-jax: Decoupled Feature Learning (DFL) for 3D interacting-hand pose in JAX/Flax."""

__version__ = "0.1.0"
