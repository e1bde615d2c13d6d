"""What a train config's own groups may hold: `trainer`, `optim`, `schedule`, `loss`, `seed` and
fine-tuning (`init_from*`, `optim.groups`), checked before any data is loaded. What the values
must match (the dataset's size, the model's parameter paths) is checked once those exist."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from cnnexp.checks import check_choice, check_values, integer_at_least, is_finite, is_integer, is_number, seed_at
from cnnexp.errors import UserError
from cnnexp.training.distributed import distributed_spec
from cnnexp.training.losses import LOSSES
from cnnexp.training.optim import OPTIMIZERS, REST_GROUP, SCHEDULES
from cnnexp.training.steps import COMPUTE_DTYPES


# The options only some schedules have: (key, is valid, what a valid value is).
SCHEDULE_CHECKS = [
    ("final_lr_fraction", lambda v: is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    ("gamma", lambda v: is_finite(v) and v >= 0, "a finite number >= 0"),
    ("milestones", lambda v: OmegaConf.is_list(v) and all(is_number(m) and 0 <= m <= 1 for m in v),
     "a list of fractions of the run in [0, 1], e.g. [0.5,0.75]"),
]


def validate_training_options(cfg: DictConfig) -> None:
    """Raise a UserError naming the first invalid value of the training groups."""
    trainer = cfg.trainer
    check_choice("optim.name", cfg.optim.name, OPTIMIZERS)
    check_choice("schedule.name", cfg.schedule.name, SCHEDULES)
    check_choice("loss.name", cfg.loss.name, LOSSES)
    check_values([
        integer_at_least("trainer.epochs", trainer.epochs, 1),
        integer_at_least("trainer.batch_size", trainer.batch_size, 1),
        integer_at_least("trainer.eval_batch_size", trainer.eval_batch_size, 1),
        integer_at_least("trainer.log_every_steps", trainer.log_every_steps, 1),
        integer_at_least("trainer.checkpoint_keep", trainer.checkpoint_keep, 1),
        ("trainer.checkpoint_every_minutes", trainer.get("checkpoint_every_minutes"),
         lambda v: v is None or (is_number(v) and v > 0), "null (at epoch ends only) or a number of minutes > 0"),
        ("resume_failed", cfg.get("resume_failed", False), lambda v: isinstance(v, bool), "true or false"),
        ("optim.lr", cfg.optim.lr, lambda v: is_finite(v) and v >= 0, "a finite number >= 0"),
        ("optim.weight_decay", cfg.optim.get("weight_decay", 0.0), lambda v: is_finite(v) and v >= 0,
         "a finite number >= 0"),
        # Adam's moment decays and SGD's momentum: 1 or more never forgets, and diverges.
        *[(f"optim.{key}", cfg.optim[key], lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)")
          for key in ("b1", "b2", "momentum") if key in cfg.optim],
        ("schedule.warmup_epochs", cfg.schedule.warmup_epochs, lambda v: is_finite(v) and v >= 0,
         "a finite number >= 0"),
        *[(f"schedule.{key}", cfg.schedule[key], ok, expected) for key, ok, expected in SCHEDULE_CHECKS
          if key in cfg.schedule],
        ("loss.label_smoothing", cfg.loss.label_smoothing, lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
        seed_at("seed", cfg.seed),
        ("trainer.precision", trainer.get("precision", "float32"), lambda v: v in COMPUTE_DTYPES,
         f"one of {', '.join(sorted(COMPUTE_DTYPES))}"),
        ("trainer.ema_decay", trainer.get("ema_decay"), lambda v: v is None or (is_number(v) and 0 < v < 1),
         "null (off) or a number strictly between 0 and 1"),
        *[(f"trainer.{key}", trainer.get(key, False), lambda v: isinstance(v, bool), "true or false")
          for key in ("tta_flip", "progress", "eval_test_every_epoch")],
        ("init_from_strict", cfg.get("init_from_strict", True), lambda v: isinstance(v, bool), "true or false"),
        ("trainer.devices", trainer.get("devices", "all"), lambda v: v == "all" or (is_integer(v) and v >= 1),
         "all or an integer >= 1"),
    ])
    distributed_spec(trainer, environ={})  # the trainer.distributed keys (Slurm's variables are read at launch)
    validate_finetuning(cfg)


def validate_finetuning(cfg: DictConfig) -> None:
    """The shapes of `init_from*` and `optim.groups`; what they match is checked once the model exists."""
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
