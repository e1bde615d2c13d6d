"""Inception-ResNet (Szegedy et al., 2016, "Inception-v4, Inception-ResNet and the Impact of Residual
Connections on Learning") sized for 28-32 px images.

The two ideas of source text 001 in one block: Inception's parallel branches of different kernel
sizes, concatenated, and ResNet's skip connection, summed. Each residual block runs its branches,
concatenates them, and maps the result back to the block's input depth with a linear 1x1
convolution (with bias; no batch norm, no activation) so that it can be added to the input; the
sum is scaled and activated: out = act(x + residual_scale * project(concat(branches(x)))). The
paper scales the residuals by 0.1-0.3 because with more than about 1000 filters the unscaled
networks "died" early in training (their last layers output only zeros); `residual_scale=1`
shows the unscaled sum. Batch norm follows every other convolution, never the sums (as the
paper, to save memory). The blocks:

- A (the paper's 35x35 grid, here 14-16 px): a 1x1, a 1x1-3x3 and a 1x1-3x3-3x3 branch;
- B (17x17, here 7-8 px): a 1x1 and a 1x1-1x7-7x1 branch (a 7x7 field factorized into two
  one-dimensional kernels);
- C (8x8, here 4 px): a 1x1 and a 1x1-1x3-3x1 branch;
- reductions A and B between the grids: stride-2 3x3 convolution branches beside a 3x3/2 max
  pool (`pool`), concatenated, which halve the map and deepen it.

`variant` picks the paper's widths: `v1` (Inception-ResNet-v1, Figures 10, 7, 11, 12, 13;
reduction A with Table 1's k, l, m, n = 192, 192, 256, 384) or `v2` (Figures 16, 7, 17, 18, 19;
256, 256, 384, 384). Each projection outputs its block's input depth, as a sum requires: for
v2's B and C blocks the paper's figures print 1154 and 2048, which its own stem and reductions
contradict (384 + 384 + 384 = 1152, then 1152 + 384 + 288 + 320 = 2144, the depths here;
TF-slim's implementation, with a 320-channel stem, has 1088 and 2080). `blocks` is the number
of A, B and C blocks (the paper's 5, 10, 5).

The paper's stem brings 299 px down to 35 with three stride-2 layers (v2 uses Inception-v4's
branched stem). A 28-32 px image needs one halving to reach the A grid, so both variants use v1's
stem layer list (Figure 14), "same" padded and at stride 1 but for its max pool: 3x3 convs to
32, 32, 64, a 3x3/2 max pool, a 1x1 to 80, 3x3 convs to 192 and to the A blocks' depth (256 for
v1, 384 for v2). The grids are then 14 -> 7 -> 4 (28 px) or 16 -> 8 -> 4 (32 px), GoogLeNet's (`inception`)
stage sizes; all padding is "same" (the paper's reductions are "valid"), so an 8x8 digit still
ends at 1x1. Global average pooling, dropout 0.2 (the paper's keep probability 0.8), one dense
layer. Parameters on 28x28x1 with 10 classes: 20,980,682 (v1), 30,541,066 (v2).

No maxout (the activation after each sum has no convolution right before it) and no `padding`
option (branches must keep sizes equal to be concatenated and summed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from cnnexp.checks import is_finite
from cnnexp.errors import UserError
from cnnexp.models.layers import (
    Conv2d,
    ConvNormAct,
    Dense,
    GlobalPool,
    KernelSize,
    LayerOptions,
    Pool2d,
    activate,
    check_counts,
    check_dropout,
    check_width,
    scaled,
)
from cnnexp.models.registry import register_model


class ConvSpec(NamedTuple):
    """One conv-BN-activation unit of a branch: output channels, kernel (side or (rows, cols)), stride."""

    channels: int
    kernel: KernelSize = 1
    stride: int = 1


Branch = tuple[ConvSpec, ...]


class Design(NamedTuple):
    """A variant's layer widths, from the paper's figures."""

    stem: tuple[Branch, Branch]  # convolutions before and after the stem's max pool
    block_a: tuple[Branch, ...]
    reduction_a: tuple[Branch, ...]  # beside a 3x3/2 pool
    block_b: tuple[Branch, ...]
    reduction_b: tuple[Branch, ...]
    block_c: tuple[Branch, ...]


def _stem(depth: int) -> tuple[Branch, Branch]:
    return (ConvSpec(32, 3), ConvSpec(32, 3), ConvSpec(64, 3)), (ConvSpec(80, 1), ConvSpec(192, 3), ConvSpec(depth, 3))


def _reduction_a(k: int, l: int, m: int, n: int) -> tuple[Branch, ...]:  # noqa: E741  (the paper's names)
    """Figure 7: a 3x3/2 convolution to n, and 1x1 to k, 3x3 to l, 3x3/2 to m."""
    return (ConvSpec(n, 3, 2),), (ConvSpec(k), ConvSpec(l, 3), ConvSpec(m, 3, 2))


VARIANTS: dict[str, Design] = {
    "v1": Design(
        stem=_stem(256),
        block_a=((ConvSpec(32),), (ConvSpec(32), ConvSpec(32, 3)), (ConvSpec(32), ConvSpec(32, 3), ConvSpec(32, 3))),
        reduction_a=_reduction_a(192, 192, 256, 384),
        block_b=((ConvSpec(128),), (ConvSpec(128), ConvSpec(128, (1, 7)), ConvSpec(128, (7, 1)))),
        reduction_b=((ConvSpec(256), ConvSpec(384, 3, 2)), (ConvSpec(256), ConvSpec(256, 3, 2)),
                     (ConvSpec(256), ConvSpec(256, 3), ConvSpec(256, 3, 2))),
        block_c=((ConvSpec(192),), (ConvSpec(192), ConvSpec(192, (1, 3)), ConvSpec(192, (3, 1)))),
    ),
    "v2": Design(
        stem=_stem(384),
        block_a=((ConvSpec(32),), (ConvSpec(32), ConvSpec(32, 3)), (ConvSpec(32), ConvSpec(48, 3), ConvSpec(64, 3))),
        reduction_a=_reduction_a(256, 256, 384, 384),
        block_b=((ConvSpec(192),), (ConvSpec(128), ConvSpec(160, (1, 7)), ConvSpec(192, (7, 1)))),
        reduction_b=((ConvSpec(256), ConvSpec(384, 3, 2)), (ConvSpec(256), ConvSpec(288, 3, 2)),
                     (ConvSpec(256), ConvSpec(288, 3), ConvSpec(320, 3, 2))),
        block_c=((ConvSpec(192),), (ConvSpec(192), ConvSpec(224, (1, 3)), ConvSpec(256, (3, 1)))),
    ),
}
STAGES = 3  # A, B and C blocks
HALVING_POOL = (3, 2)  # window, stride: the stem's and the reductions' max pools


def _units(in_features: int, branch: Branch, layers: LayerOptions, width: float, rngs: nnx.Rngs
           ) -> tuple[list[ConvNormAct], int]:
    """A branch's "same"-padded conv-BN-activation units, in order, and its output channels."""
    units, channels = [], in_features
    for spec in branch:
        out = scaled(spec.channels, width)
        units.append(ConvNormAct(channels, out, spec.kernel, layers, stride=spec.stride, padding="same", rngs=rngs))
        channels = out
    return units, channels


def _branches(in_features: int, branches: Sequence[Branch], layers: LayerOptions, width: float, rngs: nnx.Rngs
              ) -> tuple[nnx.List, int]:
    """Parallel branches (each an `nnx.Sequential`) and the depth of their concatenation."""
    built = [_units(in_features, branch, layers, width, rngs) for branch in branches]
    return nnx.List([nnx.Sequential(*units) for units, _ in built]), sum(channels for _, channels in built)


class ResidualInceptionBlock(nnx.Module):
    """Branches concatenated, a linear 1x1 projection back to the input depth, scaled, added to
    the input, then the activation."""

    def __init__(self, in_features: int, branches: Sequence[Branch], layers: LayerOptions, *, width: float,
                 scale: float, rngs: nnx.Rngs):
        self.layers, self.scale = layers, scale
        self.branches, mixed = _branches(in_features, branches, layers, width, rngs)
        self.project = Conv2d(mixed, in_features, 1, impl=layers.conv_impl, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        mixed = jnp.concatenate([branch(x) for branch in self.branches], axis=-1)
        return activate(x + self.scale * self.project(mixed), self.layers)


class ReductionBlock(nnx.Module):
    """Stride-2 convolution branches beside a 3x3/2 pool, concatenated: half the map, more depth."""

    def __init__(self, in_features: int, branches: Sequence[Branch], layers: LayerOptions, *, width: float,
                 rngs: nnx.Rngs):
        self.branches, convolved = _branches(in_features, branches, layers, width, rngs)
        self.pool = Pool2d(layers.pool, *HALVING_POOL, padding="same", impl=layers.pool_impl)
        self.out_features = convolved + in_features

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.concatenate([*(branch(x) for branch in self.branches), self.pool(x)], axis=-1)


class InceptionResNet(nnx.Module):
    """Stem, A blocks, reduction A, B blocks, reduction B, C blocks, global average pool, dropout, dense."""

    def __init__(self, *, input_shape: tuple[int, int, int], num_classes: int, rngs: nnx.Rngs, layers: LayerOptions,
                 design: Design, blocks: Sequence[int], residual_scale: float, width: float, dropout: float):
        before_pool, after_pool = design.stem
        first, channels = _units(input_shape[2], before_pool, layers, width, rngs)
        second, channels = _units(channels, after_pool, layers, width, rngs)
        self.stem = nnx.Sequential(*first, Pool2d(layers.pool, *HALVING_POOL, padding="same", impl=layers.pool_impl),
                                   *second)
        stages = []
        for count, block, reduction in zip(blocks, (design.block_a, design.block_b, design.block_c),
                                           (design.reduction_a, design.reduction_b, None), strict=True):
            stage: list[nnx.Module] = [
                ResidualInceptionBlock(channels, block, layers, width=width, scale=residual_scale, rngs=rngs)
                for _ in range(count)
            ]
            if reduction is not None:
                stage.append(ReductionBlock(channels, reduction, layers, width=width, rngs=rngs))
                channels = stage[-1].out_features
            stages.append(nnx.List(stage))
        self.stages = nnx.List(stages)
        self.global_pool = GlobalPool()
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.head = Dense(channels, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.stem(x)
        for stage in self.stages:
            for block in stage:
                x = block(x)
        return self.head(self.dropout(self.global_pool(x)))


def check_design(variant: str, blocks: object) -> None:
    """A UserError unless `variant` is known and `blocks` counts the A, B and C blocks."""
    if variant not in VARIANTS:
        raise UserError(f"unknown model.variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    check_counts("blocks", blocks, STAGES, 0, "the A, B and C blocks, the paper's [5, 10, 5]")


@register_model("inception_resnet", layer_options=("activation", "pool", "norm"))
def inception_resnet(*, input_shape: tuple[int, int, int], num_classes: int, rngs: nnx.Rngs, layers: LayerOptions,
                     variant: str = "v1", blocks: Sequence[int] = (5, 10, 5), residual_scale: float = 0.2,
                     width: float = 1.0, dropout: float = 0.2) -> InceptionResNet:
    check_design(variant, blocks)
    if not (is_finite(residual_scale) and residual_scale > 0):
        raise UserError(f"model.residual_scale must be a positive number (the paper: 0.1-0.3), not {residual_scale!r}")
    check_width(width)
    check_dropout(dropout)
    layers.require_elementwise_activation(
        "inception_resnet", "the activation after each residual sum has no convolution right before it to make "
        "maxout's extra pieces",
    )
    return InceptionResNet(input_shape=input_shape, num_classes=num_classes, rngs=rngs, layers=layers,
                           design=VARIANTS[variant], blocks=list(blocks), residual_scale=residual_scale, width=width,
                           dropout=dropout)
