"""The `cnnexp` command end to end, run as a subprocess the way a user runs it."""

import pytest

pytestmark = pytest.mark.slow  # every test here runs the installed command


def test_help_lists_the_commands(cnnexp):
    result = cnnexp("--help")
    assert result.returncode == 0
    for command in ("train", "summary", "lr-find", "visualize", "evaluate", "report"):
        assert f"\n  {command} " in result.stdout


def test_visualize_help_shows_its_settings(cnnexp):
    result = cnnexp("visualize", "--help")
    assert result.returncode == 0
    for text in ("Usage: cnnexp visualize run=<run folder>", "maximize:", "param: fourier", "checkpoint: best"):
        assert text in result.stdout


def test_train_help_shows_the_config_groups(cnnexp):
    result = cnnexp("train", "--help")
    assert result.returncode == 0
    for line in ("model: alexnet, alexnet_lite, densenet, inception, inception_resnet, lenet, mlp, resnet, simple_cnn, speednet, vgg, zfnet", "optim: adam, adamw, momentum, nesterov, sgd", "schedule: constant, cosine, onecycle, step",
                 "hparams_search: lr_wd, simple_cnn_design"):
        assert line in result.stdout


def test_unknown_command_is_exit_2_with_a_suggestion(cnnexp):
    result = cnnexp("trian")
    assert result.returncode == 2
    assert "did you mean train" in result.stderr


@pytest.mark.parametrize(
    "override, message",
    [
        ("trainer.batch_size=0", "invalid trainer.batch_size=0"),
        ("trainer.eval_batch_size=-5", "invalid trainer.eval_batch_size=-5"),
        ("optim.lr=-0.1", "invalid optim.lr=-0.1"),
        ("trainer.epochs=0", "invalid trainer.epochs=0"),
        ("data.val_fraction=1.5", "invalid data.val_fraction=1.5"),
        ("data.val_fraction=0", "invalid data.val_fraction=0"),
        ("model=resnett", "unknown model=resnett (did you mean resnet?)"),
        ("trainer.epoch=3", "trainer has no key 'epoch' (did you mean trainer.epochs?)"),
        ("trainer.epochs=true", "invalid trainer.epochs=True: must be an integer >= 1"),
        ("model.width=0.25", "model 'lenet' has no option model.width; its options: model.activation"),
    ],
)
def test_invalid_input_is_one_line_exit_2_and_no_run_folder(cnnexp, tmp_path, override, message):
    result = cnnexp("train", "data=digits", override)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "outputs").exists()


def test_unknown_model_lists_the_valid_ones(cnnexp):
    result = cnnexp("train", "data=digits", "model=nope")
    assert result.returncode == 2
    assert "lenet" in result.stderr


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data=fashion_mnist", "data.source_dir=/nonexistent/idx"], "does not hold the four IDX files"),
        (["data=cifar10", "data.download=false"], "not prepared under"),
        (["data=not_a_dataset_name"], "TFDS has no dataset named 'not_a_dataset_name'"),
    ],
)
def test_missing_data_is_a_clear_error_exit_2(cnnexp, overrides, message):
    result = cnnexp("train", *overrides, "trainer.progress=false")
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr
    assert "Traceback" not in result.stderr
