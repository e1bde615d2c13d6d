"""The run's metric log: metrics.jsonl (one JSON object per line) and TensorBoard events."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from cnnexp.errors import RunFolderWriteError
from cnnexp.runs.layout import METRICS_FILE, TENSORBOARD_DIR

_SCALARS = ("loss", "accuracy", "lr", "images_per_s")


class MetricsLog:
    """Appends records to metrics.jsonl (flushed per line, so a crash loses nothing logged)
    and mirrors their scalars to TensorBoard as `<split>/<name>`."""

    def __init__(self, run_dir: Path, resume_step: int | None = None):
        self.path = run_dir / METRICS_FILE
        if resume_step is not None:
            self._truncate_after(resume_step)
        from tensorboardX import SummaryWriter

        self._tensorboard = SummaryWriter(str(run_dir / TENSORBOARD_DIR), flush_secs=10)
        self._file = open(self.path, "a", encoding="utf-8")

    def _truncate_after(self, step: int) -> None:
        """Drop records written after `step`: the resumed run writes them again."""
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut short by a kill
            if record.get("step", 0) <= step:
                kept.append(line)
        self.path.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        try:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        except OSError as error:
            raise RunFolderWriteError(self.path, error) from error
        for name in _SCALARS:
            value = record.get(name)
            if isinstance(value, (int, float)) and math.isfinite(value):
                self._tensorboard.add_scalar(f"{record['split']}/{name}", value, record["step"])

    def close(self) -> None:
        self._tensorboard.close()
        try:
            self._file.close()
        except OSError as error:  # the last buffered line could not be written
            raise RunFolderWriteError(self.path, error) from error

