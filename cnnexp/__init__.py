"""cnnexp: config-driven convolutional-network experiments (Hydra + JAX + Flax NNX)."""

__version__ = "0.1.0"
