"""Signalling a training run from a test while it runs, and reading what it has checkpointed."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from helpers.commands import cnnexp_executable, read_summary


def start_train(env: dict[str, str], cwd: Path, overrides: list[str], *flags: str) -> subprocess.Popen:
    """`cnnexp train *flags *overrides` started in `cwd`, its output piped."""
    cwd.mkdir(exist_ok=True)
    return subprocess.Popen([cnnexp_executable(), "train", *flags, *overrides], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(process: subprocess.Popen, find_run: Callable[[], Path | None], ready: Callable[[Path], bool],
             timeout: float = 120) -> Path:
    """Wait until the run folder `find_run()` returns is `ready`, while `process` still runs; that folder.
    Watching the run's files, not the clock, keeps a test's signal inside the run however fast the
    machine trains."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        run = find_run()
        if run is not None and ready(run):
            return run
        time.sleep(0.02)
    raise AssertionError("the run did not get there in time")


def in_second_epoch(run: Path) -> bool:
    """Epoch 1 is checkpointed and a step of epoch 2 logged (so steps of epoch 2 are still to come:
    `trainer.log_every_steps` must be less than an epoch's steps)."""
    return bool(checkpoint_steps(run)) and any(r.get("kind") == "step" and r.get("epoch") == 2
                                               for r in logged_records(run))


def signal_during_second_epoch(env: dict[str, str], cwd: Path, signum: int,
                               overrides: list[str]) -> tuple[Path, subprocess.Popen]:
    """Start `cnnexp train *overrides` in `cwd`; once it is `in_second_epoch`, send it `signum`."""
    process = start_train(env, cwd, overrides)
    run = wait_for(process, lambda: live_run(cwd)[0], in_second_epoch)
    process.send_signal(signum)
    return run, process


def logged_records(run: Path) -> list[dict]:
    """The complete records of the run's metrics.jsonl so far (a line being written is left out)."""
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return []
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            pass
    return records


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
