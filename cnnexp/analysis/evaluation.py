"""`cnnexp evaluate`: a trained run's loss and accuracy on its test split and, for invariance,
on shifted, rotated and scaled copies of it (source text 001), into <run>/evaluate/.

The test split sits on the device as uint8; each transform is one compiled function of the
transform's value, so a whole grid compiles once per kind of transform."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from omegaconf import DictConfig, OmegaConf

from cnnexp.config import check_values, is_number
from cnnexp.console import print_table
from cnnexp.data.transforms import warp
from cnnexp.runs.trained import TrainedRun, load_trained_run, validate_run_choice
from cnnexp.training.steps import make_loss, metric_sums

OUTPUT_DIR = "evaluate"
# The kinds of transform, each with its grid's config key and a label for its axis.
TRANSFORMS = {"translation": ("translations", "shift right (pixels)"),
              "rotation": ("rotations", "rotation (degrees)"),
              "scale": ("scales", "scale factor")}


def validate_evaluate_config(cfg: DictConfig) -> None:
    validate_run_choice(cfg, "evaluate")
    listed = lambda ok: lambda v: OmegaConf.is_list(v) and len(v) > 0 and all(is_number(x) and ok(x) for x in v)  # noqa: E731
    check_values([
        ("batch_size", cfg.batch_size, lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
         "an integer >= 1"),
        ("invariance", cfg.invariance, lambda v: isinstance(v, bool), "true or false"),
        ("translations", cfg.translations, listed(lambda x: x >= 0), "a non-empty list of numbers >= 0"),
        ("rotations", cfg.rotations, listed(lambda x: True), "a non-empty list of numbers (degrees)"),
        ("scales", cfg.scales, listed(lambda x: x > 0), "a non-empty list of numbers > 0"),
    ])


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate `cfg.run`; writes evaluation.json (and invariance.json, invariance.png) and
    prints a table; returns what evaluation.json says."""
    validate_evaluate_config(cfg)
    run = load_trained_run(Path(cfg.run), cfg.checkpoint)
    out = run.run_dir / OUTPUT_DIR
    out.mkdir(exist_ok=True)
    evaluator = _Evaluator(run, cfg.batch_size)
    loss, accuracy = evaluator.plain()
    result = {"run": str(run.run_dir), "checkpoint": run.checkpoint, "epoch": run.epoch,
              "test_loss": loss, "test_accuracy": accuracy, "test_examples": len(run.data.test)}
    (out / "evaluation.json").write_text(json.dumps(result, indent=2) + "\n")
    rows = [["test split", "-", f"{100 * accuracy:.2f}"]]
    if cfg.invariance:
        curves = {kind: [{"value": float(v), "accuracy": evaluator.transformed(kind, float(v))}
                         for v in cfg[key]] for kind, (key, _) in TRANSFORMS.items()}
        (out / "invariance.json").write_text(json.dumps({**result, "curves": curves}, indent=2) + "\n")
        invariance_plot(out / "invariance.png", curves, accuracy,
                        f"{run.cfg.model.name} on {run.data.name}: test accuracy under transforms")
        rows += [[kind, f"{point['value']:g}", f"{100 * point['accuracy']:.2f}"]
                 for kind, points in curves.items() for point in points]
    print_table(f"cnnexp evaluate: {run.run_dir} ({run.checkpoint} checkpoint, epoch {run.epoch})",
                ["transform", "value", "test acc %"], rows)
    for name in ("evaluation.json", "invariance.json", "invariance.png"):
        if (out / name).is_file() and (name == "evaluation.json" or cfg.invariance):
            print(out / name)
    return result


class _Evaluator:
    """The run's test split on the device, and compiled accuracy sums over it."""

    def __init__(self, run: TrainedRun, batch_size: int):
        test = run.data.test
        self.count, self.batch_size = len(test), batch_size
        padded = test.padded(batch_size)
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
