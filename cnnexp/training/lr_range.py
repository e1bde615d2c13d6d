"""The learning-rate range test of `cnnexp lr-find` (Leslie Smith, 2017, "Cyclical Learning Rates
for Training Neural Networks", section 3.3; in the form fastai's `lr_find` gives it): train from
fresh weights for a few hundred steps while the rate grows exponentially from tiny to huge, and
watch the loss. Too low a rate barely moves it, too high a rate overshoots and it climbs (source
text 004); a rate to train with lies on the way down.

It trains as `cnnexp train` does: the same config, data, model, feed and compiled step, with the
config's schedule (and optim.lr) replaced by the exponential ramp. The rate is a function of the
optimizer's step count inside the compiled step, so it grows without a recompile. The step keeps
running sums over the epoch ([loss sum, correct, count]); they are read after every step, and
their differences are each batch's loss.

The suggestion is a tenth of the rate at the lowest smoothed loss (fastai's "minimum / 10"): at
the lowest point the rate is already as high as training tolerates, a decade below it training
still makes fast progress. The other common reading, the rate where the smoothed curve falls
fastest (fastai's "steep"), proved less steady: it is the argmin of a difference of a noisy curve,
and the moving average's lag (about 50 steps at beta 0.98) slides it along the descent. LeNet with
AdamW on digits, 100, 200 and 400 steps: steepest 1.5e-2, 5.1e-3, 1.3e-3 (the first at the edge
of divergence); minimum / 10: 9.5e-3, 5.1e-3, 3.0e-3, all within the rates that train best there.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from omegaconf import DictConfig, OmegaConf

from cnnexp.checks import check_values, integer_at_least, is_finite, is_number
from cnnexp.console import training_progress
from cnnexp.data import load_dataset
from cnnexp.errors import UserError
from cnnexp.runs.layout import LR_FIND_FILE, LR_FIND_PLOT
from cnnexp.runs.summary import environment
from cnnexp.training.builder import build_experiment, fit_to_training_data
from cnnexp.training.distributed import host_value
from cnnexp.training.feeds import MemoryFeed, StreamFeed, train_feed
from cnnexp.training.parallel import trainer_parallel

log = logging.getLogger("cnnexp.lr_find")

# The fewest steps a test may have, and that a curve needs for a suggestion (a tenth is skipped).
MIN_STEPS = 10
# The rates a test may span. Below 1e-12 float32 rounding swallows every update (weights near 0.1
# move by 1e-12 x a gradient step); above 1e6 any loss overflows at the first step. Between them
# float32, in which the compiled step computes the rate, holds every rate of the ramp.
LR_LIMITS = (1e-12, 1e6)
# The first tenth of the steps takes no part in the suggestion (fastai leaves it out too): the
# smoothed loss is an average of a few batches there, and the weights have barely moved.
SKIP_START = 0.1
# A suggestion needs a valley: the smoothed loss falls by this fraction (from where the suggestion
# starts looking) to its lowest, and climbs by it again after (or the test stops on divergence).
# Smoothed losses wobble by under 1% on a flat stretch of the measured curves.
VALLEY_DEPTH = 0.05
SUGGESTION_METHOD = "a tenth of the rate at the lowest smoothed loss"


def validate_lr_find_config(cfg: DictConfig) -> None:
    """The `lr_find` options of conf/lr_find.yaml as composed with the command's overrides."""
    options = cfg.get("lr_find")
    if not OmegaConf.is_dict(options):
        raise UserError(f"invalid lr_find={options!r}: set its keys, e.g. lr_find.steps=200")
    low, high = LR_LIMITS
    check_values([
        ("lr_find.start_lr", options.start_lr, lambda v: is_number(v) and low <= v < high,
         f"a number >= {low:g} and < {high:g}"),
        ("lr_find.end_lr", options.end_lr, lambda v: is_number(v) and options.start_lr < v <= high,
         f"a number > lr_find.start_lr ({options.start_lr}) and <= {high:g}"),
        integer_at_least("lr_find.steps", options.steps, MIN_STEPS),
        ("lr_find.smoothing", options.smoothing, lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
        ("lr_find.divergence", options.divergence, lambda v: is_finite(v) and v > 1, "a finite number > 1"),
    ])


def exponential_ramp(start_lr: float, end_lr: float, steps: int) -> optax.Schedule:
    """`start_lr` at step 0 and `end_lr` at step `steps` - 1, multiplied by the same factor each step:
    every decade of rates gets as many steps, so the loss is seen as well at 1e-6 as at 1."""
    return optax.exponential_decay(start_lr, transition_steps=steps - 1, decay_rate=end_lr / start_lr)


class SmoothedLoss:
    """An exponential moving average of the batch losses, `beta` the weight of the past, divided by
    1 - beta^n (Adam's bias correction), so the first values are not pulled towards its start at 0
    (fastai's AvgSmoothLoss)."""

    def __init__(self, beta: float):
        self.beta, self.average, self.count = beta, 0.0, 0

    def add(self, loss: float) -> float:
        """Take the next batch loss in; returns the smoothed loss so far."""
        self.count += 1
        self.average = self.beta * self.average + (1 - self.beta) * loss
        return self.average / (1 - self.beta**self.count)


def diverging(smoothed: Sequence[float], factor: float) -> bool:
    """fastai's stop: the smoothed loss has grown past `factor` times its lowest."""
    return smoothed[-1] > factor * min(smoothed)


def lowest_loss(smoothed: Sequence[float]) -> int:
    """The index of the lowest smoothed loss after the first tenth of the steps (SKIP_START)."""
    start = int(len(smoothed) * SKIP_START)
    return start + int(np.argmin(smoothed[start:]))


def missing_valley(smoothed: Sequence[float], diverged: bool) -> str | None:
    """Why the curve holds no suggestion, or None when it has a valley (VALLEY_DEPTH): the loss fell
    to its lowest point and climbed after it, so that the rate there is the highest that trains."""
    if len(smoothed) < MIN_STEPS:
        return "it stopped after a few steps: lower lr_find.start_lr"
    lowest, first = lowest_loss(smoothed), smoothed[int(len(smoothed) * SKIP_START)]
    if smoothed[lowest] > (1 - VALLEY_DEPTH) * first:
        return (f"the smoothed loss never fell by {VALLEY_DEPTH:.0%}: lower lr_find.start_lr if it only "
                f"climbed, raise lr_find.end_lr if it stayed flat, or give it more lr_find.steps")
    if not diverged and smoothed[-1] < (1 + VALLEY_DEPTH) * smoothed[lowest]:
        return "the smoothed loss was still falling at lr_find.end_lr: raise it"
    return None


@dataclass
class RangeTest:
    """What a range test measured: one entry per step run."""

    lrs: list[float]  # the rate of each step, as the compiled step computed it (float32)
    losses: list[float]  # each step's mean loss over its batch
    smoothed: list[float]  # SmoothedLoss of `losses`
    planned_steps: int
    stop_reason: str | None  # why it stopped before `planned_steps` (it diverged); None: it ran them all

    @property
    def lowest(self) -> int | None:
        """The index of the lowest smoothed loss (lowest_loss); None when no step ran."""
        return lowest_loss(self.smoothed) if self.smoothed else None

    @property
    def no_suggestion(self) -> str | None:
        """Why there is no suggestion (missing_valley); None when there is one."""
        return missing_valley(self.smoothed, diverged=self.stop_reason is not None)

    @property
    def suggested_lr(self) -> float | None:
        """A tenth of the rate at the lowest smoothed loss, where the curve has a valley."""
        return None if self.no_suggestion else self.lrs[self.lowest] / 10


def run_range_test(cfg: DictConfig, options: DictConfig) -> RangeTest:
    """Train a fresh model of the validated train config `cfg` along the ramp of the `lr_find`
    `options`, until its last step or until the loss diverges."""
    # Data, model and compiled step, as `cnnexp train` builds them #
    data = load_dataset(cfg.data, cfg.seed)
    batch_size = cfg.trainer.batch_size
    if len(data.train) < batch_size:
        raise UserError(f"trainer.batch_size={batch_size} is larger than the training split "
                        f"({len(data.train)} examples)")
    ramp = exponential_ramp(options.start_lr, options.end_lr, options.steps)
    parallel = trainer_parallel(cfg.trainer)
    experiment = build_experiment(
        cfg, data.input_shape, data.num_classes, steps_per_epoch=len(data.train) // batch_size, parallel=parallel,
        initialize=lambda model, _: fit_to_training_data(model, data.fit_images(), data.preprocessing),
        schedule=ramp)
    place = jax.device_put if parallel is None else parallel.replicate
    state, preprocessing = place(experiment.state), place(data.preprocessing)
    feed = train_feed(data, cfg.data, batch_size=batch_size, seed=cfg.seed, place=place, parallel=parallel)
    compile_start = time.perf_counter()
    step = feed.compile(experiment, state, preprocessing)
    log.info("lr-find %s on %s (%s parameters): compiled the train step in %.1f s", cfg.model.name, data.name,
             f"{experiment.params:,}", time.perf_counter() - compile_start)

    # The ramp: one step per rate, the loss read after each #
    lrs = np.asarray(ramp(jnp.arange(options.steps)), np.float64).tolist()  # the step's own float32 values
    losses: list[float] = []
    smoothed: list[float] = []
    smoother, stop_reason = SmoothedLoss(options.smoothing), None
    leaves, previous = step.leaves(state), np.zeros(3)
    with training_progress(options.steps, 0, cfg.trainer.progress) as progress:
        task = progress.task_ids[0]
        progress.update(task, description="lr-find")
        for lr, (batch, args) in zip(lrs, _batches(feed, preprocessing), strict=False):
            leaves = step(leaves, *args)
            sums = np.asarray(host_value(step.state(leaves).epoch_sums), np.float64)
            loss_sum, _, count = (sums - previous) if batch > 0 else sums  # an epoch's first batch restarts them
            previous = sums
            if not math.isfinite(loss_sum / count):
                stop_reason = f"the loss became NaN or infinite at lr {lr:.1e}"
                break
            losses.append(loss_sum / count)
            smoothed.append(smoother.add(losses[-1]))
            progress.update(task, advance=1, status=f"lr {lr:.1e} loss {smoothed[-1]:.3f}")
            if diverging(smoothed, options.divergence):
                stop_reason = f"the smoothed loss passed {options.divergence:g}x its lowest at lr {lr:.1e}"
                break
    return RangeTest(lrs[: len(losses)], losses, smoothed, options.steps, stop_reason)


def _batches(feed: MemoryFeed | StreamFeed, preprocessing: Any) -> Iterator[tuple[int, tuple]]:
    """(index within its epoch, step arguments after the state) of every batch, epoch after epoch."""
    for epoch in itertools.count():
        yield from enumerate(feed.epoch(epoch, 0, preprocessing))


def write_range_test(folder: Path, test: RangeTest, cfg: DictConfig, options: DictConfig, command: str) -> None:
    """`folder` (new) with lr_find.json and lr_find.png."""
    folder.mkdir(parents=True)
    lr = test.suggested_lr
    record = {
        "command": command,
        "model": cfg.model.name,
        "dataset": cfg.data.name,
        "options": OmegaConf.to_container(options, resolve=True),
        "planned_steps": test.planned_steps,
        "steps_run": len(test.losses),
        "diverged": test.stop_reason is not None,
        "stop_reason": test.stop_reason,
        "suggestion": None if lr is None else {"lr": lr, "override": f"optim.lr={lr:.1e}", "method": SUGGESTION_METHOD},
        "no_suggestion": test.no_suggestion,
        "lowest_loss": None if test.lowest is None else {
            "lr": test.lrs[test.lowest], "step": test.lowest, "smoothed_loss": test.smoothed[test.lowest]},
        "lrs": test.lrs,
        "losses": test.losses,
        "smoothed_losses": test.smoothed,
        "config": OmegaConf.to_container(cfg, resolve=True),
        **environment(),
    }
    (folder / LR_FIND_FILE).write_text(json.dumps(record, indent=2) + "\n")
    plot_range_test(folder / LR_FIND_PLOT, test, f"lr-find: {cfg.model.name} on {cfg.data.name}, "
                                                 f"{cfg.optim.name}, batch {cfg.trainer.batch_size}")


def plot_range_test(path: Path, test: RangeTest, title: str) -> Path:
    """The smoothed loss (and each batch's, faint) against the rate on a log axis, the lowest point
    and the suggestion marked. The y axis ends a little above the highest smoothed loss: a
    diverging batch's loss would flatten the rest of the curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.2))
    axes.plot(test.lrs, test.losses, color="tab:blue", alpha=0.25, linewidth=1, label="batch loss")
    axes.plot(test.lrs, test.smoothed, color="tab:blue", linewidth=2, label="smoothed loss")
    if (lowest := test.lowest) is not None:
        axes.plot(test.lrs[lowest], test.smoothed[lowest], "o", color="grey",
                  label=f"lowest smoothed loss: lr {test.lrs[lowest]:.1e}")
        axes.set_ylim(0, 1.1 * max(test.smoothed))
    if (lr := test.suggested_lr) is not None:
        axes.axvline(lr, color="tab:red", linestyle="--", linewidth=1)
        axes.plot(lr, np.interp(np.log(lr), np.log(test.lrs), test.smoothed), "o", color="tab:red",
                  label=f"suggested (a tenth of it): optim.lr={lr:.1e}")
    axes.set_xscale("log")
    axes.set_xlabel("learning rate (log scale)")
    axes.set_ylabel("training loss")
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
