"""`cnnexp visualize`: every figure of what a trained run has learned, from its checkpoint, into
<run>/visualize/ with maximization.json (the numbers behind the images) and index.html."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from omegaconf import DictConfig, OmegaConf

from cnnexp.config import check_values, is_number
from cnnexp.console import console
from cnnexp.errors import UserError
from cnnexp.runs.trained import load_trained_run
from cnnexp.visualize import attribution, figures
from cnnexp.visualize.gallery import Gallery
from cnnexp.visualize.maximize import OPTIMIZERS, Regularizers, Result, Settings, Target, maximize, unit_statistics
from cnnexp.visualize.probe import Layer, Probe, conv_stages, hidden_dense, list_layers, module_at, select_layers
from cnnexp.visualize.synthesis import PARAMETERIZATIONS, Transforms

OUTPUT_DIR = "visualize"
STATISTICS_IMAGES = 512  # real test images that set each unit's scale (mean and spread)


def validate_visualize_config(cfg: DictConfig) -> None:
    """Refuse bad settings before the run is loaded."""
    if OmegaConf.is_missing(cfg, "run"):
        raise UserError("say which run to look at: cnnexp visualize run=<run folder>")
    if not Path(cfg.run).is_dir():
        raise UserError(f"run={cfg.run}: no such folder")
    if cfg.checkpoint not in ("best", "last"):
        raise UserError(f"checkpoint={cfg.checkpoint!r}: choose best or last")
    whole = (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1")
    at_least_0 = (lambda v: is_number(v) and v >= 0, "a number >= 0")
    m = cfg.maximize
    check_values([
        *[(key, OmegaConf.select(cfg, key), *whole)
          for key in ("images", "feature_channels", "mistakes", "maximize.units", "maximize.steps")],
        ("maximize.lr", m.lr, lambda v: is_number(v) and v > 0, "a number > 0"),
        *[(f"maximize.{key}", m[key], *at_least_0) for key in ("decay", "l1", "l2", "tv", "jitter", "rotate")],
        ("maximize.scale", m.scale, lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    ])
    if cfg.maximize.param not in PARAMETERIZATIONS:
        raise UserError(f"maximize.param={cfg.maximize.param!r}: choose one of {', '.join(PARAMETERIZATIONS)}")
    if cfg.maximize.optimizer not in OPTIMIZERS:
        raise UserError(f"maximize.optimizer={cfg.maximize.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")


def settings_from_config(cfg: DictConfig) -> Settings:
    m = cfg.maximize
    return Settings(steps=m.steps, lr=m.lr, optimizer=m.optimizer, param=m.param, decay=m.decay,
                    regularizers=Regularizers(l1=m.l1, l2=m.l2, tv=m.tv),
                    transforms=Transforms(jitter=m.jitter, scale=m.scale, rotate=m.rotate), seed=m.seed)


class _Stages:
    """Numbered progress lines with the time each stage took."""

    def __init__(self, total: int):
        self.total, self.done, self.started = total, 0, time.perf_counter()

    def __call__(self, text: str) -> None:
        now = time.perf_counter()
        self.done += 1
        console.print(f"[{self.done}/{self.total}] {text} [dim](at {now - self.started:.1f} s)[/dim]")


def visualize(cfg: DictConfig) -> Path:
    """Make every figure for `cfg.run`; returns the gallery's index.html."""
    validate_visualize_config(cfg)
    run = load_trained_run(Path(cfg.run), cfg.checkpoint)
    out = run.run_dir / OUTPUT_DIR
    out.mkdir(exist_ok=True)
    layers = list_layers(run.model, run.data.input_shape)
    conv = select_layers(layers, _as_list(cfg.layers)) if cfg.layers is not None else conv_stages(layers)
    dense = select_layers(layers, _as_list(cfg.dense_layers)) if cfg.dense_layers is not None else hidden_dense(layers)
    gallery = Gallery(out, f"cnnexp visualize: {run.cfg.model.name} on {run.data.name}, {run.checkpoint} "
                           f"checkpoint (epoch {run.epoch}), {run.run_dir}")
    progress = _Stages(5 + len(conv) + len(dense))
    test = run.data.test
    names = run.data.class_names
    examples = _one_per_class(test.labels, cfg.images)
    example_pixels = test.images[examples].astype(np.float32) / 255.0
    probe = Probe(run.model, [*conv, *dense])

    first_conv = next((layer for layer in layers if layer.kind == "conv"), None)
    if first_conv is None:
        gallery.note("First-layer filters", "this model has no conv layer")
    else:
        kernel = np.asarray(module_at(run.model, first_conv.name).kernel[...])
        gallery.add("First-layer filters", figures.filter_grid(
            out / "filters.png", kernel, f"{first_conv.name}: {kernel.shape[-1]} filters "
            f"{kernel.shape[0]}x{kernel.shape[1]} over {kernel.shape[2]} input channel(s); red +, blue -"),
            f"{first_conv.name} kernels, each on its own symmetric scale")
    progress(f"first-layer filters ({first_conv.name if first_conv else 'none'})")

    _, outputs = probe(probe.weights, run.normalize(jnp.asarray(example_pixels)))
    labels = [f"{names[test.labels[i]]}" for i in examples]
    for position, layer in enumerate(conv):
        maps = np.asarray(outputs[position])[..., :cfg.feature_channels]
        path = figures.feature_maps(out / f"feature_maps_{_file_name(layer)}.png", example_pixels, maps, labels,
                                    f"{layer.label} output (before activation), first {maps.shape[-1]} of "
                                    f"{layer.units} channels, {layer.output_shape[0]}x{layer.output_shape[1]}")
        gallery.add("Feature maps", path, f"{layer.label}: each row one test image, each panel one channel")
    progress(f"feature maps of {', '.join(layer.name for layer in conv) or 'no conv layer'}")

    settings = settings_from_config(cfg)
    real = run.normalize(jnp.asarray(test.images[:STATISTICS_IMAGES], jnp.float32) / 255.0)
    record: dict[str, Any] = {"run": str(run.run_dir), "checkpoint": run.checkpoint, "epoch": run.epoch,
                              "settings": OmegaConf.to_container(cfg.maximize), "layers": {}}
    for layer in [*conv, *dense]:
        target = Target(layer, np.arange(min(layer.units, cfg.maximize.units)))
        result = maximize(probe, target, settings, run.normalize, unit_statistics(probe, target, real),
                          run.data.input_shape)
        record["layers"][layer.name] = _unit_records(result, target.units, names)
        kind = "filter" if layer.kind == "conv" else "neuron"
        path = figures.image_grid(
            out / f"maximize_{_file_name(layer)}.png", result.pixels,
            [f"{kind} {u}\n{a:.3g} ({z:+.1f}σ)" for u, a, z in zip(target.units, result.activation, result.activation_z,
                                                                    strict=True)],
            f"{layer.label}: the input that most excites each {kind}; activation reached "
            f"({'sum of the feature map' if kind == 'filter' else 'value'}, σ over real images)")
        gallery.add(f"Activation maximization: {'conv filters' if kind == 'filter' else 'dense neurons'}", path,
                    f"{layer.label}, {len(target.units)} of {layer.units} units, {settings.steps} steps, "
                    f"mean ink {result.ink.mean():.3f}")
        progress(f"maximized {len(target.units)} {kind}s of {layer.name}")

    class_target = Target(None, np.arange(len(names)))
    statistics = unit_statistics(probe, class_target, real)
    variants = {"unregularized": settings.unregularized(), "regularized": settings}
    results = {name: maximize(probe, class_target, variant, run.normalize, statistics, run.data.input_shape)
               for name, variant in variants.items()}
    record["classes"] = {name: {"mean_ink": float(result.ink.mean()),
                                "units": _unit_records(result, class_target.units, names)}
                         for name, result in results.items()}
    rows = [(f"{name}\nink {result.ink.mean():.3f}", result.pixels,
             [f"target {names[c]}\npred {names[p]} {conf:.2f}" for c, p, conf in
              zip(class_target.units, result.predicted, result.confidence, strict=True)])
            for name, result in results.items()]
    gallery.add("Activation maximization: class logits", figures.class_images(
        out / "classes.png", rows, "the input that most excites each class logit, without and with the "
        "regularizers; the model's prediction and confidence on each"),
        "top: plain gradient ascent on the pixels; bottom: " + _describe(settings))
    progress("maximized every class logit, without and with regularizers")

    probabilities = attribution.predict(Probe(run.model, []), run.normalize, test.images)
    predicted = probabilities.argmax(axis=1)
    maps = attribution.saliency_maps(Probe(run.model, []), run.normalize, example_pixels, predicted[examples])
    gallery.add("Saliency", figures.saliency(
        out / "saliency.png", example_pixels, maps,
        [f"true {names[test.labels[i]]}\npred {names[predicted[i]]} {probabilities[i].max():.2f}" for i in examples],
        "saliency: |d logit(predicted class) / d pixel|"), "bright pixels change the predicted class's score most")
    progress("saliency maps")

    counts = attribution.confusion_counts(test.labels, predicted, len(names))
    accuracy = float(np.trace(counts) / counts.sum())
    gallery.add("Mistakes", figures.confusion_matrix(
        out / "confusion.png", counts, names, f"test split: {100 * accuracy:.2f}% correct of {counts.sum()}"),
        "confusion matrix (rows: true class)")
    wrong = attribution.confident_mistakes(test.labels, probabilities, cfg.mistakes)
    if len(wrong):
        gallery.add("Mistakes", figures.image_grid(
            out / "mistakes.png", test.images[wrong].astype(np.float32) / 255.0,
            [f"true {names[test.labels[i]]}\npred {names[predicted[i]]} {probabilities[i].max():.2f}" for i in wrong],
            f"the {len(wrong)} most confident mistakes on the test split"), "most confident mistakes first")
    record["test_accuracy"] = accuracy
    progress("confusion matrix and most confident mistakes")

    (out / "maximization.json").write_text(json.dumps(record, indent=2) + "\n")
    return gallery.write()


def _one_per_class(labels: np.ndarray, count: int) -> np.ndarray:
    """Indices of `count` test images: the first of each class (in test-split order), then the next ones."""
    _, firsts = np.unique(labels, return_index=True)
    rest = np.setdiff1d(np.arange(len(labels)), firsts)
    return np.concatenate([np.sort(firsts), rest])[:count]


def _as_list(value: Any) -> list:
    """`layers=conv2` and `layers=[conv2,fc1]` alike."""
    return [value] if isinstance(value, (str, int)) else list(value)


def _file_name(layer: Layer) -> str:
    return f"{layer.index:02d}_{layer.name.replace('.', '_')}"


def _describe(settings: Settings) -> str:
    r, t = settings.regularizers, settings.transforms
    return (f"{settings.param} parameterization, l1 {r.l1:g}, l2 {r.l2:g}, tv {r.tv:g}, jitter {t.jitter:g} px, "
            f"scale ±{t.scale:g}, rotation ±{t.rotate:g}°")


def _unit_records(result: Result, units: np.ndarray, class_names: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{"unit": int(unit), "activation_start": float(result.activation_start[k]),
             "activation": float(result.activation[k]),
             "activation_start_z": float(result.activation_start_z[k]), "activation_z": float(result.activation_z[k]),
             "best_real_activation": float(result.best_real[k]),
             "ink": float(result.ink[k]), **{name: float(values[k]) for name, values in result.penalties.items()},
             "predicted": class_names[int(result.predicted[k])], "confidence": float(result.confidence[k])}
            for k, unit in enumerate(units)]
