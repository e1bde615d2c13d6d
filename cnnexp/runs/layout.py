"""Every file and folder name inside a run folder, in one place.

    <run>/
      .hydra/config.yaml       the composed config (written by Hydra)
      .hydra/overrides.yaml    the command-line overrides it was composed from (Hydra)
      summary.json             how the run went, rewritten atomically as it goes (runs.summary)
      .lock                    held by the one process training into the folder (runs.lock)
      metrics.jsonl            one JSON line per log point and epoch (runs.metrics)
      tensorboard/             the same metrics for TensorBoard (logger=tensorboard, the default)
      metrics.csv              the same metrics as a table (logger=csv)
      trackers.json            the runs the trackers opened (an MLflow run id, ...), reopened on resume
      preprocessing.npz        the input transform fitted on the training split
      checkpoints/last, best   Orbax checkpoints (runs.checkpoints)
      evaluate/                `cnnexp evaluate`: evaluation.json, invariance.json, invariance.png
      visualize/               `cnnexp visualize`: figures and index.html

    <sweep>/
      sweep.yaml               the overrides the sweep was started with (app.sweeps)
      0/, 1/, ...              one run folder per job

    <paths.output_dir>/lr_find/<name>/   `cnnexp lr-find`, one learning-rate range test
      lr_find.json             the rates, losses, suggestion and config
      lr_find.png              the loss against the rate
"""

from __future__ import annotations

from pathlib import Path

HYDRA_DIR = ".hydra"
CONFIG_FILE = Path(HYDRA_DIR) / "config.yaml"
OVERRIDES_FILE = Path(HYDRA_DIR) / "overrides.yaml"
SUMMARY_FILE = "summary.json"
LOCK_FILE = ".lock"
SWEEP_FILE = "sweep.yaml"
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
METRICS_CSV_FILE = "metrics.csv"
TRACKERS_FILE = "trackers.json"
PREPROCESSING_FILE = "preprocessing.npz"
CHECKPOINTS_DIR = "checkpoints"
BEST_CHECKPOINT, LAST_CHECKPOINT = "best", "last"  # best validation accuracy; the newest few
CHECKPOINT_KINDS = (BEST_CHECKPOINT, LAST_CHECKPOINT)
EVALUATE_DIR = "evaluate"
EVALUATION_FILE = Path(EVALUATE_DIR) / "evaluation.json"
INVARIANCE_FILE = Path(EVALUATE_DIR) / "invariance.json"
INVARIANCE_PLOT = Path(EVALUATE_DIR) / "invariance.png"
VISUALIZE_DIR = "visualize"
LR_FIND_DIR = "lr_find"  # below paths.output_dir, beside runs/: a range test is no run
LR_FIND_FILE = "lr_find.json"
LR_FIND_PLOT = "lr_find.png"
# Folders inside a run folder (or beside runs in a sweep) that are never runs themselves; and
# outputs/wandb/, where Weights & Biases keeps copies of the runs' summary.json and .hydra/ files.
NOT_RUN_FOLDERS = frozenset({CHECKPOINTS_DIR, TENSORBOARD_DIR, HYDRA_DIR, "plots", ".submitit", "wandb"})


def is_run_folder(path: Path) -> bool:
    """A folder Hydra composed a run into (it may not have trained yet)."""
    return (path / CONFIG_FILE).is_file()


def is_resumable(path: Path) -> bool:
    """A run folder with checkpoints and the overrides it was started with."""
    return (path / CHECKPOINTS_DIR).is_dir() and (path / OVERRIDES_FILE).is_file()


def sweep_folder(run_dir: Path) -> Path | None:
    """The sweep folder `run_dir` is a job of, or None for a run of its own."""
    return run_dir.parent if (run_dir.parent / SWEEP_FILE).is_file() else None
