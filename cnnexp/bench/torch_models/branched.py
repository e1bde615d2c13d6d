"""PyTorch twins of cnnexp's branched models: ResNet, GoogLeNet (`inception`), Inception-ResNet and
DenseNet-BC.

Every module keeps the attribute path of its Flax counterpart (`stages.1.0.units.0.conv`,
`stages.0.layers.1.branch3.layers.0.norm`, ...), so `transfer.copy_weights` maps the weights one
to one. The layer tables (depths, widths, growth) come from the cnnexp modules themselves, so the
two sides cannot drift apart. Every kernel side is odd, so cnnexp's "same" padding is PyTorch's
symmetric `k // 2` (per side for Inception-ResNet's 1x7 and 7x1 kernels); its "ceil" pools are
PyTorch's `ceil_mode`, and its pools never count padded pixels (max pads with -inf, average
divides by the real pixels: `count_include_pad=False`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cnnexp.bench.torch_models.common import ACTIVATIONS, LAYER_CHOICES, Activation, batch_norm, check_options, choose
from cnnexp.bench.torch_models.registry import UnsupportedReference, register_reference
from cnnexp.models.densenet import BOTTLENECK_WIDTH
from cnnexp.models.inception import STAGES, STEM_CHANNELS, BlockWidths
from cnnexp.models.inception_resnet import HALVING_POOL, VARIANTS, Branch, Design, check_design
from cnnexp.models.layers import KernelSize, kernel_window, scaled
from cnnexp.models.resnet import BOTTLENECK_EXPANSION, DEPTHS, STAGE_CHANNELS, STEMS, choose_stem

# No maxout: it reshapes the channels of the layer before it, which these twins do not mirror.
_CHOICES = {**LAYER_CHOICES, "activation": tuple(a for a in ACTIVATIONS if a != "maxout")}


@dataclass(frozen=True)
class _Layers:
    """cnnexp's shared layer options, as factories of the PyTorch layers they choose."""

    activation: str
    norm: str
    pool: str = "max"

    def act(self) -> nn.Module:
        return Activation(self.activation)

    def batch_norm(self, channels: int, enabled: bool = True) -> nn.Module:
        """cnnexp's `Norm`; norm=none is nothing."""
        return batch_norm(channels) if enabled and self.norm == "batch" else nn.Identity()

    def conv(self, in_features: int, out_features: int, kernel_size: KernelSize, stride: int = 1) -> nn.Conv2d:
        """A "same" convolution (odd kernel sides), with a bias only when there is no batch norm."""
        rows, cols = kernel_window(kernel_size)
        return nn.Conv2d(in_features, out_features, (rows, cols), stride, padding=(rows // 2, cols // 2),
                         bias=self.norm == "none")


def _options(model: str, options: Mapping[str, Any], **defaults: Any) -> tuple[_Layers, dict[str, Any]]:
    """The shared layer options and the model's own, defaults filled (see `check_options`)."""
    values = check_options(model, options, {"pool": "max", **defaults}, _CHOICES)
    layers = _Layers(values.pop("activation"), values.pop("norm"), values.pop("pool"))
    return layers, values


def _pool(kind: str, window: int, stride: int, padding: str) -> nn.Module:
    """cnnexp's `Pool2d` with "same" (odd window) or "ceil" padding."""
    pad, ceil = ((window - 1) // 2, False) if padding == "same" else (0, True)
    if kind == "max":
        return nn.MaxPool2d(window, stride, pad, ceil_mode=ceil)
    return nn.AvgPool2d(window, stride, pad, ceil_mode=ceil, count_include_pad=False)


class _Sequential(nn.Module):
    """`nnx.Sequential`: its children sit under `layers`, so the parameter names match."""

    def __init__(self, *layers: nn.Module):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class ConvNormAct(nn.Module):
    """Convolution, batch norm, activation (cnnexp's `ConvNormAct`)."""

    def __init__(self, in_features: int, out_features: int, kernel_size: KernelSize, layers: _Layers,
                 stride: int = 1):
        super().__init__()
        self.conv = layers.conv(in_features, out_features, kernel_size, stride)
        self.norm = layers.batch_norm(out_features)
        self.act = layers.act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class NormActConv(nn.Module):
    """Batch norm, activation, convolution: the pre-activation unit of ResNet v2 and DenseNet."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int, layers: _Layers, stride: int = 1):
        super().__init__()
        self.norm = layers.batch_norm(in_features)
        self.act = layers.act()
        self.conv = layers.conv(in_features, out_features, kernel_size, stride)

    def preactivate(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.preactivate(x))


def _head(x: torch.Tensor, head: nn.Linear) -> torch.Tensor:
    """Global average pooling (no NHWC permute needed), then the class layer."""
    return head(x.mean(dim=(2, 3)))


# ResNet ------------------------------------------------------------------------------------------


class Stem(nn.Module):
    """"small": a 3x3 conv; "imagenet": a 7x7/2 conv and a 3x3/2 max pool. `norm_act`: batch
    norm and activation after the conv (pre-activation networks leave them to their first block)."""

    def __init__(self, kind: str, in_features: int, out_features: int, layers: _Layers, *, norm_act: bool):
        super().__init__()
        imagenet = kind == "imagenet"
        self.conv = layers.conv(in_features, out_features, 7 if imagenet else 3, 2 if imagenet else 1)
        self.norm = layers.batch_norm(out_features, enabled=norm_act)
        self.act = layers.act() if norm_act else nn.Identity()
        self.pool = _pool("max", 3, 2, "same") if imagenet else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.norm(self.conv(x))))


def _branch(in_features: int, mid: int, out: int, stride: int, bottleneck: bool) -> list[tuple[int, int, int, int]]:
    """(in, out, kernel, stride) of each conv of a residual branch, as cnnexp's resnet."""
    if bottleneck:
        return [(in_features, mid, 1, 1), (mid, mid, 3, stride), (mid, out, 1, 1)]
    return [(in_features, mid, 3, stride), (mid, out, 3, 1)]


class Projection(nn.Module):
    """The shortcut where shapes change: a strided 1x1 conv and (post-activation only) batch norm."""

    def __init__(self, in_features: int, out_features: int, stride: int, layers: _Layers, *, norm: bool):
        super().__init__()
        self.conv = layers.conv(in_features, out_features, 1, stride)
        self.norm = layers.batch_norm(out_features, enabled=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class ResidualBlock(nn.Module):
    """Post-activation block: conv-BN-act ... conv-BN, plus the shortcut, then act."""

    def __init__(self, in_features: int, mid: int, out: int, stride: int, layers: _Layers, *, bottleneck: bool):
        super().__init__()
        *first, (last_in, last_out, last_kernel, last_stride) = _branch(in_features, mid, out, stride, bottleneck)
        self.units = nn.ModuleList([ConvNormAct(i, o, k, layers, s) for i, o, k, s in first])
        self.last_conv = layers.conv(last_in, last_out, last_kernel, last_stride)
        self.last_norm = layers.batch_norm(last_out)
        self.shortcut = (Projection(in_features, out, stride, layers, norm=True)
                         if stride != 1 or in_features != out else nn.Identity())
        self.act = layers.act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for unit in self.units:
            h = unit(h)
        return self.act(self.last_norm(self.last_conv(h)) + self.shortcut(x))


class PreActBlock(nn.Module):
    """Pre-activation block: BN-act-conv ... BN-act-conv, plus the shortcut (which branches off
    after the first pre-activation)."""

    def __init__(self, in_features: int, mid: int, out: int, stride: int, layers: _Layers, *, bottleneck: bool):
        super().__init__()
        self.units = nn.ModuleList([NormActConv(i, o, k, layers, s)
                                    for i, o, k, s in _branch(in_features, mid, out, stride, bottleneck)])
        self.shortcut = (Projection(in_features, out, stride, layers, norm=False)
                         if stride != 1 or in_features != out else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, *rest = self.units
        pre = first.preactivate(x)
        h = first.conv(pre)
        for unit in rest:
            h = unit(h)
        return h + (x if self.shortcut is None else self.shortcut(pre))


class ResNet(nn.Module):
    """Stem, four stages of residual blocks, (BN-act,) global average pool, dense."""

    def __init__(self, in_channels: int, num_classes: int, layers: _Layers, *, depth: int, stem: str,
                 preact: bool, width: float):
        super().__init__()
        bottleneck, blocks_per_stage = DEPTHS[depth]
        channels = scaled(STAGE_CHANNELS[0], width)
        self.stem = Stem(stem, in_channels, channels, layers, norm_act=not preact)
        block = PreActBlock if preact else ResidualBlock
        stages = []
        for index, (base, count) in enumerate(zip(STAGE_CHANNELS, blocks_per_stage, strict=True)):
            mid = scaled(base, width)
            out = mid * BOTTLENECK_EXPANSION if bottleneck else mid
            blocks = []
            for position in range(count):
                blocks.append(block(channels, mid, out, 2 if index > 0 and position == 0 else 1, layers,
                                    bottleneck=bottleneck))
                channels = out
            stages.append(nn.ModuleList(blocks))
        self.stages = nn.ModuleList(stages)
        self.final_norm = layers.batch_norm(channels, enabled=preact)
        self.final_act = layers.act() if preact else nn.Identity()
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            for block in stage:
                x = block(x)
        return _head(self.final_act(self.final_norm(x)), self.head)


def _stem(model: str, stem: str, input_shape: tuple[int, int, int]) -> str:
    choose(model, "stem", stem, STEMS)
    return choose_stem(stem, input_shape)


@register_reference("resnet")
def resnet(options: dict[str, Any], *, input_shape: tuple[int, int, int], num_classes: int) -> ResNet:
    layers, own = _options("resnet", options, depth=18, stem="auto", preact=False, width=1.0, activation="relu",
                           norm="batch")
    choose("resnet", "depth", own["depth"], DEPTHS)
    choose("resnet", "preact", own["preact"], (False, True))
    return ResNet(input_shape[2], num_classes, layers, depth=own["depth"], preact=own["preact"],
                  width=own["width"], stem=_stem("resnet", own["stem"], input_shape))


# GoogLeNet ---------------------------------------------------------------------------------------


class InceptionBlock(nn.Module):
    """1x1, 3x3, 5x5 and pooling branches, concatenated; with 1x1 reductions if `reduce`."""

    def __init__(self, in_features: int, widths: BlockWidths, layers: _Layers, *, reduce: bool):
        super().__init__()
        self.branch1 = ConvNormAct(in_features, widths.conv1, 1, layers)
        if reduce:
            self.branch3 = _Sequential(ConvNormAct(in_features, widths.reduce3, 1, layers),
                                       ConvNormAct(widths.reduce3, widths.conv3, 3, layers))
            self.branch5 = _Sequential(ConvNormAct(in_features, widths.reduce5, 1, layers),
                                       ConvNormAct(widths.reduce5, widths.conv5, 5, layers))
            self.project = ConvNormAct(in_features, widths.project, 1, layers)
        else:
            self.branch3 = ConvNormAct(in_features, widths.conv3, 3, layers)
            self.branch5 = ConvNormAct(in_features, widths.conv5, 5, layers)
            self.project = nn.Identity()
        self.pool = _pool(layers.pool, 3, 1, "same")
        self.out_features = widths.conv1 + widths.conv3 + widths.conv5 + (widths.project if reduce else in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch3(x), self.branch5(x), self.project(self.pool(x))], dim=1)


class GoogLeNet(nn.Module):
    """3x3 stem, stages 3-5 of Inception blocks (each after a 3x3/2 "ceil" pool), global average
    pool, dropout, dense."""

    def __init__(self, in_channels: int, num_classes: int, layers: _Layers, *, reduce: bool, width: float,
                 dropout: float):
        super().__init__()
        channels = scaled(STEM_CHANNELS, width)
        self.stem = ConvNormAct(in_channels, channels, 3, layers)
        stages = []
        for stage in STAGES:
            steps: list[nn.Module] = [_pool(layers.pool, 3, 2, "ceil")]
            for widths in stage:
                steps.append(InceptionBlock(channels, BlockWidths(*(scaled(c, width) for c in widths)), layers,
                                            reduce=reduce))
                channels = steps[-1].out_features
            stages.append(_Sequential(*steps))
        self.stages = nn.ModuleList(stages)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(self.dropout(x.mean(dim=(2, 3))))


@register_reference("inception")
def inception(options: dict[str, Any], *, input_shape: tuple[int, int, int], num_classes: int) -> GoogLeNet:
    layers, own = _options("inception", options, reduce=True, width=1.0, dropout=0.4, activation="relu",
                           pool="max", norm="batch")
    size = min(input_shape[:2])
    for _ in STAGES:  # cnnexp's "ceil" pool makes one pixel of one, PyTorch's ceil_mode none
        if size == 1:
            raise UnsupportedReference(f"the PyTorch inception cannot pool a 1-pixel map ({input_shape[:2]} images)")
        size = max(math.ceil((size - 3) / 2), 0) + 1
    return GoogLeNet(input_shape[2], num_classes, layers, **own)


# Inception-ResNet --------------------------------------------------------------------------------


def _units(in_features: int, branch: Branch, layers: _Layers, width: float) -> tuple[list[nn.Module], int]:
    """A branch's conv-BN-activation units, in order, and its output channels."""
    units, channels = [], in_features
    for spec in branch:
        out = scaled(spec.channels, width)
        units.append(ConvNormAct(channels, out, spec.kernel, layers, spec.stride))
        channels = out
    return units, channels


def _branches(in_features: int, branches: tuple[Branch, ...], layers: _Layers, width: float
              ) -> tuple[nn.ModuleList, int]:
    """Parallel branches and the depth of their concatenation."""
    built = [_units(in_features, branch, layers, width) for branch in branches]
    return nn.ModuleList([_Sequential(*units) for units, _ in built]), sum(channels for _, channels in built)


class ResidualInceptionBlock(nn.Module):
    """Branches concatenated, a linear 1x1 projection (with bias) back to the input depth, scaled,
    added to the input, then the activation."""

    def __init__(self, in_features: int, branches: tuple[Branch, ...], layers: _Layers, *, width: float,
                 scale: float):
        super().__init__()
        self.branches, mixed = _branches(in_features, branches, layers, width)
        self.project = nn.Conv2d(mixed, in_features, 1)
        self.act, self.scale = layers.act(), scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = torch.cat([branch(x) for branch in self.branches], dim=1)
        return self.act(x + self.scale * self.project(mixed))


class ReductionBlock(nn.Module):
    """Stride-2 convolution branches beside a 3x3/2 "same" pool, concatenated."""

    def __init__(self, in_features: int, branches: tuple[Branch, ...], layers: _Layers, *, width: float):
        super().__init__()
        self.branches, convolved = _branches(in_features, branches, layers, width)
        self.pool = _pool(layers.pool, *HALVING_POOL, "same")
        self.out_features = convolved + in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([*(branch(x) for branch in self.branches), self.pool(x)], dim=1)


class InceptionResNet(nn.Module):
    """Stem, A blocks, reduction A, B blocks, reduction B, C blocks, global average pool, dropout, dense."""

    def __init__(self, in_channels: int, num_classes: int, layers: _Layers, *, design: Design, blocks: list[int],
                 residual_scale: float, width: float, dropout: float):
        super().__init__()
        before_pool, after_pool = design.stem
        first, channels = _units(in_channels, before_pool, layers, width)
        second, channels = _units(channels, after_pool, layers, width)
        self.stem = _Sequential(*first, _pool(layers.pool, *HALVING_POOL, "same"), *second)
        stages = []
        for count, block, reduction in zip(blocks, (design.block_a, design.block_b, design.block_c),
                                           (design.reduction_a, design.reduction_b, None), strict=True):
            stage: list[nn.Module] = [
                ResidualInceptionBlock(channels, block, layers, width=width, scale=residual_scale)
                for _ in range(count)
            ]
            if reduction is not None:
                stage.append(ReductionBlock(channels, reduction, layers, width=width))
                channels = stage[-1].out_features
            stages.append(nn.ModuleList(stage))
        self.stages = nn.ModuleList(stages)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            for block in stage:
                x = block(x)
        return self.head(self.dropout(x.mean(dim=(2, 3))))


@register_reference("inception_resnet")
def inception_resnet(options: dict[str, Any], *, input_shape: tuple[int, int, int],
                     num_classes: int) -> InceptionResNet:
    layers, own = _options("inception_resnet", options, variant="v1", blocks=(5, 10, 5), residual_scale=0.2,
                           width=1.0, dropout=0.2, activation="relu", pool="max", norm="batch")
    choose("inception_resnet", "variant", own["variant"], VARIANTS)
    check_design(own["variant"], own["blocks"])
    return InceptionResNet(input_shape[2], num_classes, layers, design=VARIANTS[own.pop("variant")],
                           blocks=list(own.pop("blocks")), **own)


# DenseNet ----------------------------------------------------------------------------------------


class DenseLayer(nn.Module):
    """BN-act-1x1 conv to 4 * growth, BN-act-3x3 conv to growth; appended to the input."""

    def __init__(self, in_features: int, growth: int, layers: _Layers, *, dropout: float):
        super().__init__()
        self.bottleneck = NormActConv(in_features, BOTTLENECK_WIDTH * growth, 1, layers)
        self.conv = NormActConv(BOTTLENECK_WIDTH * growth, growth, 3, layers)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.dropout(self.conv(self.dropout(self.bottleneck(x))))], dim=1)


class Transition(nn.Module):
    """BN-act-1x1 conv to fewer channels, then a 2x2 "ceil" average pool."""

    def __init__(self, in_features: int, out_features: int, layers: _Layers):
        super().__init__()
        self.conv = NormActConv(in_features, out_features, 1, layers)
        self.pool = _pool("avg", 2, 2, "ceil")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(x))


class DenseNet(nn.Module):
    """Stem, dense blocks with transitions between them, BN-act, global average pool, dense."""

    def __init__(self, in_channels: int, num_classes: int, layers: _Layers, *, growth: int,
                 block_layers: list[int], compression: float, dropout: float, stem: str):
        super().__init__()
        channels = 2 * growth
        self.stem = Stem(stem, in_channels, channels, layers, norm_act=stem == "imagenet")
        stages = []
        for index, count in enumerate(block_layers):
            stage: list[nn.Module] = []
            for _ in range(count):
                stage.append(DenseLayer(channels, growth, layers, dropout=dropout))
                channels += growth
            if index < len(block_layers) - 1:
                reduced = max(1, math.floor(compression * channels))
                stage.append(Transition(channels, reduced, layers))
                channels = reduced
            stages.append(nn.ModuleList(stage))
        self.stages = nn.ModuleList(stages)
        self.final_norm = layers.batch_norm(channels)
        self.final_act = layers.act()
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            for module in stage:
                x = module(x)
        return _head(self.final_act(self.final_norm(x)), self.head)


@register_reference("densenet")
def densenet(options: dict[str, Any], *, input_shape: tuple[int, int, int], num_classes: int) -> DenseNet:
    layers, own = _options("densenet", options, growth_rate=12, block_layers=(16, 16, 16), compression=0.5,
                           width=1.0, dropout=0.0, stem="auto", activation="relu", norm="batch")
    return DenseNet(input_shape[2], num_classes, layers, growth=scaled(own["growth_rate"], own["width"]),
                    block_layers=list(own["block_layers"]), compression=own["compression"], dropout=own["dropout"],
                    stem=_stem("densenet", own["stem"], input_shape))
