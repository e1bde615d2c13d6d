"""logger=tensorboard: TensorBoard event files in the run folder (`tensorboard --logdir outputs`)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from cnnexp.checks import Check, is_integer
from cnnexp.runs.layout import TENSORBOARD_DIR
from cnnexp.runs.trackers.base import (
    TrackedRun,
    Tracker,
    best_checkpoint,
    flat_config,
    metric_values,
    summary_numbers,
)

# The writer's thread waits up to flush_secs at a time, and Python's waits have a limit: an hour at most.
MAX_FLUSH_SECS = 3600


class TensorBoardTracker(Tracker):
    """Scalars as `<split>/<name>` by step; at the end the config and summary.json's numbers in the
    HParams tab, so that `tensorboard --logdir <sweep folder>` compares a sweep's runs in one table."""

    @staticmethod
    def option_checks(options: DictConfig) -> list[Check]:
        return [("flush_secs", options.flush_secs, lambda v: is_integer(v) and 1 <= v <= MAX_FLUSH_SECS,
                 f"an integer from 1 to {MAX_FLUSH_SECS}")]

    def start(self, run: TrackedRun) -> dict[str, str]:
        from tensorboardX import SummaryWriter

        self._run, self._step = run, run.resume_step or 0
        self._writer = SummaryWriter(str(run.run_dir / TENSORBOARD_DIR), flush_secs=self.options.flush_secs)
        return {}

    def log(self, record: dict[str, Any]) -> None:
        self._step = record["step"]
        for tag, value in metric_values(record).items():
            self._writer.add_scalar(tag, value, self._step)

    def finish(self, summary: dict[str, Any]) -> None:
        from tensorboardX.summary import hparams

        numbers = {f"summary/{key}": value for key, value in summary_numbers(summary).items()}
        for event in hparams(flat_config(self._run.config), numbers):
            self._writer.file_writer.add_summary(event)
        for tag, value in numbers.items():
            self._writer.add_scalar(tag, value, self._step)
        if (checkpoint := best_checkpoint(self._run.run_dir)) is not None:
            self._writer.add_text("best_checkpoint", checkpoint, self._step)
        self._writer.close()
