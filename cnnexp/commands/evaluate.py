"""`cnnexp evaluate`: a trained run (or every run of a sweep) on its test split and on transformed
copies of it (a Hydra app over conf/evaluate.yaml)."""

from __future__ import annotations

from cnnexp.app.compose import run_config_command


def run(args: list[str]) -> int:
    from cnnexp.evaluation.evaluate import evaluate, validate_evaluate_config

    return run_config_command("evaluate", args, validate_evaluate_config, evaluate)
