"""The losses `loss=` may name (conf/loss/<name>.yaml), one table like the model registry."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

# (logits, labels) -> per-example losses
LossFn = Callable[[jax.Array, jax.Array], jax.Array]


def _cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy(logits, targets)


def _mse(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """The squared error between the softmax output and the targets, summed over classes (the
    loss of source text 004)."""
    return jnp.sum((jax.nn.softmax(logits) - targets) ** 2, axis=-1)


# loss.name -> f(logits, one-hot targets) -> per-example losses
LOSSES: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {"cross_entropy": _cross_entropy, "mse": _mse}


def make_loss(name: str, label_smoothing: float = 0.0) -> LossFn:
    """`loss(logits, labels) -> per-example losses` of the table's `name`, against one-hot targets
    smoothed by `label_smoothing` (the name is checked with the config: training.options)."""
    against_targets = LOSSES[name]

    def loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
        targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
        return against_targets(logits, targets)

    return loss
