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

from cnnexp.checks import check_values, is_finite, is_integer, is_number, seed_at
from cnnexp.console import console
from cnnexp.errors import UserError
from cnnexp.runs.layout import VISUALIZE_DIR
from cnnexp.training.trained_run import TrainedRun, load_trained_run, validate_run_choice
from cnnexp.visualize import attribution, figures
from cnnexp.visualize.gallery import Gallery
from cnnexp.visualize.maximize import OPTIMIZERS, Regularizers, Result, Settings, Target, maximize, unit_statistics
from cnnexp.visualize.probe import Layer, Probe, conv_stages, hidden_dense, list_layers, module_at, select_layers
from cnnexp.visualize.synthesis import PARAMETERIZATIONS, Transforms

STATISTICS_IMAGES = 512  # real test images that set each unit's scale (mean and spread)


def validate_visualize_config(cfg: DictConfig) -> None:
    """Refuse bad settings before the run is loaded."""
    validate_run_choice(cfg, "visualize")
    whole = (lambda v: is_integer(v) and v >= 1, "an integer >= 1")
    at_least_0 = (lambda v: is_finite(v) and v >= 0, "a finite number >= 0")
    layer = lambda v: isinstance(v, str) or is_integer(v)  # noqa: E731
    layers = (lambda v: v is None or layer(v) or (OmegaConf.is_list(v) and all(map(layer, v))),
              "null, a layer's name or index, or a list of them (`cnnexp summary` lists the layers)")
    m = cfg.maximize
    check_values([
        *[(key, OmegaConf.select(cfg, key), *whole)
          for key in ("images", "feature_channels", "mistakes", "maximize.units", "maximize.steps")],
        *[(key, cfg[key], *layers) for key in ("layers", "dense_layers")],
        ("maximize.lr", m.lr, lambda v: is_finite(v) and v > 0, "a finite number > 0"),
        *[(f"maximize.{key}", m[key], *at_least_0) for key in ("decay", "l1", "l2", "tv", "jitter", "rotate")],
        ("maximize.scale", m.scale, lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
        seed_at("maximize.seed", m.seed),
    ])
    if cfg.maximize.param not in PARAMETERIZATIONS:
        raise UserError(f"maximize.param={cfg.maximize.param!r}: choose one of {', '.join(PARAMETERIZATIONS)}")
    if cfg.maximize.optimizer not in OPTIMIZERS:
        raise UserError(f"maximize.optimizer={cfg.maximize.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")


def settings_from_config(cfg: DictConfig) -> Settings:
    """The maximization's settings, numbers as floats: `maximize.lr=1` arrives as a Python int, which
    JAX refuses to trace once it exceeds 64 bits."""
    m = cfg.maximize
    return Settings(steps=m.steps, lr=float(m.lr), optimizer=m.optimizer, param=m.param, decay=float(m.decay),
                    regularizers=Regularizers(l1=float(m.l1), l2=float(m.l2), tv=float(m.tv)),
                    transforms=Transforms(jitter=float(m.jitter), scale=float(m.scale), rotate=float(m.rotate)),
                    seed=m.seed)


class _Stages:
    """Numbered progress lines with the time so far; after each stage the gallery and the JSON are
    rewritten, so a crash or Ctrl-C keeps everything finished before it."""

    def __init__(self, total: int, gallery: Gallery, record: dict[str, Any]):
        self.total, self.done, self.started = total, 0, time.perf_counter()
        self.gallery, self.record = gallery, record

    def __call__(self, text: str) -> None:
        self.done += 1
        self.gallery.write()
        (self.gallery.folder / "maximization.json").write_text(json.dumps(self.record, indent=2) + "\n")
        console.print(f"[{self.done}/{self.total}] {text} [dim](at {time.perf_counter() - self.started:.1f} s)[/dim]")


def visualize(cfg: DictConfig) -> Path:
    """Make every figure for `cfg.run`; returns the gallery's index.html."""
    validate_visualize_config(cfg)
    return _Visualization(cfg, load_trained_run(Path(cfg.run), cfg.checkpoint)).make_all()


class _Visualization:
    """One `cnnexp visualize` call: what every section shares, and one method per section."""

    def __init__(self, cfg: DictConfig, run: TrainedRun):
        self.cfg, self.run = cfg, run
        self.layers = list_layers(run.model, run.data.input_shape)
        self.conv = (select_layers(self.layers, _as_list(cfg.layers)) if cfg.layers is not None
                     else conv_stages(self.layers))
        self.dense = (select_layers(self.layers, _as_list(cfg.dense_layers)) if cfg.dense_layers is not None
                      else hidden_dense(self.layers))
        self.out = run.run_dir / VISUALIZE_DIR
        self.out.mkdir(exist_ok=True)  # once the layers asked for exist: a refused call writes nothing
        self.gallery = Gallery(self.out, f"cnnexp visualize: {run.cfg.model.name} on {run.data.name}, "
                                         f"{run.checkpoint} checkpoint (epoch {run.epoch}), {run.run_dir}")
        self.record: dict[str, Any] = {"run": str(run.run_dir), "checkpoint": run.checkpoint, "epoch": run.epoch,
                                       "settings": OmegaConf.to_container(cfg.maximize), "layers": {}}
        self.progress = _Stages(5 + len(self.conv) + len(self.dense), self.gallery, self.record)
        self.test, self.names = run.data.test, run.data.class_names
        self.examples = _one_per_class(self.test.labels, cfg.images)
        self.example_pixels = self.test.images[self.examples].astype(np.float32) / 255.0
        self.probe = Probe(run.model, [*self.conv, *self.dense])
        self.settings = settings_from_config(cfg)

    def make_all(self) -> Path:
        self.first_layer_filters()
        self.feature_maps()
        real = self.run.normalize(jnp.asarray(self.test.images[:STATISTICS_IMAGES], jnp.float32) / 255.0)
        for layer in [*self.conv, *self.dense]:
            self.maximize_units(layer, real)
        self.maximize_classes(real)
        probabilities = attribution.predict(Probe(self.run.model, []), self.run.normalize, self.test)
        self.saliency(probabilities)
        self.mistakes(probabilities)
        return self.out / "index.html"

    def _labels(self, indices: np.ndarray, probabilities: np.ndarray) -> list[str]:
        return [f"true {self.names[self.test.labels[i]]}\npred {self.names[probabilities[i].argmax()]} "
                f"{probabilities[i].max():.2f}" for i in indices]

    def first_layer_filters(self) -> None:
        first = next((layer for layer in self.layers if layer.kind == "conv"), None)
        if first is None:
            self.gallery.note("First-layer filters", "this model has no conv layer")
        else:
            kernel = np.asarray(module_at(self.run.model, first.name).kernel[...])
            self.gallery.add("First-layer filters", figures.filter_grid(
                self.out / "filters.png", kernel, f"{first.name}: {kernel.shape[-1]} filters "
                f"{kernel.shape[0]}x{kernel.shape[1]} over {kernel.shape[2]} input channel(s); red +, blue -"),
                f"{first.name} kernels, each on its own symmetric scale")
        self.progress(f"first-layer filters ({first.name if first else 'none'})")

    def feature_maps(self) -> None:
        _, outputs = self.probe(self.probe.weights, self.run.normalize(jnp.asarray(self.example_pixels)))
        labels = [self.names[self.test.labels[i]] for i in self.examples]
        for position, layer in enumerate(self.conv):
            maps = np.asarray(outputs[position])[..., :self.cfg.feature_channels]
            path = figures.feature_maps(
                self.out / f"feature_maps_{_file_name(layer)}.png", self.example_pixels, maps, labels,
                f"{layer.label} output (before activation), first {maps.shape[-1]} of {layer.units} channels, "
                f"{layer.output_shape[0]}x{layer.output_shape[1]}")
            self.gallery.add("Feature maps", path, f"{layer.label}: each row one test image, each panel one channel")
        self.progress(f"feature maps of {', '.join(layer.name for layer in self.conv) or 'no conv layer'}")

    def maximize_units(self, layer: Layer, real: jnp.ndarray) -> None:
        target = Target(layer, np.arange(min(layer.units, self.cfg.maximize.units)))
        result = maximize(self.probe, target, self.settings, self.run.normalize,
                          unit_statistics(self.probe, target, real), self.run.data.input_shape)
        self.record["layers"][layer.name] = _unit_records(result, target.units, self.names)
        kind = "filter" if layer.kind == "conv" else "neuron"
        path = figures.image_grid(
            self.out / f"maximize_{_file_name(layer)}.png", result.pixels,
            [f"{kind} {u}\n{a:.3g} ({z:+.1f}σ)"
             for u, a, z in zip(target.units, result.activation, result.activation_z, strict=True)],
            f"{layer.label}: the input that most excites each {kind}; activation reached "
            f"({'sum of the feature map' if kind == 'filter' else 'value'}, σ over real images)")
        self.gallery.add(f"Activation maximization: {'conv filters' if kind == 'filter' else 'dense neurons'}",
                         path, f"{layer.label}, {len(target.units)} of {layer.units} units, "
                               f"{self.settings.steps} steps, mean ink {result.ink.mean():.3f}")
        self.progress(f"maximized {len(target.units)} {kind}s of {layer.name}")

    def maximize_classes(self, real: jnp.ndarray) -> None:
        """Every class logit, by plain gradient ascent on the pixels and with the regularizers."""
        target = Target(None, np.arange(len(self.names)))
        statistics = unit_statistics(self.probe, target, real)
        variants = {"unregularized": self.settings.unregularized(), "regularized": self.settings}
        results = {name: maximize(self.probe, target, variant, self.run.normalize, statistics,
                                  self.run.data.input_shape) for name, variant in variants.items()}
        self.record["classes"] = {name: {"mean_ink": float(result.ink.mean()),
                                         "units": _unit_records(result, target.units, self.names)}
                                  for name, result in results.items()}
        rows = [(f"{name}\nink {result.ink.mean():.3f}", result.pixels,
                 [f"target {self.names[c]}\npred {self.names[p]} {confidence:.2f}"
                  for c, p, confidence in zip(target.units, result.predicted, result.confidence, strict=True)])
                for name, result in results.items()]
        self.gallery.add("Activation maximization: class logits", figures.class_images(
            self.out / "classes.png", rows, "the input that most excites each class logit, without and with the "
            "regularizers; the model's prediction and confidence on each"),
            "top: plain gradient ascent on the pixels; bottom: " + _describe(self.settings))
        self.progress("maximized every class logit, without and with regularizers")

    def saliency(self, probabilities: np.ndarray) -> None:
        predicted = probabilities.argmax(axis=1)[self.examples]
        maps = attribution.saliency_maps(Probe(self.run.model, []), self.run.normalize, self.example_pixels, predicted)
        self.gallery.add("Saliency", figures.saliency(
            self.out / "saliency.png", self.example_pixels, maps, self._labels(self.examples, probabilities),
            "saliency: |d logit(predicted class) / d pixel|"), "bright pixels change the predicted class's score most")
        self.progress("saliency maps")

    def mistakes(self, probabilities: np.ndarray) -> None:
        counts = attribution.confusion_counts(self.test.labels, probabilities.argmax(axis=1), len(self.names))
        accuracy = float(np.trace(counts) / counts.sum())
        self.gallery.add("Mistakes", figures.confusion_matrix(
            self.out / "confusion.png", counts, self.names,
            f"test split: {100 * accuracy:.2f}% correct of {counts.sum()}"), "confusion matrix (rows: true class)")
        wrong = attribution.confident_mistakes(self.test.labels, probabilities, self.cfg.mistakes)
        if len(wrong):
            self.gallery.add("Mistakes", figures.image_grid(
                self.out / "mistakes.png", self.test.images[wrong].astype(np.float32) / 255.0,
                self._labels(wrong, probabilities), f"the {len(wrong)} most confident mistakes on the test split"),
                "most confident mistakes first")
        self.record["test_accuracy"] = accuracy
        self.progress("confusion matrix and most confident mistakes")


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
