"""Configs composed as the command composes them."""

from __future__ import annotations

from hydra import compose, initialize_config_module

from cnnexp.app.extensions import register_hydra_extensions


def compose_with_hydra(overrides: list[str]):
    """The train config with its `hydra` node (sweeper, launcher), as Hydra would run it."""
    register_hydra_extensions()
    with initialize_config_module("cnnexp.conf", version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)
