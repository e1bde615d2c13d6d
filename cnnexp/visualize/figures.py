"""The PNG figures of `cnnexp visualize`: image grids with a label on every panel (matplotlib, Agg)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (the backend must be chosen first)
import numpy as np  # noqa: E402

PANEL_INCHES = 1.35
DPI = 110


def _shown(image: np.ndarray) -> tuple[np.ndarray, dict]:
    """An HWC image in [0, 1] as imshow wants it: grey images as 2-D with a grey colormap."""
    if image.shape[-1] == 1:
        return image[..., 0], {"cmap": "gray", "vmin": 0.0, "vmax": 1.0}
    return np.clip(image, 0.0, 1.0), {}


def _grid(count: int, columns: int, title: str, column_inches: float = PANEL_INCHES):
    columns = max(1, min(columns, count))
    rows = max(1, math.ceil(count / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(column_inches * columns, 1.25 * PANEL_INCHES * rows + 0.5),
                                squeeze=False)
    figure.suptitle(title, fontsize=10)
    for axis in axes.flat:
        axis.axis("off")
    return figure, axes


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path


def image_grid(path: Path, images: np.ndarray, labels: Sequence[str], title: str, columns: int = 8) -> Path:
    """Images in [0, 1], one labelled panel each."""
    figure, axes = _grid(len(images), columns, title)
    for axis, image, label in zip(axes.flat, images, labels, strict=False):
        shown, style = _shown(image)
        axis.imshow(shown, **style)
        axis.set_title(label, fontsize=7)
    return _save(figure, path)


def filter_grid(path: Path, kernel: np.ndarray, title: str, max_filters: int = 64) -> Path:
    """A conv layer's kernels (KH x KW x C_in x C_out): one row of panels per filter group, one
    panel per input channel, each on a symmetric red-blue scale of its own filter (white is 0),
    so edge and blob detectors show whatever their size; RGB filters also as a colour image."""
    filters = min(kernel.shape[-1], max_filters)
    channels = kernel.shape[2]
    colour = channels == 3
    per_filter = channels + colour
    columns = per_filter * max(1, 16 // per_filter) if per_filter <= 16 else per_filter
    figure, axes = _grid(filters * per_filter, columns, title, column_inches=0.9)
    for k in range(filters):
        weights = kernel[..., k]
        limit = float(np.abs(weights).max()) or 1.0
        panels = axes.flat[k * per_filter:(k + 1) * per_filter]
        for c in range(channels):
            panels[c].imshow(weights[..., c], cmap="RdBu_r", vmin=-limit, vmax=limit)
            panels[c].set_title(f"filter {k}" + (f" c{c}" if channels > 1 else ""), fontsize=6)
        if colour:
            panels[channels].imshow(0.5 + 0.5 * weights / limit)
            panels[channels].set_title(f"filter {k} rgb", fontsize=6)
    return _save(figure, path)


def feature_maps(path: Path, images: np.ndarray, maps: np.ndarray, image_labels: Sequence[str],
                 title: str) -> Path:
    """For each image (a row): the image, then its feature maps (N x H x W x K), each map on its
    own grey scale (brightest = its strongest response)."""
    count, channels = len(images), maps.shape[-1]
    figure, axes = plt.subplots(count, channels + 1, figsize=(0.9 * (channels + 1), 0.95 * count + 0.6),
                                squeeze=False)
    figure.suptitle(title, fontsize=10)
    for row in range(count):
        shown, style = _shown(images[row])
        axes[row, 0].imshow(shown, **style)
        axes[row, 0].set_title(image_labels[row], fontsize=6)
        for k in range(channels):
            axes[row, k + 1].imshow(maps[row, ..., k], cmap="gray")
            if row == 0:
                axes[row, k + 1].set_title(f"ch {k}", fontsize=6)
    for axis in axes.flat:
        axis.axis("off")
    return _save(figure, path)


def class_images(path: Path, rows: Sequence[tuple[str, np.ndarray, list[str]]], title: str) -> Path:
    """Rows of synthesized class images side by side (one row per setting), labelled."""
    columns = len(rows[0][1])
    figure, axes = plt.subplots(len(rows), columns, figsize=(PANEL_INCHES * columns, 1.5 * PANEL_INCHES * len(rows)),
                                squeeze=False)
    figure.suptitle(title, fontsize=10)
    for row, (name, images, labels) in enumerate(rows):
        for k, (image, label) in enumerate(zip(images, labels, strict=True)):
            shown, style = _shown(image)
            axes[row, k].imshow(shown, **style)
            axes[row, k].set_title(label, fontsize=6)
            axes[row, k].set_xticks([])
            axes[row, k].set_yticks([])
        axes[row, 0].set_ylabel(name, fontsize=8)
    return _save(figure, path)


def saliency(path: Path, images: np.ndarray, maps: np.ndarray, labels: Sequence[str], title: str) -> Path:
    """Each image above its saliency map (|gradient of the class score|, largest over channels)."""
    count = len(images)
    figure, axes = plt.subplots(2, count, figsize=(PANEL_INCHES * count, 2.6 * PANEL_INCHES + 0.4), squeeze=False)
    figure.suptitle(title, fontsize=10)
    for k in range(count):
        shown, style = _shown(images[k])
        axes[0, k].imshow(shown, **style)
        axes[0, k].set_title(labels[k], fontsize=6)
        axes[1, k].imshow(maps[k], cmap="hot")
        axes[1, k].set_title("saliency", fontsize=6)
    for axis in axes.flat:
        axis.axis("off")
    return _save(figure, path)


def confusion_matrix(path: Path, counts: np.ndarray, class_names: Sequence[str], title: str) -> Path:
    """Counts of (true class, predicted class), rows normalized for the colours, counts written in."""
    size = len(class_names)
    figure, axis = plt.subplots(figsize=(1.2 + 0.55 * size, 1.0 + 0.5 * size))
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    axis.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    for true in range(size):
        for predicted in range(size):
            axis.text(predicted, true, str(int(counts[true, predicted])), ha="center", va="center", fontsize=6,
                      color="white" if rates[true, predicted] > 0.5 else "black")
    axis.set_xticks(range(size), class_names, rotation=60, ha="right", fontsize=7)
    axis.set_yticks(range(size), class_names, fontsize=7)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title, fontsize=10)
    return _save(figure, path)
