"""One run folder, one writer: the process training into a run folder holds `<run>/.lock`, so a
second `cnnexp train resume=<run>` is refused instead of interleaving its checkpoints and metrics
with the first's.

The lock is an flock on the file, which the kernel releases when its process dies however it dies,
so the lock of a killed run is free to take over; the file's text names the holder for the
message."""

from __future__ import annotations

import fcntl
import logging
import os
import platform
import time
from pathlib import Path
from typing import IO

from cnnexp.errors import UserError
from cnnexp.runs.layout import LOCK_FILE

log = logging.getLogger("cnnexp")


class RunLock:
    """Held (`with RunLock(run_dir):`) for as long as a process trains into `run_dir`."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / LOCK_FILE
        self._file: IO[str] | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 (held until __exit__)
        try:
            _take(lock, self.path.parent)
        except UserError:
            lock.close()
            raise
        if previous := _holder(lock):
            log.info("%s: taking over the lock of %s, which has ended", self.path.parent, previous)
        try:
            lock.truncate(0)
            lock.write(f"pid {os.getpid()} on {platform.node()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
            lock.flush()
        except OSError:
            pass  # a full disk: the flock holds all the same, only the holder's name is missing
        self._file = lock
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            try:
                self._file.truncate(0)  # free: an empty lock file names nobody
            except OSError:
                pass
            self._file.close()  # releases the flock
            self._file = None


def check_not_in_use(run_dir: Path) -> None:
    """Refuse at once (before Hydra rewrites anything in it) a run folder another process holds."""
    if (run_dir / LOCK_FILE).exists():
        with open(run_dir / LOCK_FILE, "a+", encoding="utf-8") as probe:
            _take(probe, run_dir)  # and released when the file closes


def _take(lock: IO[str], run_dir: Path) -> None:
    """flock `lock`, or a UserError naming the process that holds it."""
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise UserError(f"{run_dir} is in use by another cnnexp process ({_holder(lock)}): wait for it to end, "
                        f"or stop it first (Ctrl-C in its terminal, or kill <pid>)") from None


def _holder(lock: IO[str]) -> str:
    lock.seek(0)
    return lock.read().strip()
