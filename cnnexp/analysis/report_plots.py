"""The report's figures (PNG, matplotlib's Agg backend: no display needed).

Learning curves show each group's mean over seeds with a band of ± one standard deviation;
the trade-off plots put each group's mean test accuracy (with its spread as an error bar)
against its parameter count and its wall time.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.ticker import MaxNLocator

if TYPE_CHECKING:
    from cnnexp.analysis.report import Group

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
    for title, metric, percent in (("Validation accuracy per epoch", "accuracy", True),
                                   ("Validation loss per epoch", "loss", False)):
        path = folder / f"val_{metric}.png"
        if _curves(plt, drawn, colors, metric, percent, title, path):
            plots[title] = path
    for title, key, axis, log_x in (("Test accuracy against parameters", "params", "parameters", True),
                                    ("Test accuracy against wall time", "wall_time_s", "wall time per run (s)", False)):
        path = folder / f"accuracy_vs_{key.removesuffix('_s')}.png"
        if _tradeoff(plt, drawn, colors, key, axis, log_x, title, path):
            plots[title] = path
    return plots


def _finish(plt, figure, axes, title: str, labelled: int, path: Path) -> None:
    axes.set_title(title)
    axes.grid(alpha=0.3)
    if 0 < labelled <= _LEGEND_LIMIT:
        axes.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)


def _curves(plt, groups: list[Group], colors, metric: str, percent: bool, title: str, path: Path) -> bool:
    figure, axes = plt.subplots(figsize=(8, 4.5))
    labelled = 0
    for index, group in enumerate(groups):
        by_epoch: dict[int, list[float]] = {}
        for run in group.completed:
            for record in run.curve:
                by_epoch.setdefault(int(record["epoch"]), []).append(float(record[metric]))
        if not by_epoch:
            continue
        epochs = np.array(sorted(by_epoch))
        values = [np.array(by_epoch[e]) * (100 if percent else 1) for e in epochs]
        mean = np.array([v.mean() for v in values])
        spread = np.array([v.std(ddof=1) if len(v) > 1 else 0.0 for v in values])
        color = colors(index % colors.N)
        axes.plot(epochs, mean, marker="o", markersize=3, color=color,
                  label=f"{group.name or 'all runs'} (n={len(group.completed)})")
        axes.fill_between(epochs, mean - spread, mean + spread, color=color, alpha=0.2, linewidth=0)
        labelled += 1
    if not labelled:
        plt.close(figure)
        return False
    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel(f"validation {metric}" + (" (%)" if percent else ""))
    _finish(plt, figure, axes, f"{title} (mean ± std over seeds)", labelled, path)
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
