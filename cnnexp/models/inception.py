"""GoogLeNet (Szegedy et al., 2014, "Going deeper with convolutions") sized for 28-32 px images.

An Inception block runs a 1x1, a 3x3 and a 5x5 convolution and a 3x3 pool (stride 1, "same")
side by side and concatenates their outputs on the channel axis, so the network itself picks
the scale of the patterns it needs (source text 001). `reduce=true` is the paper's block
(Figure 2b): 1x1 convolutions shrink the depth before the 3x3 and 5x5 convolutions and
project the pooled maps. `reduce=false` is the naive block (Figure 2a): the convolutions see
the full input depth and the pooled maps pass through whole, so every block's output is
deeper than its input and the next block's 3x3 and 5x5 kernels grow with it. Comparing the
parameter counts (`cnnexp summary`) of the two is the point: GoogLeNet 3a alone has 163,696
parameters reduced and 387,296 naive (without batch norm), and the gap compounds block
after block (5.9 and 92.5 million for this whole network on 28x28x1, 10 classes).

The blocks and their widths are Table 1's, 3a to 5b, with max pools 3/2 between stages 3, 4
and 5. The paper's stem (7x7/2 convolution, pool, 1x1, 3x3 to 192 channels, pool) shrinks
224 px eight-fold before block 3a; a 28-32 px image gets one 3x3 convolution to 192 channels
and one 3x3/2 max pool, so 3a sees 192 channels at 14-16 px, 4a 7-8 px and 5a 4 px. Then
global average pooling, dropout 0.4 and one dense layer, as in the paper (without its
auxiliary classifiers). Every convolution is followed by batch norm (as in Inception-v2;
`norm=none` for the 2014 network) and the activation. There is no `padding` option: every
branch keeps the spatial size, or they could not be concatenated.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from cnnexp.models.layers import (
    ConvNormAct,
    Dense,
    GlobalPool,
    LayerOptions,
    Pool2d,
    check_dropout,
    check_width,
    scaled,
)
from cnnexp.models.registry import register_model


class BlockWidths(NamedTuple):
    """Output channels of an Inception block's branches (a row of the paper's Table 1)."""

    conv1: int  # 1x1 branch
    reduce3: int  # 1x1 reduction before the 3x3
    conv3: int
    reduce5: int  # 1x1 reduction before the 5x5
    conv5: int
    project: int  # 1x1 projection after the pool


STEM_CHANNELS = 192
STAGES: tuple[tuple[BlockWidths, ...], ...] = (
    (BlockWidths(64, 96, 128, 16, 32, 32), BlockWidths(128, 128, 192, 32, 96, 64)),  # 3a, 3b
    (BlockWidths(192, 96, 208, 16, 48, 64), BlockWidths(160, 112, 224, 24, 64, 64),  # 4a, 4b
     BlockWidths(128, 128, 256, 24, 64, 64), BlockWidths(112, 144, 288, 32, 64, 64),  # 4c, 4d
     BlockWidths(256, 160, 320, 32, 128, 128)),  # 4e
    (BlockWidths(256, 160, 320, 32, 128, 128), BlockWidths(384, 192, 384, 48, 128, 128)),  # 5a, 5b
)


class InceptionBlock(nnx.Module):
    """1x1, 3x3, 5x5 and pooling branches, concatenated; with 1x1 reductions if `reduce`."""

    def __init__(self, in_features: int, widths: BlockWidths, layers: LayerOptions, *, reduce: bool, rngs: nnx.Rngs):
        unit = partial(ConvNormAct, layers=layers, padding="same", rngs=rngs)
        self.branch1 = unit(in_features, widths.conv1, 1)
        if reduce:
            self.branch3 = nnx.Sequential(unit(in_features, widths.reduce3, 1), unit(widths.reduce3, widths.conv3, 3))
            self.branch5 = nnx.Sequential(unit(in_features, widths.reduce5, 1), unit(widths.reduce5, widths.conv5, 5))
            self.project = unit(in_features, widths.project, 1)
        else:
            self.branch3 = unit(in_features, widths.conv3, 3)
            self.branch5 = unit(in_features, widths.conv5, 5)
            self.project = None
        self.pool = Pool2d(layers.pool, 3, 1, padding="same", impl=layers.pool_impl)
        self.out_features = widths.conv1 + widths.conv3 + widths.conv5 + (widths.project if reduce else in_features)

    def __call__(self, x: jax.Array) -> jax.Array:
        pooled = self.pool(x)
        if self.project is not None:
            pooled = self.project(pooled)
        return jnp.concatenate([self.branch1(x), self.branch3(x), self.branch5(x), pooled], axis=-1)


class GoogLeNet(nnx.Module):
    """Stem, stages 3, 4 and 5 of Inception blocks (each after a 3x3/2 pool), global average pool,
    dropout, class layer."""

    def __init__(self, *, input_shape: tuple[int, int, int], num_classes: int, rngs: nnx.Rngs, layers: LayerOptions,
                 reduce: bool, width: float, dropout: float):
        check_width(width)
        check_dropout(dropout)
        channels = scaled(STEM_CHANNELS, width)
        self.stem = ConvNormAct(input_shape[2], channels, 3, layers, padding="same", rngs=rngs)
        self.stages = nnx.List()
        for stage in STAGES:  # each stage: a 3x3/2 pool, then its blocks
            steps: list[nnx.Module] = [Pool2d(layers.pool, 3, 2, impl=layers.pool_impl)]
            for widths in stage:
                steps.append(InceptionBlock(channels, BlockWidths(*(scaled(c, width) for c in widths)), layers,
                                            reduce=reduce, rngs=rngs))
                channels = steps[-1].out_features
            self.stages.append(nnx.Sequential(*steps))
        self.global_pool = GlobalPool()
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.head = Dense(channels, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(self.dropout(self.global_pool(x)))


@register_model("inception", layer_options=("activation", "pool", "norm"))
def inception(*, input_shape: tuple[int, int, int], num_classes: int, rngs: nnx.Rngs, layers: LayerOptions,
              reduce: bool = True, width: float = 1.0, dropout: float = 0.4) -> GoogLeNet:
    return GoogLeNet(input_shape=input_shape, num_classes=num_classes, rngs=rngs, layers=layers, reduce=reduce,
                     width=width, dropout=dropout)
