"""Training on data streamed from disk, through the installed command: the same run as in memory,
resumable mid-epoch after Ctrl-C or SIGKILL; and a user's own folder of mixed images end to end."""

import signal
from pathlib import Path

import pytest
from helpers.commands import assert_one_line_error, read_summary, run_cnnexp, run_dirs, stable_metrics
from helpers.faults import checkpoint_steps, signal_during_second_epoch
from helpers.images import write_mixed_folder
from helpers.shared import build_once

pytestmark = pytest.mark.slow  # every test here runs the installed command

# The digits as an image folder, trained long enough to be signalled mid-epoch (1,437 training
# images - 10% validation = 1,293: 80 steps of 16 per epoch, logged every 20).
STEPS_PER_EPOCH = 1293 // 16
RUN = ["data=image_folder", "trainer.epochs=3", "trainer.batch_size=16", "trainer.log_every_steps=20",
       "trainer.progress=false", "model=simple_cnn", "model.norm=batch", "model.dropout=0.3", "model.hidden=32",
       "model.width=0.4"]
STREAMED = ["data.in_memory=false", "data.stream_workers=1"]


def _run_args(root: Path, *extra: str) -> list[str]:
    return [*RUN, f"data.root={root}", *extra]


@pytest.fixture(scope="session")
def in_memory_run(tmp_path_factory, shared_env, digits_root) -> Path:
    """RUN on the digits folder held in memory: what every streamed run must end like. Read only."""

    def build(root: Path) -> None:
        result = run_cnnexp("train", *_run_args(digits_root, "data.in_memory=true"), cwd=root, env=shared_env)
        assert result.returncode == 0, result.stderr[-3000:]

    (run,) = run_dirs(build_once(tmp_path_factory, "streaming-in-memory", build)[0] / "outputs")
    return run


def test_a_streamed_run_trains_exactly_like_the_in_memory_run(cnnexp, tmp_path, digits_root, in_memory_run):
    result = cnnexp("train", *_run_args(digits_root, *STREAMED))
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = run_dirs(tmp_path / "outputs")
    summary, reference = read_summary(run), read_summary(in_memory_run)
    assert summary["data_path"] == "streamed" and reference["data_path"] == "in_memory"
    assert summary["test_accuracy"] == reference["test_accuracy"]
    assert stable_metrics(run) == stable_metrics(in_memory_run)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL])
def test_a_streamed_run_resumes_after_a_signal_mid_epoch_and_ends_the_same(cnnexp, tmp_path, digits_root,
                                                                        in_memory_run, signum):
    run, process = signal_during_second_epoch(cnnexp.env, tmp_path, signum, _run_args(digits_root, *STREAMED))
    _, stderr = process.communicate(timeout=60)
    summary = read_summary(run)
    if signum == signal.SIGINT:
        assert process.returncode == 130 and summary["status"] == "interrupted", stderr[-3000:]
        # The checkpoint holds the position inside the epoch (unless the signal met the epoch end).
        saved = max(checkpoint_steps(run))
        assert f"at step {saved}" in stderr or f"after epoch {saved // STEPS_PER_EPOCH}" in stderr, stderr[-2000:]
    else:
        assert process.returncode == -signal.SIGKILL and summary["status"] == "running"
    resumed = cnnexp("train", *_run_args(digits_root, *STREAMED), f"resume={run}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert read_summary(run)["status"] == "completed"
    assert read_summary(run)["test_accuracy"] == read_summary(in_memory_run)["test_accuracy"]
    assert stable_metrics(run) == stable_metrics(in_memory_run)


def test_a_folder_of_mixed_images_trains_at_one_size_and_skips_the_broken_file(cnnexp, tmp_path):
    root = write_mixed_folder(tmp_path / "photos")
    args = ["train", "data=image_folder", f"data.root={root}", "data.image_size=[16,16]", "trainer.epochs=2",
            "trainer.batch_size=8", "trainer.progress=false"]
    result = cnnexp(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "broken.jpg" in result.stdout + result.stderr  # named in the warning
    (run,) = run_dirs(tmp_path / "outputs")
    summary = read_summary(run)
    assert summary["status"] == "completed" and summary["test_accuracy"] > 0.5  # colour classes: easy
    # The summary table of the prepared folder: three classes, colour, the chosen size.
    table = cnnexp("summary", "data=image_folder", f"data.root={root}", "data.image_size=[16,16]")
    assert table.returncode == 0, table.stderr[-3000:]
    assert "16x16x3" in table.stdout.replace(" ", "") or "(16, 16, 3)" in table.stdout, table.stdout[-2000:]
    # Without a size the mixed images cannot be stacked: one line, before any decoding.
    assert_one_line_error(cnnexp(*args[:3], "trainer.progress=false"), "differ in size: set data.image_size")


def test_a_missing_image_folder_is_refused_before_a_run_folder_exists(cnnexp, tmp_path):
    assert_one_line_error(cnnexp("train", "data=image_folder", f"data.root={tmp_path / 'missing'}"), "does not exist")
    assert not (tmp_path / "outputs").exists()


def test_a_folder_of_one_class_is_a_one_line_error(cnnexp, tmp_path):
    (tmp_path / "photos" / "cat").mkdir(parents=True)
    write_mixed_folder(tmp_path / "mixed")
    (tmp_path / "mixed" / "red" / "0.png").rename(tmp_path / "photos" / "cat" / "0.png")
    assert_one_line_error(cnnexp("train", "data=image_folder", f"data.root={tmp_path / 'photos'}"), "class")


def test_an_image_folder_without_a_root_says_how_to_give_one(cnnexp):
    assert_one_line_error(cnnexp("train", "data=image_folder"), "data.root=<dir>")
