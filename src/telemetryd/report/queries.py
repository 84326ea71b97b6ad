"""What the SLA report reads from PostgreSQL, the hash-chain check, and `--save` into sla_monthly.

Rows read for one month (`report` says what they mean):

* device-level state changes from `Period.context_start` to `Period.horizon`, plus each
  device's last change before that (one index probe per device), so outages that began
  or ended outside the month get their real start and end;
* monitoring gaps reaching past the earliest change read;
* the month's speed tests plus `CONFIRMATION_LOOKAHEAD_SECONDS` after it (the
  confirmation of a round at the very end of the month);
* saturation per (school, segment), summed in SQL with the busier direction per bucket:
  a city writes ~20 M link samples a month and only the totals need to travel;
* the schools and devices rows.

Verification covers the chain links holding the month's rows of all five history tables
(state changes, speed tests, link samples, gaps and alarm events; `time`, or `started_at`
for gaps, inside the period): every link from the smallest to the largest such
`chain_seq` is re-digested by `telemetryd_chain_verify`. Link numbers
missing from `history_chain` and month rows outside the chain (`chain_seq IS NULL`, e.g.
written before migration 0002) are problems too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

import asyncpg

from telemetryd.history.migrate import pending
from telemetryd.report.figures import (
    CONFIRMATION_LOOKAHEAD_SECONDS,
    ChainStatus,
    ChangeRow,
    DeviceRow,
    GapRow,
    Period,
    Report,
    SchoolRow,
    SegmentSaturation,
    SpeedTestRow,
)


class SchemaOutdated(Exception):
    """The history database lacks migrations; the message says what to run."""


@dataclass(frozen=True, slots=True)
class MonthRows:
    """The history rows one month's report is computed from."""

    schools: list[SchoolRow]
    """Schools table rows not removed before the period."""
    devices: list[DeviceRow]
    """Devices table rows not removed before the period, plus devices only seen in state changes."""
    changes: list[ChangeRow]
    gaps: list[GapRow]
    speedtests: list[SpeedTestRow]
    saturation: list[SegmentSaturation]


def _at(moment: datetime) -> float:
    return moment.timestamp()


def _moment(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)


async def require_schema(conn: asyncpg.Connection) -> None:
    """Raise SchemaOutdated when migrations are pending (the report needs 0002's columns)."""
    missing = await pending(conn)
    if missing:
        raise SchemaOutdated(f"the history database lacks {', '.join(missing)}: run `telemetryd db migrate`")


_SCHOOL_FILTER = "($3::text[] IS NULL OR school = ANY($3::text[]))"

_CHANGES = f"""
SELECT time, school, device, kind, new FROM state_changes
WHERE probe IS NULL AND time >= $1 AND time < $2 AND {_SCHOOL_FILTER}
ORDER BY time
"""

_LAST_CHANGE_BEFORE = """
SELECT d.device, c.time, c.school, c.kind, c.new
FROM unnest($1::text[]) AS d(device)
CROSS JOIN LATERAL (
    SELECT s.time, s.school, s.kind, s.new FROM state_changes s
    WHERE s.device = d.device AND s.probe IS NULL AND s.time < $2
    ORDER BY s.time DESC LIMIT 1
) c
"""

_SPEEDTESTS = f"""
SELECT time, school, direction, mbps, ok, confirmation, contract_mbps, floor_ratio, reason FROM speedtests
WHERE time >= $1 AND time < $2 AND {_SCHOOL_FILTER}
ORDER BY time, confirmation
"""

_SATURATION = f"""
SELECT school, segment, sum(busier)::double precision AS saturated_seconds, count(*) AS buckets
FROM (
    SELECT school, segment, time, max(saturated_seconds) AS busier FROM link_samples
    WHERE time >= $1 AND time < $2 AND {_SCHOOL_FILTER}
    GROUP BY school, segment, time
) b
GROUP BY school, segment
ORDER BY school, segment
"""


async def fetch_month(conn: asyncpg.Connection, period: Period, school_ids: Sequence[str] | None) -> MonthRows:
    """Every row the report of `period` needs, for `school_ids` (None: every school)."""
    wanted = list(school_ids) if school_ids is not None else None
    context, horizon = _moment(period.context_start), _moment(period.horizon)
    start, end = _moment(period.start), _moment(period.end)

    schools = [
        SchoolRow(r["id"], r["name"], r["district"], r["contract_mbps"])
        for r in await conn.fetch(
            "SELECT id, name, district, contract_mbps FROM schools WHERE (removed_at IS NULL OR removed_at > $1) "
            "AND ($2::text[] IS NULL OR id = ANY($2::text[])) ORDER BY id",
            start,
            wanted,
        )
    ]
    table_devices = {
        r["id"]: DeviceRow(r["id"], r["school"], r["kind"], _at(r["removed_at"]) if r["removed_at"] else None)
        for r in await conn.fetch(
            "SELECT id, school, kind, removed_at FROM devices WHERE ($1::text[] IS NULL OR school = ANY($1::text[]))",
            wanted,
        )
    }
    window = await conn.fetch(_CHANGES, context, horizon, wanted)
    latest = {r["device"]: r for r in window}  # rows come in time order: the latest change wins
    earlier = await conn.fetch(_LAST_CHANGE_BEFORE, sorted({*table_devices, *latest}), context)
    # A device removed before the period is left out; one missing from the devices table is kept.
    devices = [d for d in table_devices.values() if d.removed_at is None or d.removed_at > period.start]
    devices += [
        DeviceRow(device, r["school"], r["kind"]) for device, r in latest.items() if device not in table_devices
    ]
    changes = [ChangeRow(_at(r["time"]), r["device"], r["new"]) for r in [*earlier, *window]]

    earliest = min([period.context_start, *(c.at for c in changes)])
    gaps = [
        GapRow(_at(r["started_at"]), _at(r["ended_at"]), r["shard"], r["reason"])
        for r in await conn.fetch(
            "SELECT started_at, ended_at, shard, reason FROM monitoring_gaps "
            "WHERE ended_at > $1 AND started_at < $2 ORDER BY started_at",
            _moment(earliest),
            horizon,
        )
    ]
    tests_end = _moment(period.end + CONFIRMATION_LOOKAHEAD_SECONDS)
    speedtests = [
        SpeedTestRow(
            _at(r["time"]),
            r["school"],
            r["direction"],
            r["mbps"],
            r["ok"],
            r["confirmation"],
            r["contract_mbps"],
            r["floor_ratio"],
            r["reason"],
        )
        for r in await conn.fetch(_SPEEDTESTS, start, tests_end, wanted)
    ]
    saturation = [
        SegmentSaturation(r["school"], r["segment"], r["saturated_seconds"], r["buckets"])
        for r in await conn.fetch(_SATURATION, start, end, wanted)
    ]
    return MonthRows(schools, sorted(devices, key=lambda d: d.id), changes, gaps, speedtests, saturation)


_CHAINED_TABLES = (
    ("state_changes", "time"),
    ("speedtests", "time"),
    ("link_samples", "time"),
    ("monitoring_gaps", "started_at"),
    ("alarm_events", "time"),
)


async def chain_status(conn: asyncpg.Connection, period: Period) -> ChainStatus:
    """The chain head now, and the verification of every link holding the period's rows."""
    head = await conn.fetchrow("SELECT seq, head, sealed_at FROM history_chain ORDER BY seq DESC LIMIT 1")
    start, end = _moment(period.start), _moment(period.end)
    problems: list[str] = []
    lows: list[int] = []
    highs: list[int] = []
    for table, column in _CHAINED_TABLES:
        row = await conn.fetchrow(
            f"SELECT min(chain_seq) AS lo, max(chain_seq) AS hi, count(*) FILTER (WHERE chain_seq IS NULL) AS unsealed "
            f"FROM {table} WHERE {column} >= $1 AND {column} < $2",
            start,
            end,
        )
        assert row is not None
        if row["lo"] is not None:
            lows.append(row["lo"])
            highs.append(row["hi"])
        if row["unsealed"]:
            problems.append(f"{row['unsealed']} {table} row(s) of the period are outside the chain (chain_seq is NULL)")
    first, last, verified = (min(lows), max(highs), 0) if lows else (None, None, 0)
    if first is not None and last is not None:
        verified = await conn.fetchval("SELECT count(*) FROM history_chain WHERE seq BETWEEN $1 AND $2", first, last)
        missing = await conn.fetch(
            "SELECT s FROM generate_series($1::bigint, $2::bigint) AS s "
            "WHERE NOT EXISTS (SELECT 1 FROM history_chain c WHERE c.seq = s) ORDER BY s",
            first,
            last,
        )
        problems += [f"link {r['s']}: missing from history_chain (rows refer to it)" for r in missing]
        broken = await conn.fetch("SELECT seq, problem FROM telemetryd_chain_verify($1, $2) ORDER BY seq", first, last)
        problems += [f"link {r['seq']}: {r['problem']}" for r in broken]
    return ChainStatus(
        head_seq=head["seq"] if head else None,
        head_hex=bytes(head["head"]).hex() if head else "",
        sealed_at=_at(head["sealed_at"]) if head else None,
        first_seq=first,
        last_seq=last,
        links_verified=int(verified),
        problems=tuple(problems),
    )


_UPSERT = """
INSERT INTO sla_monthly (
    month, school, district, contract_mbps, link_availability, link_monitored_seconds, link_down_seconds,
    outages, download_compliance, upload_compliance, download_min_mbps, download_median_mbps,
    upload_min_mbps, upload_median_mbps, speedtests, camera_availability, nvr_availability,
    alarm_panel_availability, saturated_seconds, maintenance_seconds, gap_seconds, chain_head, generated_at
) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23)
ON CONFLICT (month, school) DO UPDATE SET
    district = EXCLUDED.district,
    contract_mbps = EXCLUDED.contract_mbps,
    link_availability = EXCLUDED.link_availability,
    link_monitored_seconds = EXCLUDED.link_monitored_seconds,
    link_down_seconds = EXCLUDED.link_down_seconds,
    outages = EXCLUDED.outages,
    download_compliance = EXCLUDED.download_compliance,
    upload_compliance = EXCLUDED.upload_compliance,
    download_min_mbps = EXCLUDED.download_min_mbps,
    download_median_mbps = EXCLUDED.download_median_mbps,
    upload_min_mbps = EXCLUDED.upload_min_mbps,
    upload_median_mbps = EXCLUDED.upload_median_mbps,
    speedtests = EXCLUDED.speedtests,
    camera_availability = EXCLUDED.camera_availability,
    nvr_availability = EXCLUDED.nvr_availability,
    alarm_panel_availability = EXCLUDED.alarm_panel_availability,
    saturated_seconds = EXCLUDED.saturated_seconds,
    maintenance_seconds = EXCLUDED.maintenance_seconds,
    gap_seconds = EXCLUDED.gap_seconds,
    chain_head = EXCLUDED.chain_head,
    generated_at = EXCLUDED.generated_at
"""


async def save(conn: asyncpg.Connection, report: Report) -> int:
    """Upsert every school's figures into sla_monthly (month = the first day); returns the rows written.

    `speedtests` is the number of successful measurements (both directions).
    """
    first_day = report.period.first_day
    month = date(first_day.year, first_day.month, 1)
    head = report.chain.head_hex if report.chain else ""
    generated = _moment(report.generated_at)
    rows = [
        (
            month,
            s.school.id,
            s.school.district,
            s.school.contract_mbps,
            s.link.ratio,
            s.link.monitored_seconds,
            s.link.down_seconds,
            len(s.counted_outages),
            s.download.compliance,
            s.upload.compliance,
            s.download.min_mbps,
            s.download.median_mbps,
            s.upload.min_mbps,
            s.upload.median_mbps,
            s.download.tests + s.upload.tests,
            s.kind("camera").availability.ratio,
            s.kind("nvr").availability.ratio,
            s.kind("alarm_panel").availability.ratio,
            s.saturated_seconds,
            s.maintenance_seconds,
            s.gap_seconds,
            head,
            generated,
        )
        for s in report.schools
    ]
    async with conn.transaction():
        await conn.executemany(_UPSERT, rows)
    return len(rows)
