"""What every command's configs need registered before Hydra composes them."""

from __future__ import annotations

from omegaconf import OmegaConf

from cnnexp.app.tfds_config_source import register as register_config_source
from cnnexp.runs.naming import register_resolvers
from cnnexp.runs.summary import objective_direction


def register_hydra_extensions() -> None:
    """cnnexp's resolvers and `data=<any TFDS name>` (idempotent)."""
    register_resolvers()
    # hparams_search presets point Optuna's direction at the objective's own direction.
    OmegaConf.register_new_resolver("cnnexp_objective_direction", objective_direction, replace=True)
    register_config_source()
