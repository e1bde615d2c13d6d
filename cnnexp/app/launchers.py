"""What a run does differently when Hydra's launcher runs several jobs side by side."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from cnnexp.runs.summary import read_summary
from cnnexp.app.sweeps import record_sweep

# Environment variables with which the user already chose how JAX takes device memory.
_JAX_MEMORY_SETTINGS = ("XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_ALLOCATOR")


def runs_jobs_side_by_side(launcher_cfg: DictConfig) -> bool:
    """True for launchers that run jobs of one sweep at once on this machine (joblib)."""
    return "joblib" in str(launcher_cfg.get("_target_", "")).lower()


def share_accelerator_between_jobs(launcher_cfg: DictConfig) -> None:
    """Let parallel jobs share one GPU: by default JAX preallocates 75% of the card in the first
    job, and the next job would run out of memory. Called in the job's process before JAX starts
    its backend. TensorFlow, if installed (TFDS may import it), is kept off the GPU entirely."""
    if not runs_jobs_side_by_side(launcher_cfg):
        return
    if not any(name in os.environ for name in _JAX_MEMORY_SETTINGS):
        os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    if importlib.util.find_spec("tensorflow") is not None:
        import tensorflow as tf

        tf.config.set_visible_devices([], "GPU")


class SweepOutcome(Callback):
    """Records a new sweep's overrides in its folder (so `resume=<sweep folder>` can run it again),
    and counts a finished sweep's runs that did not complete, from their summary.json files, so
    that `cnnexp train -m` exits non-zero whichever launcher ran them (joblib's and Slurm's jobs
    run in other processes, where an exit status would be lost)."""

    unfinished = 0  # read by the CLI once Hydra returns

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not config.get("resume"):  # a continuation keeps the record it continues
            overrides = config.hydra.overrides
            record_sweep(Path(config.hydra.sweep.dir), list(overrides.task), list(overrides.hydra))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(config.hydra.sweep.dir)
        runs = [read_summary(job) for job in sweep.iterdir() if job.is_dir()] if sweep.is_dir() else []
        SweepOutcome.unfinished = sum(1 for summary in runs if summary and summary.get("status") != "completed")
