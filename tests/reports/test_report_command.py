"""`cnnexp report` on a real sweep (a 2x2 grid trained through the installed command), and the
publish step of `make reproduce-*` on it."""

import re
from pathlib import Path

import pytest
from helpers.commands import copy_run, read_csv, read_summary, run_cnnexp, run_dirs
from helpers.shared import build_once

from cnnexp.reports.publish import main as publish

pytestmark = pytest.mark.slow  # every test here runs the installed command


@pytest.fixture(scope="session")
def reported(grid, shared_env, tmp_path_factory) -> tuple[Path, str]:
    """`cnnexp report` on a copy of the shared grid (the report is written into the sweep folder):
    the copy and what the command printed. Read only."""

    def build(root: Path) -> dict:
        sweep = copy_run(grid, root / grid.name)
        result = run_cnnexp("report", str(sweep), cwd=root, env=shared_env)
        assert result.returncode == 0, result.stderr[-3000:]
        return {"stdout": result.stdout}

    root, printed = build_once(tmp_path_factory, "reported", build)
    return root / grid.name, printed["stdout"]


def test_report_groups_by_model_with_mean_and_std_over_seeds(reported):
    grid, stdout = reported
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
    assert shown in stdout and shown in (grid / "report.md").read_text()


def test_report_links_only_plots_that_exist(reported):
    grid, _ = reported
    text = (grid / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert {Path(link).name for link in links} == {
        "val_accuracy.png", "val_loss.png", "train_loss.png", "accuracy_vs_params.png", "accuracy_vs_wall_time.png"}
    for link in links:
        image = grid / link
        assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and image.stat().st_size > 5000


def test_publish_writes_its_section_and_keeps_the_others(grid, tmp_path, monkeypatch):
    grid = copy_run(grid, tmp_path / "sweep")  # publishing writes the report into the sweep folder
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


def test_report_of_a_folder_without_runs_is_exit_2(cnnexp, tmp_path):
    (tmp_path / "empty").mkdir()
    result = cnnexp("report", str(tmp_path / "empty"))
    assert result.returncode == 2 and "no runs found" in result.stderr
    result = cnnexp("report", str(tmp_path / "missing"))
    assert result.returncode == 2 and "no such folder" in result.stderr
