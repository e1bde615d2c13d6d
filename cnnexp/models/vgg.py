"""VGG (Simonyan and Zisserman, 2014): stacks of 3x3 convolutions and 2x2 max pools only.

The variants are the paper's configurations A, B, D and E (torchvision's vgg11, vgg13, vgg16,
vgg19): two stacked 3x3 convolutions see a 5x5 region and three a 7x7 one, with fewer
parameters and more non-linearities than one large kernel. `norm=batch` adds batch norm after
each convolution and keeps the convolution biases, as torchvision's `vgg*_bn` do, so the
parameter counts match theirs (vgg16: 138,357,544; with batch norm 138,365,992).

Two heads:
- `imagenet`: torchvision's, adaptive average pool to 7x7, dense 4096, dropout, dense 4096,
  dropout, dense to the classes;
- `small`: the CIFAR-style head. The five 2x2 pools ("ceil" padding) leave 1x1 of a 28-32 px
  image (28 -> 14 -> 7 -> 4 -> 2 -> 1), so after flattening one hidden dense layer of 512 (the
  last stack's width) with dropout is enough; 7x7 copies of one pixel and 4096-wide layers
  would add about 120 million parameters for nothing.
`auto` takes `imagenet` for images of at least 112 px on the short side, else `small`.
"""

from __future__ import annotations

from flax import nnx

from cnnexp.errors import UserError
from cnnexp.models.alexnet import Conv, ConvNet, Pool
from cnnexp.models.layers import LayerOptions
from cnnexp.models.registry import register_model

M = "M"  # a 2x2 max pool in the layer lists, as in torchvision's cfgs
VARIANTS: dict[str, tuple[int | str, ...]] = {
    "vgg11": (64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M),
    "vgg13": (64, 64, M, 128, 128, M, 256, 256, M, 512, 512, M, 512, 512, M),
    "vgg16": (64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512, M),
    "vgg19": (64, 64, M, 128, 128, M, 256, 256, 256, 256, M, 512, 512, 512, 512, M, 512, 512, 512, 512, M),
}
HEADS = ("auto", "imagenet", "small")
IMAGENET_MIN_SIZE = 112


@register_model("vgg", layer_options=("activation", "pool", "norm", "padding"), layer_defaults={"norm": "none"})
def vgg(*, input_shape: tuple[int, int, int], num_classes: int, rngs: nnx.Rngs, layers: LayerOptions,
        variant: str = "vgg16", head: str = "auto", width: float = 1.0, dropout: float = 0.5) -> ConvNet:
    if variant not in VARIANTS:
        raise UserError(f"unknown model.variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if head not in HEADS:
        raise UserError(f"unknown model.head {head!r}; choose one of {', '.join(HEADS)}")
    if head == "auto":
        head = "imagenet" if min(input_shape[:2]) >= IMAGENET_MIN_SIZE else "small"
    plan = [Pool() if step == M else Conv(step) for step in VARIANTS[variant]]
    imagenet = head == "imagenet"
    return ConvNet(plan, (4096, 4096) if imagenet else (512,), input_shape=input_shape, num_classes=num_classes,
                   layers=layers, width=width, dropout=dropout, adaptive_pool=7 if imagenet else None, rngs=rngs)
