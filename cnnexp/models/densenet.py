"""DenseNet-BC (Huang et al., 2017, "Densely Connected Convolutional Networks").

Layout: a stem, dense blocks with a transition between each two, a final BN-activation, global
average pooling, one dense layer. A dense layer is BN-act-1x1 conv to 4 * growth channels (the
"B" bottleneck), then BN-act-3x3 conv to `growth` channels; its output is concatenated to its
input, so a block of n layers adds n * growth channels. A transition is BN-act-1x1 conv to
floor(compression * channels) (the "C", theta = 0.5), then a 2x2 average pool with "ceil"
padding, so odd maps round up and small ones never vanish.

The default is the paper's CIFAR network DenseNet-BC-100 (growth 12, three blocks of 16 layers,
769,162 parameters on 32x32x3 with 10 classes): three blocks because a 28-32 px input stands two
halvings (32 -> 16 -> 8) before the maps are too small for 3x3 convs to see structure, and
growth 12 keeps it under a million parameters, trainable on a CPU. DenseNet-121 is
`growth_rate=32 block_layers=[6,12,24,16]` at 224x224, with torchvision's 7,978,856 parameters
for 1000 classes.

Stems (`model.stem`, chosen as for resnet): "small" is the paper's CIFAR stem, one 3x3 conv to
2 * growth channels with no BN-act after it (the first dense layer pre-activates); "imagenet" is
torchvision's 7x7/2 conv, BN, act, 3x3/2 max pool. Kernels use He normal init (fan_in), as
torchvision. `dropout` > 0 adds dropout after each conv of each dense layer (the paper used 0.2
for its runs without data augmentation). Maxout is refused: every activation follows a batch norm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from cnnexp.checks import is_number, is_positive_int
from cnnexp.errors import UserError
from cnnexp.models.layers import (
    Dense,
    GlobalPool,
    LayerOptions,
    Norm,
    Pool2d,
    activate,
    check_dropout,
    check_width,
    scaled,
)
from cnnexp.models.registry import register_model
from cnnexp.models.resnet import NormActConv, Stem, choose_stem

BOTTLENECK_WIDTH = 4  # the 1x1 conv of a dense layer makes this many times the growth rate
HE_NORMAL_FAN_IN = nnx.initializers.variance_scaling(2.0, "fan_in", "normal")


class DenseLayer(nnx.Module):
    """BN-act-1x1 conv, BN-act-3x3 conv; the `growth` new channels are appended to the input."""

    def __init__(self, in_features: int, growth: int, layers: LayerOptions, *, dropout: float, rngs: nnx.Rngs):
        wide = BOTTLENECK_WIDTH * growth
        self.bottleneck = NormActConv(in_features, wide, 1, layers, kernel_init=HE_NORMAL_FAN_IN, rngs=rngs)
        self.conv = NormActConv(wide, growth, 3, layers, kernel_init=HE_NORMAL_FAN_IN, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs) if dropout > 0 else None

    def _drop(self, x: jax.Array) -> jax.Array:
        return x if self.dropout is None else self.dropout(x)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self._drop(self.conv(self._drop(self.bottleneck(x))))
        return jnp.concatenate([x, h], axis=-1)


class Transition(nnx.Module):
    """BN-act-1x1 conv to fewer channels, then a 2x2 average pool."""

    def __init__(self, in_features: int, out_features: int, layers: LayerOptions, *, rngs: nnx.Rngs):
        self.conv = NormActConv(in_features, out_features, 1, layers, kernel_init=HE_NORMAL_FAN_IN, rngs=rngs)
        self.pool = Pool2d("avg", 2, impl=layers.pool_impl)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.pool(self.conv(x))


class DenseNet(nnx.Module):
    """Stem, dense blocks with transitions between them, BN-act, global pool, dense."""

    def __init__(self, *, input_shape: tuple[int, int, int], num_classes: int, rngs: nnx.Rngs, layers: LayerOptions,
                 growth: int, block_layers: Sequence[int], compression: float, dropout: float, stem: str):
        channels = 2 * growth
        self.layers = layers
        self.stem = Stem(stem, input_shape[2], channels, layers, norm_act=stem == "imagenet",
                         kernel_init=HE_NORMAL_FAN_IN, rngs=rngs)
        stages = []  # each: a dense block's layers, then the transition after it (none after the last)
        for index, count in enumerate(block_layers):
            stage = []
            for _ in range(count):
                stage.append(DenseLayer(channels, growth, layers, dropout=dropout, rngs=rngs))
                channels += growth
            if index < len(block_layers) - 1:
                reduced = max(1, math.floor(compression * channels))
                stage.append(Transition(channels, reduced, layers, rngs=rngs))
                channels = reduced
            stages.append(nnx.List(stage))
        self.stages = nnx.List(stages)
        self.final_norm = Norm(channels, layers.norm, impl=layers.norm_impl, rngs=rngs)
        self.pool = GlobalPool()
        self.head = Dense(channels, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.stem(x)
        for stage in self.stages:
            for module in stage:
                x = module(x)
        return self.head(self.pool(activate(self.final_norm(x), self.layers)))


@register_model("densenet", layer_options=("activation", "norm"))
def densenet(*, input_shape: tuple[int, int, int], num_classes: int, rngs: nnx.Rngs, layers: LayerOptions,
             growth_rate: int = 12, block_layers: Sequence[int] = (16, 16, 16), compression: float = 0.5,
             width: float = 1.0, dropout: float = 0.0, stem: str = "auto") -> DenseNet:
    if not is_positive_int(growth_rate):
        raise UserError(f"model.growth_rate must be a positive integer, not {growth_rate!r}")
    if isinstance(block_layers, str | int) or not block_layers or not all(map(is_positive_int, block_layers)):
        raise UserError(f"model.block_layers must be a list of positive integers (layers per dense block), "
                        f"not {block_layers!r}")
    if not (is_number(compression) and 0 < compression <= 1):
        raise UserError(f"model.compression must be in (0, 1], not {compression!r}")
    check_dropout(dropout)
    check_width(width)
    layers.require_elementwise_activation(
        "densenet", "its layers are pre-activation (batch norm, then activation), with no convolution "
        "right before the activation to make maxout's extra pieces",
    )
    return DenseNet(input_shape=input_shape, num_classes=num_classes, rngs=rngs, layers=layers,
                    growth=scaled(growth_rate, width), block_layers=list(block_layers), compression=compression,
                    dropout=dropout, stem=choose_stem(stem, input_shape))
