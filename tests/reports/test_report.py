"""`cnnexp report`'s reading and grouping on hand-made run folders (no training), its invariance
columns and plot from hand-made `evaluate/invariance.json` files, and what a job does when the
launcher runs jobs side by side."""

import csv
import json
import platform
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from cnnexp.reports.report import build_report, table_rows, write_report


def make_run(folder: Path, overrides: dict, config: dict, summary: dict | None, val_accuracy=()) -> Path:
    """A run folder as `cnnexp train` leaves it: .hydra/, summary.json, metrics.jsonl."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"{k}={v}" for k, v in overrides.items()]))
    if summary is not None:
        (folder / "summary.json").write_text(json.dumps(summary))
    lines = [json.dumps({"kind": "epoch", "split": split, "epoch": e + 1, "accuracy": a, "loss": 1 - a})
             for e, a in enumerate(val_accuracy) for split in ("train", "val")]
    (folder / "metrics.jsonl").write_text("".join(f"{line}\n" for line in lines) + '{"kind": "ep')  # torn last line
    return folder


def completed(model: str, seed: int, accuracy: float) -> dict:
    return {"status": "completed", "model": model, "dataset": "fashion_mnist", "seed": seed, "params": 1000,
            "test_accuracy": accuracy, "best_val_accuracy": accuracy + 0.01, "wall_time_s": 10.0 + seed,
            "train_images_per_s": 100.0}


def config(model: str, seed: int, width: float = 1.0) -> dict:
    return {"seed": seed, "model": {"name": model, "width": width}, "paths": {"output_dir": f"/somewhere/{seed}"},
            "trainer": {"epochs": 2, "progress": seed == 0}}


@pytest.fixture
def sweep(tmp_path):
    """Jobs 0-11 of a model x seed sweep, listed out of order on disk, with three kinds of trouble."""
    number = 0
    for model in ("lenet", "vgg"):
        for seed in range(3):
            make_run(tmp_path / str(number), {"model": model, "seed": seed}, config(model, seed),
                     completed(model, seed, 0.80 + 0.01 * seed + (0.05 if model == "vgg" else 0)),
                     val_accuracy=(0.5, 0.6 + 0.01 * seed))
            number += 1
    make_run(tmp_path / "10", {"model": "resnet", "seed": 0}, config("resnet", 0),
             {"status": "failed", "model": "resnet", "seed": 0, "error": "TrainingDiverged: loss is NaN\nat step 3"})
    make_run(tmp_path / "11", {"model": "resnet", "seed": 1}, config("resnet", 1),
             {"status": "running", "model": "resnet", "seed": 1, "host": platform.node(), "pid": _dead_pid()})
    make_run(tmp_path / "12", {"model": "resnet", "seed": 2}, config("resnet", 2), None)
    return tmp_path


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_groups_by_the_swept_key_in_sweep_order(sweep):
    report = build_report(sweep)
    assert report.columns == ["model"]  # not seed, not paths or trainer.progress (bookkeeping)
    assert [group.label["model"] for group in report.groups] == ["lenet", "vgg", "resnet"]
    assert [run.run_dir.name for run in report.runs][-3:] == ["10", "11", "12"]  # natural order: 2 < 10


def test_statistics_are_mean_and_sample_std_over_completed_runs(sweep):
    lenet, vgg, resnet = build_report(sweep).groups
    assert lenet.stat("test_accuracy").mean == pytest.approx(0.81)
    assert lenet.stat("test_accuracy").std == pytest.approx(0.01)  # stdev of 0.80, 0.81, 0.82
    assert vgg.stat("wall_time_s").std == pytest.approx(1.0)
    assert resnet.stat("test_accuracy").mean is None and len(resnet.completed) == 0


def test_unfinished_runs_are_listed_with_their_status(sweep):
    report = build_report(sweep)
    statuses = {run.run_dir.name: run.status for run in report.runs}
    assert (statuses["10"], statuses["11"], statuses["12"]) == ("failed", "killed", "not started")
    headings, rows = table_rows(report)
    assert rows[2][headings.index("not completed")] == "1 failed, 1 killed, 1 not started"
    written = write_report(report, with_plots=False)
    text = written["report"].read_text()
    assert "## Runs not completed" in text and "TrainingDiverged: loss is NaN" in text and "at step 3" not in text


def test_config_keys_group_runs_when_the_command_lines_do_not_tell_them_apart(tmp_path):
    # Two separate `cnnexp train` runs with the same (empty) overrides but different configs.
    make_run(tmp_path / "a", {}, config("lenet", 0, width=1.0), completed("lenet", 0, 0.8))
    make_run(tmp_path / "b", {}, config("lenet", 0, width=2.0), completed("lenet", 0, 0.9))
    report = build_report(tmp_path)
    assert report.columns == ["model.width"] and len(report.groups) == 2
    headings, _ = table_rows(report)
    assert "not completed" not in headings  # every run completed: no empty column


def test_by_overrides_the_grouping(sweep):
    report = build_report(sweep, by=["trainer.epochs"])
    assert len(report.groups) == 1 and report.groups[0].label == {"trainer.epochs": "2"}


def test_baseline_column_names_its_entry(sweep):
    headings, rows = table_rows(build_report(sweep, with_baseline=True))
    column = headings.index("published test acc %")
    assert rows[0][column] == "87.6 (nearest: 2 Conv Layers with max pooling (Keras))"
    assert rows[1][column].startswith("93.5 (VGG16")


def test_runs_on_a_class_subset_or_a_share_of_the_labels_get_no_baseline(tmp_path):
    for number, data in enumerate([{"classes": [5, 6, 7, 8, 9], "train_fraction": 1.0},
                                   {"classes": None, "train_fraction": 0.01}]):
        make_run(tmp_path / str(number), {"seed": number}, {**config("lenet", number), "data": data},
                 completed("lenet", number, 0.9))
    groups = build_report(tmp_path).groups
    assert sorted(run.config["data.classes"] for group in groups for run in group.runs) == ["[5, 6, 7, 8, 9]", "null"]
    assert [group.baseline() for group in groups] == [None, None]
    assert not build_report(tmp_path, with_baseline=True).with_baseline  # no column of dashes


def test_plots_skip_groups_without_completed_runs(sweep):
    written = write_report(build_report(sweep))
    assert {path.name for path in written.values() if path.suffix == ".png"} == {
        "val_accuracy.png", "val_loss.png", "train_loss.png", "accuracy_vs_params.png", "accuracy_vs_wall_time.png"}


GRIDS = {"translation": [0, 2, 4, 6], "rotation": [0, 15, 30, 45], "scale": [0.6, 0.8, 1.0, 1.2, 1.4]}


def write_invariance(run_dir: Path, seed: int, grids: dict = GRIDS) -> dict:
    """A hand-made evaluate/invariance.json (accuracies falling with the transform, varying with the
    seed); returns its curves as kind -> {value: accuracy}."""
    rng = np.random.default_rng(seed)
    curves = {kind: [{"value": float(v), "accuracy": float(rng.uniform(0.1, 0.9))} for v in values]
              for kind, values in grids.items()}
    (run_dir / "evaluate").mkdir()
    (run_dir / "evaluate" / "invariance.json").write_text(json.dumps({"test_accuracy": 0.9, "curves": curves}))
    return {kind: {p["value"]: p["accuracy"] for p in points} for kind, points in curves.items()}


def test_invariance_columns_are_mean_and_std_over_the_evaluated_runs(sweep):
    # lenet: all three seeds evaluated; vgg: two of three; resnet (no completed run) has none.
    written = {model: [write_invariance(sweep / str(number), seed=number) for number in numbers]
               for model, numbers in (("lenet", (0, 1, 2)), ("vgg", (3, 4)))}
    report = build_report(sweep)
    headings, rows = table_rows(report)
    columns = ["acc % shift 6 px", "acc % rot 45°", "acc % scale 0.6x", "acc % scale 1.4x"]
    assert headings[-4:] == columns
    write_report(report)
    with (sweep / "report.csv").open(newline="") as handle:
        table = {row["model"]: row for row in csv.DictReader(handle)}
    for model, curves in written.items():
        assert table[model]["invariance_n"] == str(len(curves))
        for column, (kind, value) in zip(columns, [("translation", 6.0), ("rotation", 45.0), ("scale", 0.6),
                                                   ("scale", 1.4)], strict=True):
            accuracies = np.array([curve[kind][value] for curve in curves])
            key = f"{kind}_{value:g}_accuracy"
            assert float(table[model][f"{key}_mean"]) == pytest.approx(accuracies.mean(), rel=1e-12)
            assert float(table[model][f"{key}_std"]) == pytest.approx(accuracies.std(ddof=1), rel=1e-9)
            shown = rows[[group.label["model"] for group in report.groups].index(model)][headings.index(column)]
            assert shown == f"{100 * accuracies.mean():.2f} ± {100 * accuracies.std(ddof=1):.2f}"
    assert table["resnet"]["invariance_n"] == "0" and table["resnet"]["translation_6_accuracy_mean"] == ""
    assert "acc % shift / rot / scale" in (sweep / "report.md").read_text()


def test_invariance_columns_use_the_grid_every_evaluated_run_shares(sweep):
    write_invariance(sweep / "0", 0)
    write_invariance(sweep / "3", 3, {"translation": [0, 2, 4], "rotation": [0, -45, 30], "scale": [1.0]})
    headings, _ = table_rows(build_report(sweep))
    assert [h for h in headings if h.startswith("acc %")] == ["acc % shift 4 px", "acc % rot 30°", "acc % scale 1x"]


def test_without_invariance_data_there_are_no_invariance_columns_or_plot(sweep):
    report = build_report(sweep)
    assert report.invariance == [] and not any(h.startswith("acc %") for h in table_rows(report)[0])
    write_report(report)
    assert not (sweep / "plots" / "invariance.png").exists()
    assert "invariance_n" not in (sweep / "report.csv").read_text()
    (sweep / "0" / "evaluate").mkdir()
    (sweep / "0" / "evaluate" / "invariance.json").write_text('{"curves": {"transl')  # torn: ignored
    assert build_report(sweep).invariance == []


def test_invariance_plot_is_drawn_and_linked(sweep):
    for number in (0, 1, 3):
        write_invariance(sweep / str(number), number)
    written = write_report(build_report(sweep))
    image = written["Test accuracy under shifts, rotations and scales"]
    assert image == sweep / "plots" / "invariance.png"
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and image.stat().st_size > 10_000
    assert "plots/invariance.png" in (sweep / "report.md").read_text()
