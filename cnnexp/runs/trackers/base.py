"""What every tracker is: the interface the run talks to, and the views of a run (its config as
parameters, a record's metrics, summary.json's numbers, the files to upload) that all of them send,
computed once here so each tracker shows the same run."""

from __future__ import annotations

import abc
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from cnnexp.checks import Check, is_number
from cnnexp.runs.layout import BEST_CHECKPOINT, CHECKPOINTS_DIR, CONFIG_FILE, OVERRIDES_FILE, SUMMARY_FILE

# The fields of a metrics.jsonl record that are metrics, each shown as `<split>/<name>`; the others
# (kind, split, epoch, step, time) say where in the run the record was taken.
METRIC_FIELDS = ("loss", "accuracy", "lr", "images_per_s")
# Files of the run folder uploaded when the run ends (those that exist).
ARTIFACTS = (SUMMARY_FILE, CONFIG_FILE, OVERRIDES_FILE)


@dataclass(frozen=True)
class TrackedRun:
    """What a tracker is told about the run it tracks when it starts."""

    run_dir: Path
    name: str  # shown in the tracker's lists of runs
    sweep: str | None  # the sweep folder's name for a sweep's job: its runs are shown together
    config: dict[str, Any]  # the resolved config
    resume_step: int | None  # continuing a run from this step: records after it come again
    ids: dict[str, str]  # what this tracker stored the last time it started on the run ({} the first time)


class Tracker(abc.ABC):
    """One place a run's metrics go besides metrics.jsonl. Its library is imported when it starts,
    not before, so that `cnnexp --help` does not load MLflow or W&B."""

    # The module its library is imported as, checked before the run starts: the cnnexp extra of the
    # tracker's name installs it. None for a dependency of cnnexp.
    package: str | None = None
    # Its library's loggers, silenced while it works: a failure is one warning of cnnexp's instead.
    loggers: tuple[str, ...] = ()

    def __init__(self, options: DictConfig):
        self.options = options

    @staticmethod
    def option_checks(options: DictConfig) -> list[Check]:
        """A check per option of conf/logger/<name>.yaml (keys relative to it); an option without one
        is refused as unknown."""
        return []

    @abc.abstractmethod
    def start(self, run: TrackedRun) -> dict[str, str]:
        """Open the tracker's run (reopen it, resuming); returns the ids to store for a resume."""

    @abc.abstractmethod
    def log(self, record: dict[str, Any]) -> None:
        """Send one metrics.jsonl record."""

    @abc.abstractmethod
    def finish(self, summary: dict[str, Any]) -> None:
        """Send summary.json's numbers and the run's files, and close the tracker's run."""


def text_at(key: str, value: object, *, optional: bool = False, banned: str = "") -> Check:
    """The check "`key` is a non-empty text without any character of `banned`" (or null if `optional`)."""
    def ok(v: object) -> bool:
        return (optional and v is None) or (isinstance(v, str) and v.strip() != "" and not set(banned) & set(v))

    expected = "a non-empty text" + (f" without any of {' '.join(banned)}" if banned else "")
    return key, value, ok, f"null or {expected}" if optional else expected


def flat_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The config as dotted keys (`optim.lr`), the way trackers list parameters; a list or an empty
    mapping becomes its JSON text, since trackers take single values only."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flat_config(value, f"{dotted}."))
        else:
            flat[dotted] = json.dumps(value) if isinstance(value, list | dict) else value
    return flat


def metric_values(record: dict[str, Any]) -> dict[str, float]:
    """A metrics.jsonl record's finite metrics as `<split>/<name>`: `train/loss`, `val/accuracy`."""
    return {f"{record['split']}/{name}": float(record[name]) for name in METRIC_FIELDS
            if is_number(record.get(name)) and math.isfinite(record[name])}


def summary_numbers(summary: dict[str, Any]) -> dict[str, float]:
    """summary.json's finite top-level numbers (test_accuracy, best_val_accuracy, params, wall_time_s...),
    but the process id, which measures nothing."""
    return {key: float(value) for key, value in summary.items()
            if key != "pid" and is_number(value) and math.isfinite(value)}


def artifact_files(run_dir: Path) -> list[Path]:
    """The ARTIFACTS the run folder holds, relative to it."""
    return [Path(name) for name in ARTIFACTS if (run_dir / name).is_file()]


def best_checkpoint(run_dir: Path) -> str | None:
    """Where the run's best checkpoint is (what `init_from=` takes), shown rather than uploaded:
    checkpoints are big, and they stay in the run folder."""
    path = run_dir / CHECKPOINTS_DIR / BEST_CHECKPOINT
    return str(path.absolute()) if path.is_dir() else None
