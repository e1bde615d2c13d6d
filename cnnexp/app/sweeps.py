"""Continuing a sweep that stopped half-way (a kill, a crash, a preemption): what it was started
with, and what each of its jobs does when the sweep runs again on its folder.

`cnnexp train -m resume=<sweep folder>` starts the sweep again from the overrides in its
`sweep.yaml`, so every job lands in its own folder again (Hydra numbers jobs in order, and Optuna's
seeded sampler asks the same trials given the same results). A job then keeps a completed run
untouched, resumes an interrupted or killed one from its last checkpoint, and trains a missing one.
"""

from __future__ import annotations

import enum
import os
from pathlib import Path

from omegaconf import OmegaConf

from cnnexp.app.compose import override_key
from cnnexp.errors import UserError
from cnnexp.runs.layout import SWEEP_FILE
from cnnexp.runs.summary import read_summary

# Overrides that say where the sweep lives and which mode Hydra is in, not what it runs: a
# continuation sets its own.
_PLACEMENT = ("hydra.sweep.dir", "hydra.mode", "resume", "resume_failed")


def record_sweep(sweep_dir: Path, task: list[str], hydra: list[str]) -> None:
    """Store the overrides the sweep was started with (not when it is being continued)."""
    kept = {"task": [o for o in task if not _sets(o, _PLACEMENT)],
            "hydra": [o for o in hydra if not _sets(o, _PLACEMENT)]}
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(kept), sweep_dir / SWEEP_FILE)


def continuation_overrides(sweep_dir: Path, given: list[str]) -> list[str]:
    """The command line that runs the sweep in `sweep_dir` again: its own overrides (those given now
    win), in its folder."""
    record = sweep_dir / SWEEP_FILE
    if not record.is_file():
        raise UserError(f"resume={sweep_dir}: not a sweep folder of cnnexp train -m (it has no {SWEEP_FILE}); "
                        f"to continue one run use cnnexp train resume=<run folder> without -m")
    stored = OmegaConf.load(record)
    merged = {override_key(o): o for o in [*stored.hydra, *stored.task]}
    merged.update({override_key(o): o for o in given if override_key(o) != "resume"})
    quoted = str(sweep_dir).replace("\\", "\\\\").replace("'", "\\'")
    return [*merged.values(), f"hydra.sweep.dir='{quoted}'", f"resume='{quoted}'"]


class JobPlan(enum.Enum):
    TRAIN = "train"  # nothing trained in the job's folder yet
    RESUME = "resume"  # continue the run in the job's folder from its last checkpoint
    KEEP = "keep"  # the job's run is done (completed, or failed and not asked to rerun): untouched


def plan_job(run_dir: Path, fingerprint: str, *, continuing: bool, rerun_failed: bool) -> JobPlan:
    """What a sweep's job does with what its folder already holds. Outside a continuation (and a
    requeued submitit job, which continues by itself) a run already there is refused, never
    overwritten."""
    summary = read_summary(run_dir)
    if summary is None:
        return JobPlan.TRAIN
    if summary.get("config_fingerprint", fingerprint) != fingerprint:
        raise UserError(f"{run_dir} holds a run of another config: this job cannot continue it (a sweep continues "
                        f"with the overrides it started with; an Optuna search only with storage: null, which "
                        f"replays its trials)")
    status = summary.get("status")
    if not continuing:
        raise UserError(f"{run_dir} already holds a run ({status}); continue the sweep with cnnexp train -m "
                        f"resume={run_dir.parent}, or choose another hydra.sweep.dir")
    if status == "completed" or (status == "failed" and not rerun_failed):
        return JobPlan.KEEP
    return JobPlan.RESUME


def in_requeueable_job() -> bool:
    """Whether this process is a job of Hydra's submitit launcher (Slurm, or its local executor),
    which the scheduler restarts after a preemption: the restarted job continues its run."""
    return bool(os.environ.get("SUBMITIT_EXECUTOR"))


def _sets(override: str, keys: tuple[str, ...]) -> bool:
    return override_key(override) in keys
