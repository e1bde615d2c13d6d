"""A composed train config checked as a whole: each package validates its own groups, this module
only puts them together (run once per run, before anything is loaded or written)."""

from __future__ import annotations

from omegaconf import DictConfig

from cnnexp.checks import check_values, folder_at
from cnnexp.data import validate_data_options
from cnnexp.runs.summary import objective_direction
from cnnexp.runs.trackers import validate_logger_options
from cnnexp.training.options import validate_training_options


def validate_config(cfg: DictConfig) -> None:
    """Raise a UserError naming the first invalid value of a train config. The model's options are
    its registry's to check (`create_model`, and the command line's composition errors)."""
    validate_training_options(cfg)
    validate_data_options(cfg.data)
    objective_direction(cfg.objective)
    # Before Hydra creates the run folder below them: a file where a folder must go is one line here.
    folders = ("output_dir", "runs_dir", "data_dir", "jax_cache_dir")
    check_values([folder_at(f"paths.{key}", cfg.paths[key]) for key in folders])
    validate_logger_options(cfg.get("logger"))  # a tracker's missing library too: one line, not a run without it
