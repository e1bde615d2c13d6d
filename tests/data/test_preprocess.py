"""data.preprocess: what each transform does to the training images, and that only the training
split shapes it (what a run stores and reads back: runs/test_stored_preprocessing.py)."""


import numpy as np
import pytest
from helpers.commands import TINY, assert_one_line_error
from omegaconf import OmegaConf

from cnnexp.data import validate_data_options
from cnnexp.data.dataset import Split, build_dataset
from cnnexp.data.preprocess import (
    Preprocessing,
    apply_preprocessing,
    fit_preprocessing,
    load_preprocessing,
    save_preprocessing,
)
from cnnexp.errors import UserError
from cnnexp.runs.layout import PREPROCESSING_FILE


def correlated_images(count: int = 3000, shape=(4, 4, 2), seed: int = 0) -> np.ndarray:
    """uint8 images whose pixels are strongly correlated (a random mixing of independent sources)
    but whose covariance has full rank, well inside 0..255 so nothing is clipped."""
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape))
    mixing = rng.normal(size=(size, size)) + 2.0 * np.eye(size) + 1.5  # the 1.5 makes every pair correlated
    sources = rng.uniform(-1, 1, size=(count, size))
    pixels = sources @ mixing.T
    pixels = 128 + 100 * pixels / np.abs(pixels).max()
    return np.round(pixels).astype(np.uint8).reshape(count, *shape)


def inputs(prep: Preprocessing, images: np.ndarray) -> np.ndarray:
    """What the model sees, flattened to (N, D), in float64 for the statistics."""
    out = np.asarray(apply_preprocessing(prep, images.astype(np.float32) / 255.0), np.float64)
    return out.reshape(len(images), -1)


def test_zca_makes_the_training_covariance_the_identity():
    images = correlated_images()
    before = np.cov(images.reshape(len(images), -1) / 255.0, rowvar=False)
    assert np.abs(before - np.diag(np.diag(before))).max() > 0.5 * np.diag(before).mean()  # really correlated
    prep = fit_preprocessing("zca", images, epsilon=1e-10)
    x = inputs(prep, images)
    np.testing.assert_allclose(x.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(np.cov(x, rowvar=False, bias=True), np.eye(x.shape[1]), atol=1e-3)
    # ZCA is the symmetric whitening: the one closest to the images themselves.
    np.testing.assert_allclose(prep.matrix, prep.matrix.T, atol=1e-3 * np.abs(prep.matrix).max())


def test_pca_decorrelates_into_components_of_unit_variance_largest_first():
    images = correlated_images()
    prep = fit_preprocessing("pca", images, epsilon=1e-10)
    covariance = np.cov(inputs(prep, images), rowvar=False, bias=True)
    off_diagonal = covariance - np.diag(np.diag(covariance))
    assert np.abs(off_diagonal).max() < 1e-3
    np.testing.assert_allclose(np.diag(covariance), 1, atol=1e-3)
    # The first row of the matrix is the direction of largest variance of the centred pixels.
    centred = images.reshape(len(images), -1) / 255.0 - prep.mean.reshape(-1)
    variance_along = [np.var(centred @ row) for row in prep.matrix / np.linalg.norm(prep.matrix, axis=1, keepdims=True)]
    assert np.argmax(variance_along) == 0 and not np.allclose(prep.matrix, prep.matrix.T)


def test_epsilon_damps_the_directions_with_less_variance():
    images = correlated_images()
    strong = np.cov(inputs(fit_preprocessing("pca", images, epsilon=1.0), images), rowvar=False, bias=True)
    variances = np.diag(strong)
    assert np.all(variances < 1) and variances[0] > 5 * variances[-1]  # large components keep more


def test_center_and_standardize_are_per_channel_and_none_is_pixels_in_0_1():
    images = correlated_images(shape=(3, 3, 3))
    per_channel = lambda x: x.reshape(len(images), -1, 3).transpose(2, 0, 1).reshape(3, -1)  # noqa: E731
    centred = per_channel(inputs(fit_preprocessing("center", images), images))
    np.testing.assert_allclose(centred.mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(centred.std(axis=1), per_channel(images / 255.0).std(axis=1), rtol=1e-4)
    standardized = per_channel(inputs(fit_preprocessing("standardize", images), images))
    np.testing.assert_allclose(standardized.mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(standardized.std(axis=1), 1, atol=1e-4)
    np.testing.assert_array_equal(inputs(fit_preprocessing("none", images), images),
                                  (images.astype(np.float32) / 255.0).reshape(len(images), -1))


@pytest.mark.parametrize("kind", ["standardize", "zca"])
def test_the_fit_sees_the_training_part_only(kind):
    images = correlated_images(count=400, seed=1)
    labels = np.arange(400, dtype=np.int32) % 10
    test = Split(correlated_images(count=50, seed=2), np.zeros(50, np.int32))
    first = build_dataset("x", Split(images, labels), test, tuple("0123456789"), val_fraction=0.25, seed=3,
                          preprocess=kind, whitening_epsilon=1e-3)
    # Other test images, and other images where validation is carved (the carve depends on the seed only).
    val_rows = {row.tobytes() for row in first.val.images.reshape(len(first.val), -1)}
    in_val = np.array([row.tobytes() in val_rows for row in images.reshape(400, -1)])
    changed = images.copy()
    changed[in_val] = 255 - changed[in_val]
    other_test = Split(np.zeros_like(test.images), test.labels)
    second = build_dataset("x", Split(changed, labels), other_test, tuple("0123456789"), val_fraction=0.25, seed=3,
                           preprocess=kind, whitening_epsilon=1e-3)
    assert in_val.sum() == 100 and not np.array_equal(first.val.images, second.val.images)
    for field in ("mean", "std", "matrix"):
        np.testing.assert_array_equal(getattr(first.preprocessing, field), getattr(second.preprocessing, field))
    np.testing.assert_array_equal(first.preprocessing.mean, fit_preprocessing(kind, first.train.images, 1e-3).mean)


@pytest.mark.parametrize("kind", ["standardize", "pca"])
def test_saved_preprocessing_loads_back_bit_for_bit(tmp_path, kind):
    prep = fit_preprocessing(kind, correlated_images(count=200), epsilon=1e-2)
    assert load_preprocessing(tmp_path / PREPROCESSING_FILE) is None  # a run folder from before preprocessing was stored
    save_preprocessing(tmp_path / PREPROCESSING_FILE, prep)
    loaded = load_preprocessing(tmp_path / PREPROCESSING_FILE)
    assert loaded.kind == kind and [p.name for p in tmp_path.iterdir()] == [PREPROCESSING_FILE]
    for field in ("mean", "std", "matrix"):
        want, have = getattr(prep, field), getattr(loaded, field)
        assert (want is None and have is None) or (have.dtype == want.dtype and np.array_equal(have, want))


@pytest.mark.parametrize(("overrides", "message"), [
    ({"preprocess": "whiten"}, "invalid data.preprocess='whiten': choose one of none, center, standardize, pca, zca"),
    ({"whitening_epsilon": 0}, "invalid data.whitening_epsilon=0: must be a number > 0"),
    ({"whitening_epsilon": "small"}, "invalid data.whitening_epsilon='small'"),
])
def test_bad_preprocess_options_are_one_line_errors(overrides, message):
    data_cfg = OmegaConf.create({"name": "digits", "val_fraction": 0.1, "preprocess": "zca", "whitening_epsilon": 0.01,
                                 "augment": {"translate": 0, "flip": False, "rotate": 0, "erase": 0.0}} | overrides)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        validate_data_options(data_cfg)
    assert "\n" not in str(error.value)


@pytest.mark.slow
def test_an_unknown_preprocess_stops_the_command_before_anything_runs(cnnexp, tmp_path):
    result = cnnexp("train", *TINY, "data.preprocess=whiten")
    assert_one_line_error(result, "invalid data.preprocess='whiten': choose one of none, center, standardize, pca, zca")
    assert not (tmp_path / "outputs").exists()
