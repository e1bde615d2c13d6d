"""Models traced abstractly: their layers' records without allocating anything."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from cnnexp.models import create_model
from cnnexp.models.recording import LayerRecord, recording


def layer_records(name: str, options: dict, shape: tuple[int, int, int], classes: int = 10) -> list[LayerRecord]:
    """The leaf layers' records of one eval-mode forward pass, traced abstractly (nothing allocated)."""

    def forward():
        model = create_model(name, options, input_shape=shape, num_classes=classes, rngs=nnx.Rngs(0))
        model.eval()
        return model(jnp.zeros((1, *shape)))

    with recording() as records:
        jax.eval_shape(forward)
    return records


def marked_slow(names: list[str], slow: tuple[str, ...]) -> list:
    """`names` as pytest parameters, those in `slow` marked slow (for models whose real build and
    first compilations take several seconds: their rows leave `make test-fast`)."""
    return [pytest.param(name, marks=pytest.mark.slow) if name in slow else name for name in names]
