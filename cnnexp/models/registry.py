"""Models by name: each family registers a builder; the trainer only calls `create_model`.

Modelled on timm's registry: adding a model is one file with a decorated builder and one
config under `conf/model/`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import jax
from flax import nnx

from cnnexp.errors import UserError

ModelBuilder = Callable[..., nnx.Module]
_REGISTRY: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Register `builder(*, input_shape, num_classes, rngs, **options)` under `name`."""

    def decorate(builder: ModelBuilder) -> ModelBuilder:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = builder
        return builder

    return decorate


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_REGISTRY)


def create_model(
    name: str,
    options: Mapping[str, Any],
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    rngs: nnx.Rngs,
) -> nnx.Module:
    """Build model `name` for images of `input_shape` (H, W, C) and `num_classes` outputs."""
    if name not in _REGISTRY:
        raise UserError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    builder = _REGISTRY[name]
    accepted = [
        p.name for p in inspect.signature(builder).parameters.values() if p.kind == p.KEYWORD_ONLY
    ]
    options_accepted = [p for p in accepted if p not in ("input_shape", "num_classes", "rngs")]
    unknown = sorted(set(options) - set(options_accepted))
    if unknown:
        raise UserError(
            f"model {name!r} has no option {', '.join('model.' + u for u in unknown)}; "
            f"its options: {', '.join('model.' + o for o in options_accepted) or '(none)'}"
        )
    return builder(input_shape=input_shape, num_classes=num_classes, rngs=rngs, **options)


def count_params(model: nnx.Module) -> int:
    """Number of trainable scalars (nnx.Param leaves) in `model`."""
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
