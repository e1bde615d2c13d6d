import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from cnnexp.errors import UserError
from cnnexp.models import count_params, create_model, list_models


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3), (8, 8, 1)])
def test_every_model_maps_images_to_class_logits(name, shape):
    model = create_model(name, {}, input_shape=shape, num_classes=7, rngs=nnx.Rngs(0))
    model.eval()
    logits = model(jnp.ones((2, *shape)))
    assert logits.shape == (2, 7)
    assert bool(jnp.all(jnp.isfinite(logits)))


def test_lenet_has_the_classic_parameter_count():
    # C1 156 + C3 2,416 + F5 48,120 + F6 10,164 + output 850 (LeCun et al. 1998, 32x32 input).
    model = create_model("lenet", {}, input_shape=(28, 28, 1), num_classes=10, rngs=nnx.Rngs(0))
    assert count_params(model) == 61_706


def test_lenet_classic_variant_differs_only_in_activation_and_pooling():
    x = jax.random.normal(jax.random.key(1), (3, 28, 28, 1))
    relu = create_model("lenet", {}, input_shape=(28, 28, 1), num_classes=10, rngs=nnx.Rngs(0))
    classic = create_model(
        "lenet", {"activation": "tanh", "pool": "avg"}, input_shape=(28, 28, 1), num_classes=10, rngs=nnx.Rngs(0)
    )
    assert count_params(relu) == count_params(classic)
    assert not jnp.allclose(relu(x), classic(x))


def test_unknown_model_lists_the_registered_ones():
    with pytest.raises(UserError, match="registered models: .*lenet"):
        create_model("lenett", {}, input_shape=(28, 28, 1), num_classes=10, rngs=nnx.Rngs(0))


def test_unknown_model_option_lists_the_valid_ones():
    with pytest.raises(UserError, match="no option model.widht.*model.activation"):
        create_model("lenet", {"widht": 2}, input_shape=(28, 28, 1), num_classes=10, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("option", [{"activation": "swishy"}, {"pool": "median"}])
def test_unknown_activation_or_pool_is_a_user_error(option):
    with pytest.raises(UserError, match="choose one of"):
        create_model("lenet", option, input_shape=(28, 28, 1), num_classes=10, rngs=nnx.Rngs(0))
