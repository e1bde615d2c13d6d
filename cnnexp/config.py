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

# The optimizer group of parameters that no `optim.groups` entry names (full rate).
REST_GROUP = "rest"

# What `loss=` may name (conf/loss/<name>.yaml); cnnexp.training.steps.make_loss builds them.
LOSSES = ("cross_entropy", "mse")
PRECISIONS = ("float32", "bf16")  # trainer.precision: the compute dtype of the train and eval steps

# Keys (dotted, each with everything below it) that say where a run lives, how it is shown or
# what a sweeper reads from it, not what it computes.
BOOKKEEPING_KEYS = ("hydra", "resume", "paths", "objective", "data.data_dir", "data.source_dir", "data.download",
                    "trainer.progress")
# How layers are computed, not what: every implementation computes the same function, so a run
# continues (resume=latest) under another one. Reports still tell them apart (their speed differs).
IMPLEMENTATION_KEYS = ("model.conv_impl", "model.pool_impl", "model.norm_impl")


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
        ("data.train_fraction", cfg.data.get("train_fraction", 1.0), lambda v: is_number(v) and 0 < v <= 1,
         "a number in (0, 1]"),
        ("seed", cfg.seed, lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
        ("trainer.precision", cfg.trainer.get("precision", "float32"), lambda v: v in PRECISIONS,
         f"one of {', '.join(PRECISIONS)}"),
        ("trainer.ema_decay", cfg.trainer.get("ema_decay"), lambda v: v is None or (is_number(v) and 0 < v < 1),
         "null (off) or a number strictly between 0 and 1"),
        ("trainer.tta_flip", cfg.trainer.get("tta_flip", False), lambda v: isinstance(v, bool), "true or false"),
        ("trainer.devices", cfg.trainer.get("devices", "all"),
         lambda v: v == "all" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1), "all or an integer >= 1"),
    ]
    check_values(checks)
    validate_finetuning(cfg)
    from cnnexp.data import validate_data_options  # not at the top: cnnexp.data imports JAX, and this module
    validate_data_options(cfg.data)
    if cfg.loss.name not in LOSSES:
        raise UserError(f"invalid loss.name={cfg.loss.name!r}: losses are {', '.join(LOSSES)}")
    objective_direction(cfg.objective)


def validate_finetuning(cfg: DictConfig) -> None:
    """The shapes of `init_from*`, `optim.groups` and `data.classes`; what they match is checked
    once the model exists."""
    classes = cfg.data.get("classes")
    if classes is not None and not OmegaConf.is_list(classes):
        raise UserError(f"invalid data.classes={classes!r}: must be a list of class indices or names, "
                        f"e.g. data.classes=[0,1,2]")
    if cfg.get("init_from") is not None and not isinstance(cfg.init_from, str):
        raise UserError(f"invalid init_from={cfg.init_from!r}: must be a run folder or checkpoint path")
    reinit = cfg.get("init_from_reinit", [])
    if not OmegaConf.is_list(reinit) or not all(isinstance(p, str) for p in reinit):
        raise UserError(f"invalid init_from_reinit={reinit!r}: must be a list of parameter patterns, "
                        f"e.g. [@output] or [head.*]")
    if reinit and cfg.get("init_from") is None:
        raise UserError(f"init_from_reinit={list(reinit)} re-initializes part of a trained model: "
                        f"add init_from=<run folder>")
    groups = cfg.optim.get("groups")
    if groups is not None and not OmegaConf.is_dict(groups):
        raise UserError(f"invalid optim.groups={groups!r}: must map group names to {{params: <patterns>, lr_scale: <x>}}")
    for name, group in (groups or {}).items():
        params = group.get("params") if OmegaConf.is_dict(group) else None
        scale = group.get("lr_scale") if OmegaConf.is_dict(group) else None
        if name == REST_GROUP:
            raise UserError(f"optim.groups.{REST_GROUP} is reserved for the parameters no group names")
        if not (isinstance(params, str) or (OmegaConf.is_list(params) and all(isinstance(p, str) for p in params))):
            raise UserError(f"invalid optim.groups.{name}.params={params!r}: must be a pattern or a list of "
                            f"patterns over parameter paths, e.g. 'head.*' or @output")
        if not (is_number(scale) and scale >= 0):
            raise UserError(f"invalid optim.groups.{name}.lr_scale={scale!r}: must be a number >= 0 (0 freezes)")


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
    for dotted in (*BOOKKEEPING_KEYS, *IMPLEMENTATION_KEYS):
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
