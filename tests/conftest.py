"""Fixtures: the environment of the installed `cnnexp` command, running it the way a user does,
and the trained runs and sweeps several test files read (built once a session, whichever test
process needs them first). The helpers the test files share are in tests/helpers/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from helpers.commands import TINY, run_cnnexp, run_dirs, sweep_dir, train_tiny_run
from helpers.images import write_digits_folder
from helpers.paths import CPU_PRESETS
from helpers.shared import build_once, session_root
from helpers.xla import share_compilations, use_fast_compiles


def pytest_configure(config):
    use_fast_compiles()
    # A pytest-xdist worker's base folder is <session folder>/popen-gwN: the workers share the
    # cache beside it (without xdist there is one process, and nothing to share).
    if os.environ.get("PYTEST_XDIST_WORKER") and config.option.basetemp:
        share_compilations(Path(config.option.basetemp).parent / "cache" / "in-process")


def pytest_collection_modifyitems(config, items):
    """A test that runs the installed command (it or a fixture it uses asks for `shared_env`, the
    command's environment) must be marked slow, so `make test-fast` leaves it out."""
    unmarked = [item.nodeid for item in items
                if "shared_env" in getattr(item, "fixturenames", ()) and item.get_closest_marker("slow") is None]
    if unmarked:
        raise pytest.UsageError("these tests start the installed command but are not marked slow "
                                "(@pytest.mark.slow):\n  " + "\n  ".join(unmarked))


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


@pytest.fixture(scope="session")
def lenet_run(tmp_path_factory, shared_env) -> Path:
    """LeNet trained six tiny epochs on the digits: the run `cnnexp evaluate` and `cnnexp visualize`
    are tested on. Read only: both commands write into the run folder, so each works on a copy."""
    root, _ = build_once(tmp_path_factory, "lenet-run", lambda root: train_tiny_run(root, shared_env, "trainer.epochs=6"))
    (run,) = run_dirs(root / "outputs")
    return run


@pytest.fixture(scope="session")
def preset_runs(tmp_path_factory, shared_env) -> dict[str, Path]:
    """One multirun (one process) over every CPU preset and lenet_classic, each for one tiny epoch
    on the digits in its own run folder: preset name -> run folder. Read only."""
    presets = [*CPU_PRESETS, "lenet_classic"]

    def build(root: Path) -> None:
        result = run_cnnexp("train", "-m", f"experiment={','.join(presets)}", *TINY, "trainer.epochs=1",
                            "trainer.batch_size=256", cwd=root, env=shared_env, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]

    root, _ = build_once(tmp_path_factory, "preset-runs", build)
    runs = {}
    for run in run_dirs(root / "outputs"):
        (preset,) = [o.split("=", 1)[1] for o in yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
                     if o.startswith("experiment=")]
        runs[preset] = run
    return runs


@pytest.fixture(scope="session")
def digits_root(tmp_path_factory) -> Path:
    """The digits' fixed splits as a folder of PNGs (1,437 + 360), for data=image_folder. Read only."""
    return write_digits_folder(build_once(tmp_path_factory, "digits-folder", lambda root: None)[0])
