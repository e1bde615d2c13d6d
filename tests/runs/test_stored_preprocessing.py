"""A run stores its preprocessing (data.preprocess) and gets the same one back on resume and in
evaluation, whatever the config says now."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers.commands import TINY, read_summary, run_cnnexp, run_dirs, train_tiny_run
from helpers.shared import build_once
from omegaconf import OmegaConf

from cnnexp.app.compose import compose_config
from cnnexp.app.extensions import register_hydra_extensions
from cnnexp.config import validate_config
from cnnexp.data import load_dataset
from cnnexp.data.preprocess import Preprocessing, apply_preprocessing, load_preprocessing, save_preprocessing
from cnnexp.errors import UserError
from cnnexp.runs.layout import PREPROCESSING_FILE
from cnnexp.training.run import Trainer
from cnnexp.training.trained_run import load_trained_run

pytestmark = pytest.mark.slow  # every test here runs the installed command

# Run with whitening and augmentation: evaluation must see the stored transform and no augmentation.
ZCA_RUN = ["data.preprocess=zca", "data.augment.translate=1", "data.augment.rotate=10", "data.augment.erase=0.25"]


@pytest.fixture(scope="session")
def zca_run(tmp_path_factory, shared_env) -> Path:
    """A ZCA_RUN, then `cnnexp evaluate run=<it> checkpoint=last` (evaluate/ in the run folder). Read only."""

    def build(root: Path) -> None:
        run = train_tiny_run(root, shared_env, *ZCA_RUN)
        result = run_cnnexp("evaluate", f"run={run}", "checkpoint=last", cwd=root, env=shared_env)
        assert result.returncode == 0, result.stderr[-3000:]

    root, _ = build_once(tmp_path_factory, "zca-run", build)
    (run,) = run_dirs(root / "outputs")
    return run


def test_the_run_stores_its_fit_on_its_own_training_split(zca_run):
    stored = load_preprocessing(zca_run / PREPROCESSING_FILE)
    assert stored.kind == "zca" and stored.matrix.shape == (64, 64) and stored.mean.shape == (8, 8, 1)
    cfg = OmegaConf.load(zca_run / ".hydra" / "config.yaml")
    refitted = load_dataset(cfg.data, cfg.seed).preprocessing
    np.testing.assert_array_equal(stored.matrix, refitted.matrix)
    assert read_summary(zca_run)["preprocess"] == "zca"


def test_evaluate_sees_the_stored_transform_and_no_augmentation(zca_run):
    """The run's own test numbers came from eval steps built with augmentation on; evaluate (run
    by the fixture) rebuilds the inputs from the stored file and gets exactly them."""
    evaluation = json.loads((zca_run / "evaluate" / "evaluation.json").read_text())
    summary = read_summary(zca_run)
    assert summary["test_accuracy"] > 0.3  # learned something, so a different transform would show
    assert evaluation["test_accuracy"] == pytest.approx(summary["test_accuracy"], abs=1e-6)
    assert evaluation["test_loss"] == pytest.approx(summary["test_loss"], rel=1e-4)


def _altered_copy(run: Path, destination: Path) -> Preprocessing:
    """Copy `run` and shift its stored mean: what reads the file now differs from a fresh fit."""
    shutil.copytree(run, destination, ignore=shutil.ignore_patterns("evaluate"))
    stored = load_preprocessing(destination / PREPROCESSING_FILE)
    altered = Preprocessing(stored.kind, stored.mean + np.float32(0.25), stored.std, stored.matrix)
    save_preprocessing(destination / PREPROCESSING_FILE, altered)
    return altered


def test_evaluate_and_visualize_read_the_stored_file_and_older_runs_refit(zca_run, tmp_path):
    altered = _altered_copy(zca_run, tmp_path / "run")
    run = load_trained_run(tmp_path / "run", "last")
    np.testing.assert_array_equal(run.preprocessing.mean, altered.mean)
    pixels = np.linspace(0, 1, 2 * 64, dtype=np.float32).reshape(2, 8, 8, 1)
    np.testing.assert_array_equal(run.normalize(pixels), apply_preprocessing(altered, pixels))
    (tmp_path / "run" / PREPROCESSING_FILE).unlink()  # as a run folder from before the file existed
    np.testing.assert_array_equal(load_trained_run(tmp_path / "run", "last").preprocessing.mean,
                                  load_preprocessing(zca_run / PREPROCESSING_FILE).mean)


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
