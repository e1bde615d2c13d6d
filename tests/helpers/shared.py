"""Things every test process of a session shares: one folder for all pytest-xdist workers, and
results built once in it (a trained run, a sweep) by whichever worker needs them first."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest


def session_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of this session that every xdist worker sees: the parent of the workers' own
    base folders (pytest-N/ beside popen-gw0/, popen-gw1/), or the base folder without xdist."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def build_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], object]) -> tuple[Path, dict]:
    """`build(folder)` run once per session in `folder` (empty, named `name`), whichever worker
    asks first; the others wait for it and get the same folder. Returns the folder and what
    `build` returned if that is a dict (JSON-able: a command's output, say), else {}. A failed
    build fails every test that asks for it, with the first failure's message, and is not tried again."""
    shared = session_root(tmp_path_factory) / "shared"
    shared.mkdir(exist_ok=True)
    folder, done, failed = shared / name, shared / f"{name}.json", shared / f"{name}.failed"
    with (shared / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists() and not failed.exists():
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir()
            try:
                built = build(folder)
                done.write_text(json.dumps(built if isinstance(built, dict) else {}))
            except BaseException as error:
                failed.write_text("".join(traceback.format_exception_only(error)) or repr(error))
                raise
    if failed.exists():
        pytest.fail(f"building the shared {name!r} failed in another test:\n{failed.read_text()}", pytrace=False)
    return folder, json.loads(done.read_text())
