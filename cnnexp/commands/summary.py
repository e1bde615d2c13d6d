"""`cnnexp summary`: a model's layers without training (a Hydra app over conf/summary.yaml)."""

from __future__ import annotations

from omegaconf import DictConfig

from cnnexp.app.compose import run_config_command


def _show_summary(cfg: DictConfig) -> None:
    from cnnexp.inspection import show, summary_from_config

    show(summary_from_config(cfg), cfg.format)


def run(args: list[str]) -> int:
    from cnnexp.inspection import validate_summary_config

    return run_config_command("summary", args, validate_summary_config, _show_summary)
