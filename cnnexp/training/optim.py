"""Optax optimizers and learning-rate schedules from the `optim` and `schedule` config groups."""

from __future__ import annotations

import jax
import optax
from omegaconf import DictConfig

from cnnexp.errors import UserError


def _weights_only(params):
    """Decay kernels, not biases or normalization scales (1-D leaves)."""
    return jax.tree.map(lambda leaf: leaf.ndim > 1, params)


def build_schedule(schedule_cfg: DictConfig, base_lr: float, total_steps: int, steps_per_epoch: int) -> optax.Schedule:
    """Learning rate per step: linear warmup over `warmup_epochs`, then constant, cosine or step."""
    warmup = min(int(round(schedule_cfg.warmup_epochs * steps_per_epoch)), total_steps - 1)
    remaining = total_steps - warmup
    name = schedule_cfg.name
    if name == "constant":
        after = optax.constant_schedule(base_lr)
    elif name == "cosine":
        after = optax.cosine_decay_schedule(base_lr, remaining, alpha=schedule_cfg.final_lr_fraction)
    elif name == "step":
        boundaries = {int(round(m * total_steps)) - warmup: schedule_cfg.gamma for m in schedule_cfg.milestones}
        after = optax.piecewise_constant_schedule(base_lr, {b: g for b, g in boundaries.items() if b > 0})
    else:
        raise UserError(f"unknown schedule {name!r}; choose constant, cosine or step")
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, base_lr, warmup), after], [warmup])


def build_optimizer(optim_cfg: DictConfig, schedule: optax.Schedule) -> optax.GradientTransformation:
    """The Optax transformation for `optim.name`, stepping its rate along `schedule`."""
    name, decay = optim_cfg.name, optim_cfg.get("weight_decay", 0.0)
    # L2 penalty added to the gradient (classic "weight decay" for SGD and Adam).
    l2 = [optax.add_decayed_weights(decay, mask=_weights_only)] if decay and name != "adamw" else []
    if name == "sgd":
        update = optax.sgd(schedule)
    elif name in ("momentum", "nesterov"):
        update = optax.sgd(schedule, momentum=optim_cfg.momentum, nesterov=name == "nesterov")
    elif name == "adam":
        update = optax.adam(schedule, b1=optim_cfg.b1, b2=optim_cfg.b2)
    elif name == "adamw":
        update = optax.adamw(schedule, b1=optim_cfg.b1, b2=optim_cfg.b2, weight_decay=decay, mask=_weights_only)
    else:
        raise UserError(f"unknown optim {name!r}; choose sgd, momentum, nesterov, adam or adamw")
    return optax.chain(*l2, update)
