"""Reading run folders back: each run's status, config, overrides, per-epoch learning curves and,
once `cnnexp evaluate invariance=true` ran on it, its accuracy under shifts, rotations and scales.

A run folder is any folder holding `.hydra/config.yaml` or `summary.json` (a single run under
`outputs/runs/`, one job of a sweep under `outputs/multirun/<sweep>/<n>/`). Reading never
fails on one bad run: a run that is still going, was killed or failed is reported as such.
"""

from __future__ import annotations

import json
import os
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from cnnexp.runs.layout import (
    CONFIG_FILE,
    INVARIANCE_FILE,
    METRICS_FILE,
    NOT_RUN_FOLDERS,
    OVERRIDES_FILE,
    SUMMARY_FILE,
    is_run_folder,
)
from cnnexp.runs.summary import read_summary

# The kinds of transform of `cnnexp evaluate invariance=true`, whose invariance file is
# {"test_accuracy": ..., "curves": {kind: [{"value": v, "accuracy": a}, ...]}}. Defined here
# rather than in cnnexp.evaluation so the report reads them without importing data and models.
# The kinds of transform: each with its grid's key in conf/evaluate.yaml and a label for its axis.
TRANSFORMS = {"translation": ("translations", "shift right (pixels)"),
              "rotation": ("rotations", "rotation (degrees)"),
              "scale": ("scales", "scale factor")}
# The per-epoch records of metrics.jsonl kept as learning curves: mean over the epoch's training
# batches (in training mode) and the validation split after the epoch.
CURVE_SPLITS = ("train", "val")


@dataclass
class RunRecord:
    """One run folder as `cnnexp report` sees it."""

    run_dir: Path
    status: str  # completed, failed, interrupted, running, killed, not started
    summary: dict[str, Any]
    config: dict[str, str]  # flattened config: dotted key -> value as YAML/JSON text
    overrides: dict[str, str]  # the command line's key=value overrides of this run
    # split (train, val) -> one record per epoch: {"epoch", "accuracy", "loss"}
    curves: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    # transform kind -> {transform value: test accuracy}; empty until `cnnexp evaluate invariance=true`
    invariance: dict[str, dict[float, float]] = field(default_factory=dict)

    @property
    def error(self) -> str:
        return str(self.summary.get("error") or "")

    def value(self, key: str) -> float | None:
        """A number from summary.json, or None when the run has no such number."""
        value = self.summary.get(key)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def find_run_dirs(root: Path) -> list[Path]:
    """Every run folder at or below `root`, in natural order (sweep job 2 before job 10)."""
    found = []
    for folder, subfolders, files in os.walk(root):
        here = Path(folder)
        if SUMMARY_FILE in files or is_run_folder(here):
            found.append(here)
        subfolders[:] = [name for name in subfolders if name not in NOT_RUN_FOLDERS]
    return sorted(found, key=_natural_key)


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def read_run(run_dir: Path) -> RunRecord:
    """Everything the report needs from one run folder; missing parts stay empty."""
    summary = read_summary(run_dir) or {}
    return RunRecord(
        run_dir=run_dir,
        status=_status(summary),
        summary=summary,
        config=_flat_config(run_dir / CONFIG_FILE),
        overrides=_overrides(run_dir / OVERRIDES_FILE),
        curves=_epoch_curves(run_dir / METRICS_FILE),
        invariance=_invariance(run_dir / INVARIANCE_FILE),
    )


def _status(summary: dict[str, Any]) -> str:
    """summary.json's status, except that a "running" run whose process is gone was killed."""
    status = summary.get("status")
    if status is None:
        return "not started"
    if status == "running" and summary.get("host") == platform.node() and not _process_alive(summary.get("pid")):
        return "killed"
    return str(status)


def _process_alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return True  # no pid recorded: cannot tell, so believe the summary
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _flat_config(path: Path) -> dict[str, str]:
    """The run's composed config as dotted keys; values as JSON text so lists compare too."""
    if not path.is_file():
        return {}
    container = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    flat: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key, child in node.items():
                walk(child, f"{prefix}.{key}" if prefix else str(key))
        else:
            flat[prefix] = node if isinstance(node, str) else json.dumps(node)

    walk(container, "")
    return flat


def _overrides(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    pairs = (str(item).split("=", 1) for item in OmegaConf.load(path))
    return {key.lstrip("+~"): value for key, value in (pair for pair in pairs if len(pair) == 2)}


def _epoch_curves(path: Path) -> dict[str, list[dict[str, float]]]:
    """The per-epoch records of metrics.jsonl by split (a line cut short by a kill is skipped)."""
    curves: dict[str, list[dict[str, float]]] = {}
    if not path.is_file():
        return curves
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("kind") == "epoch" and record.get("split") in CURVE_SPLITS:
            curves.setdefault(record["split"], []).append(
                {"epoch": record["epoch"], "accuracy": record["accuracy"], "loss": record["loss"]})
    return curves


def _invariance(path: Path) -> dict[str, dict[float, float]]:
    """invariance.json's curves as kind -> {value: accuracy}; empty when there is none or it is unreadable
    (the report then just has no invariance numbers for this run)."""
    try:
        curves = json.loads(path.read_text(encoding="utf-8"))["curves"]
        return {kind: {float(p["value"]): float(p["accuracy"]) for p in curves[kind]}
                for kind in TRANSFORMS if kind in curves}
    except (OSError, ValueError, KeyError, TypeError):
        return {}
