"""Run the installed `cnnexp` command the way a user does, on tiny configs, and read the run
folders it leaves."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

# The smallest real experiment: the bundled digits, LeNet, two short epochs.
TINY = ["data=digits", "trainer.epochs=2", "trainer.batch_size=64", "trainer.log_every_steps=5", "trainer.progress=false"]
VOLATILE_KEYS = ("time", "images_per_s")


def cnnexp_executable() -> str:
    """The `cnnexp` console script of the environment running the tests."""
    beside_python = Path(sys.executable).parent / "cnnexp"
    found = str(beside_python) if beside_python.exists() else shutil.which("cnnexp")
    assert found, "the cnnexp command is not installed (pip install -e .)"
    return found


def run_cnnexp(*args: str, cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """`cnnexp *args` in `cwd`; the CompletedProcess with its text output."""
    return subprocess.run([cnnexp_executable(), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def train_tiny(root: Path, env: dict[str, str], *overrides: str) -> tuple[Path, subprocess.CompletedProcess]:
    """Train the TINY config (plus `overrides`) in `root` through the installed command: its run
    folder and the finished process (its output)."""
    result = run_cnnexp("train", *TINY, *overrides, cwd=root, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = run_dirs(root / "outputs")
    return run, result


def train_tiny_run(root: Path, env: dict[str, str], *overrides: str) -> Path:
    """Train the TINY config (plus `overrides`) in `root` through the installed command; its run folder."""
    return train_tiny(root, env, *overrides)[0]


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


def sweep_dir(root: Path) -> Path:
    """The one sweep folder a `cnnexp train -m` started in `root` made."""
    (found,) = (root / "outputs" / "multirun").iterdir()
    return found


def copy_run(run: Path, destination: Path, *ignore: str) -> Path:
    """A copy of the run folder `run` at `destination` (without the entries matching `ignore`), for
    a test that writes into a run another test shares."""
    shutil.copytree(run, destination, ignore=shutil.ignore_patterns(*ignore) if ignore else None)
    return destination


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))
