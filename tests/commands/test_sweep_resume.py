"""A sweep that died half-way continues on its folder (`cnnexp train -m resume=<sweep folder>`):
completed jobs are kept untouched, the killed job resumes from its checkpoint, the rest run."""

import signal

import pytest
from helpers.commands import read_csv, read_summary, run_dirs, stable_metrics, sweep_dir
from helpers.faults import checkpoint_steps, in_second_epoch, start_train, wait_for

pytestmark = pytest.mark.slow  # every test here runs the installed command

# Four jobs of two epochs, 80 steps each (the bundled digits at batch 16), logged every 20.
SWEEP = ["data=digits", "trainer.epochs=2", "trainer.batch_size=16", "trainer.log_every_steps=20",
         "trainer.progress=false", "seed=0,1,2,3"]


def _written(run) -> dict[str, int]:
    """When each file of a run's results was last written."""
    files = [run / "summary.json", run / "metrics.jsonl", *(run / "checkpoints").rglob("*")]
    return {str(path): path.stat().st_mtime_ns for path in files if path.is_file()}


def test_a_sweep_killed_in_its_third_job_continues_where_it_stopped(cnnexp, tmp_path):
    process = start_train(cnnexp.env, tmp_path, SWEEP, "-m")
    third_job = lambda: next(iter((tmp_path / "outputs" / "multirun").glob("*/2/summary.json")), None)  # noqa: E731
    third = wait_for(process, lambda: third_job() and third_job().parent, in_second_epoch)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    sweep = sweep_dir(tmp_path)
    first_two = {job: _written(sweep / job) for job in ("0", "1")}
    assert [read_summary(sweep / job)["status"] for job in ("0", "1", "2")] == ["completed", "completed", "running"]
    assert not (sweep / "3").exists()
    saved = max(checkpoint_steps(third))

    resumed = cnnexp("train", "-m", f"resume={sweep}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    output = " ".join((resumed.stdout + resumed.stderr).split())
    assert {job: _written(sweep / job) for job in ("0", "1")} == first_two, "completed jobs are not retrained"
    assert f"resuming {third} from step {saved}" in output
    steps = [r["step"] for r in stable_metrics(third) if r["kind"] == "step"]
    assert steps == sorted(set(steps)), "the resumed job logged each step once"
    assert [read_summary(run)["status"] for run in run_dirs(sweep)] == ["completed"] * 4

    report = cnnexp("report", str(sweep))
    assert report.returncode == 0, report.stderr[-3000:]
    (row,) = read_csv(sweep / "report.csv")
    assert (row["n"], row["not_completed"]) == ("4", "0")

    finished = {run.name: _written(run) for run in run_dirs(sweep)}
    again = cnnexp("train", "-m", f"resume={sweep}")  # nothing left to do: everything kept
    assert again.returncode == 0, again.stderr[-3000:]
    assert {run.name: _written(run) for run in run_dirs(sweep)} == finished


def test_a_sweep_run_again_into_its_folder_without_resume_overwrites_nothing(cnnexp, tmp_path):
    sweep = tmp_path / "sweep"
    first = cnnexp("train", "-m", *SWEEP[:-1], "trainer.epochs=1", "seed=0", f"hydra.sweep.dir={sweep}")
    assert first.returncode == 0, first.stderr[-3000:]
    written = _written(sweep / "0")
    second = cnnexp("train", "-m", *SWEEP[:-1], "trainer.epochs=1", "seed=0", f"hydra.sweep.dir={sweep}")
    assert second.returncode == 2 and f"resume={sweep}" in second.stderr, second.stderr[-3000:]
    assert _written(sweep / "0") == written
