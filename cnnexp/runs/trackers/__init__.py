"""Experiment trackers: where a run's metrics go besides metrics.jsonl, chosen with the `logger`
config group (`logger=mlflow`, `logger=[tensorboard,wandb]`, `logger=[]`). Each chosen tracker
has its options under `logger.<name>`; this module checks them before anything runs."""

from __future__ import annotations

import importlib.util

from omegaconf import DictConfig, OmegaConf

from cnnexp.checks import check_choice, check_values
from cnnexp.errors import UserError
from cnnexp.runs.trackers.base import Tracker
from cnnexp.runs.trackers.csv_tracker import CsvTracker
from cnnexp.runs.trackers.mlflow_tracker import MlflowTracker
from cnnexp.runs.trackers.tensorboard_tracker import TensorBoardTracker
from cnnexp.runs.trackers.wandb_tracker import WandbTracker

TRACKERS: dict[str, type[Tracker]] = {
    "tensorboard": TensorBoardTracker,
    "csv": CsvTracker,
    "mlflow": MlflowTracker,
    "wandb": WandbTracker,
}


def validate_logger_options(logger: DictConfig | None) -> None:
    """Raise a UserError for an unknown tracker, a wrong or unknown option of one, or a tracker whose
    library is not installed (naming the extra that installs it). None: no tracker chosen."""
    if logger is None:
        return
    if not OmegaConf.is_dict(logger):
        raise UserError(f"invalid logger={logger}: choose trackers with logger=<name> or logger=[<name>,...]")
    for name, options in logger.items():
        check_choice("logger", name, TRACKERS)
        if not OmegaConf.is_dict(options):
            raise UserError(f"invalid logger.{name}={options}: its options come from logger={name}")
        tracker = TRACKERS[name]
        checks = [(f"logger.{name}.{key}", *rest) for key, *rest in tracker.option_checks(options)]
        known = [key.rsplit(".", 1)[1] for key, *_ in checks]
        if unknown := sorted(set(map(str, options)) - set(known)):
            raise UserError(f"logger.{name} has no option {unknown[0]!r}; its options: "
                            f"{', '.join(known) or 'none'}")
        check_values(checks)
        check_installed(name)


def check_installed(name: str) -> None:
    """Raise a UserError naming the extra to install when tracker `name`'s library is missing."""
    package = TRACKERS[name].package if name in TRACKERS else None
    if package is not None and not _installed(package):
        raise UserError(f"logger={name} needs the {package} package: pip install 'cnnexp[{name}]'")


def _installed(module: str) -> bool:
    """Whether `module` can be imported, found without importing it (MLflow takes seconds to import)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken installation, or a module set to None
        return False
