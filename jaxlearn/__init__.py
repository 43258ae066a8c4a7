"""jaxlearn: see inside training with JAX, Flax (linen) and optax."""

__version__ = "0.1.0"
