"""Small helpers the collectors share."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from telemetryd.histogram import Histogram
from telemetryd.reachability.state import Roster, State

MBIT_BYTES = 1_000_000 / 8
"""Contracts are written in Mbit/s; metrics use bytes per second (base units)."""

DEVICE_LABELS = ["school", "device", "kind"]


def histogram_family(name: str, doc: str, histogram: Histogram) -> HistogramMetricFamily:
    """A histogram family from one of our own fixed-bucket histograms."""
    return HistogramMetricFamily(name, doc, buckets=histogram.cumulative(), sum_value=histogram.total)


def flag(value: bool) -> float:
    """1.0 for true, 0.0 for false: the value of a 0/1 gauge."""
    return 1.0 if value else 0.0


@dataclass(frozen=True, slots=True)
class Family:
    """One family's name, type and help text, as both encodings print it."""

    name: str
    kind: str
    """``gauge``, ``counter`` or ``info``."""
    doc: str
    sample: str = field(init=False, repr=False, compare=False)
    """The name samples carry in both encodings (``_total`` for counters, ``_info`` for info families)."""

    def __post_init__(self) -> None:
        sample = {"counter": self.name + "_total", "info": self.name + "_info"}.get(self.kind, self.name)
        object.__setattr__(self, "sample", sample)

    def header(self, *, openmetrics: bool) -> str:
        """The HELP and TYPE lines: the text format names counters `_total` and info families `_info` gauges."""
        if openmetrics:
            name, kind = self.name, self.kind
        elif self.kind == "counter":
            name, kind = self.name + "_total", "counter"
        elif self.kind == "info":
            name, kind = self.name + "_info", "gauge"
        else:
            name, kind = self.name, self.kind
        doc = self.doc.replace("\\", r"\\").replace("\n", r"\n")
        return f"# HELP {name} {doc}\n# TYPE {name} {kind}\n"


def escape(value: str) -> str:
    """A label value as both encodings quote it."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class RosterCollector(Collector):
    """A collector over one roster of State.

    Alone, `collect` reads the current roster; a scrape (`export.app.Exposition`) reads it
    once and hands the same roster to every one of these, so a reload between two families
    cannot make one body list two inventories.
    """

    def __init__(self, state: State) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        """The families of the current roster."""
        return self.families(self.state.roster)

    def families(self, roster: Roster) -> Iterator[Metric]:
        """The families of this roster."""
        raise NotImplementedError
