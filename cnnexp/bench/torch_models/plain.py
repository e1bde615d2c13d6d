"""PyTorch twins of the plain (unbranched) models: lenet, mlp, simple_cnn, vgg, alexnet, alexnet_lite, zfnet.

The modules carry the Flax attribute paths (`features.0.conv`, `classifier.hidden.1`, `fc1`, ...)
so `transfer.copy_weights` maps weights by name. Layer shapes and padding come from cnnexp's own
arithmetic (`resolve_padding`, `map_size`) at build time, for the input shape given, so both
sides pad, pool and flatten identically; dense layers read NHWC-flattened maps, as in Flax.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnexp.bench.torch_models.common import ACTIVATIONS, batch_norm, check_options, choose
from cnnexp.bench.torch_models.registry import UnsupportedReference, register_reference
from cnnexp.models.alexnet import Conv, ContrastNorm, Pool, Step, map_size
from cnnexp.models.layers import MAXOUT_PIECES, Padding, resolve_padding, scaled
from cnnexp.models.lenet import PAPER_INPUT_SIZE
from cnnexp.models.vgg import IMAGENET_MIN_SIZE, VARIANTS
from cnnexp.models.zfnet import MIDDLE_WIDTHS, zfnet_layout
from cnnexp.models.zfnet import VARIANTS as ZFNET_VARIANTS

Size = tuple[int, ...]  # (rows, cols)


def _options(model: str, options: dict[str, Any], **defaults: Any) -> SimpleNamespace:
    return SimpleNamespace(**check_options(model, options, defaults))


def _pieces(o: SimpleNamespace) -> int:
    return MAXOUT_PIECES if o.activation == "maxout" else 1


def _flatten_nhwc(x: torch.Tensor) -> torch.Tensor:
    """Flatten in Flax's NHWC order, so the first dense layer's rows line up."""
    return x.permute(0, 2, 3, 1).flatten(1) if x.ndim == 4 else x


def _conv(in_channels: int, out_channels: int, kernel: int, stride: int, padding: Padding,
          size: Size) -> tuple[nn.Conv2d, Size]:
    """A convolution padded as cnnexp pads `size`, and the map size after it. These models' pads
    are symmetric (odd kernels, or an integer), which nn.Conv2d does natively."""
    (top, bottom), (left, right) = (resolve_padding(padding, s, kernel, stride) for s in size)
    if (top, left) != (bottom, right):
        raise UnsupportedReference(f"no PyTorch reference for a {kernel}x{kernel} convolution padded unevenly")
    conv = nn.Conv2d(in_channels, out_channels, kernel, stride, padding=(top, left))
    return conv, tuple(map_size(s, kernel, stride, padding) for s in size)


def _pool(kind: str, window: int, stride: int, padding: Padding, size: Size) -> tuple[nn.Module, Size]:
    """cnnexp's "ceil" pooling is torch's ceil_mode (padded pixels never count, for max or avg);
    on a map smaller than the window it keeps one output over the whole axis, which torch gives
    with the window clipped to the map."""
    ceil = padding == "ceil"
    kernel = tuple(min(window, s) for s in size) if ceil else window
    pool = (nn.MaxPool2d if kind == "max" else nn.AvgPool2d)(kernel, stride, ceil_mode=ceil)
    return pool, tuple(map_size(s, window, stride, padding) for s in size)


class ConvUnit(nn.Module):
    """Convolution (bias kept, also under batch norm), norm, activation: cnnexp's `ConvUnit`."""

    def __init__(self, conv: nn.Conv2d, norm: str, activation: str):
        super().__init__()
        self.conv = conv
        self.norm = batch_norm(conv.out_channels) if norm == "batch" else nn.Identity()
        self.act = ACTIVATIONS[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class Classifier(nn.Module):
    """Flatten (NHWC order), hidden dense layers with activation and dropout, class layer."""

    def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int, o: SimpleNamespace, *,
                 dropout_before_hidden: bool = False):
        super().__init__()
        sizes = [in_features, *hidden]
        self.hidden = nn.ModuleList(nn.Linear(i, h * _pieces(o)) for i, h in zip(sizes[:-1], sizes[1:], strict=True))
        self.dropout = nn.Dropout(o.dropout)
        self.out = nn.Linear(sizes[-1], num_classes)
        self.act, self.dropout_before_hidden = ACTIVATIONS[o.activation], dropout_before_hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _flatten_nhwc(x)
        for dense in self.hidden:
            if self.dropout_before_hidden:
                x = self.dropout(x)
            x = self.act(dense(x))
            if not self.dropout_before_hidden:
                x = self.dropout(x)
        return self.out(x)


class ConvNet(nn.Module):
    """cnnexp's `ConvNet`: the `plan` of convolutions, pools and contrast normalizations, an optional
    adaptive average pool, then a `Classifier`; `o.width` multiplies every convolution and hidden layer."""

    def __init__(self, plan: Sequence[Step], hidden: Sequence[int], o: SimpleNamespace, *,
                 input_shape: tuple[int, int, int], num_classes: int, adaptive_pool: int | None = None,
                 dropout_before_hidden: bool = False):
        super().__init__()
        rows, cols, channels = input_shape
        size: Size = (rows, cols)
        features: list[nn.Module] = []
        for step in plan:
            if isinstance(step, ContrastNorm):  # torch divides its alpha by the window, cnnexp does not
                features.append(nn.LocalResponseNorm(step.size, alpha=step.alpha * step.size, beta=step.beta, k=step.k))
            elif isinstance(step, Conv):
                out = scaled(step.channels, o.width)
                padding = o.padding if step.padding is None else step.padding
                conv, size = _conv(channels, out * _pieces(o), step.kernel, step.stride, padding, size)
                features.append(ConvUnit(conv, o.norm, o.activation))
                channels = out
            else:
                padding = "valid" if step.floor and min(size) >= step.window else "ceil"
                pool, size = _pool(o.pool, step.window, step.stride, padding, size)
                features.append(pool)
        self.features = nn.Sequential(*features)
        self.adaptive_pool = nn.Identity() if adaptive_pool is None else nn.AdaptiveAvgPool2d(adaptive_pool)
        if adaptive_pool is not None:
            size = (adaptive_pool, adaptive_pool)
        self.classifier = Classifier(channels * math.prod(size), [scaled(h, o.width) for h in hidden], num_classes,
                                     o, dropout_before_hidden=dropout_before_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.adaptive_pool(self.features(x)))


class LeNet5(nn.Module):
    """cnnexp's LeNet-5: zero-pad to 32x32 (centred), two valid 5x5 convolutions with 2x2 pools,
    dense 120, 84, classes."""

    def __init__(self, o: SimpleNamespace, *, input_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        height, width, channels = input_shape
        (top, bottom), (left, right) = (_centre_padding(height), _centre_padding(width))
        self.padding = (left, right, top, bottom)
        size: Size = (height + top + bottom, width + left + right)
        pieces = _pieces(o)
        self.conv1, size = _conv(channels, 6 * pieces, 5, 1, "valid", size)
        self.pool1, size = _pool(o.pool, 2, 2, "valid", size)
        self.conv2, size = _conv(6, 16 * pieces, 5, 1, "valid", size)
        self.pool2, size = _pool(o.pool, 2, 2, "valid", size)
        self.fc1 = nn.Linear(16 * math.prod(size), 120 * pieces)
        self.fc2 = nn.Linear(120, 84 * pieces)
        self.head = nn.Linear(84, num_classes)
        self.act = ACTIVATIONS[o.activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, self.padding)
        x = self.pool1(self.act(self.conv1(x)))
        x = self.pool2(self.act(self.conv2(x)))
        x = self.act(self.fc1(_flatten_nhwc(x)))
        x = self.act(self.fc2(x))
        return self.head(x)


def _centre_padding(size: int) -> Size:
    total = max(0, PAPER_INPUT_SIZE - size)
    return total // 2, total - total // 2


@register_reference("lenet")
def lenet(options: dict[str, Any], *, input_shape: tuple[int, int, int], num_classes: int) -> LeNet5:
    return LeNet5(_options("lenet", options, activation="relu", pool="max"), input_shape=input_shape, num_classes=num_classes)


@register_reference("mlp")
def mlp(options: dict[str, Any], *, input_shape: tuple[int, int, int], num_classes: int) -> Classifier:
    o = _options("mlp", options, activation="relu", hidden=(256, 128), dropout=0.0)
    return Classifier(math.prod(input_shape), list(o.hidden), num_classes, o)


@register_reference("simple_cnn")
def simple_cnn(options: dict[str, Any], *, input_shape: tuple[int, int, int], num_classes: int) -> ConvNet:
    o = _options("simple_cnn", options, activation="relu", pool="max", norm="none", padding="valid", width=1.0, hidden=100,
                 dropout=0.0)
    plan = (Conv(25), Pool(floor=True), Conv(50), Pool(floor=True))
    return ConvNet(plan, (o.hidden,) if o.hidden else (), o, input_shape=input_shape, num_classes=num_classes)


@register_reference("vgg")
def vgg(options: dict[str, Any], *, input_shape: tuple[int, int, int], num_classes: int) -> ConvNet:
    o = _options("vgg", options, activation="relu", pool="max", norm="none", padding="same", variant="vgg16", head="auto",
                 width=1.0, dropout=0.5)
    if o.variant not in VARIANTS or o.head not in ("auto", "imagenet", "small"):
        raise UnsupportedReference(f"no PyTorch reference for vgg variant={o.variant!r} head={o.head!r}")
    imagenet = o.head == "imagenet" or (o.head == "auto" and min(input_shape[:2]) >= IMAGENET_MIN_SIZE)
    plan = [Pool() if step == "M" else Conv(step) for step in VARIANTS[o.variant]]
    return ConvNet(plan, (4096, 4096) if imagenet else (512,), o, input_shape=input_shape, num_classes=num_classes,
                   adaptive_pool=7 if imagenet else None)


def _alexnet_plan(first: Conv) -> tuple[Conv | Pool, ...]:
    """AlexNet's five convolutions and three overlapping 3/2 max pools, after `first`."""
    return (first, Pool(3, 2), Conv(192, 5), Pool(3, 2), Conv(384), Conv(256), Conv(256), Pool(3, 2))


@register_reference("alexnet")
def alexnet(options: dict[str, Any], *, input_shape: tuple[int, int, int], num_classes: int) -> ConvNet:
    o = _options("alexnet", options, activation="relu", pool="max", norm="none", width=1.0, dropout=0.5)
    o.padding = "same"  # not an option of alexnet: its 3x3 and 5x5 convolutions keep the map size
    return ConvNet(_alexnet_plan(Conv(64, 11, stride=4, padding=2)), (4096, 4096), o, input_shape=input_shape,
                   num_classes=num_classes, adaptive_pool=6, dropout_before_hidden=True)


@register_reference("alexnet_lite")
def alexnet_lite(options: dict[str, Any], *, input_shape: tuple[int, int, int], num_classes: int) -> ConvNet:
    o = _options("alexnet_lite", options, activation="relu", pool="max", norm="none", padding="same", width=1.0, dropout=0.5)
    return ConvNet(_alexnet_plan(Conv(64, 5)), (1024, 1024), o, input_shape=input_shape, num_classes=num_classes,
                   dropout_before_hidden=True)


@register_reference("zfnet")
def zfnet(options: dict[str, Any], *, input_shape: tuple[int, int, int], num_classes: int) -> ConvNet:
    o = _options("zfnet", options, activation="relu", pool="max", norm="none", padding="same", variant="auto",
                 contrast_norm=True, middle_widths=MIDDLE_WIDTHS, width=1.0, dropout=0.5)
    choose("zfnet", "variant", o.variant, ZFNET_VARIANTS)
    plan, hidden = zfnet_layout(o.variant, input_shape, o.contrast_norm, o.middle_widths)
    return ConvNet(plan, hidden, o, input_shape=input_shape, num_classes=num_classes)
