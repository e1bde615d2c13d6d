"""Sweeps end to end through the installed command: a grid over seeds and `cnnexp report` on it,
a sweep with a failing run, parallel jobs with joblib, Optuna searches, and the publish step of
`make reproduce-*`."""

import csv
import re
import subprocess
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from cnnexp.analysis.publish import main as publish
from helpers.commands import TINY, cnnexp_executable, read_summary, run_dirs
from helpers.paths import REPO



def sweep_dir(tmp_path: Path) -> Path:
    (found,) = (tmp_path / "outputs" / "multirun").iterdir()
    return found


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def grid(tmp_path_factory, shared_env):
    """One 2x2 sweep (two models, two seeds) shared by the tests that read it."""
    root = tmp_path_factory.mktemp("grid")
    result = subprocess.run(
        [cnnexp_executable(), "train", "-m", *TINY, "trainer.epochs=3", "model=lenet,simple_cnn", "seed=0,1"],
        cwd=root, env=shared_env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep_dir(root)


def test_grid_gives_one_run_folder_per_combination(grid):
    runs = run_dirs(grid)
    assert [run.name for run in runs] == ["0", "1", "2", "3"]
    seen = sorted((read_summary(run)["model"], read_summary(run)["seed"]) for run in runs)
    assert seen == [("lenet", 0), ("lenet", 1), ("simple_cnn", 0), ("simple_cnn", 1)]
    assert all(read_summary(run)["status"] == "completed" for run in runs)


def test_report_groups_by_model_with_mean_and_std_over_seeds(cnnexp, grid):
    result = cnnexp("report", str(grid))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_csv(grid / "report.csv")
    assert [row["model"] for row in rows] == ["lenet", "simple_cnn"]
    for row in rows:
        summaries = [read_summary(run) for run in run_dirs(grid) if read_summary(run)["model"] == row["model"]]
        assert int(row["n"]) == 2 and row["seeds"] == "0 1"
        for key in ("test_accuracy", "best_val_accuracy", "wall_time_s", "train_images_per_s"):
            values = [summary[key] for summary in summaries]
            mean = sum(values) / 2
            std = (sum((v - mean) ** 2 for v in values) / (2 - 1)) ** 0.5  # sample std, ddof=1
            assert float(row[f"{key}_mean"]) == pytest.approx(mean, rel=1e-12)
            assert float(row[f"{key}_std"]) == pytest.approx(std, rel=1e-9, abs=1e-12)
        assert float(row["params_mean"]) == summaries[0]["params"]
    # The printed table and report.md show the same means, in percent.
    lenet = rows[0]
    shown = f"{100 * float(lenet['test_accuracy_mean']):.2f} ± {100 * float(lenet['test_accuracy_std']):.2f}"
    assert shown in result.stdout and shown in (grid / "report.md").read_text()


def test_report_links_only_plots_that_exist(grid, cnnexp):
    assert cnnexp("report", str(grid)).returncode == 0
    text = (grid / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert {Path(link).name for link in links} == {
        "val_accuracy.png", "val_loss.png", "train_loss.png", "accuracy_vs_params.png", "accuracy_vs_wall_time.png"}
    for link in links:
        image = grid / link
        assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and image.stat().st_size > 5000


def test_publish_writes_its_section_and_keeps_the_others(grid, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    doc = tmp_path / "docs" / "results.md"
    doc.parent.mkdir()
    doc.write_text("# Results\n\n<!-- other: begin -->\nkept\n<!-- other: end -->\n")
    for _ in range(2):  # publishing again replaces the section, never appends a second one
        assert publish([str(grid), "--doc", str(doc), "--section", "zoo-cpu", "--command", "make reproduce-zoo"]) == 0
    text = doc.read_text()
    assert text.count("<!-- zoo-cpu: begin") == 1 and "kept" in text
    assert "`make reproduce-zoo`" in text and "Commit:" in text and "Hardware:" in text and "seeds 0, 1;" in text
    assert "| lenet |" in text and "87.6 (nearest: 2 Conv Layers" not in text  # digits: no published baseline
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert (doc.parent / link).is_file()
    regrouped = ["--section", "zoo-cpu", "--command", "make reproduce-zoo", "--by", "seed"]
    assert publish([str(grid), "--doc", str(doc), *regrouped]) == 0
    assert "| seed | n |" in doc.read_text()


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


def test_report_of_a_folder_without_runs_is_exit_2(cnnexp, tmp_path):
    (tmp_path / "empty").mkdir()
    result = cnnexp("report", str(tmp_path / "empty"))
    assert result.returncode == 2 and "no runs found" in result.stderr
    result = cnnexp("report", str(tmp_path / "missing"))
    assert result.returncode == 2 and "no such folder" in result.stderr


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


def test_make_help_lists_every_target():
    makefile = (REPO / "Makefile").read_text()
    phony = re.search(r"^\.PHONY:(.*)$", makefile, re.MULTILINE).group(1).split()
    shown = subprocess.run(["make", "-s", "help"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    listed = re.findall(r"^\s+make (\S+)", shown, re.MULTILINE)
    assert sorted(listed) == sorted(phony)
    assert {"reproduce-zoo", "reproduce-zoo-gpu"} <= set(listed)


def test_results_doc_has_measured_sections_or_says_not_run():
    text = (REPO / "docs" / "results.md").read_text()
    for section in ("zoo-cpu", "zoo-gpu"):
        body = text.split(f"<!-- {section}: begin")[1].split(f"<!-- {section}: end -->")[0]
        assert "| lenet" in body or "not run" in body.lower()
        for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", body):
            assert (REPO / "docs" / link).is_file()
