"""logger=mlflow: one MLflow run per cnnexp run, in an experiment per sweep.

Where: `logger.mlflow.tracking_uri`, else $MLFLOW_TRACKING_URI, else a SQLite store in
`logger.mlflow.store_dir` (outputs/mlruns), which `mlflow ui --backend-store-uri
sqlite:///outputs/mlruns/mlflow.db` shows with no server to run. Not MLflow's old folder store:
MLflow 3 refuses to open one unless MLFLOW_ALLOW_FILE_STORE=true, and it gets no new features.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from cnnexp.checks import Check, folder_at
from cnnexp.runs.trackers.base import (
    TrackedRun,
    Tracker,
    artifact_files,
    best_checkpoint,
    flat_config,
    metric_values,
    summary_numbers,
    text_at,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger("cnnexp.trackers")

STORE_FILE, ARTIFACTS_DIR, STORE_LOCK = "mlflow.db", "artifacts", ".lock"  # inside logger.mlflow.store_dir
DEFAULT_EXPERIMENT = "cnnexp"  # the experiment of runs that are not part of a sweep
# MLflow's run status for how the run ended (summary.json's status); any other ending is FAILED.
RUN_STATUS = {"completed": "FINISHED", "interrupted": "KILLED"}


class MlflowTracker(Tracker):
    """Parameters: the resolved config as dotted keys. Metrics: `<split>/<name>` by step, and at the
    end summary.json's numbers. Artifacts: summary.json and the composed config. Tags: the run
    folder and the best checkpoint's path (checkpoints are not uploaded)."""

    package = "mlflow"
    # MLflow logs a traceback for a failed database write; urllib3 a line per retry of a request.
    loggers = ("mlflow", "alembic", "urllib3")

    @staticmethod
    def option_checks(options: DictConfig) -> list[Check]:
        return [text_at("tracking_uri", options.tracking_uri, optional=True),
                folder_at("store_dir", options.store_dir),
                text_at("experiment_name", options.experiment_name, optional=True)]

    def start(self, run: TrackedRun) -> dict[str, str]:
        from mlflow import MlflowClient
        from mlflow.entities import Param

        self._run_dir, self._step = run.run_dir, run.resume_step or 0
        name = self.options.experiment_name or run.sweep or DEFAULT_EXPERIMENT
        uri = self.options.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if uri:
            self._client = MlflowClient(tracking_uri=uri)
            experiment_id = _experiment_id(self._client, name, artifact_location=None)
        else:
            store = Path(self.options.store_dir).expanduser().absolute()
            uri = f"sqlite:///{store / STORE_FILE}"
            with _store_lock(store):  # a sweep's parallel jobs would each create the store's tables
                self._client = MlflowClient(tracking_uri=uri)
                experiment_id = _experiment_id(self._client, name, (store / ARTIFACTS_DIR).as_uri())
        run_id = self._reopened(run.ids, uri)
        if run_id is None:
            run_id = self._client.create_run(experiment_id, run_name=run.name, tags={
                "cnnexp.run_dir": str(run.run_dir.absolute())}).info.run_id
        self._run_id = run_id
        # Parameters cannot change once logged: a resumed run keeps those it started with.
        logged = self._client.get_run(run_id).data.params
        # Text as in the YAML config: `true`, `null`, `0.001`.
        self._client.log_batch(run_id, params=[Param(key, value if isinstance(value, str) else json.dumps(value))
                                               for key, value in flat_config(run.config).items() if key not in logged])
        log.info("mlflow: run %s in experiment %r of %s", run_id, name, uri)
        return {"run_id": run_id, "tracking_uri": uri}

    def _reopened(self, ids: dict[str, str], uri: str) -> str | None:
        """The MLflow run this run had before it was resumed, running again; None if there is none
        in this store (the first start, another tracking URI now, or the run was deleted)."""
        from mlflow.exceptions import MlflowException

        if ids.get("tracking_uri") != uri or not ids.get("run_id"):
            return None
        try:
            self._client.update_run(ids["run_id"], status="RUNNING")
        except MlflowException as error:
            log.info("mlflow: run %s is not in %s (%s): starting a new one", ids["run_id"], uri, error.error_code)
            return None
        return ids["run_id"]

    def log(self, record: dict[str, Any]) -> None:
        self._step = record["step"]
        self._log_metrics(metric_values(record))

    def finish(self, summary: dict[str, Any]) -> None:
        self._log_metrics(summary_numbers(summary))
        for path in artifact_files(self._run_dir):
            self._client.log_artifact(self._run_id, str(self._run_dir / path),
                                      artifact_path=path.parent.as_posix() if path.parent.parts else None)
        if (checkpoint := best_checkpoint(self._run_dir)) is not None:
            self._client.set_tag(self._run_id, "cnnexp.best_checkpoint", checkpoint)
        self._client.set_terminated(self._run_id, status=RUN_STATUS.get(summary.get("status"), "FAILED"))

    def _log_metrics(self, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._client.log_batch(self._run_id, metrics=[Metric(key, value, now, self._step)
                                                      for key, value in values.items()])


def _experiment_id(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    """The experiment called `name`, created if it is new (with its files in `artifact_location`;
    None: where the tracking server keeps them)."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException:
        found = client.get_experiment_by_name(name)  # another job of the sweep created it first
        if found is None:
            raise
        return found.experiment_id


@contextlib.contextmanager
def _store_lock(store: Path) -> Iterator[None]:
    """Hold the store folder's lock: the first jobs of a sweep, started together, would each
    create the SQLite store's tables (and its experiment) and fail on each other's."""
    store.mkdir(parents=True, exist_ok=True)
    with open(store / STORE_LOCK, "a", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield
