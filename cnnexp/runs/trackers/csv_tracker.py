"""logger=csv: metrics.csv in the run folder, metrics.jsonl as a table (like Lightning's CSVLogger)."""

from __future__ import annotations

import csv
from typing import IO, Any

from cnnexp.runs.layout import METRICS_CSV_FILE, METRICS_FILE
from cnnexp.runs.metrics import read_records
from cnnexp.runs.trackers.base import TrackedRun, Tracker


class CsvTracker(Tracker):
    """One row per record, a column per key any record has had (a record without one leaves it
    empty). A resumed run starts the file again from metrics.jsonl up to the step it resumes from,
    so the table always equals the JSONL, even for a run that had no CSV before."""

    def start(self, run: TrackedRun) -> dict[str, str]:
        self._path = run.run_dir / METRICS_CSV_FILE
        resumed = [] if run.resume_step is None else read_records(run.run_dir / METRICS_FILE)
        self._records = [record for record in resumed if record.get("step", 0) <= run.resume_step]
        self._file: IO[str] | None = None
        self._rewrite()
        return {}

    def log(self, record: dict[str, Any]) -> None:
        self._records.append(record)
        if any(key not in self._columns for key in record):
            self._rewrite()  # a new column: the header changes
            return
        self._writer.writerow(record)
        self._file.flush()

    def finish(self, summary: dict[str, Any]) -> None:
        self._file.close()

    def _rewrite(self) -> None:
        """Write the whole table again, under a header of every key seen."""
        self._columns = list(dict.fromkeys(key for record in self._records for key in record))
        if self._file is not None:
            self._file.close()
        self._file = open(self._path, "w", newline="", encoding="utf-8")  # noqa: SIM115 (closed in finish)
        self._writer = csv.DictWriter(self._file, fieldnames=self._columns)
        self._writer.writeheader()
        self._writer.writerows(self._records)
        self._file.flush()
