"""data.augment: each operation does what it says on tiny images, the draws follow the seed and the
step only, the train step applies them, and the same seed gives the same run."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers.commands import assert_one_line_error, stable_metrics, train_tiny_run
from omegaconf import OmegaConf

from cnnexp.data import validate_data_options
from cnnexp.data.augment import augment_key, erase, flip, make_augment, rotate, translate
from cnnexp.data.preprocess import Preprocessing
from cnnexp.errors import UserError
from cnnexp.models import create_model
from cnnexp.training.losses import make_loss
from cnnexp.training.steps import gathering, init_state, make_train_step

OFF = {"translate": 0, "flip": False, "rotate": 0, "erase": 0.0}
STRONG = {"translate": 1, "flip": True, "rotate": 15, "erase": 0.25}  # translate 1: digits are 8x8
KEYS = jax.random.split(jax.random.key(0), 200)


def augment_cfg(**changes):
    return OmegaConf.create(OFF | changes)


def asymmetric_image(size: int = 9) -> jnp.ndarray:
    """A size x size x 1 image with no mirror or rotation symmetry."""
    return jnp.arange(size * size, dtype=jnp.float32).reshape(size, size, 1) / (size * size)


def test_flip_mirrors_left_right_about_half_the_time():
    image = np.asarray(asymmetric_image())
    outs = np.asarray(jax.jit(jax.vmap(flip, (0, None)))(KEYS, image))
    flipped, kept = (outs == image[:, ::-1]).all(axis=(1, 2, 3)), (outs == image).all(axis=(1, 2, 3))
    assert np.all(flipped != kept)  # always one or the other
    assert 70 < flipped.sum() < 130


def test_translate_moves_the_content_by_at_most_its_pixels_in_every_direction():
    dot = jnp.zeros((9, 9, 1)).at[4, 4, 0].set(1.0)
    moves = set()
    for out in jax.jit(jax.vmap(lambda key: translate(key, dot, pixels=2)))(KEYS):
        (row,), (col,) = np.nonzero(np.asarray(out[..., 0]))  # one dot, nothing else, nothing lost
        assert float(out.sum()) == 1.0
        moves.add((int(row) - 4, int(col) - 4))
    assert moves == {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)}


def test_rotate_by_zero_is_the_identity_and_otherwise_turns_about_the_centre():
    image = asymmetric_image()
    np.testing.assert_allclose(rotate(KEYS[0], image, degrees=0.0), image, atol=1e-6)
    turned = jax.jit(jax.vmap(lambda key: rotate(key, image, degrees=30.0)))(KEYS[:20])
    assert all(not np.allclose(out, image, atol=1e-3) for out in turned)
    np.testing.assert_allclose(turned[:, 4, 4, 0], float(image[4, 4, 0]), atol=1e-6)  # the centre stays


def test_erase_blanks_one_rectangle_only_as_often_as_asked():
    ones = jnp.ones((16, 16, 1))
    erased = jax.jit(jax.vmap(lambda key, probability: erase(key, ones, probability), (0, None)))
    assert bool(jnp.all(erased(KEYS, 0.0) == 1))
    for out in np.asarray(erased(KEYS, 1.0)):
        rows, cols = np.nonzero(np.asarray(out[..., 0]) == 0)
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert len(rows) == height * width  # one filled rectangle
        assert 0.02 * 256 / 2 <= len(rows) <= 0.2 * 256 * 1.5  # ERASE_AREA, give or take rounding
    assert 30 < np.any(np.asarray(erased(KEYS, 0.25)) == 0, axis=(1, 2, 3)).sum() < 70


def test_make_augment_is_none_when_all_is_off_and_keeps_shapes_and_range():
    assert make_augment(augment_cfg(), (8, 8, 1)) is None
    augment = jax.jit(make_augment(OmegaConf.create(STRONG), (8, 8, 3)))
    images = jax.random.uniform(jax.random.key(1), (16, 8, 8, 3))
    out = augment(KEYS[0], images)
    assert out.shape == images.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert not np.allclose(out, images)


def test_draws_follow_the_seed_and_the_step_only():
    augment = jax.jit(make_augment(OmegaConf.create(STRONG), (8, 8, 1)))
    images = jax.random.uniform(jax.random.key(1), (16, 8, 8, 1))
    same = [augment(augment_key(0, jnp.int32(5)), images) for _ in range(2)]
    np.testing.assert_array_equal(same[0], same[1])
    assert not np.array_equal(same[0], augment(augment_key(0, jnp.int32(6)), images))
    assert not np.array_equal(same[0], augment(augment_key(1, jnp.int32(5)), images))


@pytest.mark.parametrize(("changes", "message"), [
    ({"translate": -1}, "invalid data.augment.translate=-1: must be an integer >= 0"),
    ({"translate": 1.5}, "invalid data.augment.translate=1.5: must be an integer >= 0"),
    ({"flip": "yes"}, "invalid data.augment.flip='yes': must be true or false"),
    ({"rotate": -5}, r"invalid data.augment.rotate=-5: must be a number of degrees in \[0, 180\]"),
    ({"rotate": 190}, r"invalid data.augment.rotate=190: must be a number of degrees in \[0, 180\]"),
    ({"erase": 1.5}, r"invalid data.augment.erase=1.5: must be a probability in \[0, 1\]"),
])
def test_bad_augment_options_are_one_line_errors(changes, message):
    data_cfg = OmegaConf.create({"name": "digits", "val_fraction": 0.1, "preprocess": "standardize",
                                "whitening_epsilon": 0.01, "augment": OFF | changes})
    with pytest.raises(UserError, match=message):
        validate_data_options(data_cfg)


@pytest.mark.slow
def test_the_train_step_applies_the_augmentation_of_its_seed():
    """One step from the same state: augmentation, and another seed with it, change the update."""
    model = create_model("lenet", {}, input_shape=(8, 8, 1), num_classes=10, rngs=nnx.Rngs(0))
    model.train()
    tx = optax.sgd(0.1)
    graphdef, state = init_state(model, tx)
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (32, 8, 8, 1), np.uint8), rng.integers(0, 10, 32).astype(np.int32)
    batch = (images, labels, Preprocessing("standardize", np.float32(0.3), np.float32(0.3)),
             np.arange(32, dtype=np.int32), np.int32(0))

    def params_after(augment, seed=0):
        step = jax.jit(gathering(make_train_step(graphdef, tx, loss=make_loss("cross_entropy"), augment=augment,
                                                 seed=seed), 32))
        return np.concatenate([np.ravel(p) for p in jax.tree.leaves(step(state, *batch).params)])

    flips = make_augment(augment_cfg(flip=True), (8, 8, 1))  # the cheapest to compile
    augmented = params_after(flips)
    assert not np.allclose(params_after(None), augmented)
    assert not np.allclose(params_after(flips, seed=1), augmented)


@pytest.mark.slow
def test_the_same_seed_gives_the_same_augmented_run(tmp_path, shared_env):
    strong = ["data/augment=strong", "data.augment.translate=1", "trainer.epochs=1"]
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    first = train_tiny_run(tmp_path / "a", shared_env, *strong)
    second = train_tiny_run(tmp_path / "b", shared_env, *strong)
    assert stable_metrics(first) == stable_metrics(second)
    assert "augment translate=1, flip=True, rotate=15, erase=0.25" in (first / "train.log").read_text()


@pytest.mark.slow
def test_translate_as_big_as_the_images_is_a_one_line_error(cnnexp):
    assert_one_line_error(cnnexp("train", "data=digits", "data.augment.translate=8", "trainer.progress=false"),
                          "invalid data.augment.translate=8: must be below the image size (8 px)")
