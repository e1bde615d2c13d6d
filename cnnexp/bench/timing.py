"""Timing that survives a shared, noisy machine: every side of a comparison is warmed up, then
the sides take turns (the order flips every repetition) so a change of load hits them alike,
and each call waits for its result before the clock stops. A call that runs in another process
returns the seconds it measured there, so the round trip to that process does not count."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Timing:
    """Seconds per call over the timed repetitions."""

    times_s: tuple[float, ...]

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)

    @property
    def spread(self) -> float:
        """Interquartile range relative to the median (0.05: the middle half lies within 5%)."""
        if len(self.times_s) < 2:
            return 0.0
        low, _, high = statistics.quantiles(self.times_s, n=4, method="inclusive")
        return (high - low) / self.median_s


def interleaved(calls: Mapping[str, Callable[[], object]], *, warmup: int, repeats: int) -> dict[str, Timing]:
    """Time each of `calls` (each must block until its work is done) `repeats` times, in turns; a
    call returning a float is taken at its word (its own seconds)."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    times: dict[str, list[float]] = {side: [] for side in calls}
    for repeat in range(repeats):
        for side in list(calls) if repeat % 2 == 0 else reversed(list(calls)):
            start = time.perf_counter()
            reported = calls[side]()
            times[side].append(reported if isinstance(reported, float) else time.perf_counter() - start)
    return {side: Timing(tuple(values)) for side, values in times.items()}
