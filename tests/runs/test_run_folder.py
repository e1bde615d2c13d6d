"""What `cnnexp train` leaves behind: a complete run folder, the same metrics for the same config
and seed, and a failed run's record when the loss turns NaN."""

import json
import shutil
from pathlib import Path

import pytest
from helpers.commands import TINY, read_summary, run_dirs, stable_metrics, train_tiny
from helpers.shared import build_once

pytestmark = pytest.mark.slow  # every test here runs the installed command


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, shared_env) -> tuple[Path, str]:
    """`cnnexp train` of the TINY config (seed 0) in a fresh directory: the run folder and what
    the command printed. Read only."""
    root, printed = build_once(tmp_path_factory, "tiny-run",
                               lambda root: {"stdout": train_tiny(root, shared_env)[1].stdout})
    (run,) = run_dirs(root / "outputs" / "runs")
    return run, printed["stdout"]


def test_train_writes_a_complete_run_folder(tiny_run):
    run, stdout = tiny_run
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
    assert f"{100 * summary['test_accuracy']:.2f}%" in stdout
    assert str(run) in stdout.replace("\n", "")


def test_same_config_and_seed_give_identical_metrics(cnnexp, tmp_path, tiny_run):
    # The second run of the config trains beside a copy of the first (the shared TINY run).
    shutil.copytree(tiny_run[0], tmp_path / "outputs" / "runs" / tiny_run[0].name)
    assert cnnexp("train", *TINY).returncode == 0
    first, second = run_dirs(tmp_path / "outputs" / "runs")
    assert first != second  # each run has its own folder
    assert stable_metrics(first) == stable_metrics(second)
    other = cnnexp("train", *TINY, "seed=4")  # seed 0 is the default
    assert other.returncode == 0
    third = [r for r in run_dirs(tmp_path / "outputs" / "runs") if r not in (first, second)][0]
    assert stable_metrics(third) != stable_metrics(first)


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
