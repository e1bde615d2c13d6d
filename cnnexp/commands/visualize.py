"""`cnnexp visualize`: what a trained run has learned (a Hydra app over conf/visualize.yaml)."""

from __future__ import annotations

from omegaconf import DictConfig

from cnnexp.app.compose import run_config_command


def _make_visualizations(cfg: DictConfig) -> None:
    from cnnexp.visualize.visualization import visualize

    print(visualize(cfg))


def run(args: list[str]) -> int:
    from cnnexp.visualize.visualization import validate_visualize_config

    return run_config_command("visualize", args, validate_visualize_config, _make_visualizations)
