"""Parameter paths: the output layer is found whatever a model calls it."""

from flax import nnx

from cnnexp.models import create_model
from cnnexp.models.param_paths import output_layer

DIGITS = (8, 8, 1)


def test_the_output_layer_is_found_whatever_the_model_calls_it():
    assert output_layer(create_model("lenet", {}, input_shape=DIGITS, num_classes=10, rngs=nnx.Rngs(1)), DIGITS) == "head"
    simple = create_model("simple_cnn", {}, input_shape=DIGITS, num_classes=10, rngs=nnx.Rngs(0))
    assert output_layer(simple, DIGITS) == "classifier.out"
