"""A fixed-bucket histogram in the shape Prometheus exports (scheduler lag, loop lag, history writes)."""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass, field

LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PROBE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Probe durations and round trips: a LAN camera answers in under a millisecond, a timeout takes seconds."""


@dataclass(slots=True)
class Histogram:
    """A cumulative histogram with fixed buckets, in the shape Prometheus exports."""

    buckets: tuple[float, ...] = LAG_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    observations: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float) -> None:
        """Count one value."""
        # bisect_left finds the first bound >= value (Prometheus' `le`); past the last, the +Inf slot.
        self.counts[bisect_left(self.buckets, value)] += 1
        self.total += value
        self.observations += 1

    def cumulative(self) -> list[tuple[str, float]]:
        """(le, cumulative count) pairs, ending with +Inf."""
        out, running = [], 0
        for bound, count in zip((*self.buckets, math.inf), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == math.inf else repr(bound), float(running)))
        return out
