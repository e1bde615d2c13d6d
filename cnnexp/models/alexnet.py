"""AlexNet (Krizhevsky et al., 2012) for ImageNet, and `alexnet_lite` for 28-32 px images.

`alexnet` is the single-tower layout of Krizhevsky's "One weird trick" paper (2014) as
torchvision builds it: conv 11x11/4 pad 2 -> 64, max pool 3/2, conv 5x5 -> 192, max pool 3/2,
conv 3x3 -> 384, 256, 256, max pool 3/2, adaptive average pool to 6x6, then dropout, dense 4096,
dropout, dense 4096, dense to the classes (torchvision's dropout placement). No normalization,
as there (the 2012 paper's local response normalization is left out, as torchvision does).
At (224, 224, 3) and 1000 classes it has the reference 61,100,840 parameters. The overlapping
3/2 max pools use "ceil" padding: the same 55 -> 27 -> 13 -> 6 maps at 224 px, and an 8x8
digit still keeps one pixel.

`alexnet_lite` keeps AlexNet's pattern on small images. The 11x11/4 first convolution
exists to bring 224 px down to 55 cheaply; a 28-32 px image has no pixels to spare, so the
first layer is a 5x5 convolution with stride 1 (still the largest kernel of the network) and
the three overlapping 3/2 max pools do the downsampling alone: 28 -> 14 -> 7 -> 3 (32 -> 16
-> 8 -> 4), the small-image counterpart of AlexNet's 55 -> 27 -> 13 -> 6. The convolution
widths (64, 192, 384, 256, 256) are AlexNet's. The dense layers are 1024 wide instead of
4096: they read 2,304 features (28 px) instead of 9,216, and 4096 would put nearly all
parameters in the head; dropout 0.5 on both, as in AlexNet. No adaptive pool: the flattened
map size follows the input.

The plain layout shared here (a conv/pool stack, then dense layers with dropout) is also
what `simple_cnn`, `vgg` and `zfnet` are built from: `ConvNet` and its `Classifier` head.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import jax
from flax import nnx

from cnnexp.errors import UserError
from cnnexp.models.layers import (
    AdaptiveAvgPool,
    Conv2d,
    Dense,
    LayerOptions,
    LocalResponseNorm,
    Norm,
    Padding,
    Pool2d,
    activate,
    check_dropout,
    check_width,
    output_size,
    resolve_padding,
    scaled,
)
from cnnexp.models.registry import register_model


@dataclass(frozen=True)
class Conv:
    """One convolution of a plain stack: `channels` filters of `kernel` x `kernel`."""

    channels: int
    kernel: int = 3
    stride: int = 1
    padding: Padding | None = None  # None: the model's `padding` option


@dataclass(frozen=True)
class Pool:
    """One pooling layer of a plain stack (its kind is the model's `pool` option)."""

    window: int = 2
    stride: int = 2
    floor: bool = False  # drop a last partial window (11 -> 5) unless the map is smaller than the window


@dataclass(frozen=True)
class ContrastNorm:
    """Local response normalization across channels in a plain stack (`LocalResponseNorm`'s
    defaults: AlexNet's constants, which ZF Net's "contrast normalization" reuses)."""

    size: int = 5
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 2.0


Step = Conv | Pool | ContrastNorm


def map_size(size: int, window: int, stride: int, padding: Padding) -> int:
    """Pixels along one axis after a convolution or pool (the layers' own formula)."""
    out = output_size(size, window, stride, resolve_padding(padding, size, window, stride))
    if out < 1:
        raise UserError(
            f"a {window}x{window} layer with stride {stride} and padding {padding!r} gets a {size}-pixel "
            f"map and leaves nothing: the input is too small for this model (try model.padding=same "
            f"or larger images)"
        )
    return out


class ConvUnit(nnx.Module):
    """Convolution (with bias, also under batch norm, as torchvision's VGG-BN), norm, activation."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int, layers: LayerOptions, *,
                 stride: int, padding: Padding, rngs: nnx.Rngs):
        wide = out_features * layers.pieces
        self.layers = layers
        self.conv = Conv2d(in_features, wide, kernel_size, stride=stride, padding=padding, impl=layers.conv_impl,
                           rngs=rngs)
        self.norm = Norm(wide, layers.norm, impl=layers.norm_impl, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return activate(self.norm(self.conv(x)), self.layers)


class Classifier(nnx.Module):
    """Flatten, hidden dense layers with activation and dropout, then the class layer.

    Dropout comes after each hidden layer's activation (VGG, the 2012 AlexNet paper), or
    before each hidden layer with `dropout_before_hidden` (torchvision's AlexNet)."""

    def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int, layers: LayerOptions, *,
                 dropout: float, dropout_before_hidden: bool = False, rngs: nnx.Rngs):
        sizes = [in_features, *hidden]
        self.layers, self.dropout_before_hidden = layers, dropout_before_hidden
        self.hidden = nnx.List(
            [Dense(i, o * layers.pieces, rngs=rngs) for i, o in zip(sizes[:-1], sizes[1:], strict=True)]
        )
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.out = Dense(sizes[-1], num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        for dense in self.hidden:
            if self.dropout_before_hidden:
                x = self.dropout(x)
            x = activate(dense(x), self.layers)
            if not self.dropout_before_hidden:
                x = self.dropout(x)
        return self.out(x)


class ConvNet(nnx.Module):
    """A plain CNN: convolutions, pools and contrast normalizations in `plan` order, optionally an
    adaptive average pool to `adaptive_pool` x `adaptive_pool`, then a `Classifier` with `hidden`
    dense layers. `width` multiplies every convolution and hidden layer."""

    def __init__(self, plan: Sequence[Step], hidden: Sequence[int], *, input_shape: tuple[int, int, int],
                 num_classes: int, layers: LayerOptions, width: float, dropout: float,
                 adaptive_pool: int | None = None, dropout_before_hidden: bool = False, rngs: nnx.Rngs):
        check_width(width)
        check_dropout(dropout)
        rows, cols, channels = input_shape
        features: list[nnx.Module] = []
        for step in plan:
            if isinstance(step, ContrastNorm):  # the map keeps its size and depth
                features.append(LocalResponseNorm(step.size, alpha=step.alpha, beta=step.beta, k=step.k))
                continue
            if isinstance(step, Conv):
                window, padding = step.kernel, layers.padding if step.padding is None else step.padding
                out = scaled(step.channels, width)
                features.append(ConvUnit(channels, out, window, layers, stride=step.stride, padding=padding, rngs=rngs))
                channels = out
            else:
                window, padding = step.window, "valid" if step.floor and min(rows, cols) >= step.window else "ceil"
                features.append(Pool2d(layers.pool, window, step.stride, padding=padding, impl=layers.pool_impl))
            rows, cols = (map_size(size, window, step.stride, padding) for size in (rows, cols))
        self.features = nnx.List(features)
        self.adaptive_pool = None if adaptive_pool is None else AdaptiveAvgPool(adaptive_pool)
        if adaptive_pool is not None:
            rows = cols = adaptive_pool
        self.classifier = Classifier(channels * rows * cols, [scaled(h, width) for h in hidden], num_classes,
                                     layers, dropout=dropout, dropout_before_hidden=dropout_before_hidden, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.features:
            x = layer(x)
        if self.adaptive_pool is not None:
            x = self.adaptive_pool(x)
        return self.classifier(x)


def _alexnet_plan(first: Conv) -> tuple[Step, ...]:
    """AlexNet's five convolutions and three overlapping 3/2 max pools, after `first`."""
    return (first, Pool(3, 2), Conv(192, 5), Pool(3, 2), Conv(384), Conv(256), Conv(256), Pool(3, 2))


@register_model("alexnet", layer_options=("activation", "pool", "norm"), layer_defaults={"norm": "none"})
def alexnet(*, input_shape: tuple[int, int, int], num_classes: int, rngs: nnx.Rngs, layers: LayerOptions,
            width: float = 1.0, dropout: float = 0.5) -> ConvNet:
    return ConvNet(_alexnet_plan(Conv(64, 11, stride=4, padding=2)), (4096, 4096), input_shape=input_shape,
                   num_classes=num_classes, layers=layers, width=width, dropout=dropout, adaptive_pool=6,
                   dropout_before_hidden=True, rngs=rngs)


@register_model("alexnet_lite", layer_options=("activation", "pool", "norm", "padding"),
                layer_defaults={"norm": "none"})
def alexnet_lite(*, input_shape: tuple[int, int, int], num_classes: int, rngs: nnx.Rngs, layers: LayerOptions,
                 width: float = 1.0, dropout: float = 0.5) -> ConvNet:
    return ConvNet(_alexnet_plan(Conv(64, 5)), (1024, 1024), input_shape=input_shape, num_classes=num_classes,
                   layers=layers, width=width, dropout=dropout, dropout_before_hidden=True, rngs=rngs)
