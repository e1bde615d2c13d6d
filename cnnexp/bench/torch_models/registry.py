"""The PyTorch twins by cnnexp model name: each family module registers its builders here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch  # noqa: F401  (fail here, clearly, when the bench extra is missing)
from torch import nn

ReferenceBuilder = Callable[..., nn.Module]
_REFERENCES: dict[str, ReferenceBuilder] = {}


class UnsupportedReference(ValueError):
    """The reference has no counterpart of this model or option (the bench row shows why)."""


def register_reference(name: str) -> Callable[[ReferenceBuilder], ReferenceBuilder]:
    """`@register_reference("lenet")`: the builder of cnnexp model `name`, called as
    `builder(options, input_shape=(H, W, C), num_classes=k)`."""

    def decorate(builder: ReferenceBuilder) -> ReferenceBuilder:
        _REFERENCES[name] = builder
        return builder

    return decorate


def reference_model(name: str, options: dict[str, Any], *, input_shape: tuple[int, int, int],
                    num_classes: int) -> nn.Module:
    """The PyTorch twin of `create_model(name, options, ...)`, in training mode."""
    if name not in _REFERENCES:
        raise UnsupportedReference(f"no PyTorch reference for model {name!r}")
    model = _REFERENCES[name](dict(options), input_shape=tuple(input_shape), num_classes=num_classes)
    return model.train()


def reference_names() -> list[str]:
    return sorted(_REFERENCES)

