"""`cnnexp train logger=...` as a user runs it: every tracker gets the run and continues its own run
on resume, a sweep is one MLflow experiment and one W&B group, a missing library is one line before
anything is written, and a tracker that breaks mid-run costs a warning, not the run."""

from __future__ import annotations

import collections
import json
import signal
from pathlib import Path

import pytest
from helpers.commands import TINY, assert_one_line_error, read_csv, read_summary, run_dirs, sweep_dir
from helpers.faults import logged_records, live_run, signal_during_second_epoch, start_train, wait_for
from helpers.trackers import mlflow_client, tracker_ids, wandb_run, wandb_runs
from mlflow.artifacts import download_artifacts

from cnnexp.runs.trackers.base import metric_values

pytestmark = pytest.mark.slow  # every test here runs the installed command

# Long enough to be signalled mid-run: 80 steps per epoch (1,293 digits), logged every 20.
STEPS_PER_EPOCH, LOGGED_BATCHES = 1293 // 16, (20, 40, 60)
EPOCHS = 2
SLOW = ["data=digits", f"trainer.epochs={EPOCHS}", "trainer.batch_size=16", "trainer.log_every_steps=20",
        "trainer.progress=false"]
# W&B offline whatever the machine's network: nothing here may upload.
EVERY_TRACKER = ["logger=[tensorboard,csv,mlflow,wandb]", "logger.wandb.mode=offline"]


def _made_folder(path: Path) -> bool:
    """Whether `path` could be made a folder now (False while a file of that name exists)."""
    try:
        path.mkdir()
    except FileExistsError:
        return path.is_dir()
    return True


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_every_tracker_gets_the_run_and_a_resumed_run_continues_theirs(cnnexp, tmp_path):
    run, process = signal_during_second_epoch(cnnexp.env, tmp_path, signal.SIGINT, [*SLOW, *EVERY_TRACKER])
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    ids = tracker_ids(run)
    client = mlflow_client(tmp_path / "outputs")
    assert client.get_run(ids["mlflow"]["run_id"]).info.status == "KILLED"
    wandb_id = ids["wandb"]["id"]
    assert f"wandb sync {tmp_path / 'outputs' / 'wandb'}/offline-run-*-{wandb_id}*" in (run / "train.log").read_text()

    resumed = cnnexp("train", f"resume={run}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert tracker_ids(run) == ids  # the same MLflow and W&B runs, continued
    records, summary = _records(run), read_summary(run)

    # MLflow: the config, each metric's points exactly as in metrics.jsonl, summary.json's numbers, files.
    run_id = ids["mlflow"]["run_id"]
    found = client.get_run(run_id)
    assert found.info.status == "FINISHED" and found.info.run_name == run.name
    assert found.data.params["trainer.epochs"] == str(EPOCHS) and found.data.params["logger.wandb.mode"] == "offline"
    points = collections.defaultdict(list)
    for record in records:
        for key, value in metric_values(record).items():
            points[key].append((record["step"], value))
    assert {"train/loss", "val/accuracy", "test/accuracy", "train/images_per_s"} <= set(points)
    for key, expected in points.items():
        assert [(m.step, m.value) for m in client.get_metric_history(run_id, key)] == expected, key
    assert found.data.metrics["test_accuracy"] == summary["test_accuracy"]
    assert found.data.tags["cnnexp.best_checkpoint"] == str(run / "checkpoints" / "best")
    uploaded = download_artifacts(run_id=run_id, artifact_path="summary.json", dst_path=str(tmp_path / "got"),
                                  tracking_uri=ids["mlflow"]["tracking_uri"])
    assert json.loads(Path(uploaded).read_text()) == summary

    # W&B: one offline run per start, the same id, every record's step in the history of one of them.
    logs = [wandb_run(log) for log in wandb_runs(tmp_path / "outputs", wandb_id)]
    assert len(logs) == 2 and {log["run"].run_id for log in logs} == {wandb_id}
    history = {step: row for log in logs for step, row in log["history"].items()}
    assert sorted(history) == sorted({record["step"] for record in records})
    assert history[records[-1]["step"]]["test/accuracy"] == summary["test_accuracy"]
    assert logs[-1]["summary"]["test_accuracy"] == summary["test_accuracy"]

    # CSV: metrics.jsonl as a table; TensorBoard: its events.
    columns = list(records[0])
    assert read_csv(run / "metrics.csv") == [{key: "" if r[key] is None else str(r[key]) for key in columns}
                                             for r in records]
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))


def test_a_sweep_is_one_mlflow_experiment_and_one_wandb_group(cnnexp, tmp_path):
    result = cnnexp("train", "-m", *TINY, "trainer.epochs=1", "seed=0,1", "logger=[mlflow,wandb]",
                    "logger.wandb.mode=offline")
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = sweep_dir(tmp_path)
    client = mlflow_client(tmp_path / "outputs")
    experiment = client.get_experiment_by_name(sweep.name)
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == [f"{sweep.name}/0", f"{sweep.name}/1"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert sorted(r.data.params["seed"] for r in runs) == ["0", "1"]
    for run in run_dirs(sweep):
        (log,) = wandb_runs(tmp_path / "outputs", tracker_ids(run)["wandb"]["id"])
        assert wandb_run(log)["run"].run_group == sweep.name


@pytest.mark.parametrize("args, package", [(["logger=mlflow"], "mlflow"), (["logger=[tensorboard,wandb]"], "wandb"),
                                           (["-m", "logger=csv,mlflow"], "mlflow")],
                         ids=["run", "list", "sweep"])
def test_a_tracker_without_its_library_is_one_line_naming_the_extra(cnnexp, tmp_path, args, package):
    # This process's environment, in which importing `package` fails as if it were not installed.
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(f"import sys\nsys.modules[{package!r}] = None\n")
    env = {**cnnexp.env, "PYTHONPATH": str(hide)}
    result = cnnexp("train", *TINY, *args, env=env)
    message = f"cnnexp: error: logger={package} needs the {package} package: pip install 'cnnexp[{package}]'"
    assert_one_line_error(result, message)
    assert result.stderr.strip().splitlines()[-1] == message
    assert not (tmp_path / "outputs").exists()


def test_a_tracker_failing_mid_run_is_one_warning_and_the_run_completes(cnnexp, tmp_path):
    process = start_train(cnnexp.env, tmp_path, [*SLOW, "logger=[tensorboard,mlflow]"])
    run = wait_for(process, lambda: live_run(tmp_path)[0], lambda run: bool(logged_records(run)))
    # SQLite writes through a journal file beside the database: a folder in its place fails MLflow's
    # next write (a disk I/O error, or "unable to open database file"), as a full disk would.
    # SQLite deletes the journal after each transaction: the folder goes in between two.
    journal = tmp_path / "outputs" / "mlruns" / "mlflow.db-journal"
    wait_for(process, lambda: journal if _made_folder(journal) else None, lambda _: True)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stdout + stderr, stderr[-3000:]
    (warning,) = [line for line in (run / "train.log").read_text().splitlines() if "tracker mlflow failed" in line]
    assert "[WARNING]" in warning and "MlflowException (OperationalError)" in warning, warning
    records = _records(run)
    assert [r["step"] for r in records if r["kind"] == "step"] == [
        epoch * STEPS_PER_EPOCH + batch for epoch in range(EPOCHS) for batch in LOGGED_BATCHES]
    assert [(r["split"], r["epoch"]) for r in records if r["kind"] == "epoch"] == [
        *[(split, epoch) for epoch in range(1, EPOCHS + 1) for split in ("train", "val")], ("test", EPOCHS)]
    assert read_summary(run)["status"] == "completed"
