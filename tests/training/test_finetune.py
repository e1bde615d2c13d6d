"""Fine-tuning (source text 002): `init_from` and the finetune presets, on the bundled digits
(`optim.groups` is tested in test_optim.py, `data.classes` and `data.train_fraction` in
data/test_subsets.py)."""

from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx
from helpers.commands import TINY, assert_one_line_error, read_summary, run_dirs, train_tiny_run
from helpers.shared import build_once

from cnnexp.data.preprocess import load_preprocessing
from cnnexp.errors import UserError
from cnnexp.models import create_model
from cnnexp.models.param_paths import leaf_paths
from cnnexp.runs.checkpoints import read_weights
from cnnexp.runs.layout import PREPROCESSING_FILE
from cnnexp.training.init_from import initialize_from

DIGITS = (8, 8, 1)
FIRST_FIVE = "data.classes=[0,1,2,3,4]"
LAST_FIVE = "data.classes=[5,6,7,8,9]"


@pytest.fixture(scope="session")
def pretrained(tmp_path_factory, shared_env) -> Path:
    """LeNet trained on digits 0-4 (two tiny epochs). Read only."""
    root, _ = build_once(tmp_path_factory, "pretrained", lambda root: train_tiny_run(root, shared_env, FIRST_FIVE))
    (run,) = run_dirs(root / "outputs")
    return run


def lenet(classes: int, seed: int = 1, **options) -> nnx.Module:
    return create_model("lenet", options, input_shape=DIGITS, num_classes=classes, rngs=nnx.Rngs(seed))


def flat_weights(model: nnx.Module) -> dict[str, np.ndarray]:
    state = nnx.state(model, nnx.Param)
    return dict(zip(leaf_paths(state), map(np.asarray, jax.tree.leaves(state)), strict=True))


@pytest.mark.slow
def test_init_from_loads_exactly_the_parameters_whose_path_and_shape_match(pretrained):
    source, _ = read_weights(pretrained, "best")
    model = lenet(classes=3)  # a new head: 3 classes instead of 5
    fresh = flat_weights(model)
    report = initialize_from(model, str(pretrained), output="head", reinit=[], strict=True)
    loaded = flat_weights(model)
    assert set(report.reinitialized) == {"head.kernel", "head.bias"}
    assert sorted(report.loaded) == sorted(set(fresh) - {"head.kernel", "head.bias"})
    for path in report.loaded:
        np.testing.assert_array_equal(loaded[path], source[path])
    for path in report.reinitialized:
        np.testing.assert_array_equal(loaded[path], fresh[path])


@pytest.mark.slow
def test_init_from_reinit_keeps_a_fitting_output_layer_fresh(pretrained):
    model = lenet(classes=5)
    fresh = flat_weights(model)
    report = initialize_from(model, f"{pretrained}/checkpoints/last", output="head", reinit=["@output"], strict=True)
    assert report.checkpoint == "last" and report.reinitialized == {
        "head.kernel": "init_from_reinit", "head.bias": "init_from_reinit"}
    np.testing.assert_array_equal(flat_weights(model)["head.kernel"], fresh["head.kernel"])


@pytest.mark.slow
def test_a_body_that_does_not_fit_is_an_error_unless_not_strict(pretrained):
    maxout = lenet(classes=5, activation="maxout")  # twice the channels in every layer but the head
    with pytest.raises(UserError, match="conv1.kernel: source shape"):
        initialize_from(maxout, str(pretrained), output="head", reinit=[], strict=True)
    report = initialize_from(maxout, str(pretrained), output="head", reinit=[], strict=False)
    assert "conv1.kernel" in report.reinitialized and "head.bias" in report.loaded


@pytest.mark.slow
def test_a_source_of_another_architecture_loads_nothing_and_is_an_error(pretrained):
    other = create_model("simple_cnn", {}, input_shape=DIGITS, num_classes=5, rngs=nnx.Rngs(0))
    with pytest.raises(UserError, match="nothing fits"):
        initialize_from(other, str(pretrained), output="classifier.out", reinit=[], strict=True)
    report = initialize_from(other, str(pretrained), output="classifier.out", reinit=[], strict=False)
    assert report.loaded == [] and "conv1.kernel" in report.skipped


@pytest.mark.slow
def test_a_frozen_body_is_bit_identical_after_training_and_the_run_records_what_it_did(cnnexp, tmp_path, pretrained):
    result = cnnexp("train", *TINY, LAST_FIVE, f"init_from={pretrained}", "init_from_reinit=[@output]",
                    "optim.groups={body:{params:[conv*,fc*],lr_scale:0}}")
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = run_dirs(tmp_path / "outputs")
    summary = read_summary(run)
    assert summary["init_from"]["reinitialized"] == {"head.kernel": "init_from_reinit", "head.bias": "init_from_reinit"}
    assert summary["param_groups"]["body"]["lr_scale"] == 0.0
    assert summary["param_groups"]["rest"]["params"] == ["head.bias", "head.kernel"]
    source, _ = read_weights(pretrained, "best")
    trained, _ = read_weights(run, "last")
    for path in summary["param_groups"]["body"]["params"]:
        np.testing.assert_array_equal(trained[path], source[path])
    assert not np.array_equal(trained["head.kernel"], source["head.kernel"])
    # The inputs are transformed as the source run's were, not refitted on digits 5-9.
    np.testing.assert_array_equal(load_preprocessing(run / PREPROCESSING_FILE).mean, load_preprocessing(pretrained / PREPROCESSING_FILE).mean)
    assert "2 re-initialized" in result.stdout and "re-initialized head.kernel (init_from_reinit)" in result.stdout


@pytest.mark.slow
def test_init_from_a_folder_that_is_no_run_is_a_one_line_error(cnnexp, tmp_path):
    assert_one_line_error(cnnexp("train", *TINY, f"init_from={tmp_path}"), "not a run folder")


@pytest.mark.slow
def test_init_from_a_run_with_other_preprocessing_is_a_one_line_error(cnnexp, pretrained):
    result = cnnexp("train", *TINY, f"init_from={pretrained}", "data.preprocess=center")
    assert_one_line_error(result, "was trained with data.preprocess=standardize")


@pytest.mark.slow
def test_finetune_presets_run_end_to_end(cnnexp, tmp_path):
    """The presets of `make reproduce-finetune`, each for one tiny epoch on digits."""
    tiny = [*TINY, "trainer.epochs=1", "trainer.batch_size=32", "data.train_fraction=0.5"]
    first = cnnexp("train", "-m", "experiment=finetune_pretrain,finetune_scratch", *tiny,
                   f"hydra.sweep.dir={tmp_path / 'first'}")
    assert first.returncode == 0, first.stderr[-3000:]
    assert_one_line_error(cnnexp("train", "experiment=finetune_tune", *tiny), "add init_from=<run folder>")
    second = cnnexp("train", "-m", "experiment=finetune_tune,finetune_slow_body,finetune_frozen", *tiny,
                    f"init_from={tmp_path / 'first' / '0'}", f"hydra.sweep.dir={tmp_path / 'second'}")
    assert second.returncode == 0, second.stderr[-3000:]
    pretrain, scratch, *tuned = (read_summary(run) for run in run_dirs(tmp_path))
    assert [s["status"] for s in (pretrain, scratch, *tuned)] == ["completed"] * 5
    assert "init_from" not in scratch and list(scratch["param_groups"]) == ["rest"]
    assert {s["init_from"]["source"] for s in tuned} == {str(tmp_path / "first" / "0")}
    assert [s["param_groups"]["head"]["lr_scale"] for s in tuned] == [10.0] * 3
    assert [s["param_groups"]["body"]["lr_scale"] for s in tuned] == [1.0, 0.1, 0.0]
