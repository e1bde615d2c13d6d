"""summary.json: the one file that says how a run went, rewritten atomically as it progresses;
reading and writing it, and the values of it that `objective=` may name."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cnnexp import kernels
from cnnexp.errors import RunFolderWriteError, UserError
from cnnexp.runs.layout import SUMMARY_FILE

# What `objective=` may name: summary.json values the train task returns to Hydra's sweepers,
# with the direction an optimizer should push them.
OBJECTIVES = {
    "best_val_accuracy": "maximize",
    "final_val_accuracy": "maximize",
    "test_accuracy": "maximize",
    "test_loss": "minimize",
}
_VERSIONED = ("cnnexp", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "hydra-core", "tensorflow-datasets")


def read_summary(run_dir: Path) -> dict | None:
    """The run's summary.json, or None if it has none or it cannot be read."""
    try:
        return json.loads((run_dir / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return None


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    """Write summary.json via a temporary file, so a kill or a full disk never leaves half a file."""
    target = run_dir / SUMMARY_FILE
    temporary = target.with_suffix(".json.tmp")
    try:
        temporary.write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
        os.replace(temporary, target)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise RunFolderWriteError(target, error) from error


def record_early_failure(run_dir: Path, cfg: DictConfig, error: BaseException) -> None:
    """Give a run that failed before training began (a bad value in one job of a sweep) a
    summary.json saying so, so that `cnnexp report` lists it with its error."""
    if read_summary(run_dir) is not None:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    write_summary(run_dir, {
        "status": "failed",
        "error": f"{type(error).__name__}: {error}",
        "model": OmegaConf.select(cfg, "model.name"),
        "dataset": OmegaConf.select(cfg, "data.name"),
        "seed": OmegaConf.select(cfg, "seed"),
        "run_dir": str(run_dir),
    })


def objective_direction(objective: str) -> str:
    """"maximize" or "minimize" for a valid `objective=`; a UserError listing the valid ones otherwise."""
    if objective not in OBJECTIVES:
        raise UserError(f"invalid objective={objective!r}: the train task reports "
                        f"{', '.join(OBJECTIVES)} (best_val_accuracy unless you have a reason)")
    return OBJECTIVES[objective]


def environment() -> dict[str, Any]:
    """Versions, device and source commit: what is needed to tell two runs' setups apart."""
    import jax

    versions = {"python": platform.python_version()}
    for package in _VERSIONED:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    device = jax.devices()[0]
    # The oneDNN behind the CPU kernels (None: not on a CPU, or the kernels did not load).
    versions["onednn"] = kernels.version() if device.platform == "cpu" else None
    return {
        "versions": versions,
        # count: every device of the run; processes: how many processes feed them (training.distributed).
        "device": {"platform": device.platform, "kind": device.device_kind, "count": jax.device_count(),
                   "processes": jax.process_count()},
        "host": platform.node(),
        "pid": os.getpid(),  # tells parallel jobs apart, and whether a "running" run's process is gone
        "git_commit": _git_commit(),
    }


def _git_commit() -> str | None:
    """The commit of the cnnexp source tree, with `+dirty` if it has uncommitted changes."""
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=source, capture_output=True, text=True, timeout=5,
        )
        return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None
