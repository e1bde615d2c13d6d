"""The report's figures (PNG, matplotlib's Agg backend: no display needed).

Learning curves (validation accuracy and loss, training loss, per epoch) and invariance curves
(test accuracy against a shift, a rotation and a scaling, where `cnnexp evaluate invariance=true`
ran) show each group's mean over seeds with a band of ± one standard deviation; the trade-off
plots put each group's mean test accuracy (with its spread as an error bar) against its
parameter count and its wall time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator

from cnnexp.reports.groups import Group
from cnnexp.reports.run_records import TRANSFORMS

_LEGEND_LIMIT = 20  # more groups than this: no legend (it would hide the plot)


def draw_plots(groups: list[Group], folder: Path) -> dict[str, Path]:
    """Draw every plot for which some group has data; returns title -> PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = [group for group in groups if group.completed]
    if not drawn:
        return {}
    folder.mkdir(parents=True, exist_ok=True)
    colors = plt.get_cmap("tab20" if len(drawn) > 10 else "tab10")
    plots = {}
    for title, split, metric in (("Validation accuracy per epoch", "val", "accuracy"),
                                 ("Validation loss per epoch", "val", "loss"),
                                 ("Training loss per epoch", "train", "loss")):
        path = folder / f"{split}_{metric}.png"
        if _curves(plt, drawn, colors, split, metric, title, path):
            plots[title] = path
    for title, key, axis, log_x in (("Test accuracy against parameters", "params", "parameters", True),
                                    ("Test accuracy against wall time", "wall_time_s", "wall time per run (s)", False)):
        path = folder / f"accuracy_vs_{key.removesuffix('_s')}.png"
        if _tradeoff(plt, drawn, colors, key, axis, log_x, title, path):
            plots[title] = path
    title, path = "Test accuracy under shifts, rotations and scales", folder / "invariance.png"
    if _invariance(plt, drawn, colors, title, path):
        plots[title] = path
    return plots


def _finish(plt, figure, axes, title: str, labelled: int, path: Path) -> None:
    axes.set_title(title)
    axes.grid(alpha=0.3)
    if 0 < labelled <= _LEGEND_LIMIT:
        axes.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)


def _mean_band(axes, samples: dict[float, list[float]], color, label: str, scale: float = 1.0) -> None:
    """A line through the mean of each x's samples (the group's seeds), in a band of ± one sample
    standard deviation (none where there is one sample)."""
    xs = np.array(sorted(samples))
    values = [scale * np.array(samples[x]) for x in xs]
    mean = np.array([v.mean() for v in values])
    spread = np.array([v.std(ddof=1) if len(v) > 1 else 0.0 for v in values])
    axes.plot(xs, mean, marker="o", markersize=3, color=color, label=label)
    axes.fill_between(xs, mean - spread, mean + spread, color=color, alpha=0.2, linewidth=0)


def _curves(plt, groups: list[Group], colors, split: str, metric: str, title: str, path: Path) -> bool:
    percent = metric == "accuracy"
    figure, axes = plt.subplots(figsize=(8, 4.5))
    labelled = 0
    for index, group in enumerate(groups):
        by_epoch: dict[float, list[float]] = {}
        for run in group.completed:
            for record in run.curves.get(split, []):
                by_epoch.setdefault(int(record["epoch"]), []).append(float(record[metric]))
        if not by_epoch:
            continue
        _mean_band(axes, by_epoch, colors(index % colors.N), f"{group.name or 'all runs'} (n={len(group.completed)})",
                   100 if percent else 1)
        labelled += 1
    if not labelled:
        plt.close(figure)
        return False
    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    label = {"val": "validation {}", "train": "training {}, mean over the epoch"}[split].format(metric)
    axes.set_ylabel(label + (" (%)" if percent else ""))
    _finish(plt, figure, axes, f"{title} (mean ± std over seeds)", labelled, path)
    return True


def _invariance(plt, groups: list[Group], colors, title: str, path: Path) -> bool:
    """One panel per kind of transform with data: each group's test accuracy against the transform's
    value, from the runs' evaluate/invariance.json."""
    kinds = [kind for kind in TRANSFORMS if any(kind in run.invariance for group in groups for run in group.completed)]
    if not kinds:
        return False
    figure, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 3.8), squeeze=False, sharey=True)
    legend: dict[str, object] = {}
    for axis, kind in zip(axes[0], kinds, strict=True):
        for index, group in enumerate(groups):
            samples: dict[float, list[float]] = {}
            for run in group.invariance_evaluated:
                for value, accuracy in run.invariance.get(kind, {}).items():
                    samples.setdefault(value, []).append(accuracy)
            if samples:
                _mean_band(axis, samples, colors(index % colors.N),
                           f"{group.name or 'all runs'} (n={len(group.invariance_evaluated)})", 100)
        axis.set_xlabel(TRANSFORMS[kind][1])
        axis.set_ylim(0, 100)
        axis.grid(alpha=0.3)
        handles, labels = axis.get_legend_handles_labels()
        legend.update(zip(labels, handles, strict=True))
    axes[0][0].set_ylabel("test accuracy (%)")
    figure.suptitle(f"{title} (mean ± std over seeds)", fontsize=10)
    figure.tight_layout()
    if len(legend) <= _LEGEND_LIMIT:
        figure.legend(list(legend.values()), list(legend), fontsize="small", loc="center left",
                      bbox_to_anchor=(1.0, 0.5), frameon=False)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return True


def _tradeoff(plt, groups: list[Group], colors, key: str, axis: str, log_x: bool, title: str, path: Path) -> bool:
    figure, axes = plt.subplots(figsize=(8, 4.5))
    labelled = 0
    for index, group in enumerate(groups):
        x, y = group.stat(key), group.stat("test_accuracy")
        if x.mean is None or y.mean is None:
            continue
        axes.errorbar(x.mean, 100 * y.mean, yerr=100 * (y.std or 0), xerr=x.std or 0, fmt="o", capsize=3,
                      color=colors(index % colors.N), label=group.name or "all runs")
        # The point's own name beside it: a single grouping value is enough to tell points apart.
        tag = next(iter(group.label.values())) if len(group.label) == 1 else group.name
        axes.annotate(tag, (x.mean, 100 * y.mean), textcoords="offset points", xytext=(5, 4), fontsize=7)
        labelled += 1
    if not labelled:
        plt.close(figure)
        return False
    if log_x:
        axes.set_xscale("log")
    axes.set_xlabel(axis)
    axes.set_ylabel("test accuracy (%)")
    _finish(plt, figure, axes, title, labelled, path)
    return True
