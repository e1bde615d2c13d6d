"""Building blocks every model family shares: activations and pooling chosen by name."""

from __future__ import annotations

from collections.abc import Callable

import jax
from flax import nnx

from cnnexp.errors import UserError

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nnx.relu,
    "leaky_relu": nnx.leaky_relu,
    "tanh": nnx.tanh,
    "sigmoid": nnx.sigmoid,
    "gelu": nnx.gelu,
}

POOLS = {"max": nnx.max_pool, "avg": nnx.avg_pool}


def activation_fn(name: str) -> Callable[[jax.Array], jax.Array]:
    """The activation called `name`, or a UserError listing the valid names."""
    if name not in ACTIVATIONS:
        raise UserError(f"unknown model.activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def pool_2x2(name: str) -> Callable[[jax.Array], jax.Array]:
    """A 2x2, stride-2 pooling of kind `name` (max or avg) over NHWC inputs."""
    if name not in POOLS:
        raise UserError(f"unknown model.pool {name!r}; choose one of {', '.join(POOLS)}")
    pool = POOLS[name]
    return lambda x: pool(x, window_shape=(2, 2), strides=(2, 2), padding="VALID")
