"""The trackers (`logger=`) in this process, on the real libraries, without training: the config
group, the checks of its options, and what each tracker writes, read back with its own library."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
from helpers.commands import read_csv
from helpers.paths import CONF
from helpers.trackers import tensorboard_events, tracker_ids, wandb_run, wandb_runs
from mlflow import MlflowClient
from omegaconf import OmegaConf

from cnnexp.app.compose import compose_config
from cnnexp.app.extensions import register_hydra_extensions
from cnnexp.config import validate_config
from cnnexp.errors import UserError
from cnnexp.runs.fingerprint import config_fingerprint
from cnnexp.runs.layout import SWEEP_FILE
from cnnexp.runs.trackers import TRACKERS
from cnnexp.runs.trackers.base import Tracker, flat_config
from cnnexp.runs.trackers.fanout import Trackers

BASE = ["data=digits"]
# Records as the train loop writes them (a step record, an epoch's train and val, the test).
RECORDS = [
    {"kind": "step", "split": "train", "epoch": 1, "step": 5, "loss": 2.3, "accuracy": 0.1, "lr": 0.002,
     "images_per_s": 500.0, "time": 1.0},
    {"kind": "epoch", "split": "train", "epoch": 1, "step": 10, "loss": 2.0, "accuracy": 0.4, "lr": 0.001,
     "images_per_s": 700.0, "time": 2.0},
    {"kind": "epoch", "split": "val", "epoch": 1, "step": 10, "loss": 1.9, "accuracy": 0.5, "lr": 0.001,
     "images_per_s": None, "time": 2.5},
    {"kind": "step", "split": "train", "epoch": 2, "step": 15, "loss": 1.5, "accuracy": 0.6, "lr": 0.0005,
     "images_per_s": 800.0, "time": 3.0},
    {"kind": "epoch", "split": "test", "epoch": 2, "step": 20, "loss": 1.2, "accuracy": 0.7, "lr": 0.0,
     "images_per_s": None, "time": 4.0, "extra": 1},  # a key the others lack: a new CSV column
]
SUMMARY = {"status": "completed", "test_accuracy": 0.7, "best_val_accuracy": 0.5, "params": 61706, "pid": 123,
           "model": "lenet"}


@pytest.fixture(autouse=True, scope="module")
def _extensions():
    register_hydra_extensions()


def _compose(*overrides: str):
    return compose_config("train", [*BASE, *overrides], validate_config)


def _tracked(tmp_path: Path, *overrides: str):
    """A config whose trackers write below `tmp_path` (outputs/mlruns, outputs/wandb)."""
    return _compose(f"paths.output_dir={tmp_path / 'outputs'}", *overrides)


@pytest.fixture(scope="module")
def store_root(tmp_path_factory) -> Path:
    """A folder whose outputs/mlruns store the MLflow tests share: creating a store takes seconds."""
    return tmp_path_factory.mktemp("trackers")


def _run_folder(root: Path, name: str = "outputs/runs/2026-01-01_00-00-00_abcdef") -> Path:
    """A run folder as training leaves it, for the trackers to upload from."""
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (run / "summary.json").write_text(json.dumps(SUMMARY))
    (run / "checkpoints" / "best").mkdir(parents=True)
    return run


def _train(cfg, run: Path, records: list[dict], *, resume_step: int | None = None, summary=SUMMARY) -> None:
    """What the train loop does with its trackers, without training: start, a record at a time, finish."""
    trackers = Trackers()
    trackers.start(cfg, run, resume_step)
    with (run / "metrics.jsonl").open("a") as jsonl:
        for record in records:
            jsonl.write(json.dumps(record) + "\n")
            trackers.log(record)
    trackers.finish(summary)


def test_every_option_file_is_a_tracker_whose_options_are_all_checked():
    files = {path.stem: OmegaConf.load(path) for path in (CONF / "logger").glob("*.yaml")}
    assert set(files) == set(TRACKERS)
    for name, options in files.items():
        assert list(options) == [name]  # under logger.<name>, so that a list of them merges
        checked = [key for key, *_ in TRACKERS[name].option_checks(_compose(f"logger={name}").logger[name])]
        assert checked == list(options[name]), name


def test_one_tracker_several_or_none_and_the_choice_leaves_the_fingerprint_alone():
    chosen = {(): ["tensorboard"], ("logger=mlflow",): ["mlflow"], ("logger=[tensorboard,wandb,csv]",):
              ["tensorboard", "wandb", "csv"], ("logger=[]",): [], ("logger=wandb", "logger.wandb.project=p"): ["wandb"]}
    fingerprints = set()
    for overrides, names in chosen.items():
        cfg = _compose(*overrides)
        assert list(cfg.get("logger") or {}) == names
        fingerprints.add(config_fingerprint(cfg))
    assert len(fingerprints) == 1


@pytest.mark.parametrize("override, message", [
    ("logger=nope", "unknown logger=nope; choose one of csv, mlflow, tensorboard, wandb"),
    ("+logger.nope={}", "invalid logger='nope': choose one of csv, mlflow, tensorboard, wandb"),
    ("logger.tensorboard=5", "invalid logger.tensorboard=5"),
    ("+logger.tensorboard.flush=1", "logger.tensorboard has no option 'flush'; its options: flush_secs"),
    ("logger.tensorboard.flush_secs=0", "invalid logger.tensorboard.flush_secs=0: must be an integer from 1 to 3600"),
    ("logger.tensorboard.flush_secs=1e40", "invalid logger.tensorboard.flush_secs=1e+40"),
    ("logger.tensorboard.flush_secs=true", "invalid logger.tensorboard.flush_secs=True"),
])
def test_wrong_logger_choices_and_options_are_one_line(override, message):
    with pytest.raises(UserError, match=re.escape(message)):
        _compose(override)


@pytest.mark.parametrize("name, override, message", [
    ("mlflow", "logger.mlflow.tracking_uri=''", "invalid logger.mlflow.tracking_uri='': must be null or a non-empty"),
    ("mlflow", "logger.mlflow.store_dir=/dev/null/x", "invalid logger.mlflow.store_dir='/dev/null/x': must be a folder"),
    ("mlflow", "logger.mlflow.experiment_name=1", "invalid logger.mlflow.experiment_name=1"),
    ("wandb", "logger.wandb.mode=sometimes", "invalid logger.wandb.mode='sometimes': must be one of auto, online, offline"),
    ("wandb", "logger.wandb.project=a/b", "invalid logger.wandb.project='a/b'"),
    ("wandb", "logger.wandb.tags=abc", "invalid logger.wandb.tags='abc': must be a list of names"),
    ("wandb", "logger.wandb.tags=[a,1]", "invalid logger.wandb.tags=['a', 1]"),
    ("wandb", "logger.wandb.dir=/dev/null", "invalid logger.wandb.dir='/dev/null': must be a folder"),
])
def test_wrong_tracker_options_are_one_line(name, override, message):
    with pytest.raises(UserError, match=re.escape(message)):
        _compose(f"logger={name}", override)


def test_tensorboard_gets_the_metrics_and_at_the_end_the_config_and_summary(tmp_path):
    run = _run_folder(tmp_path)
    cfg = _tracked(tmp_path)  # the default
    _train(cfg, run, RECORDS)
    events = tensorboard_events(run)
    assert events["scalars"]["train/loss"] == [(5, pytest.approx(2.3)), (10, 2.0), (15, 1.5)]  # float32
    assert events["scalars"]["val/accuracy"] == [(10, 0.5)] and "val/images_per_s" not in events["scalars"]
    assert events["scalars"]["summary/test_accuracy"] == [(20, pytest.approx(0.7))]
    assert events["hparams"]["optim.lr"] == cfg.optim.lr and events["hparams"]["model.name"] == "lenet"
    assert events["hparams"]["init_from_reinit"] == "[]"
    assert events["texts"]["best_checkpoint/text_summary"] == str(run / "checkpoints" / "best")


def test_csv_is_the_jsonl_and_a_resume_starts_it_again_from_the_jsonl(tmp_path):
    run = _run_folder(tmp_path)
    _train(_tracked(tmp_path, "logger=csv"), run, RECORDS)
    assert read_csv(run / "metrics.csv") == [_as_csv(record, RECORDS) for record in RECORDS]

    # Resumed from step 10: metrics.jsonl (which MetricsLog truncates) and the table agree again.
    kept = [record for record in RECORDS if record["step"] <= 10]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS) + '{"kind": "st')  # torn
    _train(_tracked(tmp_path, "logger=csv"), run, [RECORDS[3]], resume_step=10)
    expected = [*kept, RECORDS[3]]
    assert read_csv(run / "metrics.csv") == [_as_csv(record, expected) for record in expected]


def _as_csv(record: dict, records: list[dict]) -> dict[str, str]:
    """A record as a row of a table of `records`: every column, empty where the record has no value."""
    columns = dict.fromkeys(key for r in records for key in r)
    return {key: "" if record.get(key) is None else str(record[key]) for key in columns}


def test_mlflow_gets_the_config_metrics_summary_and_files_and_a_resume_continues_its_run(tmp_path, store_root):
    run = _run_folder(tmp_path)
    cfg = _tracked(store_root, "logger=mlflow")
    _train(cfg, run, RECORDS[:3], summary={**SUMMARY, "status": "interrupted"})
    ids = tracker_ids(run)["mlflow"]
    client = MlflowClient(tracking_uri=ids["tracking_uri"])
    assert ids["tracking_uri"] == f"sqlite:///{store_root / 'outputs' / 'mlruns' / 'mlflow.db'}"
    assert client.get_run(ids["run_id"]).info.status == "KILLED"

    _train(cfg, run, RECORDS[3:], resume_step=10)
    assert tracker_ids(run)["mlflow"] == ids  # the same MLflow run
    found = client.get_run(ids["run_id"])
    assert found.info.status == "FINISHED" and found.info.run_name == run.name
    assert client.get_experiment(found.info.experiment_id).name == "cnnexp"
    params = flat_config(OmegaConf.to_container(cfg, resolve=True))
    assert found.data.params["optim.lr"] == str(cfg.optim.lr) and found.data.params["init_from"] == "null"
    assert len(found.data.params) == len(params)
    assert [(m.step, m.value) for m in client.get_metric_history(ids["run_id"], "train/loss")] == [
        (5, 2.3), (10, 2.0), (15, 1.5)]
    assert len(client.get_metric_history(ids["run_id"], "val/images_per_s")) == 0  # None is no point
    assert found.data.metrics["test_accuracy"] == 0.7 and found.data.metrics["params"] == 61706
    assert "pid" not in found.data.metrics
    assert found.data.tags["cnnexp.best_checkpoint"] == str(run / "checkpoints" / "best")
    assert {a.path for a in client.list_artifacts(ids["run_id"])} == {"summary.json", ".hydra"}
    assert [a.path for a in client.list_artifacts(ids["run_id"], ".hydra")] == [".hydra/config.yaml"]


def test_a_sweep_is_an_mlflow_experiment_and_a_wandb_group(tmp_path, store_root):
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / SWEEP_FILE).write_text("task: []\n")
    cfg = _tracked(store_root, "logger=[mlflow,wandb]", "logger.wandb.mode=offline")
    runs = [_run_folder(tmp_path, f"sweep/{job}") for job in (0, 1)]
    for run in runs:
        _train(cfg, run, RECORDS[:1])
    client = MlflowClient(tracking_uri=tracker_ids(runs[0])["mlflow"]["tracking_uri"])
    (experiment,) = [e for e in client.search_experiments() if e.name == "sweep"]
    assert sorted(r.info.run_name for r in client.search_runs([experiment.experiment_id])) == ["sweep/0", "sweep/1"]
    for run in runs:
        (log,) = wandb_runs(store_root / "outputs", tracker_ids(run)["wandb"]["id"])
        assert wandb_run(log)["run"].run_group == "sweep"


def test_wandb_offline_gets_the_config_history_summary_and_files_and_a_resume_continues_its_run(tmp_path):
    run = _run_folder(tmp_path)
    cfg = _tracked(tmp_path, "logger=wandb", "logger.wandb.mode=offline", "logger.wandb.tags=[a,b]")
    _train(cfg, run, RECORDS[:3], summary={**SUMMARY, "status": "interrupted"})
    _train(cfg, run, RECORDS[3:], resume_step=10)
    run_id = tracker_ids(run)["wandb"]["id"]
    first, second = (wandb_run(log) for log in wandb_runs(tmp_path / "outputs", run_id))
    assert first["run"].run_id == second["run"].run_id == run_id
    assert first["run"].project == "cnnexp" and list(first["run"].tags) == ["a", "b"] and not first["run"].run_group
    config = {item.key: json.loads(item.value_json) for item in first["run"].config.update}
    assert config["optim"]["lr"] == cfg.optim.lr and config["data"]["name"] == "digits"
    assert first["history"] == {
        5: {"train/loss": 2.3, "train/accuracy": 0.1, "train/lr": 0.002, "train/images_per_s": 500.0},
        10: {"train/loss": 2.0, "train/accuracy": 0.4, "train/lr": 0.001, "train/images_per_s": 700.0,
             "val/loss": 1.9, "val/accuracy": 0.5, "val/lr": 0.001}}
    assert sorted(second["history"]) == [15, 20]
    assert second["summary"]["test_accuracy"] == 0.7 and second["summary"]["params"] == 61706
    assert second["summary"]["best_checkpoint"] == str(run / "checkpoints" / "best")
    assert {"summary.json", ".hydra/config.yaml"} <= set(second["files"])


class _Broken(Tracker):
    """A tracker whose library fails from its second record on."""

    def start(self, run):
        self.records = 0
        return {}

    def log(self, record):
        self.records += 1
        if self.records > 1:
            raise OSError("No space left on device\nsecond line of the cause")

    def finish(self, summary):
        raise AssertionError("a tracker turned off is not finished")


def test_a_failing_tracker_is_one_warning_and_turned_off_while_the_others_go_on(tmp_path, caplog, monkeypatch):
    cfg = _tracked(tmp_path, "logger=[tensorboard,csv]")
    monkeypatch.setitem(TRACKERS, "tensorboard", _Broken)  # the first of the two breaks
    run = _run_folder(tmp_path)
    with caplog.at_level(logging.WARNING, logger="cnnexp.trackers"):
        _train(cfg, run, RECORDS)
    (warning,) = [r.getMessage() for r in caplog.records]
    assert warning == ("tracker tensorboard failed, it is off for the rest of this run (metrics.jsonl has every "
                       "record): OSError: No space left on device")
    assert len(read_csv(run / "metrics.csv")) == len(RECORDS)
