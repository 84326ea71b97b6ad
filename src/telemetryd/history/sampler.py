"""SNMP interval rates → 5-minute link samples for the history. Pure: times come in as arguments.

Each poll gives every role (``wan`` or a segment) an average rate over its interval.
The sampler adds them into a bucket of `bucket_seconds` (aligned to the Unix epoch, so
shards and restarts agree on bucket boundaries) per (school, role), and hands the
bucket out as two LinkSamples (download and upload) once a rate for a later bucket
arrives, or once the bucket is `grace` seconds past its end with no more rates.

Directions are seen from the school: on the WAN interface download is ifIn (from the
ISP); on a segment's LAN-facing interface download is ifOut (towards the school's
devices). A rate is booked to the bucket its interval ends in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from telemetryd.history.records import LinkSample
from telemetryd.link.counters import SATURATION_THRESHOLD, InterfaceRate
from telemetryd.model import Direction


@dataclass(slots=True)
class _Bucket:
    start: float
    allocation_mbps: float | None
    seconds: float = 0.0
    bits: tuple[float, float] = (0.0, 0.0)
    peak_bps: tuple[float, float] = (0.0, 0.0)
    saturated: tuple[float, float] = (0.0, 0.0)
    samples: int = 0


def _school_view(role: str, rate: InterfaceRate) -> tuple[float, float]:
    """(download, upload) bit rates of one interface, seen from the school."""
    if role == "wan":
        return rate.in_bps, rate.out_bps
    return rate.out_bps, rate.in_bps


class LinkSampler:
    """Aggregates interval rates per (school, role) into fixed buckets."""

    def __init__(self, bucket_seconds: float = 300.0, *, grace: float | None = None) -> None:
        self.bucket_seconds = bucket_seconds
        self.grace = bucket_seconds if grace is None else grace
        self._open: dict[tuple[str, str], _Bucket] = {}

    def bucket_start(self, at: float) -> float:
        """Start of the bucket holding time `at`."""
        return math.floor(at / self.bucket_seconds) * self.bucket_seconds

    def add(
        self, school_id: str, role: str, rate: InterfaceRate, allocation_mbps: float | None, at: float
    ) -> list[LinkSample]:
        """Book one interval ending at `at`; returns the samples of a bucket this closed."""
        start = self.bucket_start(at)
        key = (school_id, role)
        bucket = self._open.get(key)
        closed: list[LinkSample] = []
        if bucket is not None and bucket.start != start:
            closed = self._samples(key, self._open.pop(key))
            bucket = None
        if bucket is None:
            bucket = self._open[key] = _Bucket(start, allocation_mbps)
        bucket.allocation_mbps = allocation_mbps
        down, up = _school_view(role, rate)
        bucket.seconds += rate.seconds
        bucket.bits = (bucket.bits[0] + down * rate.seconds, bucket.bits[1] + up * rate.seconds)
        bucket.peak_bps = (max(bucket.peak_bps[0], down), max(bucket.peak_bps[1], up))
        if allocation_mbps:
            floor_bps = SATURATION_THRESHOLD * allocation_mbps * 1e6
            bucket.saturated = (
                bucket.saturated[0] + (rate.seconds if down >= floor_bps else 0.0),
                bucket.saturated[1] + (rate.seconds if up >= floor_bps else 0.0),
            )
        bucket.samples += 1
        return closed

    def due(self, now: float) -> list[LinkSample]:
        """Samples of every bucket that ended more than `grace` ago (its router stopped answering)."""
        stale = [k for k, b in self._open.items() if b.start + self.bucket_seconds + self.grace <= now]
        return [sample for key in stale for sample in self._samples(key, self._open.pop(key))]

    def flush(self) -> list[LinkSample]:
        """Every open bucket, partial ones included (at shutdown)."""
        keys = list(self._open)
        return [sample for key in keys for sample in self._samples(key, self._open.pop(key))]

    def forget(self, school_ids: set[str]) -> list[LinkSample]:
        """Close the buckets of schools no longer watched; returns their samples."""
        gone = [k for k in self._open if k[0] not in school_ids]
        return [sample for key in gone for sample in self._samples(key, self._open.pop(key))]

    @staticmethod
    def _samples(key: tuple[str, str], bucket: _Bucket) -> list[LinkSample]:
        if bucket.seconds <= 0:
            return []
        school_id, role = key
        return [
            LinkSample(
                bucket.start,
                school_id,
                role,
                direction,
                avg_mbps=bucket.bits[i] / bucket.seconds / 1e6,
                max_mbps=bucket.peak_bps[i] / 1e6,
                bytes_moved=round(bucket.bits[i] / 8),
                samples=bucket.samples,
                allocation_mbps=bucket.allocation_mbps,
                saturated_seconds=bucket.saturated[i],
            )
            for i, direction in enumerate((Direction.DOWNLOAD, Direction.UPLOAD))
        ]
