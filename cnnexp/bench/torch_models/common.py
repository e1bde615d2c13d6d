"""What every PyTorch twin shares: cnnexp's activations and batch norm in PyTorch, and the
check that a model's options have a counterpart here."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnexp.bench.torch_models.registry import UnsupportedReference
from cnnexp.models.layers import MAXOUT_PIECES
from cnnexp.models.registry import IMPLEMENTATION_OPTIONS


def _maxout(x: torch.Tensor) -> torch.Tensor:
    """Flax splits the channel axis into (C // pieces, pieces); channels are axis 1 here."""
    return x.unflatten(1, (-1, MAXOUT_PIECES)).amax(2)


# Flax's defaults: leaky_relu slope 0.01 (torch's too), gelu with the tanh approximation.
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "leaky_relu": F.leaky_relu,
    "maxout": _maxout,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "gelu": partial(F.gelu, approximate="tanh"),
}
LAYER_CHOICES: dict[str, tuple[str, ...]] = {
    "activation": tuple(ACTIVATIONS), "pool": ("max", "avg"), "norm": ("batch", "none"), "padding": ("same", "valid"),
}


class Activation(nn.Module):
    """An activation of ACTIVATIONS as a module (no parameters, so no names to match)."""

    def __init__(self, name: str):
        super().__init__()
        self.function = ACTIVATIONS[name]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.function(x)


def batch_norm(channels: int) -> nn.BatchNorm2d:
    """cnnexp's `Norm`: Flax's BatchNorm momentum 0.9 (weight of the old statistic) is PyTorch's 0.1."""
    return nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1)


def choose(model: str, option: str, value: Any, choices: Iterable[Any]) -> None:
    """UnsupportedReference unless `value` of `model.<option>` is one of `choices`."""
    choices = list(choices)
    if value not in choices:
        raise UnsupportedReference(f"the PyTorch {model} has no model.{option}={value!r} "
                                   f"(it mirrors {', '.join(map(str, choices))})")


def check_options(model: str, options: Mapping[str, Any], defaults: Mapping[str, Any],
                  choices: Mapping[str, Iterable[str]] = LAYER_CHOICES) -> dict[str, Any]:
    """`options` over the Flax model's `defaults`, the shared layer options among `choices`; an
    option the twin lacks raises. The implementation options (`conv_impl`, `pool_impl`) only pick
    cnnexp's kernels: dropped."""
    unknown = sorted(set(options) - set(defaults) - set(IMPLEMENTATION_OPTIONS))
    if unknown:
        raise UnsupportedReference(f"the PyTorch {model} has no option {', '.join('model.' + u for u in unknown)}")
    merged = {**defaults, **{key: value for key, value in options.items() if key in defaults}}
    for key, allowed in choices.items():
        if key in merged:
            choose(model, key, merged[key], allowed)
    return merged
