"""The run's metric log: metrics.jsonl (one JSON object per line), which reports read, and the
trackers chosen with `logger=` (TensorBoard, MLflow, ...), which get every record too."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cnnexp.errors import RunFolderWriteError
from cnnexp.runs.layout import METRICS_FILE


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl (none if it does not exist; a line cut short by a kill is skipped)."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


class MetricsLog:
    """Appends records to metrics.jsonl (flushed per line, so a crash loses nothing logged) and
    hands each, once written, to `forward` (the run's trackers). The JSONL is always written: a
    tracker that fails only turns itself off, while a JSONL that cannot be written stops the run."""

    def __init__(self, run_dir: Path, resume_step: int | None, forward: Callable[[dict[str, Any]], None]):
        self.path = run_dir / METRICS_FILE
        self.forward = forward
        if resume_step is not None:
            self._truncate_after(resume_step)
        self._file = open(self.path, "a", encoding="utf-8")

    def _truncate_after(self, step: int) -> None:
        """Drop records written after `step`: the resumed run writes them again."""
        kept = [record for record in read_records(self.path) if record.get("step", 0) <= step]
        self.path.write_text("".join(f"{json.dumps(record)}\n" for record in kept), encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        try:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        except OSError as error:
            raise RunFolderWriteError(self.path, error) from error
        self.forward(record)

    def close(self) -> None:
        try:
            self._file.close()
        except OSError as error:  # the last buffered line could not be written
            raise RunFolderWriteError(self.path, error) from error
