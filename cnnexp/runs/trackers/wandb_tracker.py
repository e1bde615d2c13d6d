"""logger=wandb: one Weights & Biases run per cnnexp run, a sweep's runs in one group.

Offline unless W&B's server answers and a login is configured (`logger.wandb.mode=auto`): the run
is then written to disk, and `wandb sync` uploads it later from a machine with a network.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from cnnexp.checks import Check, folder_at
from cnnexp.data.network import connect_targets, first_reachable
from cnnexp.runs.trackers.base import (
    TrackedRun,
    Tracker,
    artifact_files,
    best_checkpoint,
    metric_values,
    summary_numbers,
    text_at,
)

log = logging.getLogger("cnnexp.trackers")

MODES = ("auto", "online", "offline")
NOT_IN_NAMES = "/\\#?%:"  # characters W&B refuses in project and entity names
TAG_LENGTH = 64  # W&B's longest tag


class WandbTracker(Tracker):
    """Config: the resolved config (nested; W&B shows it as dotted keys). History: `<split>/<name>`
    by step. Summary: summary.json's numbers and the best checkpoint's path (checkpoints are not
    uploaded). Files: summary.json and the composed config. The run id is stored in the run folder,
    so a resumed run continues the same W&B run."""

    package = "wandb"

    @staticmethod
    def option_checks(options: DictConfig) -> list[Check]:
        return [("mode", options.mode, lambda v: v in MODES, f"one of {', '.join(MODES)}"),
                text_at("project", options.project, banned=NOT_IN_NAMES),
                text_at("entity", options.entity, optional=True, banned=NOT_IN_NAMES),
                ("tags", options.tags, lambda v: isinstance(v, Sequence) and not isinstance(v, str) and all(
                    isinstance(t, str) and 0 < len(t.strip()) <= TAG_LENGTH for t in v),
                 f"a list of names of 1 to {TAG_LENGTH} characters"),
                text_at("group", options.group, optional=True),
                folder_at("dir", options.dir)]

    def start(self, run: TrackedRun) -> dict[str, str]:
        import wandb

        options = self.options
        self._run_dir = run.run_dir
        directory = Path(options.dir).expanduser().absolute()
        directory.mkdir(parents=True, exist_ok=True)
        self._run = wandb.init(
            project=options.project, entity=options.entity, group=options.group or run.sweep,
            tags=list(options.tags), name=run.name, config=run.config, allow_val_change=True,
            id=run.ids.get("id"), resume="allow", dir=str(directory), mode=_mode(options.mode),
            reinit="create_new",  # never W&B's global run: a process may train several runs (tests do)
            # cnnexp's console stays as it is (W&B would capture it); cnnexp says where the run is.
            settings=wandb.Settings(console="off", silent=True),
        )
        if self._run.offline:
            # W&B starts a folder per start of the run: offline-run-<time>-<id>, and -1, -2... after
            # it for those started in the same second.
            segments = Path(self._run.settings.sync_dir).parent / f"offline-run-*-{self._run.id}*"
            log.info("wandb: offline run %s; upload it (each resumed part too) with: wandb sync %s",
                     self._run.id, segments)
        else:
            log.info("wandb: run %s at %s", self._run.id, self._run.url)
        return {"id": self._run.id}

    def log(self, record: dict[str, Any]) -> None:
        self._run.log(metric_values(record), step=record["step"])

    def finish(self, summary: dict[str, Any]) -> None:
        self._run.summary.update(summary_numbers(summary))
        if (checkpoint := best_checkpoint(self._run_dir)) is not None:
            self._run.summary["best_checkpoint"] = checkpoint
        for path in artifact_files(self._run_dir):
            # A copy in the W&B run's folder (W&B would link to the file), so that the offline run
            # still has it when `wandb sync` uploads it, wherever the run folder is then.
            copy = Path(self._run.dir) / path
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self._run_dir / path, copy)
            self._run.save(str(copy), base_path=self._run.dir, policy="now", glob=False)
        self._run.finish(exit_code=0 if summary.get("status") == "completed" else 1)


def _mode(mode: str) -> str | None:
    """W&B's mode for `logger.wandb.mode`. auto: $WANDB_MODE when set (None lets W&B read it);
    else online when a login is configured and W&B's server (or the proxy to it) accepts a
    connection, else offline. A login is looked for first: it is read from disk, while the
    server may take seconds not to answer."""
    import wandb

    if mode != "auto":
        return mode
    if os.environ.get("WANDB_MODE"):
        return None
    server = wandb.setup().settings.base_url
    online = wandb.login(prompt=False, verify=False) and first_reachable(connect_targets([server])) is not None
    return "online" if online else "offline"
