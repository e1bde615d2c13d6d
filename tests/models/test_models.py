"""The contract every registered model keeps (timm-style: one test per model, parametrized).

New models are covered by registering them; nothing here names a family. Full-width models
are narrowed with `model.width` where they have it, so the whole file stays fast on CPU."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers.models import marked_slow
from helpers.paths import CONF_MODEL
from omegaconf import OmegaConf

from cnnexp.data.preprocess import Preprocessing
from cnnexp.errors import UserError
from cnnexp.models import count_params, create_model, list_models
from cnnexp.models.registry import accepted_options
from cnnexp.runs.checkpoints import RunCheckpoints, abstract_like
from cnnexp.training.losses import make_loss
from cnnexp.training.steps import gathering, init_state, make_train_step

SHAPE = (8, 8, 1)  # the bundled digits
CLASSES = 10
BATCH = 16
# Their real builds (the initializers compile once per parameter shape) and first compilations take
# seconds each: their rows are slow.
HEAVY = ("alexnet", "alexnet_lite", "densenet", "inception", "inception_resnet", "resnet", "speednet", "vgg", "zfnet")


def plain(tree):
    """`tree` as numpy arrays, PRNG keys as their raw data, to compare with np.array_equal."""
    return jax.tree.map(
        lambda a: np.asarray(jax.random.key_data(a) if jnp.issubdtype(a.dtype, jax.dtypes.prng_key) else a), tree
    )


# Fewer layers where a family's depth is an option of its own (DenseNet-BC-100 has 48 dense layers).
FEWER_LAYERS = {"densenet": {"block_layers": [2, 2, 2]}, "inception_resnet": {"blocks": [1, 1, 1]}}


def small_options(name: str) -> dict:
    return {**({"width": 0.25} if "width" in accepted_options(name) else {}), **FEWER_LAYERS.get(name, {})}


def build(name: str, shape=SHAPE, seed: int = 0, **options) -> nnx.Module:
    return create_model(name, {**small_options(name), **options}, input_shape=shape, num_classes=CLASSES,
                        rngs=nnx.Rngs(seed))


def fixed_batch(shape=SHAPE):
    images = jax.random.randint(jax.random.key(1), (BATCH, *shape), 0, 256).astype(jnp.uint8)
    labels = jnp.arange(BATCH, dtype=jnp.int32) % CLASSES
    return images, labels


def _forward():
    return nnx.jit(lambda model, x: model(x))  # one compilation per mode: faster than op by op


@pytest.mark.parametrize("name", marked_slow(list_models(), HEAVY))
@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3), (8, 8, 1)])
def test_every_model_maps_images_to_class_logits(name, shape):
    model = build(name, shape)
    model.eval()
    logits = _forward()(model, jnp.ones((2, *shape)))
    assert logits.shape == (2, CLASSES)
    assert bool(jnp.all(jnp.isfinite(logits)))


@pytest.mark.parametrize("name", marked_slow(list_models(), HEAVY))
def test_one_train_step_lowers_the_loss_on_a_fixed_batch(name):
    model = build(name)
    tx = optax.adam(1e-3)
    model.train()
    train_graphdef, state = init_state(model, tx)
    # Training-mode forward (batch statistics) without dropout, so the two losses compare.
    model.set_attributes(deterministic=True, use_running_average=False, raise_if_not_found=False)
    measure_graphdef, _, _ = nnx.split(model, nnx.Param, ...)
    images, labels = fixed_batch()
    x = (images.astype(jnp.float32) / 255.0 - 0.5) / 0.25

    def loss(state):
        logits = nnx.merge(measure_graphdef, state.params, state.model_state)(x)
        return float(optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean())

    step = jax.jit(gathering(make_train_step(train_graphdef, tx, loss=make_loss("cross_entropy")), BATCH))
    preprocessing = Preprocessing("standardize", np.float32(0.5), np.float32(0.25))
    before = loss(state)
    state = step(state, images, labels, preprocessing, jnp.arange(BATCH, dtype=jnp.int32), np.int32(0))
    assert int(state.step) == 1
    assert loss(state) < before


@pytest.mark.parametrize("name", marked_slow(list_models(), HEAVY))
def test_eval_is_deterministic_and_leaves_the_state_alone(name):
    model = build(name)
    model.eval()
    before = plain(nnx.state(model))
    x = jax.random.normal(jax.random.key(2), (4, *SHAPE))
    first, second = model(x), model(x)
    assert bool(jnp.array_equal(first, second))
    after = plain(nnx.state(model))
    assert jax.tree.all(jax.tree.map(lambda a, b: np.array_equal(a, b), before, after))


@pytest.mark.parametrize("name", marked_slow(list_models(), HEAVY))
def test_checkpoint_round_trips_params_and_model_state(name, tmp_path):
    model = build(name)
    model.train()
    _, state = init_state(model, optax.sgd(0.1))
    checkpoints = RunCheckpoints(tmp_path, keep=1)
    checkpoints.save(state, {"step": 3}, best=False)
    checkpoints.wait()
    restored, meta = checkpoints.restore_latest(abstract_like(state))
    checkpoints.close()
    assert meta == {"step": 3}
    assert jax.tree.all(jax.tree.map(np.array_equal, plain(state), plain(restored)))


@pytest.mark.parametrize("name", marked_slow([n for n in list_models() if "norm" in accepted_options(n)], HEAVY))
def test_training_mode_updates_batch_statistics_and_eval_mode_uses_them(name):
    model = build(name, norm="batch")
    stats = lambda: plain(nnx.state(model, nnx.BatchStat))  # noqa: E731
    x = jax.random.normal(jax.random.key(3), (BATCH, *SHAPE)) * 3 + 1
    forward, initial = _forward(), stats()
    assert jax.tree.leaves(initial), f"{name} with norm=batch has no batch statistics"
    model.eval()
    forward(model, x)
    assert jax.tree.all(jax.tree.map(np.array_equal, initial, stats()))
    model.train()
    forward(model, x)
    assert not jax.tree.all(jax.tree.map(np.array_equal, initial, stats()))


@pytest.mark.parametrize("name", marked_slow([n for n in list_models() if "dropout" in accepted_options(n)], HEAVY))
def test_dropout_is_random_in_training_mode_only(name):
    model = build(name, dropout=0.5)
    x = jax.random.normal(jax.random.key(4), (4, *SHAPE))
    forward = _forward()
    model.train()
    assert not jnp.allclose(forward(model, x), forward(model, x))
    model.eval()
    assert jnp.array_equal(forward(model, x), forward(model, x))


# Tracing these takes seconds.
@pytest.mark.parametrize("name", marked_slow(list_models(), ("densenet", "inception", "inception_resnet")))
def test_model_config_lists_every_option_with_the_builders_default(name):
    """conf/model/<name>.yaml is the user's reference: it must match what the builder takes."""
    config = OmegaConf.to_container(OmegaConf.load(CONF_MODEL / f"{name}.yaml"))
    assert config.pop("name") == name
    assert sorted(config) == sorted(accepted_options(name))
    abstract = lambda options: nnx.eval_shape(  # noqa: E731
        lambda: create_model(name, options, input_shape=SHAPE, num_classes=CLASSES, rngs=nnx.Rngs(0))
    )
    # The graph definitions hold every static setting (LayerOptions, strides, stem kind, ...).
    assert nnx.graphdef(abstract(config)) == nnx.graphdef(abstract({}))


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


def test_maxout_doubles_the_layers_that_feed_it():
    plain = create_model("lenet", {}, input_shape=(28, 28, 1), num_classes=10, rngs=nnx.Rngs(0))
    maxout = create_model("lenet", {"activation": "maxout"}, input_shape=(28, 28, 1), num_classes=10,
                          rngs=nnx.Rngs(0))
    # C1 6->12 maps, C3 16->32, F5 120->240, F6 84->168 outputs; C3, F5, F6 and the output
    # layer still read the maxed (halved) widths.
    assert count_params(maxout) == 312 + 4_832 + 96_240 + 20_328 + 850
    assert count_params(plain) == 61_706


def test_unknown_model_lists_the_registered_ones():
    with pytest.raises(UserError, match="registered models: .*lenet"):
        create_model("lenett", {}, input_shape=(28, 28, 1), num_classes=10, rngs=nnx.Rngs(0))


def test_unknown_model_option_lists_the_valid_ones():
    with pytest.raises(UserError, match="no option model.widht.*model.activation"):
        create_model("lenet", {"widht": 2}, input_shape=(28, 28, 1), num_classes=10, rngs=nnx.Rngs(0))


@pytest.mark.parametrize(
    "option", [{"activation": "swishy"}, {"pool": "median"}, {"conv_impl": "fft"}, {"pool_impl": "fast"}]
)
def test_unknown_shared_option_value_is_a_user_error(option):
    with pytest.raises(UserError, match="choose one of"):
        create_model("lenet", option, input_shape=(28, 28, 1), num_classes=10, rngs=nnx.Rngs(0))
