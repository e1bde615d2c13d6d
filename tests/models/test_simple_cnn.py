"""simple_cnn: the network of source text 000, shape by shape."""

import pytest
from flax import nnx
from helpers.models import layer_records

from cnnexp.errors import UserError
from cnnexp.models import count_params, create_model


def layer_shapes(options, shape):
    """(kind, input shape, output shape) of every leaf layer in one eval-mode forward pass."""
    return [(r.kind, r.input_shape[1:], r.output_shape[1:]) for r in layer_records("simple_cnn", options, shape)]


def test_the_shapes_of_the_text():
    # 1x28x28 -> 25x26x26 -> 25x13x13 -> 50x11x11 -> 50x5x5 -> flatten 1,250 -> FC -> 10 (NHWC here).
    assert layer_shapes({}, (28, 28, 1)) == [
        ("conv", (28, 28, 1), (26, 26, 25)),
        ("pool", (26, 26, 25), (13, 13, 25)),
        ("conv", (13, 13, 25), (11, 11, 50)),
        ("pool", (11, 11, 50), (5, 5, 50)),
        ("dense", (1250,), (100,)),
        ("dense", (100,), (10,)),
    ]


def test_parameter_count_by_hand():
    # conv1 3*3*1*25 + 25 = 250; conv2 3*3*25*50 + 50 = 11,300; hidden 1,250*100 + 100 = 125,100;
    # output 100*10 + 10 = 1,010.
    def params(options):
        return count_params(nnx.eval_shape(lambda: create_model(
            "simple_cnn", options, input_shape=(28, 28, 1), num_classes=10, rngs=nnx.Rngs(0))))

    assert params({}) == 250 + 11_300 + 125_100 + 1_010 == 137_660
    # hidden=0: the flattened 1,250 features go straight to the outputs.
    assert params({"hidden": 0}) == 250 + 11_300 + 1_250 * 10 + 10


def test_an_8x8_digit_keeps_a_pixel_through_the_second_pool():
    shapes = [out for kind, _, out in layer_shapes({}, (8, 8, 1)) if kind in ("conv", "pool")]
    assert shapes == [(6, 6, 25), (3, 3, 25), (1, 1, 50), (1, 1, 50)]


@pytest.mark.parametrize("options", [{"hidden": -1}, {"hidden": 0, "dropout": 0.5}])
def test_bad_hidden_layer_options_are_user_errors(options):
    with pytest.raises(UserError, match="model.hidden"):
        create_model("simple_cnn", options, input_shape=(28, 28, 1), num_classes=10, rngs=nnx.Rngs(0))
