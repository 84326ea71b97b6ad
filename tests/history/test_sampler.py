"""SNMP interval rates become 5-minute link samples: buckets, directions, saturation."""

from __future__ import annotations

import pytest

from telemetryd.history.sampler import LinkSampler
from telemetryd.link.counters import InterfaceRate
from telemetryd.model import Direction

T0 = 1_700_000_100.0  # 1_700_000_100 is a multiple of 300: a bucket start


def _rate(in_mbps: float, out_mbps: float, seconds: float = 60.0) -> InterfaceRate:
    return InterfaceRate(in_mbps * 1e6, out_mbps * 1e6, seconds)


def test_a_bucket_closes_when_a_later_rate_arrives() -> None:
    """A rate in a later bucket closes the open one: WAN ifIn 100 and 50 Mbit/s give download avg 75, max 100."""
    sampler = LinkSampler(300.0)
    assert sampler.add("s1", "wan", _rate(100, 10), 150.0, T0 + 60) == []
    assert sampler.add("s1", "wan", _rate(50, 20), 150.0, T0 + 120) == []
    closed = sampler.add("s1", "wan", _rate(1, 1), 150.0, T0 + 360)
    by_direction = {s.direction: s for s in closed}
    down, up = by_direction[Direction.DOWNLOAD], by_direction[Direction.UPLOAD]
    # WAN: download is ifIn. Two 60 s intervals at 100 and 50 Mbit/s average 75 Mbit/s.
    assert down.at == T0 and down.segment == "wan" and down.samples == 2
    assert down.avg_mbps == pytest.approx(75.0)
    assert down.max_mbps == pytest.approx(100.0)
    assert down.bytes_moved == round((100e6 * 60 + 50e6 * 60) / 8)
    assert up.avg_mbps == pytest.approx(15.0) and up.max_mbps == pytest.approx(20.0)
    assert down.allocation_mbps == 150.0


def test_segment_download_is_towards_the_school_lan() -> None:
    """On a LAN segment interface, download is ifOut (29 Mbit/s) and upload is ifIn (2 Mbit/s)."""
    sampler = LinkSampler(300.0)
    sampler.add("s1", "video", _rate(in_mbps=2, out_mbps=29), 30.0, T0 + 60)
    samples = {s.direction: s for s in sampler.flush()}
    assert samples[Direction.DOWNLOAD].avg_mbps == pytest.approx(29.0)  # ifOut of the LAN-facing interface
    assert samples[Direction.UPLOAD].avg_mbps == pytest.approx(2.0)


def test_saturated_seconds_count_intervals_at_95_percent_of_the_allocation() -> None:
    """Of 30 Mbit/s, intervals at 28.5 and 30 count as saturated seconds (60 + 30); one at 28.4 does not."""
    sampler = LinkSampler(300.0)
    sampler.add("s1", "video", _rate(0, 28.5), 30.0, T0 + 60)  # exactly 95 % of 30: saturated
    sampler.add("s1", "video", _rate(0, 28.4), 30.0, T0 + 120)  # just under
    sampler.add("s1", "video", _rate(0, 30.0, seconds=30.0), 30.0, T0 + 150)
    samples = {s.direction: s for s in sampler.flush()}
    assert samples[Direction.DOWNLOAD].saturated_seconds == pytest.approx(90.0)
    assert samples[Direction.UPLOAD].saturated_seconds == 0.0


def test_no_allocation_means_no_saturation() -> None:
    """A segment with no allocation yields samples with zero saturated seconds and allocation None, however busy."""
    sampler = LinkSampler(300.0)
    sampler.add("s1", "guest", _rate(500, 500), None, T0 + 60)
    assert all(s.saturated_seconds == 0.0 and s.allocation_mbps is None for s in sampler.flush())


def test_a_silent_router_bucket_is_handed_out_after_the_grace() -> None:
    """due() returns a silent bucket only once its end plus the 60 s grace has passed, and flush() not again."""
    sampler = LinkSampler(300.0, grace=60.0)
    sampler.add("s1", "wan", _rate(10, 10), 150.0, T0 + 60)
    assert sampler.due(T0 + 300 + 59) == []
    assert {s.at for s in sampler.due(T0 + 300 + 60)} == {T0}
    assert sampler.flush() == []


def test_forget_closes_removed_schools_only() -> None:
    """forget({'s2'}) returns the open buckets of s1 only, leaving s2's to flush()."""
    sampler = LinkSampler(300.0)
    sampler.add("s1", "wan", _rate(10, 10), 150.0, T0 + 60)
    sampler.add("s2", "wan", _rate(10, 10), 150.0, T0 + 60)
    assert {s.school_id for s in sampler.forget({"s2"})} == {"s1"}
    assert {s.school_id for s in sampler.flush()} == {"s2"}


def test_buckets_are_aligned_to_the_epoch() -> None:
    """bucket_start floors a time to a multiple of 300 s since the epoch."""
    sampler = LinkSampler(300.0)
    assert sampler.bucket_start(T0 + 299.9) == T0
    assert sampler.bucket_start(T0 + 300.0) == T0 + 300
