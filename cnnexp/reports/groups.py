"""Runs grouped for the report: a group holds the runs that share the grouping keys' values
(usually every seed of one config), with its statistics over seeds."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from cnnexp.reports.baselines import Baseline, baseline_for
from cnnexp.reports.run_records import RunRecord

# How an invariance column names its transform's value.
_TRANSFORM_NAMES = {"translation": "shift {:g} px", "rotation": "rot {:g}°", "scale": "scale {:g}x"}


@dataclass
class Stat:
    """Mean and sample standard deviation (ddof=1; None for fewer than two values)."""

    mean: float | None
    std: float | None

    @classmethod
    def of(cls, values: list[float]) -> Stat:
        if not values:
            return cls(None, None)
        return cls(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None)


@dataclass(frozen=True)
class InvariancePoint:
    """One invariance column: test accuracy under one transform of the test split."""

    kind: str  # a key of TRANSFORMS
    value: float

    @property
    def heading(self) -> str:
        return "acc % " + _TRANSFORM_NAMES[self.kind].format(self.value)

    @property
    def csv_key(self) -> str:
        return f"{self.kind}_{self.value:g}_accuracy"


@dataclass
class Group:
    """Runs with the same values of the grouping keys (usually: all seeds of one config)."""

    label: dict[str, str]
    runs: list[RunRecord]

    @property
    def completed(self) -> list[RunRecord]:
        return [run for run in self.runs if run.status == "completed"]

    @property
    def not_completed(self) -> list[RunRecord]:
        return [run for run in self.runs if run.status != "completed"]

    @property
    def name(self) -> str:
        return ", ".join(f"{key}={short_value(value)}" for key, value in self.label.items())

    def stat(self, key: str) -> Stat:
        return Stat.of([v for v in (run.value(key) for run in self.completed) if v is not None])

    @property
    def invariance_evaluated(self) -> list[RunRecord]:
        """The completed runs that have evaluate/invariance.json."""
        return [run for run in self.completed if run.invariance]

    def invariance_stat(self, point: InvariancePoint) -> Stat:
        """The point's test accuracy over the completed runs that were evaluated there."""
        curves = (run.invariance.get(point.kind, {}) for run in self.completed)
        return Stat.of([curve[point.value] for curve in curves if point.value in curve])

    def baseline(self) -> Baseline | None:
        """The published figure, when every run of the group is the same model on the whole of the
        same dataset (a class subset or a share of the labels is another task)."""
        if any(run.config.get("data.classes", "null") != "null" or float(run.config.get("data.train_fraction", 1)) < 1
               for run in self.runs):
            return None
        pairs = {(run.summary.get("dataset"), run.summary.get("model")) for run in self.runs}
        return baseline_for(*pairs.pop()) if len(pairs) == 1 else None


def short_value(value: str) -> str:
    """A sampled number such as Optuna's 0.0029723442531939316 shown as 0.002972 (CSV keeps it all)."""
    try:
        number = float(value)
    except ValueError:
        return value
    return value if number.is_integer() or len(value) <= 8 else f"{number:.4g}"
