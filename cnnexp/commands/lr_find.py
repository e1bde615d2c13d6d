"""`cnnexp lr-find [train overrides ...] [lr_find.key=value ...]`: a learning rate to train with.

Overrides starting with `lr_find.` set conf/lr_find.yaml; every other override composes the train
config exactly as `cnnexp train` would, and the range test trains that config's model on its data
with its optimizer (cnnexp.training.lr_range). Exit status 0 with a suggestion; 1 without one (the
loss had no valley within the range: the files show how it went); 2 for bad input."""

from __future__ import annotations

import logging.config
import shlex
from importlib import resources
from pathlib import Path

from omegaconf import OmegaConf

from cnnexp.app.compose import compose_config, override_key
from cnnexp.app.extensions import register_hydra_extensions
from cnnexp.config import validate_config
from cnnexp.errors import UserError

OPTIONS = "lr_find"  # the config of the options and the prefix of their overrides


def run(args: list[str]) -> int:
    from cnnexp.training import lr_range

    if any(a in ("-h", "--help") for a in args):
        print(f"{__doc__.strip()}\n\n{lr_range.__doc__.strip()}\n\nOptions ({OPTIONS}.<key>=value), "
              f"from conf/{OPTIONS}.yaml:\n" + (resources.files("cnnexp.conf") / f"{OPTIONS}.yaml").read_text())
        return 0
    if any(a.startswith("-") for a in args):
        raise UserError(f"cnnexp lr-find takes overrides only, not {next(a for a in args if a.startswith('-'))}")
    register_hydra_extensions()
    _console_logging()
    ours = [a for a in args if override_key(a).split(".")[0] == OPTIONS]
    train_overrides = [a for a in args if a not in ours]
    options = compose_config(OPTIONS, ours, lr_range.validate_lr_find_config)[OPTIONS]
    cfg = compose_config("train", train_overrides, validate_config)
    for key in ("resume", "init_from"):
        if cfg[key]:
            raise UserError(f"{key}={cfg[key]}: lr-find trains fresh weights; {key}= is for cnnexp train")
    from cnnexp.runs.layout import LR_FIND_DIR, LR_FIND_PLOT
    from cnnexp.runs.naming import unique_name
    from cnnexp.training.run import enable_compilation_cache

    enable_compilation_cache(cfg.paths.jax_cache_dir)
    test = lr_range.run_range_test(cfg, options)
    folder = Path(cfg.paths.output_dir) / LR_FIND_DIR / unique_name()
    lr_range.write_range_test(folder, test, cfg, options, shlex.join(["cnnexp", "lr-find", *args]))
    print(f"lr-find {cfg.model.name} on {cfg.data.name}: {len(test.losses)} of {test.planned_steps} steps"
          + (f", lr {test.lrs[0]:.1e} to {test.lrs[-1]:.1e}" if test.lrs else "")
          + (f"; stopped: {test.stop_reason}" if test.stop_reason else ""))
    if test.no_suggestion:
        print(f"no suggestion: {test.no_suggestion} (see {folder / LR_FIND_PLOT})\n{folder}")
        return 1
    override = f"optim.lr={test.suggested_lr:.1e}"
    kept = [a for a in train_overrides if override_key(a) != "optim.lr"]
    print(f"lowest smoothed loss {test.smoothed[test.lowest]:.3f} at lr {test.lrs[test.lowest]:.1e}; "
          f"suggested learning rate, a tenth of that:\n  {override}\n"
          f"train with it:\n  {shlex.join(['cnnexp', 'train', *kept, override])}\n{folder}")
    return 0


def _console_logging() -> None:
    """`cnnexp train`'s console logging (conf/hydra/job_logging/rich.yaml: rich lines, JAX's and
    absl's chatter left out) without its log file: a range test has no run folder to log into."""
    config = OmegaConf.to_container(OmegaConf.load(resources.files("cnnexp.conf") / "hydra/job_logging/rich.yaml"))
    del config["handlers"]["file"]
    config["root"]["handlers"] = ["console"]
    logging.config.dictConfig(config)
