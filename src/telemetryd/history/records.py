"""History events → table rows with idempotency keys. Pure: no I/O, no clocks.

A row travels as a JSON-able dict ``{"t": table, "v": [values in column order]}``
through the queue and the spool; times are Unix seconds (float) and the key is a
UUID string. `to_copy_record` turns the values into what asyncpg's COPY wants.

The key is the first 128 bits of SHA-256 over the table name and the event's fields,
so the same event written twice (a retried batch, a replayed spool) has the same key
and `ON CONFLICT DO NOTHING` keeps one copy.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from telemetryd.alarm.dc09 import AccountKey, EventClass, PanelEvent
from telemetryd.model import Direction, SpeedResult, StateChange

if TYPE_CHECKING:
    from telemetryd.alarm.receiver import Reception


@dataclass(frozen=True, slots=True)
class SpeedTestRecord:
    """One direction of a speed test, with when and where it ran (SpeedResult carries neither)."""

    at: float
    school_id: str
    result: SpeedResult
    contract_mbps: float | None = None
    """The school's contracted total when the test ran (the report judges against this, not today's)."""
    floor_ratio: float | None = None
    """Share of the contract a direction must reach to count as compliant."""
    confirmation: bool = False
    """A re-test after a low result."""


@dataclass(frozen=True, slots=True)
class LinkSample:
    """A 5-minute aggregate of one school segment's traffic in one direction."""

    at: float
    """Start of the bucket, Unix seconds."""
    school_id: str
    segment: str
    direction: Direction
    avg_mbps: float
    max_mbps: float
    bytes_moved: int
    samples: int
    allocation_mbps: float | None = None
    """The segment's contracted share (the total for ``wan``), when it has one."""
    saturated_seconds: float = 0.0
    """Seconds of the bucket this direction ran at or above 95 % of the allocation."""


@dataclass(frozen=True, slots=True)
class MonitoringGap:
    """A stretch of time in which this instance (or `shard`) was not watching."""

    started: float
    ended: float
    shard: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class AlarmEventRecord:
    """One event an alarm panel reported over SIA DC-09, as the receiver ACKed it.

    Its identity (and so its key) is the account, token, sequence, position in the frame,
    the event's fields and `at`; a retransmission carries its first copy's `at`, so it is
    the same row. Nothing secret is in here: the receiver only accepts unencrypted frames.
    """

    at: float
    """When the receiver got the (first copy of the) frame, Unix seconds."""
    account: AccountKey
    token: str
    """The DC-09 message type: ``SIA-DCS`` or ``ADM-CID``."""
    sequence: str
    """The frame's four-digit sequence number, as sent."""
    event: PanelEvent
    index: int = 0
    """Position of the event in its frame (a SIA-DCS frame may carry several)."""
    school_id: str | None = None
    """The panel's school and device when the account is in the inventory, else None."""
    device_id: str | None = None
    panel_time: float | None = None
    """The panel's own timestamp, when the frame had one."""
    transport: str = ""
    peer: str = ""

    @property
    def event_class(self) -> EventClass:
        """Alarm, trouble, restoral, test or other, from the code."""
        return self.event.event_class


def alarm_records(reception: Reception, device: tuple[str, str] | None = None) -> list[AlarmEventRecord]:
    """One record per event of a reception (none for heartbeats and refused frames).

    `device` is the panel's (school id, device id) when its account is in the inventory.
    """
    frame = reception.frame
    if not reception.events or frame is None or reception.key is None:
        return []
    school_id, device_id = device if device is not None else (None, None)
    at = reception.first_received_at.timestamp()
    panel_time = frame.timestamp.timestamp() if frame.timestamp is not None else None
    return [
        AlarmEventRecord(
            at,
            reception.key,
            frame.message_type,
            frame.sequence,
            event,
            index,
            school_id,
            device_id,
            panel_time,
            reception.transport,
            reception.peer,
        )
        for index, event in enumerate(reception.events)
    ]


HistoryEvent = StateChange | SpeedTestRecord | LinkSample | MonitoringGap | AlarmEventRecord
Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Table:
    """Where rows of one kind go: column order, which columns are times, which month-partitioned column."""

    name: str
    columns: tuple[str, ...]
    times: frozenset[str]
    partition_time: str | None
    """The column partitions are ranged on, or None for an unpartitioned table."""
    conflict: str


TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        Table(
            "state_changes",
            ("time", "school", "device", "kind", "probe", "old", "new", "reason", "detail", "key"),
            frozenset({"time"}),
            "time",
            "(key, time)",
        ),
        Table(
            "speedtests",
            (
                "time",
                "school",
                "direction",
                "mbps",
                "bytes",
                "duration",
                "streams",
                "ok",
                "reason",
                "detail",
                "contract_mbps",
                "floor_ratio",
                "confirmation",
                "key",
            ),
            frozenset({"time"}),
            None,
            "(key)",
        ),
        Table(
            "link_samples",
            (
                "time",
                "school",
                "segment",
                "direction",
                "avg_mbps",
                "max_mbps",
                "bytes",
                "samples",
                "allocation_mbps",
                "saturated_seconds",
                "key",
            ),
            frozenset({"time"}),
            "time",
            "(key, time)",
        ),
        Table(
            "monitoring_gaps",
            ("started_at", "ended_at", "shard", "reason", "key"),
            frozenset({"started_at", "ended_at"}),
            None,
            "(key)",
        ),
        Table(
            "alarm_events",
            (
                "time",
                "receiver",
                "prefix",
                "account",
                "token",
                "sequence",
                "event_index",
                "code",
                "zone",
                "partition",
                "event_text",
                "school",
                "device",
                "event_class",
                "panel_time",
                "transport",
                "peer",
                "key",
            ),
            frozenset({"time", "panel_time"}),
            "time",
            "(key, time)",
        ),
    )
}


_CANONICAL = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
"""json.dumps with these options, made once (dumps builds a new encoder per call; keys are made per row)."""


def idempotency_key(table: str, values: list[Any]) -> str:
    """A stable key for an event: the same fields always give the same UUID."""
    canonical = _CANONICAL.encode([table, *values])
    return str(uuid.UUID(bytes=hashlib.sha256(canonical.encode()).digest()[:16]))


def _row(table: str, values: list[Any]) -> Row:
    return {"t": table, "v": [*values, idempotency_key(table, values)]}


def _state_change(c: StateChange) -> Row:
    values = [c.at, c.school_id, c.device_id, str(c.kind), c.probe, str(c.old), str(c.new), c.reason, c.detail]
    return _row("state_changes", values)


def _speedtest(s: SpeedTestRecord) -> Row:
    r = s.result
    values = [s.at, s.school_id, str(r.direction), r.mbps, r.bytes_used, r.duration, r.streams, r.ok]
    return _row("speedtests", [*values, r.reason, r.detail, s.contract_mbps, s.floor_ratio, s.confirmation])


def _link_sample(s: LinkSample) -> Row:
    # Keyed by the bucket's identity only: a re-emitted bucket is the same row, first one wins.
    identity = [s.at, s.school_id, s.segment, str(s.direction)]
    key = idempotency_key("link_samples", identity)
    measured = [s.avg_mbps, s.max_mbps, s.bytes_moved, s.samples, s.allocation_mbps, s.saturated_seconds]
    return {"t": "link_samples", "v": [*identity, *measured, key]}


def _gap(g: MonitoringGap) -> Row:
    return _row("monitoring_gaps", [g.started, g.ended, g.shard, g.reason])


def _alarm_event(a: AlarmEventRecord) -> Row:
    # Keyed by the event's identity only: a retransmission over another transport, from another
    # peer or re-stamped by the panel is the same row, and the first write wins.
    e, k = a.event, a.account
    identity = [a.at, *k, a.token, a.sequence, a.index, e.code, e.zone, e.partition, e.text]
    key = idempotency_key("alarm_events", identity)
    about = [a.school_id, a.device_id, a.event_class.value, a.panel_time, a.transport, a.peer]
    return {"t": "alarm_events", "v": [*identity, *about, key]}


_CONVERTERS: dict[type[Any], Callable[[Any], Row]] = {
    StateChange: _state_change,
    SpeedTestRecord: _speedtest,
    LinkSample: _link_sample,
    MonitoringGap: _gap,
    AlarmEventRecord: _alarm_event,
}


def to_row(event: HistoryEvent) -> Row:
    """The row an event becomes, key included."""
    return _CONVERTERS[type(event)](event)


def to_copy_record(table: Table, values: list[Any]) -> tuple[Any, ...]:
    """Row values as asyncpg's binary COPY wants them: datetimes and UUIDs instead of floats and strings."""
    out: list[Any] = []
    for column, value in zip(table.columns, values, strict=True):
        if column in table.times:
            out.append(None if value is None else datetime.fromtimestamp(value, UTC))
        elif column == "key":
            out.append(uuid.UUID(value))
        else:
            out.append(value)
    return tuple(out)


def month_of(at: float) -> tuple[int, int]:
    """(year, month) in UTC: which partition a time lands in."""
    moment = datetime.fromtimestamp(at, UTC)
    return moment.year, moment.month
