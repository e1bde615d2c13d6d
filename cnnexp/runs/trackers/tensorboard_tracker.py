"""logger=tensorboard: TensorBoard event files in the run folder (`tensorboard --logdir outputs`)."""

from __future__ import annotations

import time
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

# An hour at most between writes to disk: a crash would lose more of the curves than anyone wants.
MAX_FLUSH_SECS = 3600


class TensorBoardTracker(Tracker):
    """Scalars as `<split>/<name>` by step; at the end the config and summary.json's numbers in the
    HParams tab, so that `tensorboard --logdir <sweep folder>` compares a sweep's runs in one table.

    Events are written in this thread (tensorboardX's EventsWriter), not by SummaryWriter's thread:
    when that thread dies (a full disk), its queue fills and the next write blocks the run forever;
    here a failed write raises, and the tracker is turned off."""

    @staticmethod
    def option_checks(options: DictConfig) -> list[Check]:
        return [("flush_secs", options.flush_secs, lambda v: is_integer(v) and 1 <= v <= MAX_FLUSH_SECS,
                 f"an integer from 1 to {MAX_FLUSH_SECS}")]

    def start(self, run: TrackedRun) -> dict[str, str]:
        from tensorboardX.event_file_writer import EventsWriter

        self._run, self._step = run, run.resume_step or 0
        folder = run.run_dir / TENSORBOARD_DIR
        folder.mkdir(parents=True, exist_ok=True)
        self._events = EventsWriter(str(folder / "events"))  # the file name SummaryWriter gives
        self._next_flush = time.monotonic() + self.options.flush_secs
        return {}

    def log(self, record: dict[str, Any]) -> None:
        from tensorboardX.summary import scalar

        self._step = record["step"]
        for tag, value in metric_values(record).items():
            self._write(scalar(tag, value), self._step)
        if time.monotonic() >= self._next_flush:
            self._events.flush()
            self._next_flush = time.monotonic() + self.options.flush_secs

    def finish(self, summary: dict[str, Any]) -> None:
        from tensorboardX.summary import hparams, scalar, text

        numbers = {f"summary/{key}": value for key, value in summary_numbers(summary).items()}
        for event in hparams(flat_config(self._run.config), numbers):
            self._write(event, None)
        for tag, value in numbers.items():
            self._write(scalar(tag, value), self._step)
        if (checkpoint := best_checkpoint(self._run.run_dir)) is not None:
            self._write(text("best_checkpoint", checkpoint), self._step)
        self._events.close()

    def _write(self, summary: Any, step: int | None) -> None:
        from tensorboardX.proto.event_pb2 import Event

        event = Event(summary=summary, wall_time=time.time())
        if step is not None:
            event.step = step
        self._events.write_event(event)
