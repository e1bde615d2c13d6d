"""Checks on a composed train config, and the fingerprint that identifies "the same config"."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable

from omegaconf import DictConfig, OmegaConf

from cnnexp.errors import UserError

# What `objective=` may name: summary.json values the train task returns to Hydra's sweepers,
# with the direction an optimizer should push them.
OBJECTIVES = {
    "best_val_accuracy": "maximize",
    "final_val_accuracy": "maximize",
    "test_accuracy": "maximize",
    "test_loss": "minimize",
}

# What `loss=` may name (conf/loss/<name>.yaml); cnnexp.training.steps.make_loss builds them.
LOSSES = ("cross_entropy", "mse")

# Keys (dotted, each with everything below it) that say where a run lives, how it is shown or
# what a sweeper reads from it, not what it computes.
BOOKKEEPING_KEYS = ("hydra", "resume", "paths", "objective", "data.data_dir", "data.source_dir", "data.download",
                    "trainer.progress")


def validate_config(cfg: DictConfig) -> None:
    """Raise a UserError naming the first invalid value; runs before any data is loaded."""
    checks = [
        ("trainer.epochs", cfg.trainer.epochs, lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
        ("trainer.batch_size", cfg.trainer.batch_size, lambda v: isinstance(v, int) and v > 0, "an integer > 0"),
        ("trainer.eval_batch_size", cfg.trainer.eval_batch_size, lambda v: isinstance(v, int) and v > 0, "an integer > 0"),
        ("trainer.log_every_steps", cfg.trainer.log_every_steps, lambda v: isinstance(v, int) and v > 0, "an integer > 0"),
        ("trainer.checkpoint_keep", cfg.trainer.checkpoint_keep, lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
        ("optim.lr", cfg.optim.lr, lambda v: is_number(v) and v >= 0, "a number >= 0"),
        ("optim.weight_decay", cfg.optim.get("weight_decay", 0.0), lambda v: is_number(v) and v >= 0, "a number >= 0"),
        ("schedule.warmup_epochs", cfg.schedule.warmup_epochs, lambda v: is_number(v) and v >= 0, "a number >= 0"),
        ("data.val_fraction", cfg.data.val_fraction, lambda v: is_number(v) and 0 < v < 1, "a number strictly between 0 and 1"),
        ("loss.label_smoothing", cfg.loss.label_smoothing, lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
        ("seed", cfg.seed, lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
    ]
    check_values(checks)
    if cfg.loss.name not in LOSSES:
        raise UserError(f"invalid loss.name={cfg.loss.name!r}: losses are {', '.join(LOSSES)}")
    objective_direction(cfg.objective)


def check_values(checks: Iterable[tuple[str, object, Callable[[object], bool], str]]) -> None:
    """Raise a UserError for the first (key, value, is_valid, what_is_expected) whose value is invalid."""
    for key, value, ok, expected in checks:
        if not ok(value):
            raise UserError(f"invalid {key}={value!r}: must be {expected}")


def objective_direction(objective: str) -> str:
    """"maximize" or "minimize" for a valid `objective=`; a UserError listing the valid ones otherwise."""
    if objective not in OBJECTIVES:
        raise UserError(f"invalid objective={objective!r}: the train task reports "
                        f"{', '.join(OBJECTIVES)} (best_val_accuracy unless you have a reason)")
    return OBJECTIVES[objective]


def is_number(value: object) -> bool:
    """An int or float from the config (YAML's true/false are not numbers here)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_positive_int(value: object) -> bool:
    """An integer > 0 (not a bool)."""
    return is_number(value) and isinstance(value, int) and value > 0


def config_fingerprint(cfg: DictConfig) -> str:
    """A short hash of everything in `cfg` that changes what a run computes."""
    container = OmegaConf.to_container(cfg, resolve=True)
    for dotted in BOOKKEEPING_KEYS:
        *parents, leaf = dotted.split(".")
        node = container
        for parent in parents:
            node = node.get(parent, {})
        node.pop(leaf, None)
    canonical = json.dumps(container, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def is_bookkeeping_key(dotted: str) -> bool:
    """True for a key in (or below) BOOKKEEPING_KEYS: it does not change what a run computes."""
    return any(dotted == key or dotted.startswith(f"{key}.") for key in BOOKKEEPING_KEYS)


def model_options(model_cfg: DictConfig) -> dict:
    """The options of `model=<name>` as create_model takes them: everything but the name."""
    return {k: v for k, v in OmegaConf.to_container(model_cfg, resolve=True).items() if k != "name"}
