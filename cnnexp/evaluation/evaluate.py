"""`cnnexp evaluate`: a trained run's loss and accuracy on its test split and, for invariance,
on shifted, rotated and scaled copies of it (source text 001), into <run>/evaluate/. Given a
sweep folder, it evaluates every completed run below it in turn.

The test split sits on the device as uint8; each transform is one compiled function of the
transform's value, so a whole grid compiles once per kind of transform."""

from __future__ import annotations

import json
import math
import sys
import traceback
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from omegaconf import DictConfig, OmegaConf

from cnnexp.checks import check_values, integer_at_least, is_number
from cnnexp.console import print_table
from cnnexp.data.transforms import warp
from cnnexp.errors import UserError
from cnnexp.reports.run_records import TRANSFORMS, find_run_dirs, read_run
from cnnexp.runs.layout import (
    CONFIG_FILE,
    EVALUATE_DIR,
    EVALUATION_FILE,
    INVARIANCE_FILE,
    INVARIANCE_PLOT,
    is_run_folder,
)
from cnnexp.training.losses import make_loss
from cnnexp.training.steps import metric_sums
from cnnexp.training.trained_run import TrainedRun, load_trained_run, validate_run_choice


class EvaluationsFailed(UserError):
    """Some runs of a sweep folder could not be evaluated (each said why on its own line)."""

    exit_code = 1


def validate_evaluate_config(cfg: DictConfig) -> None:
    validate_run_choice(cfg, "evaluate")
    listed = lambda ok: lambda v: OmegaConf.is_list(v) and len(v) > 0 and all(is_number(x) and ok(x) for x in v)  # noqa: E731
    check_values([
        integer_at_least("batch_size", cfg.batch_size, 1),
        ("invariance", cfg.invariance, lambda v: isinstance(v, bool), "true or false"),
        ("translations", cfg.translations, listed(lambda x: x >= 0), "a non-empty list of numbers >= 0"),
        ("rotations", cfg.rotations, listed(lambda x: True), "a non-empty list of numbers (degrees)"),
        ("scales", cfg.scales, listed(lambda x: x > 0), "a non-empty list of numbers > 0"),
    ])


def evaluate(cfg: DictConfig) -> None:
    """The command: `cfg.run` is one run folder (a table of its numbers), or a sweep folder (one line
    per run below it; raises EvaluationsFailed at the end if any run could not be evaluated)."""
    validate_evaluate_config(cfg)
    root = Path(cfg.run)
    if is_run_folder(root):
        result, rows = evaluate_run(root, cfg)
        print_table(f"cnnexp evaluate: {root} ({result['checkpoint']} checkpoint, epoch {result['epoch']})",
                    ["transform", "value", "test acc %"], rows)
        names = (EVALUATION_FILE, INVARIANCE_FILE, INVARIANCE_PLOT) if cfg.invariance else (EVALUATION_FILE,)
        for name in names:
            print(root / name)
    else:
        evaluate_sweep(root, cfg)


def evaluate_run(run_dir: Path, cfg: DictConfig) -> tuple[dict[str, Any], list[list[str]]]:
    """Evaluate one run; writes evaluation.json (and invariance.json, invariance.png) into
    <run>/evaluate/. Returns what evaluation.json says and the rows of the command's table."""
    run = load_trained_run(run_dir, cfg.checkpoint)
    (run.run_dir / EVALUATE_DIR).mkdir(exist_ok=True)
    evaluator = _Evaluator(run, cfg.batch_size)
    loss, accuracy = evaluator.plain()
    result = {"run": str(run.run_dir), "checkpoint": run.checkpoint, "epoch": run.epoch,
              "test_loss": loss, "test_accuracy": accuracy, "test_examples": len(run.data.test)}
    (run.run_dir / EVALUATION_FILE).write_text(json.dumps(result, indent=2) + "\n")
    rows = [["test split", "-", f"{100 * accuracy:.2f}"]]
    if cfg.invariance:
        curves = {kind: [{"value": float(v), "accuracy": evaluator.transformed(kind, float(v))}
                         for v in cfg[key]] for kind, (key, _) in TRANSFORMS.items()}
        (run.run_dir / INVARIANCE_FILE).write_text(json.dumps({**result, "curves": curves}, indent=2) + "\n")
        invariance_plot(run.run_dir / INVARIANCE_PLOT, curves, accuracy,
                        f"{run.cfg.model.name} on {run.data.name}: test accuracy under transforms")
        rows += [[kind, f"{point['value']:g}", f"{100 * point['accuracy']:.2f}"]
                 for kind, points in curves.items() for point in points]
    return result, rows


def evaluate_sweep(root: Path, cfg: DictConfig) -> None:
    """Evaluate every completed run below `root`, one line each; runs that are not completed are
    skipped with a warning, and one run that cannot be evaluated does not stop the others."""
    run_dirs = [run_dir for run_dir in find_run_dirs(root) if run_dir != root]
    if not run_dirs:
        raise UserError(f"run={root}: not a run folder (no {CONFIG_FILE}) and no run folders below it")
    failed = evaluated = 0
    for run_dir in run_dirs:
        status = read_run(run_dir).status
        if status != "completed":
            print(f"skipped  {run_dir}: status {status} (only completed runs are evaluated)", file=sys.stderr)
            continue
        try:
            result, _ = evaluate_run(run_dir, cfg)
        except Exception as error:  # one broken run must not cost the rest of the sweep
            failed += 1
            if not isinstance(error, UserError):
                traceback.print_exc()
            print(f"FAILED   {run_dir}: {' '.join(str(error).split()) or type(error).__name__}")
            continue
        evaluated += 1
        print(f"ok       {run_dir}: test acc {100 * result['test_accuracy']:.2f}% ({result['checkpoint']} "
              f"checkpoint, epoch {result['epoch']}) -> {run_dir / EVALUATE_DIR}")
    if failed:
        raise EvaluationsFailed(f"{failed} of {failed + evaluated} runs below {root} could not be evaluated")
    if not evaluated:
        raise UserError(f"run={root}: none of its {len(run_dirs)} runs is completed; nothing to evaluate")


class _Evaluator:
    """The run's test split on the device, and compiled accuracy sums over it."""

    def __init__(self, run: TrainedRun, batch_size: int):
        test = run.data.test
        # A batch beyond the split would only be padding: `batch_size=10**9` allocated 60 GB of it.
        self.count, self.batch_size = len(test), min(batch_size, len(test))
        padded = test.padded(self.batch_size)
        self.images, self.labels = jax.device_put(padded.images), jax.device_put(padded.labels)
        self.graphdef, self.weights = nnx.split(run.model)
        self.normalize = run.normalize
        self.loss = make_loss(run.cfg.loss.name)
        self._compiled: dict[str, Any] = {}

    def _sums(self, kind: str | None):
        """jit(weights, start, value) -> [loss sum, correct, count] over one batch, `kind` applied."""
        if kind not in self._compiled:
            def sums(weights, start, value):
                images = jax.lax.dynamic_slice_in_dim(self.images, start, self.batch_size)
                labels = jax.lax.dynamic_slice_in_dim(self.labels, start, self.batch_size)
                pixels = images.astype(jnp.float32) / 255.0
                if kind is not None:
                    pixels = jax.vmap(lambda image: _transform(image, kind, value))(pixels)
                logits = nnx.merge(self.graphdef, weights)(self.normalize(pixels))
                mask = ((start + jnp.arange(self.batch_size)) < self.count).astype(jnp.float32)
                return metric_sums(logits, labels, self.loss(logits, labels), mask)

            self._compiled[kind] = jax.jit(sums)
        return self._compiled[kind]

    def _run(self, kind: str | None, value: float) -> np.ndarray:
        step = self._sums(kind)
        total = sum(step(self.weights, np.int32(start), np.float32(value))
                    for start in range(0, self.images.shape[0], self.batch_size))
        return np.asarray(jax.device_get(total), np.float64)

    def plain(self) -> tuple[float, float]:
        loss_sum, correct, count = self._run(None, 0.0)
        return float(loss_sum / count), float(correct / count)

    def transformed(self, kind: str, value: float) -> float:
        _, correct, count = self._run(kind, value)
        return float(correct / count)


def _transform(image: jax.Array, kind: str, value: jax.Array) -> jax.Array:
    """One test image under one transform; what leaves the frame is lost, what enters is black."""
    zero, one = jnp.zeros(()), jnp.ones(())
    if kind == "translation":
        return warp(image, jnp.stack([zero, value]), one, zero, fill="constant")
    if kind == "rotation":
        return warp(image, jnp.zeros(2), one, value * math.pi / 180, fill="constant")
    return warp(image, jnp.zeros(2), value, zero, fill="constant")


def invariance_plot(path: Path, curves: dict[str, list[dict[str, float]]], plain_accuracy: float, title: str) -> Path:
    """Accuracy against each transform's value, one panel per kind, the untransformed accuracy dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.6), squeeze=False)
    for axis, (kind, points) in zip(axes[0], curves.items(), strict=True):
        axis.plot([p["value"] for p in points], [100 * p["accuracy"] for p in points], marker="o")
        axis.axhline(100 * plain_accuracy, color="grey", linestyle="--", linewidth=1, label="untransformed")
        axis.set_xlabel(TRANSFORMS[kind][1])
        axis.set_ylabel("test accuracy (%)")
        axis.set_ylim(0, 100)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
