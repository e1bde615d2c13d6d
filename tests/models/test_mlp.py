"""mlp: the dense-only baseline, layer by layer (the shared model contract is in test_models.py)."""

import pytest
from flax import nnx
from helpers.models import layer_records

from cnnexp.errors import UserError
from cnnexp.models import count_params, create_model


def params(options: dict) -> int:
    return count_params(nnx.eval_shape(lambda: create_model(
        "mlp", options, input_shape=(28, 28, 1), num_classes=10, rngs=nnx.Rngs(0))))


def test_flattens_the_image_into_dense_layers_only():
    layers = [(r.kind, r.input_shape[1:], r.output_shape[1:]) for r in layer_records("mlp", {}, (28, 28, 1))]
    assert layers == [("dense", (784,), (256,)), ("dense", (256,), (128,)), ("dense", (128,), (10,))]


def test_parameter_count_by_hand():
    assert params({}) == 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10 == 235_146
    # maxout: each hidden layer makes two pieces per unit; the next layer reads the maxed width.
    assert params({"activation": "maxout"}) == 784 * 512 + 512 + 256 * 256 + 256 + 128 * 10 + 10
    assert params({"hidden": []}) == 784 * 10 + 10  # logistic regression on the pixels


@pytest.mark.parametrize("options", [{"hidden": 256}, {"hidden": [256, 0]}, {"hidden": "wide"},
                                     {"hidden": [], "dropout": 0.5}])
def test_bad_hidden_layer_options_are_user_errors(options):
    with pytest.raises(UserError, match="model.hidden"):
        create_model("mlp", options, input_shape=(28, 28, 1), num_classes=10, rngs=nnx.Rngs(0))
