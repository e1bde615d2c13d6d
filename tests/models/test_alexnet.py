"""AlexNet (torchvision's single-tower layout) and alexnet_lite for small images."""

import pytest
from flax import nnx
from helpers.models import layer_records

from cnnexp.errors import UserError
from cnnexp.models import count_params, create_model


def test_alexnet_has_torchvisions_parameter_count():
    model = nnx.eval_shape(
        lambda: create_model("alexnet", {}, input_shape=(224, 224, 3), num_classes=1000, rngs=nnx.Rngs(0))
    )
    assert count_params(model) == 61_100_840


def test_alexnet_maps_at_224_pixels():
    records = layer_records("alexnet", {}, (224, 224, 3))
    sizes = [r.output_shape[1] for r in records if r.kind in ("conv", "pool", "adaptive_pool")]
    assert sizes == [55, 27, 27, 13, 13, 13, 13, 6, 6]  # conv1, pool, conv2, pool, conv3-5, pool, adaptive


def test_alexnet_lite_parameter_count_and_maps():
    # convs 5*5*1*64+64 = 1,664; 5*5*64*192+192 = 307,392; 3*3*192*384+384 = 663,936;
    # 3*3*384*256+256 = 884,992; 3*3*256*256+256 = 590,080; maps 28 -> 14 -> 7 -> 3, so the
    # dense layers are 3*3*256*1024+1024 = 2,360,320, 1024*1024+1024 = 1,049,600, 1024*10+10 = 10,250.
    model = nnx.eval_shape(
        lambda: create_model("alexnet_lite", {}, input_shape=(28, 28, 1), num_classes=10, rngs=nnx.Rngs(0))
    )
    assert count_params(model) == 1_664 + 307_392 + 663_936 + 884_992 + 590_080 + 2_360_320 + 1_049_600 + 10_250
    pools = [r.output_shape[1] for r in layer_records("alexnet_lite", {}, (28, 28, 1)) if r.kind == "pool"]
    assert pools == [14, 7, 3]


@pytest.mark.parametrize("option", [{"dropout": 1.0}, {"dropout": -0.1}, {"width": 0}])
def test_bad_width_or_dropout_is_a_user_error(option):
    with pytest.raises(UserError, match="model.(width|dropout)"):
        create_model("alexnet_lite", option, input_shape=(28, 28, 1), num_classes=10, rngs=nnx.Rngs(0))


def test_alexnet_has_no_padding_option():
    with pytest.raises(UserError, match="no option model.padding"):
        create_model("alexnet", {"padding": "valid"}, input_shape=(224, 224, 3), num_classes=10, rngs=nnx.Rngs(0))
