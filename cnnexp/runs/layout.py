"""Every file and folder name inside a run folder, in one place.

    <run>/
      .hydra/config.yaml       the composed config (written by Hydra)
      .hydra/overrides.yaml    the command-line overrides it was composed from (Hydra)
      summary.json             how the run went, rewritten atomically as it goes (runs.summary)
      .lock                    held by the one process training into the folder (runs.lock)
      metrics.jsonl            one JSON line per log point and epoch (runs.metrics)
      tensorboard/             the same metrics for TensorBoard
      preprocessing.npz        the input transform fitted on the training split
      checkpoints/last, best   Orbax checkpoints (runs.checkpoints)
      evaluate/                `cnnexp evaluate`: evaluation.json, invariance.json, invariance.png
      visualize/               `cnnexp visualize`: figures and index.html

    <sweep>/
      sweep.yaml               the overrides the sweep was started with (app.sweeps)
      0/, 1/, ...              one run folder per job
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
PREPROCESSING_FILE = "preprocessing.npz"
CHECKPOINTS_DIR = "checkpoints"
BEST_CHECKPOINT, LAST_CHECKPOINT = "best", "last"  # best validation accuracy; the newest few
CHECKPOINT_KINDS = (BEST_CHECKPOINT, LAST_CHECKPOINT)
EVALUATE_DIR = "evaluate"
EVALUATION_FILE = Path(EVALUATE_DIR) / "evaluation.json"
INVARIANCE_FILE = Path(EVALUATE_DIR) / "invariance.json"
INVARIANCE_PLOT = Path(EVALUATE_DIR) / "invariance.png"
VISUALIZE_DIR = "visualize"
# Folders inside a run folder (or beside runs in a sweep) that are never runs themselves.
NOT_RUN_FOLDERS = frozenset({CHECKPOINTS_DIR, TENSORBOARD_DIR, HYDRA_DIR, "plots", ".submitit"})


def is_run_folder(path: Path) -> bool:
    """A folder Hydra composed a run into (it may not have trained yet)."""
    return (path / CONFIG_FILE).is_file()


def is_resumable(path: Path) -> bool:
    """A run folder with checkpoints and the overrides it was started with."""
    return (path / CHECKPOINTS_DIR).is_dir() and (path / OVERRIDES_FILE).is_file()
