"""Sweeps end to end through the installed command: a grid over models and seeds (its report:
reports/test_report_command.py), a sweep with a failing run, parallel jobs with joblib, Optuna
searches."""

from datetime import datetime

import pytest
import yaml
from helpers.commands import TINY, read_csv, read_summary, run_dirs, sweep_dir

pytestmark = pytest.mark.slow  # every test here runs the installed command


def test_grid_gives_one_run_folder_per_combination(grid):
    runs = run_dirs(grid)
    assert [run.name for run in runs] == ["0", "1", "2", "3"]
    seen = sorted((read_summary(run)["model"], read_summary(run)["seed"]) for run in runs)
    assert seen == [("lenet", 0), ("lenet", 1), ("simple_cnn", 0), ("simple_cnn", 1)]
    assert all(read_summary(run)["status"] == "completed" for run in runs)


@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]],
                         ids=["basic", "joblib"])
def test_a_failing_run_is_recorded_and_the_others_still_reported(cnnexp, tmp_path, launcher):
    # lr 1e12 with plain SGD diverges: that run fails with NaN loss, the other trains. The exit
    # status says so even when the failure happened in a joblib worker process.
    result = cnnexp("train", "-m", *TINY, "optim=sgd", "optim.lr=0.05,1e12", "trainer.log_every_steps=1", *launcher)
    assert result.returncode == 1, result.stderr[-3000:]
    sweep = sweep_dir(tmp_path)
    statuses = {read_summary(run)["status"] for run in run_dirs(sweep)}
    assert statuses == {"completed", "failed"}
    report = cnnexp("report", str(sweep))
    assert report.returncode == 0, report.stderr[-3000:]
    rows = {float(row["optim.lr"]): row for row in read_csv(sweep / "report.csv")}
    assert (rows[0.05]["n"], rows[1e12]["n"], rows[1e12]["not_completed"]) == ("1", "0", "1")
    text = (sweep / "report.md").read_text()
    assert "## Runs not completed" in text and "NaN or infinite at step" in text


def test_a_config_error_in_one_job_is_recorded_as_failed(cnnexp, tmp_path):
    result = cnnexp("train", "-m", *TINY, "trainer.epochs=1", "optim.lr=0.001,-1")
    assert result.returncode == 2 and "invalid optim.lr=-1" in result.stderr
    summaries = [read_summary(run) for run in run_dirs(sweep_dir(tmp_path))]
    failed = [s for s in summaries if s["status"] == "failed"]
    assert len(summaries) == 2 and len(failed) == 1 and "optim.lr" in failed[0]["error"]


def _interval(summary: dict) -> tuple[datetime, datetime]:
    return tuple(datetime.strptime(summary[key], "%Y-%m-%dT%H:%M:%S%z") for key in ("started_at", "finished_at"))


def test_joblib_launcher_runs_two_jobs_at_once(cnnexp, tmp_path):
    result = cnnexp("train", "-m", *TINY, "model=simple_cnn", "trainer.epochs=8", "seed=0,1",
                    "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = [read_summary(run) for run in run_dirs(sweep_dir(tmp_path))]
    assert [s["status"] for s in summaries] == ["completed", "completed"]
    assert summaries[0]["pid"] != summaries[1]["pid"]  # two worker processes
    (start_a, end_a), (start_b, end_b) = map(_interval, summaries)
    assert max(start_a, start_b) < min(end_a, end_b)  # and their runs overlapped in time


def test_optuna_search_returns_the_best_trial_of_the_objective(cnnexp, tmp_path):
    result = cnnexp("train", "-m", "hparams_search=lr_wd", "hydra.sweeper.n_trials=3", *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = sweep_dir(tmp_path)
    summaries = [read_summary(run) for run in run_dirs(sweep)]
    assert len(summaries) == 3 and len({s["config_fingerprint"] for s in summaries}) == 3  # 3 sampled configs
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(s["best_val_accuracy"] for s in summaries))


def test_optuna_minimizes_a_loss_objective(cnnexp, tmp_path):
    result = cnnexp("train", "-m", "hparams_search=lr_wd", "hydra.sweeper.n_trials=2", "objective=test_loss", *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = sweep_dir(tmp_path)
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(min(read_summary(run)["test_loss"] for run in run_dirs(sweep)))


def test_a_wrong_objective_is_refused_before_the_sweep_starts(cnnexp, tmp_path):
    result = cnnexp("train", "-m", "hparams_search=lr_wd", "objective=val_acc", *TINY)
    assert result.returncode == 2
    assert "invalid objective='val_acc'" in result.stderr and "best_val_accuracy" in result.stderr
    assert not (tmp_path / "outputs").exists()
