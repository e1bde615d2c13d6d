"""Models by name: each family registers a builder; the trainer only calls `create_model`.

Modelled on timm's registry: adding a model is one file with a decorated builder and one
config under `conf/model/`. A builder's own options are its keyword-only parameters; the
options shared across families (`LayerOptions`) are declared at registration and arrive as
one `layers` argument. Every model takes `conv_impl`, `pool_impl` and `norm_impl`.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax
from flax import nnx
from omegaconf import OmegaConf

from cnnexp.errors import UserError
from cnnexp.models.layers import LayerOptions

ModelBuilder = Callable[..., nnx.Module]
IMPLEMENTATION_OPTIONS = ("conv_impl", "pool_impl", "norm_impl")
_BUILDER_ARGUMENTS = ("input_shape", "num_classes", "rngs", "layers")


@dataclass(frozen=True)
class _Entry:
    builder: ModelBuilder
    layer_options: tuple[str, ...]  # the LayerOptions fields users may set for this model
    layer_defaults: Mapping[str, Any]  # this model's defaults where they differ from LayerOptions'

    def options(self) -> list[str]:
        own = [
            p.name for p in inspect.signature(self.builder).parameters.values()
            if p.kind == p.KEYWORD_ONLY and p.name not in _BUILDER_ARGUMENTS
        ]
        return [*self.layer_options, *own]


_REGISTRY: dict[str, _Entry] = {}


def register_model(
    name: str, *, layer_options: Sequence[str] = (), layer_defaults: Mapping[str, Any] | None = None
) -> Callable[[ModelBuilder], ModelBuilder]:
    """Register `builder(*, input_shape, num_classes, rngs, layers, **own_options)` as `name`.

    `layer_options`: which shared options (activation, pool, norm, padding) the model honours;
    `layer_defaults`: the model's defaults for them where they differ from `LayerOptions`."""
    fields = {f.name for f in dataclasses.fields(LayerOptions)}
    unknown = (set(layer_options) | set(layer_defaults or {})) - fields
    if unknown:
        raise ValueError(f"model {name!r} declares unknown layer options {sorted(unknown)}")

    def decorate(builder: ModelBuilder) -> ModelBuilder:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = _Entry(builder, (*layer_options, *IMPLEMENTATION_OPTIONS), dict(layer_defaults or {}))
        return builder

    return decorate


def accepted_options(name: str) -> list[str]:
    """The option names `model=<name>` accepts (shared layer options first)."""
    return _entry(name).options()


def options_of(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The options a composed `model` config group sets, as create_model takes them: all but the name."""
    container = OmegaConf.to_container(model_cfg, resolve=True) if OmegaConf.is_config(model_cfg) else model_cfg
    return {k: v for k, v in container.items() if k != "name"}


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        raise UserError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    return _REGISTRY[name]


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
    entry = _entry(name)
    accepted = entry.options()
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise UserError(
            f"model {name!r} has no option {', '.join('model.' + u for u in unknown)}; "
            f"its options: {', '.join('model.' + o for o in accepted)}"
        )
    shared = {k: v for k, v in options.items() if k in entry.layer_options}
    own = {k: v for k, v in options.items() if k not in entry.layer_options}
    layers = LayerOptions(**{**entry.layer_defaults, **shared})
    return entry.builder(input_shape=tuple(input_shape), num_classes=num_classes, rngs=rngs, layers=layers, **own)


def count_params(model: nnx.Module) -> int:
    """Number of trainable scalars (nnx.Param leaves) in `model`."""
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
