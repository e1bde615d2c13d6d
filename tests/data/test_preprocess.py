"""data.preprocess: what each transform does to the training images, that only the training split
shapes it, and that a run stores it and gets the same one back on resume and in evaluation."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers.commands import TINY, assert_one_line_error, cnnexp_executable, read_summary, train_tiny_run
from omegaconf import OmegaConf

from cnnexp.cli import compose_config, register_hydra_extensions
from cnnexp.config import validate_config
from cnnexp.data import load_dataset, validate_data_options
from cnnexp.data.dataset import Split, build_dataset
from cnnexp.data.preprocess import (
    FILE,
    Preprocessing,
    apply_preprocessing,
    fit_preprocessing,
    load_preprocessing,
    save_preprocessing,
)
from cnnexp.errors import UserError
from cnnexp.runs.trained import load_trained_run
from cnnexp.training.run import Trainer

# Run with whitening and augmentation: evaluation must see the stored transform and no augmentation.
ZCA_RUN = ["data.preprocess=zca", "data.augment.translate=1", "data.augment.rotate=10", "data.augment.erase=0.25"]


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
    assert load_preprocessing(tmp_path) is None  # a run folder from before preprocessing was stored
    save_preprocessing(tmp_path, prep)
    loaded = load_preprocessing(tmp_path)
    assert loaded.kind == kind and [p.name for p in tmp_path.iterdir()] == [FILE]
    for field in ("mean", "std", "matrix"):
        want, have = getattr(prep, field), getattr(loaded, field)
        assert (want is None and have is None) or (have.dtype == want.dtype and np.array_equal(have, want))


@pytest.mark.parametrize(("overrides", "message"), [
    ({"preprocess": "whiten"}, "invalid data.preprocess='whiten': choose one of none, center, standardize, pca, zca"),
    ({"whitening_epsilon": 0}, "invalid data.whitening_epsilon=0: must be a number > 0"),
    ({"whitening_epsilon": "small"}, "invalid data.whitening_epsilon='small'"),
])
def test_bad_preprocess_options_are_one_line_errors(overrides, message):
    data_cfg = OmegaConf.create({"preprocess": "zca", "whitening_epsilon": 0.01,
                                 "augment": {"translate": 0, "flip": False, "rotate": 0, "erase": 0.0}} | overrides)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        validate_data_options(data_cfg)
    assert "\n" not in str(error.value)


def test_an_unknown_preprocess_stops_the_command_before_anything_runs(cnnexp, tmp_path):
    result = cnnexp("train", *TINY, "data.preprocess=whiten")
    assert_one_line_error(result, "invalid data.preprocess='whiten': choose one of none, center, standardize, pca, zca")
    assert not (tmp_path / "outputs").exists()


@pytest.fixture(scope="module")
def zca_run(tmp_path_factory, shared_env) -> Path:
    return train_tiny_run(tmp_path_factory.mktemp("zca"), shared_env, *ZCA_RUN)


def test_the_run_stores_its_fit_on_its_own_training_split(zca_run):
    stored = load_preprocessing(zca_run)
    assert stored.kind == "zca" and stored.matrix.shape == (64, 64) and stored.mean.shape == (8, 8, 1)
    cfg = OmegaConf.load(zca_run / ".hydra" / "config.yaml")
    refitted = load_dataset(cfg.data, cfg.seed).preprocessing
    np.testing.assert_array_equal(stored.matrix, refitted.matrix)
    assert read_summary(zca_run)["preprocess"] == "zca"


def test_evaluate_sees_the_stored_transform_and_no_augmentation(zca_run, shared_env):
    """The run's own test numbers came from eval steps built with augmentation on; evaluate
    rebuilds the inputs from the stored file and gets exactly them."""
    result = subprocess.run([cnnexp_executable(), "evaluate", f"run={zca_run}", "checkpoint=last"],
                            env=shared_env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    evaluation = json.loads((zca_run / "evaluate" / "evaluation.json").read_text())
    summary = read_summary(zca_run)
    assert summary["test_accuracy"] > 0.3  # learned something, so a different transform would show
    assert evaluation["test_accuracy"] == pytest.approx(summary["test_accuracy"], abs=1e-6)
    assert evaluation["test_loss"] == pytest.approx(summary["test_loss"], rel=1e-4)


def _altered_copy(run: Path, destination: Path) -> Preprocessing:
    """Copy `run` and shift its stored mean: what reads the file now differs from a fresh fit."""
    shutil.copytree(run, destination, ignore=shutil.ignore_patterns("evaluate"))
    stored = load_preprocessing(destination)
    altered = Preprocessing(stored.kind, stored.mean + np.float32(0.25), stored.std, stored.matrix)
    save_preprocessing(destination, altered)
    return altered


def test_evaluate_and_visualize_read_the_stored_file_and_older_runs_refit(zca_run, tmp_path):
    altered = _altered_copy(zca_run, tmp_path / "run")
    run = load_trained_run(tmp_path / "run", "last")
    np.testing.assert_array_equal(run.preprocessing.mean, altered.mean)
    pixels = np.linspace(0, 1, 2 * 64, dtype=np.float32).reshape(2, 8, 8, 1)
    np.testing.assert_array_equal(run.normalize(pixels), apply_preprocessing(altered, pixels))
    (tmp_path / "run" / FILE).unlink()  # as a run folder from before the file existed
    np.testing.assert_array_equal(load_trained_run(tmp_path / "run", "last").preprocessing.mean,
                                  load_preprocessing(zca_run).mean)


def _resumed_trainer(run: Path, *overrides: str) -> Trainer:
    """A Trainer continuing `run` (a ZCA_RUN) with `overrides` changed, built as `cnnexp train resume=` builds it."""
    register_hydra_extensions()
    merged = {o.split("=")[0]: o for o in [*TINY, *ZCA_RUN, *overrides, f"resume={run}"]}
    cfg = compose_config("train", list(merged.values()), validate_config)
    trainer = Trainer(cfg, run, "test")
    try:
        trainer.build()
    finally:
        if hasattr(trainer, "checkpoints"):
            trainer.checkpoints.close()
    return trainer


def test_resume_uses_the_stored_transform_and_evaluation_ignores_augmentation(zca_run, tmp_path):
    shutil.copytree(zca_run, tmp_path / "same")
    # Augmentation off now: the run's test numbers (computed with it on) must not change.
    trainer = _resumed_trainer(tmp_path / "same", "data.augment.translate=0", "data.augment.rotate=0",
                               "data.augment.erase=0")
    loss, accuracy = trainer.evaluate("test")
    summary = read_summary(zca_run)
    assert accuracy == pytest.approx(summary["test_accuracy"], abs=1e-6)
    assert loss == pytest.approx(summary["test_loss"], rel=1e-5)

    altered = _altered_copy(zca_run, tmp_path / "altered")
    np.testing.assert_array_equal(np.asarray(_resumed_trainer(tmp_path / "altered").preprocessing.mean), altered.mean)


def test_resuming_with_another_preprocess_is_refused(zca_run, tmp_path):
    shutil.copytree(zca_run, tmp_path / "run")
    refused = "trained with data.preprocess=zca; this run is configured with data.preprocess=pca"
    with pytest.raises(UserError, match=refused):
        _resumed_trainer(tmp_path / "run", "data.preprocess=pca")
