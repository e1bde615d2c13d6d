"""SpeedNet (experiment=speedrun): the fitted patch-whitening layer, and that training leaves it alone."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from cnnexp.data.preprocess import Preprocessing
from cnnexp.errors import UserError
from cnnexp.models import count_params, create_model
from cnnexp.models.param_paths import dotted_path
from cnnexp.models.speednet import Whitening, dirac_init, fit_whitening, patches, whitening_kernel
from cnnexp.training.losses import make_loss
from cnnexp.training.steps import gathering, init_state, make_train_step

SMALL = {"widths": [8, 16]}  # two small conv groups: fast to build and run eagerly
EPS = 5e-4


def build(options=None, shape=(12, 12, 1), classes=10, seed=0):
    return create_model("speednet", {**SMALL, **(options or {})}, input_shape=shape, num_classes=classes,
                        rngs=nnx.Rngs(seed))


def correlated_images(n=64, shape=(12, 12, 1), seed=0) -> np.ndarray:
    """Smooth, channel-mixed noise: neighbouring pixels and channels strongly correlated, unequal
    variances, so the raw 2x2 patch covariance is far from the identity."""
    rng = np.random.default_rng(seed)
    h, w, c = shape
    noise = rng.normal(size=(n, h + 1, w + 1, c))
    smooth = (noise[:, 1:, 1:] + noise[:, :-1, 1:] + noise[:, 1:, :-1] + noise[:, :-1, :-1]) / 2
    mix = np.triu(np.ones((c, c))) * np.arange(1, c + 1)
    return (smooth @ mix + 0.3 * rng.normal(size=(n, h, w, c))).astype(np.float32)


def flat_paths(state) -> list[str]:
    return [dotted_path(path) for path, _ in nnx.to_flat_state(state)]


@pytest.mark.parametrize("channels", [1, 3])
def test_whitening_decorrelates_the_patches_it_was_fitted_on(channels):
    pixels = correlated_images(shape=(12, 12, channels))
    raw = patches(pixels.astype(np.float64))
    raw_moment = raw.T @ raw / len(raw)
    assert np.linalg.cond(raw_moment) > 5  # a real test: far from white before

    model = build({"whiten_bias": False}, shape=(12, 12, channels))
    model.fit_to_data(pixels)
    kernel = np.asarray(model.whiten.kernel[...])
    assert kernel.shape == (2, 2, channels, 8 * channels)
    out = np.asarray(model.whiten(jnp.asarray(pixels)), np.float64).reshape(-1, 8 * channels)
    half = 4 * channels
    moment = out.T @ out / len(out)
    eigenvalues = np.sort(np.linalg.eigvalsh(raw_moment))[::-1]
    # The first half: uncorrelated components with second moments lambda / (lambda + eps), ~1,
    # in order of decreasing eigenvalue; the second half: their negatives.
    np.testing.assert_allclose(moment[:half, :half], np.diag(eigenvalues / (eigenvalues + EPS)), atol=2e-4)
    np.testing.assert_allclose(moment[:half, :half], np.eye(half), atol=0.02)
    np.testing.assert_allclose(out[:, half:], -out[:, :half], atol=1e-5)


def test_whitening_kernel_is_fitted_in_place_and_checks_its_input():
    model, pixels = build(), correlated_images()
    before = np.asarray(model.whiten.kernel[...])
    fit_whitening(model, pixels)
    after = np.asarray(model.whiten.kernel[...])
    assert not np.allclose(before, after)
    np.testing.assert_array_equal(after, whitening_kernel(pixels, EPS))
    with pytest.raises(ValueError, match="3 channels|1 channels"):
        fit_whitening(model, np.zeros((4, 12, 12, 3), np.float32))


def test_whitening_kernel_is_model_state_not_a_parameter():
    model = build()
    assert isinstance(model.whiten.kernel, Whitening)
    assert "whiten.kernel" not in flat_paths(nnx.state(model, nnx.Param))
    assert "whiten.bias" in flat_paths(nnx.state(model, nnx.Param))  # the bias does train
    # Saved and loaded with the batch statistics (checkpoints, init_from, evaluate).
    assert "whiten.kernel" in flat_paths(nnx.state(model, nnx.BatchStat))
    _, params, rest = nnx.split(model, nnx.Param, ...)
    assert "whiten.kernel" in flat_paths(rest) and "whiten.kernel" not in flat_paths(params)


@pytest.mark.parametrize(("shape", "classes"), [((28, 28, 1), 10), ((32, 32, 3), 100), ((8, 8, 1), 10)])
def test_forward_maps_images_to_logits(shape, classes):
    model = build(shape=shape, classes=classes)
    model.eval()
    logits = model(jnp.ones((2, *shape)))
    assert logits.shape == (2, classes) and bool(jnp.all(jnp.isfinite(logits)))


def test_parameter_counts_are_stable():
    # whiten bias 8; per group: conv1 9*in*out, conv2 9*out*out, two BN shifts (no BN scale);
    # head 256*10, no bias.
    default = nnx.eval_shape(lambda: create_model("speednet", {}, input_shape=(28, 28, 1), num_classes=10,
                                                  rngs=nnx.Rngs(0)))
    expected = 8 + sum(9 * i * o + 9 * o * o + 2 * o for i, o in [(8, 64), (64, 256), (256, 256)]) + 256 * 10
    assert count_params(default) == expected == 1_962_120
    abstract = lambda options: nnx.eval_shape(lambda: build(options, shape=(28, 28, 1)))  # noqa: E731
    assert count_params(abstract({"width": 0.125, "widths": [64, 256, 256]})) == 8 + sum(
        9 * i * o + 9 * o * o + 2 * o for i, o in [(8, 8), (8, 32), (32, 32)]) + 32 * 10
    assert count_params(abstract({"whiten_bias": False, "widths": [16], "width": 0.125})) == \
        9 * 8 * 2 + 9 * 2 * 2 + 2 * 2 + 2 * 10


def test_dirac_init_starts_the_first_filters_as_the_identity():
    kernel = dirac_init()(jax.random.key(0), (3, 3, 4, 6))
    x = jax.random.normal(jax.random.key(1), (1, 5, 5, 4))
    y = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(y[..., :4], x, atol=1e-6)
    assert float(jnp.abs(kernel[..., 4:]).sum()) > 0  # the other filters keep the random init


def test_a_train_step_moves_parameters_not_the_whitening():
    model, shape = build(), (12, 12, 1)
    images = jax.random.randint(jax.random.key(1), (16, *shape), 0, 256).astype(jnp.uint8)
    labels = jnp.arange(16, dtype=jnp.int32) % 10
    preprocessing = Preprocessing("standardize", np.float32(0.5), np.float32(0.25))
    model.fit_to_data((np.asarray(images, np.float32) / 255 - 0.5) / 0.25)
    fitted = np.asarray(model.whiten.kernel[...])
    model.train()
    tx = optax.sgd(0.1, momentum=0.9)
    graphdef, state = init_state(model, tx)
    step = jax.jit(gathering(make_train_step(graphdef, tx, loss=make_loss("cross_entropy", 0.2)), 16))
    new = step(state, images, labels, preprocessing, jnp.arange(16, dtype=jnp.int32), np.int32(0))
    assert int(new.step) == 1
    before, after = dict(nnx.to_flat_state(state.params)), dict(nnx.to_flat_state(new.params))
    assert not np.allclose(before[("head", "kernel")].value, after[("head", "kernel")].value)
    assert not np.allclose(before[("whiten", "bias")].value, after[("whiten", "bias")].value)
    kernel_after = dict(nnx.to_flat_state(new.model_state))[("whiten", "kernel")].value
    np.testing.assert_array_equal(np.asarray(kernel_after), fitted)
    # The batch statistics did move (fast momentum 0.6).
    mean_path = ("groups", 0, "norm1", "batch_norm", "mean")
    assert not np.allclose(dict(nnx.to_flat_state(state.model_state))[mean_path].value,
                           dict(nnx.to_flat_state(new.model_state))[mean_path].value)


@pytest.mark.parametrize(("option", "value", "message"), [
    ("widths", [], "model.widths"), ("widths", [64, 0], "model.widths"), ("global_pool", "min", "global_pool"),
    ("norm_momentum", 1.0, "norm_momentum"), ("logit_scale", 0, "logit_scale"), ("dirac", "yes", "dirac"),
])
def test_bad_options_are_user_errors(option, value, message):
    with pytest.raises(UserError, match=message):
        build({option: value})
