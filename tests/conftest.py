"""Fixtures: the environment of the installed `cnnexp` command, running it the way a user does,
and the trained runs and sweeps several test files read (built once a session, whichever test
process needs them first). The helpers the test files share are in tests/helpers/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers.commands import TINY, run_cnnexp, sweep_dir
from helpers.shared import build_once, session_root


@pytest.fixture(scope="session")
def shared_env(tmp_path_factory) -> dict[str, str]:
    """Environment for every test run: a private data dir per test process, and one compilation
    cache for the whole session (every pytest-xdist worker), so a program compiled by one test's
    run is loaded, not compiled again, by every other run of it."""
    root = tmp_path_factory.mktemp("env")
    env = dict(os.environ)
    env.update(TFDS_DATA_DIR=str(root / "tfds"), CNNEXP_CACHE_DIR=str(session_root(tmp_path_factory) / "cache"),
               COLUMNS="200")
    return env


@pytest.fixture
def cnnexp(shared_env, tmp_path):
    """`cnnexp(*args)` runs the command in a fresh directory and returns the CompletedProcess."""

    def run(*args: str, cwd: Path = tmp_path, timeout: float = 300, env: dict | None = None):
        return run_cnnexp(*args, cwd=cwd, env=env or shared_env, timeout=timeout)

    run.env = shared_env
    return run


@pytest.fixture(scope="session")
def grid(tmp_path_factory, shared_env) -> Path:
    """One 2x2 sweep (two models, two seeds, three tiny epochs). Read only: copy it to write in it."""

    def build(root: Path) -> None:
        result = run_cnnexp("train", "-m", *TINY, "trainer.epochs=3", "model=lenet,simple_cnn", "seed=0,1",
                            cwd=root, env=shared_env, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]

    root, _ = build_once(tmp_path_factory, "grid", build)
    return sweep_dir(root)
