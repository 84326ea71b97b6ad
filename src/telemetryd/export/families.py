"""Small helpers the collectors share."""

from __future__ import annotations

from prometheus_client.metrics_core import HistogramMetricFamily

from telemetryd.histogram import Histogram

MBIT_BYTES = 1_000_000 / 8
"""Contracts are written in Mbit/s; metrics use bytes per second (base units)."""

DEVICE_LABELS = ["school", "device", "kind"]


def histogram_family(name: str, doc: str, histogram: Histogram) -> HistogramMetricFamily:
    """A histogram family from one of our own fixed-bucket histograms."""
    return HistogramMetricFamily(name, doc, buckets=histogram.cumulative(), sum_value=histogram.total)


def flag(value: bool) -> float:
    """1.0 for true, 0.0 for false: the value of a 0/1 gauge."""
    return 1.0 if value else 0.0
