"""ZF Net (Zeiler and Fergus, 2013, "Visualizing and Understanding Convolutional Networks").

ZF Net is AlexNet retuned by looking inside it: the paper's deconvnet showed that AlexNet's
11x11 stride-4 first-layer filters were a mix of very high and very low frequencies with few in
between, and that the stride left aliasing artifacts in the second layer's maps. So the first
layer became 7x7 with stride 2, and the downsampling it gave up moved to a stride-2 second layer.
Source text 001 sums ZF Net up as "larger middle convolutional layers, a smaller stride and
filter size in the first layer": the paper's best single model (Table 2, "(b)") widened layers
3, 4, 5 from Figure 3's 384, 384, 256 filters to 512, 1024, 512, which `middle_widths` sets.
Everything else is AlexNet's, on one GPU: the paper replaces the two-GPU model's sparse
connections in layers 3-5 with dense ones.

`variant=imagenet` is the paper's Figure 3 for 224x224 images: conv 7x7/2 -> 96 (padding 1:
110x110), max pool 3/2 (55x55), contrast normalization, conv 5x5/2 -> 256 (no padding: 26x26),
max pool 3/2 (13x13), contrast normalization, conv 3x3 -> 384, 384, 256 (13x13), max pool 3/2
(6x6), dense 4096, 4096 with dropout 0.5, classes. The pools use "ceil" padding, which gives the
paper's 55, 13 and 6 (floor: 54, 12, 6). The paper gives no parameter total; its layer sizes
give 62,357,608 at (224, 224, 3) with 1000 classes (3,726,464 in the convolutions), which the
tests assert.

`variant=small` is the same change made to `alexnet_lite`, for 28-32 px images: there the
first AlexNet convolution is already stride 1 (5x5), so ZF's first layer is 3x3 with stride 1,
the second 5x5 with stride 1 (a 28 px image has no pixels to spare for it), and the three 3/2
pools downsample alone: 28 -> 14 -> 7 -> 3. The widths (96, 256, 384, 384, 256) are ZF's, the
dense layers 1024 wide as in `alexnet_lite`. `auto` picks `imagenet` for images of at least 112
px on the shorter side (as vgg's head), `small` otherwise.

Contrast normalization ("contrast normalized across feature maps", after each of the first two
pools) is local response normalization across channels with AlexNet's constants, which the
paper does not restate (`contrast_norm=false` leaves it out); `norm=batch` adds batch norm after
every convolution as well.
"""

from __future__ import annotations

from flax import nnx

from collections.abc import Sequence

from cnnexp.errors import UserError
from cnnexp.models.alexnet import Conv, ContrastNorm, ConvNet, Pool, Step
from cnnexp.models.layers import LayerOptions, check_counts
from cnnexp.models.registry import register_model
from cnnexp.models.vgg import IMAGENET_MIN_SIZE

VARIANTS = ("auto", "imagenet", "small")
MIDDLE_WIDTHS = (384, 384, 256)  # Figure 3's layers 3, 4, 5
# variant: (first two convolutions, hidden dense layers)
_FORMS: dict[str, tuple[tuple[Conv, Conv], tuple[int, ...]]] = {
    "imagenet": ((Conv(96, 7, stride=2, padding=1), Conv(256, 5, stride=2, padding=0)), (4096, 4096)),
    "small": ((Conv(96, 3), Conv(256, 5)), (1024, 1024)),
}


def zfnet_layout(variant: str, input_shape: tuple[int, int, int], contrast_norm: bool,
                 middle_widths: Sequence[int]) -> tuple[tuple[Step, ...], tuple[int, ...]]:
    """ZF Net's plan of layers and hidden dense widths for `model.variant` and images of `input_shape`."""
    if variant not in VARIANTS:
        raise UserError(f"unknown model.variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if not isinstance(contrast_norm, bool):
        raise UserError(f"model.contrast_norm must be true or false, not {contrast_norm!r}")
    check_counts("middle_widths", middle_widths, len(MIDDLE_WIDTHS), 1, "the filters of layers 3, 4, 5")
    if variant == "auto":
        variant = "imagenet" if min(input_shape[:2]) >= IMAGENET_MIN_SIZE else "small"
    (conv1, conv2), hidden = _FORMS[variant]
    normalize = (ContrastNorm(),) if contrast_norm else ()
    middle = tuple(Conv(channels) for channels in middle_widths)
    return (conv1, Pool(3, 2), *normalize, conv2, Pool(3, 2), *normalize, *middle, Pool(3, 2)), hidden


@register_model("zfnet", layer_options=("activation", "pool", "norm", "padding"), layer_defaults={"norm": "none"})
def zfnet(*, input_shape: tuple[int, int, int], num_classes: int, rngs: nnx.Rngs, layers: LayerOptions,
          variant: str = "auto", contrast_norm: bool = True, middle_widths: Sequence[int] = MIDDLE_WIDTHS,
          width: float = 1.0, dropout: float = 0.5) -> ConvNet:
    plan, hidden = zfnet_layout(variant, input_shape, contrast_norm, middle_widths)
    return ConvNet(plan, hidden, input_shape=input_shape, num_classes=num_classes, layers=layers, width=width,
                   dropout=dropout, rngs=rngs)
