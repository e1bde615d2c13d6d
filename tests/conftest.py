"""Shared helpers: run the installed `cnnexp` command the way a user does, on tiny configs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from cnnexp.models import create_model
from cnnexp.models.recording import LayerRecord, recording

# The smallest real experiment: the bundled digits, LeNet, two short epochs.
TINY = ["data=digits", "trainer.epochs=2", "trainer.batch_size=64", "trainer.log_every_steps=5", "trainer.progress=false"]
VOLATILE_KEYS = ("time", "images_per_s")


def cnnexp_executable() -> str:
    """The `cnnexp` console script of the environment running the tests."""
    beside_python = Path(sys.executable).parent / "cnnexp"
    found = str(beside_python) if beside_python.exists() else shutil.which("cnnexp")
    assert found, "the cnnexp command is not installed (pip install -e .)"
    return found


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
        return subprocess.run(
            [cnnexp_executable(), *args], cwd=cwd, env=env or shared_env,
            capture_output=True, text=True, timeout=timeout,
        )

    run.env = shared_env
    return run


def train_tiny_run(root: Path, env: dict[str, str], *overrides: str) -> Path:
    """Train the TINY config (plus `overrides`) in `root` through the installed command; its run folder."""
    result = subprocess.run([cnnexp_executable(), "train", *TINY, *overrides], cwd=root, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = run_dirs(root / "outputs")
    return run


def assert_one_line_error(result: subprocess.CompletedProcess, message: str) -> None:
    """Bad input: exit 2 and a message naming the problem, not a traceback."""
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def run_dirs(outputs: Path) -> list[Path]:
    """Run folders (those with a summary.json) under `outputs`, sorted by name."""
    return sorted(p.parent for p in outputs.rglob("summary.json"))


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def stable_metrics(run_dir: Path) -> list[dict]:
    """metrics.jsonl without the fields that measure time."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in VOLATILE_KEYS} for r in records]


def layer_records(name: str, options: dict, shape: tuple[int, int, int], classes: int = 10) -> list[LayerRecord]:
    """The leaf layers' records of one eval-mode forward pass, traced abstractly (nothing allocated)."""

    def forward():
        model = create_model(name, options, input_shape=shape, num_classes=classes, rngs=nnx.Rngs(0))
        model.eval()
        return model(jnp.zeros((1, *shape)))

    with recording() as records:
        jax.eval_shape(forward)
    return records
