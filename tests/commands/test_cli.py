"""The `cnnexp` command end to end, run as a subprocess the way a user runs it."""

import json

import pytest

from helpers.commands import TINY, read_summary, run_dirs, stable_metrics


def test_help_lists_the_commands(cnnexp):
    result = cnnexp("--help")
    assert result.returncode == 0
    for command in ("train", "summary", "visualize", "evaluate", "report"):
        assert f"\n  {command} " in result.stdout


def test_visualize_help_shows_its_settings(cnnexp):
    result = cnnexp("visualize", "--help")
    assert result.returncode == 0
    for text in ("Usage: cnnexp visualize run=<run folder>", "maximize:", "param: fourier", "checkpoint: best"):
        assert text in result.stdout


def test_train_help_shows_the_config_groups(cnnexp):
    result = cnnexp("train", "--help")
    assert result.returncode == 0
    for line in ("model: alexnet, alexnet_lite, densenet, inception, lenet, mlp, resnet, simple_cnn, speednet, vgg", "optim: adam, adamw, momentum, nesterov, sgd", "schedule: constant, cosine, onecycle, step",
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
        ("model=resnett", "model/resnett"),
        ("trainer.epoch=3", "trainer.epoch"),
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


def test_train_writes_a_complete_run_folder(cnnexp, tmp_path):
    result = cnnexp("train", *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = run_dirs(tmp_path / "outputs" / "runs")
    summary = read_summary(run)
    assert summary["status"] == "completed"
    assert summary["params"] == 61_706 and summary["epochs_completed"] == 2
    assert 0.5 < summary["test_accuracy"] <= 1 and 0.5 < summary["best_val_accuracy"] <= 1
    for key in ("wall_time_s", "compile_time_s", "train_images_per_s"):
        assert summary[key] > 0
    assert summary["versions"]["jax"] and summary["device"]["platform"] == "cpu"
    assert "git_commit" in summary
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [(r["split"], r["epoch"]) for r in records if r["kind"] == "epoch"]
    assert epochs == [("train", 1), ("val", 1), ("train", 2), ("val", 2), ("test", 2)]
    for record in records:
        assert {"epoch", "step", "split", "loss", "accuracy", "lr", "images_per_s", "time"} <= set(record)
    assert any(r["kind"] == "step" for r in records)
    assert (run / ".hydra" / "config.yaml").is_file() and (run / "train.log").is_file()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert sorted(p.name for p in (run / "checkpoints" / "last").iterdir() if p.name.isdigit()) == ["20", "40"]
    assert [p.name for p in (run / "checkpoints" / "best").iterdir() if p.name.isdigit()]
    assert f"{100 * summary['test_accuracy']:.2f}%" in result.stdout
    assert str(run) in result.stdout.replace("\n", "")


def test_same_config_and_seed_give_identical_metrics(cnnexp, tmp_path):
    for _ in range(2):
        assert cnnexp("train", *TINY, "seed=3").returncode == 0
    first, second = run_dirs(tmp_path / "outputs" / "runs")
    assert first != second  # each run has its own folder
    assert stable_metrics(first) == stable_metrics(second)
    other = cnnexp("train", *TINY, "seed=4")
    assert other.returncode == 0
    third = [r for r in run_dirs(tmp_path / "outputs" / "runs") if r not in (first, second)][0]
    assert stable_metrics(third) != stable_metrics(first)


def test_classic_experiment_preset_trains(cnnexp, tmp_path):
    result = cnnexp("train", "experiment=lenet_classic", *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = run_dirs(tmp_path / "outputs")
    config = (run / ".hydra" / "config.yaml").read_text()
    assert "activation: tanh" in config and "pool: avg" in config and "name: momentum" in config
    assert read_summary(run)["status"] == "completed"


def test_nan_loss_stops_the_run_naming_the_step(cnnexp, tmp_path):
    result = cnnexp("train", *TINY, "optim=sgd", "optim.lr=1e12", "trainer.log_every_steps=1")
    assert result.returncode == 1, result.stderr[-3000:]
    assert "NaN or infinite at step" in result.stderr
    (run,) = run_dirs(tmp_path / "outputs")
    summary = read_summary(run)
    assert summary["status"] == "failed" and "step" in summary["error"]
    assert not (run / "checkpoints" / "last").exists() or not any(
        p.name.isdigit() for p in (run / "checkpoints" / "last").iterdir()
    )
