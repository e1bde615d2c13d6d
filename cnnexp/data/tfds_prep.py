"""What every TFDS preparation in cnnexp shares: one preparer at a time, and TFDS's warnings about
unprepared or custom datasets (cnnexp's normal case) kept out of the output."""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

Prepared = TypeVar("Prepared")


@contextlib.contextmanager
def quiet_tfds() -> Iterator[None]:
    """TFDS's absl warnings (no dataset_info.json yet, a custom config) silenced inside the block."""
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        yield
    finally:
        absl.setLevel(level)


def prepared_once(lock_file: Path, find: Callable[[], Prepared | None], prepare: Callable[[], None]) -> Prepared:
    """`find()`'s prepared dataset, running `prepare()` first if there is none. Two processes asking
    at once prepare it once: the second waits on `lock_file` and then finds the first's result.
    TFDS writes into an `incomplete.*` folder and renames it when done, so a preparation killed
    half-way is never found."""
    found = find()
    if found is not None:
        return found
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        found = find()
        if found is None:
            prepare()
            found = find()
    return found
