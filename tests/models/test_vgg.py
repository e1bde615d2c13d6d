"""VGG: torchvision's configurations, counts and heads."""

import pytest
from flax import nnx
from helpers.models import layer_records

from cnnexp.errors import UserError
from cnnexp.models import count_params, create_model


@pytest.mark.parametrize(("options", "expected"), [
    ({"variant": "vgg11"}, 132_863_336),
    ({"variant": "vgg11", "norm": "batch"}, 132_868_840),
    ({"variant": "vgg16"}, 138_357_544),
    ({"variant": "vgg16", "norm": "batch"}, 138_365_992),
])
def test_torchvision_parameter_counts(options, expected):
    model = nnx.eval_shape(
        lambda: create_model("vgg", options, input_shape=(224, 224, 3), num_classes=1000, rngs=nnx.Rngs(0))
    )
    assert count_params(model) == expected


@pytest.mark.parametrize(("variant", "convs"), [("vgg11", 8), ("vgg13", 10), ("vgg16", 13), ("vgg19", 16)])
def test_variants_have_their_number_of_conv_layers(variant, convs):
    kinds = [r.kind for r in layer_records("vgg", {"variant": variant}, (8, 8, 1))]
    assert kinds.count("conv") == convs
    assert kinds.count("pool") == 5


def test_small_head_on_28_pixels():
    # Pools 28 -> 14 -> 7 -> 4 -> 2 -> 1; convs of vgg16 on 1 channel: 14,714,688 (torchvision's, RGB)
    # - 2*3*3*64 = 14,713,536; head 512*512+512 + 512*10+10 = 267,786.
    model = nnx.eval_shape(lambda: create_model("vgg", {}, input_shape=(28, 28, 1), num_classes=10, rngs=nnx.Rngs(0)))
    assert count_params(model) == 14_713_536 + 267_786
    records = layer_records("vgg", {}, (28, 28, 1))
    assert [r.output_shape[1] for r in records if r.kind == "pool"] == [14, 7, 4, 2, 1]


@pytest.mark.parametrize(("head", "shape", "adaptive"), [
    ("auto", (224, 224, 3), True), ("auto", (32, 32, 3), False), ("imagenet", (32, 32, 3), True),
    ("small", (224, 224, 3), False),
])
def test_head_choice(head, shape, adaptive):
    records = layer_records("vgg", {"variant": "vgg11", "head": head}, shape)
    assert ("adaptive_pool" in [r.kind for r in records]) == adaptive
    assert records[-1].output_shape == (1, 10)


@pytest.mark.parametrize(("option", "message"), [
    ({"variant": "vgg15"}, "model.variant 'vgg15'; choose one of vgg11, vgg13, vgg16, vgg19"),
    ({"head": "tiny"}, "model.head 'tiny'; choose one of auto, imagenet, small"),
])
def test_unknown_variant_or_head_lists_the_valid_ones(option, message):
    with pytest.raises(UserError, match=message):
        create_model("vgg", option, input_shape=(28, 28, 1), num_classes=10, rngs=nnx.Rngs(0))
