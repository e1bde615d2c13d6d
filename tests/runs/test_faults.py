"""Crashes, kills, Ctrl-C, SIGTERM, broken checkpoints and a second process on a run: nothing is lost and
resuming gives the same run."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers.commands import (
    assert_one_line_error,
    cnnexp_executable,
    copy_run,
    read_summary,
    run_cnnexp,
    run_dirs,
    stable_metrics,
)
from helpers.faults import (
    checkpoint_steps,
    in_second_epoch,
    live_run,
    logged_records,
    signal_during_second_epoch,
    start_train,
    wait_for,
)
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

    dead_holder = (run / ".lock").read_text()
    assert dead_holder.startswith("pid ")  # the killed process's lock, freed by the kernel when it died

    resumed = cnnexp("train", *SLOW, "resume=latest", cwd=killed_cwd)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"taking over the lock of {dead_holder.strip()}" in " ".join((resumed.stdout + resumed.stderr).split())
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


def test_sigterm_checkpoints_mid_epoch_and_resume_finishes_the_same(cnnexp, tmp_path, reference):
    """A scheduler's SIGTERM (preemption, scancel, kill) is handled like Ctrl-C."""
    run, process = signal_during_second_epoch(cnnexp.env, tmp_path / "preempted", signal.SIGTERM, SLOW)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, stderr  # 143, as the shell reports it
    summary = read_summary(run)
    assert summary["status"] == "interrupted" and summary["signal"] == "SIGTERM", summary
    saved = max(checkpoint_steps(run))
    assert f"interrupted by SIGTERM at step {saved}" in stderr or "after epoch" in stderr, stderr
    assert f"Continue with: cnnexp train resume={run}" in stderr and "Traceback" not in stderr

    resumed = cnnexp("train", f"resume={run}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert stable_metrics(run) == stable_metrics(reference)


def test_a_preempted_submitit_job_requeues_itself_and_resumes_exactly(cnnexp, tmp_path, reference):
    """Hydra's submitit launcher (its local executor here, as on Slurm): the preemption signal
    (SIGUSR2) checkpoints mid-epoch, submitit requeues the job, and the restarted job continues the
    run on its own, ending like the uninterrupted one."""
    process = start_train(cnnexp.env, tmp_path, [*SLOW, "hydra/launcher=submitit_local"], "-m")
    job = lambda: next((p.parent for p in (tmp_path / "outputs").glob("multirun/*/0/summary.json")), None)  # noqa: E731
    run = wait_for(process, job, in_second_epoch)
    os.kill(read_summary(run)["pid"], signal.SIGUSR2)  # what Slurm sends before preempting the job
    _, stderr = process.communicate(timeout=240)
    assert process.returncode == 0, stderr[-3000:]
    job_log = "".join(path.read_text() for path in run.parent.glob(".submitit/*/*_0_log.*"))
    assert "interrupted by SIGUSR2" in job_log and "Requeued job" in job_log, job_log[-3000:]
    assert read_summary(run)["status"] == "completed"
    assert stable_metrics(run) == stable_metrics(reference)


def test_checkpoints_by_the_clock_mid_epoch_resume_exactly(cnnexp, tmp_path, reference):
    """trainer.checkpoint_every_minutes saves mid-epoch; a run killed after such a save resumes from
    it and ends like the uninterrupted run (the key changes only when it saves, not what it computes)."""
    process = start_train(cnnexp.env, tmp_path, [*SLOW, "trainer.checkpoint_every_minutes=0.002"])
    mid_epoch_one = lambda run: any(0 < step < STEPS_PER_EPOCH for step in checkpoint_steps(run))  # noqa: E731
    run = wait_for(process, lambda: live_run(tmp_path)[0], mid_epoch_one)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    saved = max(checkpoint_steps(run))
    assert saved % STEPS_PER_EPOCH, "the newest checkpoint is mid-epoch"

    resumed = cnnexp("train", *SLOW, "resume=latest")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"from step {saved}" in " ".join((resumed.stdout + resumed.stderr).split())
    assert stable_metrics(run) == stable_metrics(reference)


def test_a_second_process_on_a_training_run_is_refused(cnnexp, tmp_path):
    process = start_train(cnnexp.env, tmp_path, [*SLOW, "trainer.epochs=100"])
    run = wait_for(process, lambda: live_run(tmp_path)[0], lambda run: bool(logged_records(run)))
    second = cnnexp("train", f"resume={run}")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert_one_line_error(second, f"{run} is in use by another cnnexp process (pid {process.pid} on ")
    assert process.returncode == 143, stderr
    assert (run / ".lock").read_text() == "", "the lock is free once the run has stopped"


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MiB tmpfs of the test's own, which the test can fill (skipped where mounting is not allowed)."""
    mount = tmp_path / "small_disk"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(disk: Path) -> Path:
    """Write zeros to a file on `disk` until it is full; the file."""
    filler = disk / "filler"
    with open(filler, "wb") as out:
        try:
            while True:
                out.write(bytes(1 << 20))
                out.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_stops_the_run_with_one_line_and_keeps_its_checkpoint(cnnexp, tmp_path, reference, small_disk):
    runs = small_disk / "runs"
    process = start_train(cnnexp.env, tmp_path, [*SLOW, f"paths.runs_dir={runs}"])
    run = wait_for(process, lambda: next((p.parent for p in runs.glob("*/summary.json")), None), in_second_epoch)
    filler = fill(small_disk)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stderr
    assert "Traceback" not in stderr and "Logging error" not in stderr, stderr
    (error,) = [line for line in stderr.splitlines() if line.startswith("cnnexp: error:")]
    assert f"could not write {run}/" in error and "No space left on device" in error, error
    assert f"continue with: cnnexp train resume={run}" in error
    assert read_summary(run)["status"] in ("failed", "running")  # failed, if even that could be written
    assert checkpoint_steps(run), "the checkpoint before the disk filled is kept"

    filler.unlink()  # room again: the run continues from its last complete checkpoint
    resumed = cnnexp("train", f"resume={run}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
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
