"""The trackers of one run, started together and each sent every record, where one tracker's failure
(a server gone, a full disk, any error of its library) is one warning and that tracker off for the
rest of the run: training goes on, and metrics.jsonl keeps every record."""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cnnexp.runs.layout import TRACKERS_FILE, sweep_folder
from cnnexp.runs.trackers import TRACKERS
from cnnexp.runs.trackers.base import TrackedRun, Tracker

log = logging.getLogger("cnnexp.trackers")


class Trackers:
    """The trackers still working; none of the methods raises."""

    def __init__(self) -> None:
        self.active: dict[str, Tracker] = {}

    def start(self, cfg: DictConfig, run_dir: Path, resume_step: int | None) -> None:
        """Start the trackers `cfg.logger` chooses on the run in `run_dir` (`resume_step`: the step a
        resumed run continues from). Each reopens the run it opened before, by the ids stored in
        trackers.json, which is then updated."""
        ids_path = run_dir / TRACKERS_FILE
        ids = _read_ids(ids_path)
        sweep = sweep_folder(run_dir)
        shown_as = f"{sweep.name}/{run_dir.name}" if sweep else run_dir.name
        config = OmegaConf.to_container(cfg, resolve=True)
        for name, options in (cfg.get("logger") or {}).items():
            tracker = TRACKERS[name](options)
            run = TrackedRun(run_dir=run_dir, name=shown_as, sweep=sweep.name if sweep else None, config=config,
                             resume_step=resume_step, ids=ids.get(name, {}))
            started = self._guarded(name, lambda: tracker.start(run))
            if started is not None:
                self.active[name] = tracker
                ids[name] = started
        if any(ids.values()):
            try:
                _write_ids(ids_path, ids)
            except OSError as error:
                log.warning("could not write %s (%s): a resumed run will start new tracker runs", ids_path, error)

    def log(self, record: dict[str, Any]) -> None:
        for name, tracker in list(self.active.items()):
            self._guarded(name, lambda: tracker.log(record))

    def finish(self, summary: dict[str, Any]) -> None:
        for name, tracker in list(self.active.items()):
            self._guarded(name, lambda: tracker.finish(summary))
        self.active.clear()

    def _guarded(self, name: str, action: Callable[[], Any]) -> Any:
        """`action()`'s result; if it raises, a warning and None, and the tracker is off. Meanwhile
        the tracker's library is quiet (its loggers, Python's warnings): what it says when it fails
        (a traceback, a line per retry of a request) is said by the one warning."""
        tracker = TRACKERS[name]
        try:
            if tracker.package is not None:  # importing MLflow sets its loggers' levels, undoing `_quiet`'s
                importlib.import_module(tracker.package)
            with _quiet(tracker.loggers):
                return action()
        except Exception as error:  # noqa: BLE001 (any failure of a tracker's library turns it off, no more)
            log.warning("tracker %s failed, it is off for the rest of this run (metrics.jsonl has every record): %s",
                        name, _cause(error))
            self.active.pop(name, None)
            return None


def _cause(error: BaseException) -> str:
    """What went wrong, in a line: the error and the first line of the error deepest behind it (a
    library's error often wraps the one that says what happened: MLflow's, SQLite's)."""
    root = error
    while root.__cause__ is not None:
        root = root.__cause__
    kind = type(error).__name__ if root is error else f"{type(error).__name__} ({type(root).__name__})"
    lines = str(root).strip().splitlines()
    return f"{kind}: {lines[0][:300]}" if lines else kind


@contextlib.contextmanager
def _quiet(loggers: tuple[str, ...]) -> Iterator[None]:
    """`loggers` silent and Python's warnings ignored, for the time of the block."""
    saved = {logger: logger.level for logger in map(logging.getLogger, loggers)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in saved:
            logger.setLevel(logging.CRITICAL + 1)
        try:
            yield
        finally:
            for logger, level in saved.items():
                logger.setLevel(level)


def _read_ids(path: Path) -> dict[str, dict[str, str]]:
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return stored if isinstance(stored, dict) else {}


def _write_ids(path: Path, ids: dict[str, dict[str, str]]) -> None:
    """trackers.json, replaced whole: a kill while writing it leaves the previous one."""
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(ids, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(temporary, path)
