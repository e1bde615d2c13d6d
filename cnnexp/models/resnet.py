"""ResNet (He et al., 2015, "Deep Residual Learning"), optionally pre-activation (He et al., 2016,
"Identity Mappings in Deep Residual Networks").

Layout as in the paper's Table 1 and torchvision: a stem, four stages of residual blocks with
64, 128, 256, 512 channels (times `width`), global average pooling, one dense layer. Stages 2-4
halve the map with a stride-2 "same" convolution, so a 1x1 map stays 1x1 and 8x8 digits work.
Depths 18 and 34 stack basic blocks (two 3x3 convs), depth 50 bottleneck blocks (1x1, 3x3,
1x1 with 4x the channels; the stride sits on the 3x3 conv as in torchvision's "v1.5"). A block's
shortcut is the identity where shapes match, else a projection: a 1x1 conv with the block's
stride and a batch norm (torchvision's downsample, the paper's option B). Parameter counts at
224x224x3 with 1000 classes are torchvision's: 11,689,512 / 21,797,672 / 25,557,032.

Stems: "imagenet" is the paper's 7x7/2 conv, BN, activation, 3x3/2 max pool (224 -> 56);
"small" is one 3x3 stride-1 conv and no pooling, as the CIFAR ResNets, so 28-32 px inputs keep
their resolution into the first stage. "auto" picks "imagenet" when min(height, width) >= 112.

Pre-activation blocks (`preact=true`) run BN-activation-conv and add the shortcut with nothing
after the sum; a final BN-activation precedes the pooling. As in timm's ResNetV2, a projection
shortcut starts from the block's pre-activated input and has no batch norm of its own, and the
stem has no BN-activation (the first block's pre-activation does it).

Convolution kernels use He normal init with fan_out, like torchvision. In post-activation blocks
the last batch norm of each residual branch starts with scale 0 (Goyal et al., 2017; timm's
default): every block then starts as the identity, so a deep net trains like a shallow one at
first and tolerates large learning rates. Pre-activation branches end in a conv, not a BN.

No `padding` option (the residual sum needs equal shapes), no `pool` option (the max pool is
part of the ImageNet stem), and no maxout (see `resnet`).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
from flax import nnx

from cnnexp.errors import UserError
from cnnexp.models.layers import (
    Conv2d,
    ConvNormAct,
    Dense,
    GlobalPool,
    LayerOptions,
    Norm,
    Pool2d,
    activate,
    check_width,
    scaled,
)
from cnnexp.models.registry import register_model

STEMS = ("auto", "small", "imagenet")
IMAGENET_STEM_MIN_SIZE = 112  # model.stem=auto: the ImageNet stem from this many pixels up
STAGE_CHANNELS = (64, 128, 256, 512)
BOTTLENECK_EXPANSION = 4
# depth: (bottleneck blocks?, blocks per stage)
DEPTHS: dict[int, tuple[bool, tuple[int, ...]]] = {
    18: (False, (2, 2, 2, 2)),
    34: (False, (3, 4, 6, 3)),
    50: (True, (3, 4, 6, 3)),
}
HE_NORMAL_FAN_OUT = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


def choose_stem(stem: str, input_shape: tuple[int, int, int]) -> str:
    """"small" or "imagenet" for `model.stem=stem` and images of `input_shape` (H, W, C)."""
    if stem not in STEMS:
        raise UserError(f"unknown model.stem {stem!r}; choose one of {', '.join(STEMS)}")
    if stem == "auto":
        return "imagenet" if min(input_shape[:2]) >= IMAGENET_STEM_MIN_SIZE else "small"
    return stem


def _conv(in_features: int, out_features: int, kernel_size: int, layers: LayerOptions, *, stride: int = 1,
         kernel_init: nnx.Initializer, rngs: nnx.Rngs) -> Conv2d:
    """A "same"-padded convolution of the model's conv_impl, with a bias only when norm=none."""
    return Conv2d(in_features, out_features, kernel_size, stride=stride, padding="same",
                  use_bias=layers.norm == "none", impl=layers.conv_impl, kernel_init=kernel_init, rngs=rngs)


class Stem(nnx.Module):
    """The layers before the first stage. "small": a 3x3 stride-1 conv; "imagenet": a 7x7/2 conv
    and a 3x3/2 max pool. `norm_act`: batch norm and activation after the conv (pre-activation
    networks leave them to their first block)."""

    def __init__(self, kind: str, in_features: int, out_features: int, layers: LayerOptions, *, norm_act: bool,
                 kernel_init: nnx.Initializer, rngs: nnx.Rngs):
        imagenet = kind == "imagenet"
        self.kind, self.layers, self.norm_act = kind, layers, norm_act
        self.conv = _conv(in_features, out_features, 7 if imagenet else 3, layers, stride=2 if imagenet else 1,
                         kernel_init=kernel_init, rngs=rngs)
        self.norm = Norm(out_features, layers.norm if norm_act else "none", impl=layers.norm_impl, rngs=rngs)
        self.pool = Pool2d("max", 3, 2, padding="same", impl=layers.pool_impl) if imagenet else None

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.norm(self.conv(x))
        if self.norm_act:
            x = activate(x, self.layers)
        return x if self.pool is None else self.pool(x)


class NormActConv(nnx.Module):
    """Batch norm, activation, convolution: the pre-activation unit (also DenseNet's)."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int, layers: LayerOptions, *,
                 stride: int = 1, kernel_init: nnx.Initializer, rngs: nnx.Rngs):
        self.layers = layers
        self.norm = Norm(in_features, layers.norm, impl=layers.norm_impl, rngs=rngs)
        self.conv = _conv(in_features, out_features, kernel_size, layers, stride=stride, kernel_init=kernel_init,
                         rngs=rngs)

    def preactivate(self, x: jax.Array) -> jax.Array:
        """Batch norm and activation only (a pre-activation block's shortcut branches off here)."""
        return activate(self.norm(x), self.layers)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(self.preactivate(x))


def _branch(in_features: int, mid: int, out: int, stride: int, bottleneck: bool) -> list[tuple[int, int, int, int]]:
    """(in, out, kernel, stride) of each conv of a residual branch."""
    if bottleneck:
        return [(in_features, mid, 1, 1), (mid, mid, 3, stride), (mid, out, 1, 1)]
    return [(in_features, mid, 3, stride), (mid, out, 3, 1)]


class Projection(nnx.Module):
    """The shortcut where shapes change: a 1x1 conv with the block's stride, then batch norm
    (`norm=False`: none, for pre-activation blocks)."""

    def __init__(self, in_features: int, out_features: int, stride: int, layers: LayerOptions, *, norm: bool,
                 rngs: nnx.Rngs):
        self.conv = _conv(in_features, out_features, 1, layers, stride=stride, kernel_init=HE_NORMAL_FAN_OUT,
                         rngs=rngs)
        self.norm = Norm(out_features, layers.norm if norm else "none", impl=layers.norm_impl, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.norm(self.conv(x))


class ResidualBlock(nnx.Module):
    """Post-activation block: conv-BN-act ... conv-BN, plus the shortcut, then act."""

    def __init__(self, in_features: int, mid: int, out: int, stride: int, layers: LayerOptions, *,
                 bottleneck: bool, rngs: nnx.Rngs):
        *first, (last_in, last_out, last_kernel, last_stride) = _branch(in_features, mid, out, stride, bottleneck)
        self.layers = layers
        self.units = nnx.List([
            ConvNormAct(i, o, k, layers, stride=s, padding="same", kernel_init=HE_NORMAL_FAN_OUT, rngs=rngs)
            for i, o, k, s in first
        ])
        self.last_conv = _conv(last_in, last_out, last_kernel, layers, stride=last_stride,
                              kernel_init=HE_NORMAL_FAN_OUT, rngs=rngs)
        self.last_norm = Norm(last_out, layers.norm, scale_init=nnx.initializers.zeros, impl=layers.norm_impl, rngs=rngs)
        self.shortcut = (
            Projection(in_features, out, stride, layers, norm=True, rngs=rngs)
            if stride != 1 or in_features != out else None
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        h = x
        for unit in self.units:
            h = unit(h)
        h = self.last_norm(self.last_conv(h))
        return activate(h + (x if self.shortcut is None else self.shortcut(x)), self.layers)


class PreActBlock(nnx.Module):
    """Pre-activation block: BN-act-conv ... BN-act-conv, plus the shortcut."""

    def __init__(self, in_features: int, mid: int, out: int, stride: int, layers: LayerOptions, *,
                 bottleneck: bool, rngs: nnx.Rngs):
        self.units = nnx.List([
            NormActConv(i, o, k, layers, stride=s, kernel_init=HE_NORMAL_FAN_OUT, rngs=rngs)
            for i, o, k, s in _branch(in_features, mid, out, stride, bottleneck)
        ])
        self.shortcut = (
            Projection(in_features, out, stride, layers, norm=False, rngs=rngs)
            if stride != 1 or in_features != out else None
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        first, *rest = self.units
        pre = first.preactivate(x)
        h = first.conv(pre)
        for unit in rest:
            h = unit(h)
        return h + (x if self.shortcut is None else self.shortcut(pre))


class ResNet(nnx.Module):
    """Stem, four stages of `blocks_per_stage` residual blocks, (BN-act,) global pool, dense."""

    def __init__(self, *, input_shape: tuple[int, int, int], num_classes: int, rngs: nnx.Rngs, layers: LayerOptions,
                 blocks_per_stage: Sequence[int], bottleneck: bool, stem: str, preact: bool, width: float):
        channels = scaled(STAGE_CHANNELS[0], width)
        self.layers = layers
        self.stem = Stem(stem, input_shape[2], channels, layers, norm_act=not preact, kernel_init=HE_NORMAL_FAN_OUT,
                         rngs=rngs)
        block = PreActBlock if preact else ResidualBlock
        stages = []
        for index, (base, count) in enumerate(zip(STAGE_CHANNELS, blocks_per_stage, strict=True)):
            mid = scaled(base, width)
            out = mid * BOTTLENECK_EXPANSION if bottleneck else mid
            blocks = []
            for position in range(count):
                stride = 2 if index > 0 and position == 0 else 1
                blocks.append(block(channels, mid, out, stride, layers, bottleneck=bottleneck, rngs=rngs))
                channels = out
            stages.append(nnx.List(blocks))
        self.stages = nnx.List(stages)
        self.final_norm = Norm(channels, layers.norm, impl=layers.norm_impl, rngs=rngs) if preact else None
        self.pool = GlobalPool()
        self.head = Dense(channels, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.stem(x)
        for stage in self.stages:
            for block in stage:
                x = block(x)
        if self.final_norm is not None:
            x = activate(self.final_norm(x), self.layers)
        return self.head(self.pool(x))


@register_model("resnet", layer_options=("activation", "norm"))
def resnet(*, input_shape: tuple[int, int, int], num_classes: int, rngs: nnx.Rngs, layers: LayerOptions,
           depth: int = 18, stem: str = "auto", preact: bool = False, width: float = 1.0) -> ResNet:
    if depth not in DEPTHS:
        raise UserError(f"unknown model.depth {depth!r}; choose one of {', '.join(map(str, DEPTHS))}")
    check_width(width)
    if not isinstance(preact, bool):
        raise UserError(f"model.preact must be true or false, not {preact!r}")
    layers.require_elementwise_activation(
        "resnet", "the activation after each residual sum (and each pre-activation batch norm) has no "
        "convolution right before it to make maxout's extra pieces",
    )
    bottleneck, blocks_per_stage = DEPTHS[depth]
    return ResNet(input_shape=input_shape, num_classes=num_classes, rngs=rngs, layers=layers,
                  blocks_per_stage=blocks_per_stage, bottleneck=bottleneck, stem=choose_stem(stem, input_shape),
                  preact=preact, width=width)
