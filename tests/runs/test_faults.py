"""Crashes, kills, Ctrl-C and broken checkpoints: nothing is lost and resuming gives the same run."""

import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers.commands import cnnexp_executable, copy_run, read_summary, run_cnnexp, run_dirs, stable_metrics
from helpers.faults import checkpoint_steps, signal_during_second_epoch
from helpers.shared import build_once

pytestmark = pytest.mark.slow  # every test here runs the installed command

# Long enough to be killed mid-run: 80 steps per epoch (digits: 1,293 training images), logged every
# 20, which the signalling helper watches for.
STEPS_PER_EPOCH = 1293 // 16
SLOW = ["data=digits", "trainer.epochs=4", "trainer.batch_size=16", "trainer.log_every_steps=20", "trainer.progress=false"]
# A model with batch norm and dropout: their statistics and random stream must survive a resume too.
BN_DROPOUT = ["model=simple_cnn", "model.norm=batch", "model.dropout=0.3", "model.hidden=32", "model.width=0.4"]


def _uninterrupted(cnnexp, cwd: Path, extra=()) -> Path:
    cwd.mkdir()
    result = cnnexp("train", *SLOW, *extra, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = run_dirs(cwd / "outputs")
    return run


@pytest.fixture(scope="session")
def reference(tmp_path_factory, shared_env) -> Path:
    """The uninterrupted SLOW run, which the runs killed and resumed must end like. Read only."""

    def build(root: Path) -> None:
        result = run_cnnexp("train", *SLOW, cwd=root, env=shared_env)
        assert result.returncode == 0, result.stderr[-3000:]

    root, _ = build_once(tmp_path_factory, "faults-reference", build)
    (run,) = run_dirs(root / "outputs")
    return run


@pytest.fixture(scope="session")
def killed(tmp_path_factory, shared_env) -> Path:
    """The working directory of a SLOW run killed (SIGKILL) in its second epoch, after its first
    checkpoint. Read only: a test that resumes or breaks it works on a copy."""

    def build(root: Path) -> None:
        _, process = signal_during_second_epoch(shared_env, root, signal.SIGKILL, SLOW)
        process.communicate()

    return build_once(tmp_path_factory, "faults-killed", build)[0]


def test_resume_after_sigkill_ends_like_the_uninterrupted_run(cnnexp, tmp_path, reference, killed):
    killed_cwd = copy_run(killed, tmp_path / "killed")
    (run,) = run_dirs(killed_cwd / "outputs")
    assert read_summary(run)["status"] == "running"  # what a killed run leaves behind

    resumed = cnnexp("train", *SLOW, "resume=latest", cwd=killed_cwd)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert run_dirs(killed_cwd / "outputs") == [run]  # continued in the same folder
    summary, expected = read_summary(run), read_summary(reference)
    assert summary["status"] == "completed"
    assert summary["test_accuracy"] == expected["test_accuracy"]
    assert summary["best_val_accuracy"] == expected["best_val_accuracy"]
    assert stable_metrics(run) == stable_metrics(reference)


def test_ctrl_c_checkpoints_mid_epoch_and_resume_finishes_the_same(cnnexp, tmp_path):
    reference = _uninterrupted(cnnexp, tmp_path / "reference", BN_DROPOUT)
    cwd = tmp_path / "interrupted"
    run, process = signal_during_second_epoch(cnnexp.env, cwd, signal.SIGINT, [*SLOW, *BN_DROPOUT])
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert f"resume={run}" in stderr
    summary = read_summary(run)
    assert summary["status"] == "interrupted" and summary["epochs_completed"] >= 1
    saved = max(checkpoint_steps(run))
    # Usually mid-epoch ("at step N"); if the signal lands in the epoch-end sync, after that epoch.
    assert f"at step {saved}" in stderr or f"after epoch {saved // STEPS_PER_EPOCH}" in stderr

    resumed = cnnexp("train", f"resume={run}", cwd=cwd)  # the run's own overrides are reused
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert read_summary(run)["test_accuracy"] == read_summary(reference)["test_accuracy"]
    assert stable_metrics(run) == stable_metrics(reference)


def test_corrupt_checkpoint_on_resume_is_a_clear_error_naming_it(cnnexp, tmp_path, killed):
    (run,) = run_dirs(copy_run(killed, tmp_path / "killed") / "outputs")
    step = run / "checkpoints" / "last" / str(max(checkpoint_steps(run)))
    for file in (step / "state").rglob("*"):
        if file.is_file():
            file.write_bytes(b"garbage")
    result = cnnexp("train", *SLOW, f"resume={run}")
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"checkpoint {step}" in result.stderr and "Traceback" not in result.stderr


def test_resume_latest_without_a_matching_run_is_exit_2(cnnexp, tmp_path):
    result = cnnexp("train", *SLOW, "resume=latest")
    assert result.returncode == 2
    assert "no run under" in result.stderr
    result = cnnexp("train", *SLOW, f"resume={tmp_path / 'nowhere'}")
    assert result.returncode == 2
    assert "not a run folder with checkpoints" in result.stderr
    assert not (tmp_path / "outputs").exists()


def test_run_killed_before_its_first_checkpoint_starts_over_on_resume(cnnexp, tmp_path, reference):
    cwd = tmp_path / "killed_early"
    cwd.mkdir()
    process = subprocess.Popen([cnnexp_executable(), "train", *SLOW], cwd=cwd, env=cnnexp.env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list((cwd / "outputs").glob("runs/*/metrics.jsonl")):  # training has begun
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    (run,) = run_dirs(cwd / "outputs")
    assert not checkpoint_steps(run)
    resumed = cnnexp("train", *SLOW, "resume=latest", cwd=cwd)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "starting it over" in resumed.stderr + resumed.stdout
    assert stable_metrics(run) == stable_metrics(reference)
