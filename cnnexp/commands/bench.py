"""`cnnexp bench [bench.key=value ...] [train overrides ...]`: speed per model beside PyTorch.

Its arguments are Hydra overrides like every command's: `bench.*` set conf/bench.yaml, the rest
compose each row's train config exactly as `cnnexp train` would (cnnexp.bench.runner)."""

from __future__ import annotations

import logging
import sys
from importlib import resources

from cnnexp.app.compose import compose_config
from cnnexp.app.extensions import register_hydra_extensions
from cnnexp.config import validate_config
from cnnexp.errors import UserError


def run(args: list[str]) -> int:
    from cnnexp.bench import runner

    if any(a in ("-h", "--help") for a in args):
        print(runner.__doc__.strip() + "\n\nOptions (bench.<key>=value), from conf/bench.yaml:\n"
              + (resources.files("cnnexp.conf") / "bench.yaml").read_text())
        return 0
    if any(a.startswith("-") for a in args):
        raise UserError(f"cnnexp bench takes overrides only, not {next(a for a in args if a.startswith('-'))}")
    from cnnexp.runs.summary import environment

    register_hydra_extensions()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    options = runner.bench_options(args)
    train_overrides = [o for o in args if not o.startswith("bench.")]
    env = environment()
    configs = [(runner.row_label(row, cfg), cfg)
               for row in runner.row_overrides(options, train_overrides, env["device"]["platform"])
               for cfg in [compose_config("train", row, validate_config)]]
    runner.bench(options, configs, " ".join(["cnnexp bench", *args]), env)
    return 0
