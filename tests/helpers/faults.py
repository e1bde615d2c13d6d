"""Signalling a training run from a test while it runs, and reading what it has checkpointed."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from helpers.commands import cnnexp_executable, read_summary


def signal_during_second_epoch(env: dict[str, str], cwd: Path, signum: int,
                               overrides: list[str]) -> tuple[Path, subprocess.Popen]:
    """Start `cnnexp train *overrides` in `cwd`; once it has checkpointed epoch 1, send it `signum`."""
    cwd.mkdir(exist_ok=True)
    process = subprocess.Popen(
        [cnnexp_executable(), "train", *overrides], cwd=cwd, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        run, summary = live_run(cwd)
        if run and summary.get("epochs_completed", 0) >= 1 and checkpoint_steps(run):
            time.sleep(0.1)  # into the second epoch
            process.send_signal(signum)
            return run, process
        time.sleep(0.05)
    raise AssertionError("the run did not finish its first epoch in time")


def live_run(cwd: Path) -> tuple[Path | None, dict]:
    """The run folder of the one run training in `cwd` and its summary so far, or (None, {})
    before it has one. Looks at outputs/runs/<run>/summary.json only: a search through the
    whole folder would race Orbax renaming its temporary checkpoint folders; a summary being
    rewritten at that moment counts as not there yet."""
    for path in (cwd / "outputs").glob("runs/*/summary.json"):
        try:
            return path.parent, read_summary(path.parent)
        except (OSError, ValueError):
            return None, {}
    return None, {}


def checkpoint_steps(run: Path) -> list[int]:
    """Steps of the complete checkpoints in checkpoints/last (Orbax writes to a temporary
    name first and renames the folder to the step when the checkpoint is whole)."""
    last = run / "checkpoints" / "last"
    return sorted(int(p.name) for p in last.iterdir() if p.name.isdigit()) if last.is_dir() else []
