"""Idempotency keys and row conversion: stable, field-sensitive, COPY-ready."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from telemetryd.history.records import TABLES, LinkSample, SpeedTestRecord, to_copy_record, to_row
from telemetryd.model import DeviceKind, Direction, Health, SpeedResult, StateChange

CHANGE = StateChange(1_700_000_000.5, "s1", "cam1", DeviceKind.CAMERA, "icmp", Health.UP, Health.DOWN, "timeout")


def test_same_event_same_key_and_any_field_changes_it() -> None:
    """Two equal events get one key; a change in any field gives another."""
    assert to_row(CHANGE) == to_row(StateChange(*[getattr(CHANGE, f) for f in CHANGE.__slots__]))
    other = StateChange(CHANGE.at, "s1", "cam1", DeviceKind.CAMERA, "icmp", Health.UP, Health.DOWN, "refused")
    assert to_row(CHANGE)["v"][-1] != to_row(other)["v"][-1]


def test_key_is_pinned() -> None:
    """The key of a known event never changes between releases (a change would duplicate replayed rows)."""
    assert to_row(CHANGE)["v"][-1] == "cb6eeb20-5fa4-c293-f180-c8a8b23c8191"


def test_link_sample_key_is_the_bucket_identity() -> None:
    """A re-emitted 5-minute bucket with other numbers keeps its key: the first write wins."""
    a = LinkSample(1_700_000_100.0, "s1", "video", Direction.DOWNLOAD, 10.0, 20.0, 100, 30)
    b = LinkSample(1_700_000_100.0, "s1", "video", Direction.DOWNLOAD, 11.0, 21.0, 101, 30)
    assert to_row(a)["v"][-1] == to_row(b)["v"][-1]


def test_copy_record_converts_time_and_key() -> None:
    """Times become UTC datetimes and keys UUIDs, in the table's column order."""
    speed = SpeedTestRecord(1_700_000_000.0, "s1", SpeedResult(True, Direction.UPLOAD, 95.5, 10_000, 4.0, 4))
    row = to_row(speed)
    record = to_copy_record(TABLES["speedtests"], row["v"])
    assert record[0] == datetime.fromtimestamp(1_700_000_000.0, UTC)
    assert record[1:3] == ("s1", "upload")
    assert isinstance(record[-1], uuid.UUID)
