"""Run folder names, the OmegaConf resolvers that place runs, and finding a run to resume.

Names are `<date>_<time>_<6 hex>`: sortable by start time, and two runs started in the same
second (a sweep on several machines, two terminals) still get different folders.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

from omegaconf import OmegaConf

from cnnexp.errors import UserError
from cnnexp.runs.summary import read_summary


@functools.cache
def unique_name() -> str:
    """This process's run name: computed once, so every config resolution sees the same."""
    return f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{secrets.token_hex(3)}"


SWEEP_NAME_VARIABLE = "CNNEXP_SWEEP_NAME"


def sweep_name() -> str:
    """The sweep folder's name: the one the launching `cnnexp train -m` process fixed (see
    `shared_sweep_name`), else this process's own."""
    return os.environ.get(SWEEP_NAME_VARIABLE) or unique_name()


@contextlib.contextmanager
def shared_sweep_name() -> Iterator[None]:
    """Hand this process's sweep name to the job processes it starts (joblib workers, Slurm jobs
    inherit the environment), which resolve `hydra.sweep.dir` again and would each draw their own."""
    previous = os.environ.get(SWEEP_NAME_VARIABLE)
    os.environ[SWEEP_NAME_VARIABLE] = sweep_name()
    try:
        yield
    finally:
        if previous is None:
            del os.environ[SWEEP_NAME_VARIABLE]
        else:
            os.environ[SWEEP_NAME_VARIABLE] = previous


def run_dir_for(runs_dir: str, resume: str | None) -> str:
    """The folder of this run: a fresh one under `runs_dir`, or the run being resumed."""
    if resume in (None, "", "None", "null"):
        return str(Path(runs_dir) / unique_name())
    if resume == "latest":
        raise UserError("resume=latest must be resolved before the run starts (use `cnnexp train`)")
    return str(resume)


def register_resolvers() -> None:
    """Make `${cnnexp_run_dir:...}` and `${cnnexp_sweep_name:}` available to configs (idempotent)."""
    OmegaConf.register_new_resolver("cnnexp_run_dir", run_dir_for, replace=True)
    OmegaConf.register_new_resolver("cnnexp_sweep_name", sweep_name, replace=True)


def find_latest_run(runs_dir: Path, fingerprint: str) -> Path:
    """The most recently started run under `runs_dir` whose config has `fingerprint`."""
    candidates = []
    if runs_dir.is_dir():
        for run_dir in runs_dir.iterdir():
            summary = read_summary(run_dir)
            if summary and summary.get("config_fingerprint") == fingerprint:
                candidates.append((summary.get("started_at", ""), run_dir.name, run_dir))
    if not candidates:
        raise UserError(
            f"resume=latest: no run under {runs_dir} has this config; "
            "start one without resume=, or pass resume=<run folder>"
        )
    return max(candidates)[2]
