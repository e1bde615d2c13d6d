"""Fixtures: the environment of the installed `cnnexp` command, and running it the way a user
does. The helpers the test files share are in tests/helpers/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers.commands import run_cnnexp


@pytest.fixture(scope="session")
def shared_env(tmp_path_factory) -> dict[str, str]:
    """Environment for every test run: private data dir, one compilation cache for the session."""
    root = tmp_path_factory.mktemp("env")
    env = dict(os.environ)
    env.update(TFDS_DATA_DIR=str(root / "tfds"), CNNEXP_CACHE_DIR=str(root / "cache"), COLUMNS="200")
    return env


@pytest.fixture
def cnnexp(shared_env, tmp_path):
    """`cnnexp(*args)` runs the command in a fresh directory and returns the CompletedProcess."""

    def run(*args: str, cwd: Path = tmp_path, timeout: float = 300, env: dict | None = None):
        return run_cnnexp(*args, cwd=cwd, env=env or shared_env, timeout=timeout)

    run.env = shared_env
    return run
