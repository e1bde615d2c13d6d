"""Optax optimizers and learning-rate schedules from the `optim` and `schedule` config groups."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import optax
from omegaconf import DictConfig

from cnnexp.errors import UserError
from cnnexp.models.param_paths import dotted_path, matches

# The optimizer group of parameters that no `optim.groups` entry names (full rate).
REST_GROUP = "rest"


def _weights_only(params):
    """Decay kernels, not biases or normalization scales (1-D leaves)."""
    return jax.tree.map(lambda leaf: leaf.ndim > 1, params)


def _constant(cfg: DictConfig, base_lr: float, steps: int, warmup: int, total: int) -> optax.Schedule:  # noqa: ARG001
    return optax.constant_schedule(base_lr)


def _cosine(cfg: DictConfig, base_lr: float, steps: int, warmup: int, total: int) -> optax.Schedule:  # noqa: ARG001
    return optax.cosine_decay_schedule(base_lr, steps, alpha=cfg.final_lr_fraction)


def _onecycle(cfg: DictConfig, base_lr: float, steps: int, warmup: int, total: int) -> optax.Schedule:  # noqa: ARG001
    """A straight line down to `final_lr_fraction` of the rate, as the speed records use."""
    return optax.linear_schedule(base_lr, base_lr * cfg.final_lr_fraction, steps)


def _step(cfg: DictConfig, base_lr: float, steps: int, warmup: int, total: int) -> optax.Schedule:  # noqa: ARG001
    """Multiplied by `gamma` at each milestone (a fraction of the whole run)."""
    boundaries = {int(round(m * total)) - warmup: cfg.gamma for m in cfg.milestones}
    return optax.piecewise_constant_schedule(base_lr, {b: g for b, g in boundaries.items() if b > 0})


# schedule.name -> f(schedule config, base rate, steps after warmup, warmup steps, total steps)
SCHEDULES = {"constant": _constant, "cosine": _cosine, "onecycle": _onecycle, "step": _step}


def build_schedule(schedule_cfg: DictConfig, base_lr: float, total_steps: int, steps_per_epoch: int) -> optax.Schedule:
    """Learning rate per step: linear warmup over `warmup_epochs`, then the SCHEDULES entry."""
    warmup = min(int(round(schedule_cfg.warmup_epochs * steps_per_epoch)), total_steps - 1)
    after = SCHEDULES[schedule_cfg.name](schedule_cfg, base_lr, total_steps - warmup, warmup, total_steps)
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, base_lr, warmup), after], [warmup])


def _sgd(cfg: DictConfig, schedule: optax.Schedule) -> optax.GradientTransformation:  # noqa: ARG001
    return optax.sgd(schedule)


def _momentum(cfg: DictConfig, schedule: optax.Schedule) -> optax.GradientTransformation:
    return optax.sgd(schedule, momentum=cfg.momentum)


def _nesterov(cfg: DictConfig, schedule: optax.Schedule) -> optax.GradientTransformation:
    return optax.sgd(schedule, momentum=cfg.momentum, nesterov=True)


def _adam(cfg: DictConfig, schedule: optax.Schedule) -> optax.GradientTransformation:
    return optax.adam(schedule, b1=cfg.b1, b2=cfg.b2)


def _adamw(cfg: DictConfig, schedule: optax.Schedule) -> optax.GradientTransformation:
    return optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.get("weight_decay", 0.0), mask=_weights_only)


# optim.name -> f(optim config, schedule)
OPTIMIZERS = {"sgd": _sgd, "momentum": _momentum, "nesterov": _nesterov, "adam": _adam, "adamw": _adamw}
# Those whose weight decay is their own (decoupled); for the others `optim.weight_decay` is an L2
# penalty added to the gradient (classic "weight decay" for SGD and Adam).
DECOUPLED_DECAY = frozenset({"adamw"})


def _base_optimizer(optim_cfg: DictConfig, schedule: optax.Schedule) -> optax.GradientTransformation:
    """The Optax transformation for `optim.name`, stepping its rate along `schedule`."""
    decay = optim_cfg.get("weight_decay", 0.0)
    coupled = decay and optim_cfg.name not in DECOUPLED_DECAY
    l2 = [optax.add_decayed_weights(decay, mask=_weights_only)] if coupled else []
    return optax.chain(*l2, OPTIMIZERS[optim_cfg.name](optim_cfg, schedule))


@dataclass(frozen=True)
class ParamGroup:
    """Parameters trained at `lr_scale` times the schedule's rate (0: frozen, no optimizer state)."""

    name: str
    lr_scale: float
    paths: tuple[str, ...]


def param_groups(groups_cfg: DictConfig | None, paths: list[str], output: str) -> list[ParamGroup]:
    """Each parameter path in the first `optim.groups` entry whose patterns match it; the others
    in a group `rest` at the full rate. A group that matches nothing is a UserError (a typo)."""
    groups_cfg = groups_cfg or {}
    unclaimed, groups = list(paths), []
    for name, group in groups_cfg.items():
        patterns = [group.params] if isinstance(group.params, str) else list(group.params)
        claimed = [path for path in unclaimed if matches(path, patterns, output)]
        if not claimed:
            raise UserError(f"optim.groups.{name} (params {patterns}) matches no parameter left to it; "
                            f"parameter paths look like {', '.join(paths[:4])}, ... (@output: {output}.*)")
        unclaimed = [path for path in unclaimed if path not in claimed]
        groups.append(ParamGroup(str(name), float(group.lr_scale), tuple(claimed)))
    if unclaimed:
        groups.append(ParamGroup(REST_GROUP, 1.0, tuple(unclaimed)))
    return groups


def build_optimizer(optim_cfg: DictConfig, schedule: optax.Schedule,
                    groups: list[ParamGroup] | None = None) -> optax.GradientTransformation:
    """The optimizer of `optim`; with `groups`, one copy per group scaled by its lr_scale (through
    optax.multi_transform, so a frozen group keeps no optimizer state and never moves)."""
    if not groups or [(g.name, g.lr_scale) for g in groups] == [(REST_GROUP, 1.0)]:
        return _base_optimizer(optim_cfg, schedule)
    transforms = {
        group.name: optax.set_to_zero() if group.lr_scale == 0 else optax.chain(
            _base_optimizer(optim_cfg, schedule), optax.scale(group.lr_scale))
        for group in groups
    }
    label_of = {path: group.name for group in groups for path in group.paths}
    return optax.multi_transform(
        transforms, lambda params: jax.tree_util.tree_map_with_path(lambda p, _: label_of[dotted_path(p)], params))
