"""The SLA dashboard's SQL, rendered as Grafana renders it, runs on the real schema and finds the right rows."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from telemetryd.history import migrate

pytestmark = pytest.mark.integration

SLA = Path(__file__).resolve().parents[2] / "grafana" / "dashboards" / "sla.json"

# Test values: February 2026 in the city's local time (UTC+05:00) is 2026-01-31T19:00Z .. 2026-02-28T19:00Z.
MONTH = "2026-02"
SELECTED = {"month": MONTH, "district": ["Al-Farabi"], "school": ["s1", "s2"]}
TIME_FROM = datetime(2026, 2, 1, tzinfo=UTC)
TIME_TO = datetime(2026, 3, 1, tzinfo=UTC)

VARIABLE = re.compile(r"\$\{(\w+):sqlstring\}")
MACRO = re.compile(r"\$__(\w+)\(([^()]*)\)")

Value = str | Sequence[str]


def sqlstring(value: Value) -> str:
    """Grafana's `sqlstring` format: each value in single quotes, quotes doubled, comma-separated."""
    values = [value] if isinstance(value, str) else list(value)
    return ",".join("'" + v.replace("'", "''") + "'" for v in values)


def _grafana_time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def render(sql: str, variables: Mapping[str, Value], *, time_from: datetime, time_to: datetime) -> str:
    """`sql` as Grafana's PostgreSQL data source sends it: `${name:sqlstring}` variables and time macros replaced.

    A multi-value variable set to "All" (no custom all value) is the list of all its options, as in Grafana.
    """

    def macro(match: re.Match[str]) -> str:
        name, argument = match[1], match[2].strip()
        if name == "timeFilter":
            return f"{argument} BETWEEN '{_grafana_time(time_from)}' AND '{_grafana_time(time_to)}'"
        if name == "timeFrom" and not argument:
            return f"'{_grafana_time(time_from)}'"
        if name == "timeTo" and not argument:
            return f"'{_grafana_time(time_to)}'"
        raise AssertionError(f"$__{name}({argument}) is not rendered here: teach render() Grafana's expansion")

    def variable(match: re.Match[str]) -> str:
        assert match[1] in variables, f"no test value for ${{{match[1]}}}"
        return sqlstring(variables[match[1]])

    out = VARIABLE.sub(variable, MACRO.sub(macro, sql))
    assert "$" not in out, f"unrendered template syntax (use ${{name:sqlstring}}): {out}"
    return out


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SLA.read_text())
    return data


def _queries() -> list[tuple[str, str]]:
    """(id, SQL) of every variable query and every panel target of sla.json."""
    dashboard = _dashboard()
    found = [(f"variable:{var['name']}", var["query"]) for var in dashboard["templating"]["list"]]
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            found.append((f"{panel['id']}:{panel['title']}:{target['refId']}", target["rawSql"]))
    return found


QUERIES = _queries()


def _panel_sql(title: str, ref_id: str = "A") -> str:
    [panel] = [p for p in _dashboard()["panels"] if p["title"] == title]
    [target] = [t for t in panel["targets"] if t["refId"] == ref_id]
    sql: str = target["rawSql"]
    return sql


def _variable_sql(name: str) -> str:
    [var] = [v for v in _dashboard()["templating"]["list"] if v["name"] == name]
    sql: str = var["query"]
    return sql


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# Device-level state changes (probe NULL), as the writer stores them.
STATE_CHANGES = [
    # s1's router: down 22:00 local on 31 January until 06:30 local on 1 February: 6.5 h of it in February.
    ("2026-01-31T16:00:00Z", "s1", "s1-router", "router", None, "unknown", "up"),
    ("2026-01-31T17:00:00Z", "s1", "s1-router", "router", "icmp", "up", "down"),  # a probe's change: not an outage
    ("2026-01-31T17:00:00Z", "s1", "s1-router", "router", None, "up", "down"),
    ("2026-02-01T01:30:00Z", "s1", "s1-router", "router", None, "down", "up"),
    # ... and down again from 23:00 local on 28 February into March: 1 h of it in February.
    ("2026-02-28T18:00:00Z", "s1", "s1-router", "router", None, "up", "down"),
    ("2026-02-28T20:00:00Z", "s1", "s1-router", "router", None, "down", "up"),
    ("2026-02-10T10:00:00Z", "s2", "s2-router", "router", None, "up", "down"),
    ("2026-02-10T10:20:00Z", "s2", "s2-router", "router", None, "down", "up"),
    ("2026-03-05T10:00:00Z", "s3", "s3-router", "router", None, "up", "down"),  # March
    ("2026-03-05T11:00:00Z", "s3", "s3-router", "router", None, "down", "up"),
    ("2026-02-05T08:00:00Z", "s1", "s1-alarm", "alarm_panel", None, "up", "down"),
    ("2026-02-05T08:02:00Z", "s1", "s1-alarm", "alarm_panel", None, "down", "up"),
    ("2026-02-27T10:00:00Z", "s2", "s2-alarm", "alarm_panel", None, "up", "down"),  # still down
    ("2026-02-12T09:00:00Z", "s1", "s1-cam-01", "camera", None, "up", "down"),  # a camera: in neither table
]

SLA_ROWS = [
    # month, school, district, link availability, monitored s, down s, outages, camera, nvr, alarm panel
    (date(2026, 2, 1), "s1", "Al-Farabi", 0.985, 2_000_000.0, 30_000.0, 2, 0.995, 1.0, 0.9999),
    (date(2026, 2, 1), "s2", "Al-Farabi", 0.9995, 1_000_000.0, 500.0, 1, 1.0, None, 0.95),
    (date(2026, 2, 1), "s3", "Abay", 0.98, 2_000_000.0, 40_000.0, 3, 0.97, 0.99, 1.0),
    (date(2026, 1, 1), "s1", "Al-Farabi", 1.0, 2_678_400.0, 0.0, 0, 1.0, 1.0, 1.0),
]


async def _insert_fixture(conn: asyncpg.Connection) -> None:
    await conn.execute("SELECT telemetryd_ensure_partitions('2026-01-01T00:00:00Z', '2026-03-31T00:00:00Z')")
    await conn.executemany(
        "INSERT INTO schools (id, name, district, contract_mbps) VALUES ($1, $2, $3, 150)",
        [("s1", "School No. 1", "Al-Farabi"), ("s2", "", "Al-Farabi"), ("s3", "School No. 3", "Abay")],
    )
    await conn.executemany(
        "INSERT INTO devices (id, school, kind) VALUES ($1, $2, $3)",
        sorted({(device, school, kind) for _, school, device, kind, *_ in STATE_CHANGES}),
    )
    await conn.executemany(
        "INSERT INTO state_changes (time, school, device, kind, probe, old, new, reason, key)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        [
            (_at(at), school, device, kind, probe, old, new, "timeout" if new == "down" else "", uuid.uuid4())
            for at, school, device, kind, probe, old, new in STATE_CHANGES
        ],
    )
    await conn.executemany(
        "INSERT INTO speedtests (time, school, direction, mbps, bytes, duration, streams, ok, reason,"
        " contract_mbps, floor_ratio, key) VALUES ($1, $2, $3, $4, $5, 10, 4, $6, $7, 150, 0.8, $8)",
        [
            (_at("2026-02-10T03:00:00Z"), "s1", "download", 142.0, 177_500_000, True, "", uuid.uuid4()),
            (_at("2026-02-10T03:00:20Z"), "s1", "upload", 138.5, 173_125_000, True, "", uuid.uuid4()),
            (_at("2026-02-10T03:05:00Z"), "s2", "download", 19.7, 24_625_000, True, "", uuid.uuid4()),
            (_at("2026-02-11T03:05:00Z"), "s2", "download", 0.0, 0, False, "timeout", uuid.uuid4()),
            (_at("2026-01-10T03:00:00Z"), "s1", "download", 141.0, 176_250_000, True, "", uuid.uuid4()),
        ],
    )
    await conn.executemany(
        "INSERT INTO monitoring_gaps (started_at, ended_at, shard, reason, key) VALUES ($1, $2, '0/1', $3, $4)",
        [
            (_at("2026-01-31T18:50:00Z"), _at("2026-01-31T19:05:00Z"), "restart", uuid.uuid4()),
            (_at("2026-02-15T00:00:00Z"), _at("2026-02-15T00:10:00Z"), "crash", uuid.uuid4()),
            (_at("2026-03-15T00:00:00Z"), _at("2026-03-15T00:10:00Z"), "crash", uuid.uuid4()),
        ],
    )
    await conn.executemany(
        "INSERT INTO sla_monthly (month, school, district, contract_mbps, link_availability, link_monitored_seconds,"
        " link_down_seconds, outages, camera_availability, nvr_availability, alarm_panel_availability,"
        " download_compliance, upload_compliance, download_min_mbps, download_median_mbps, upload_min_mbps,"
        " upload_median_mbps, speedtests)"
        " VALUES ($1, $2, $3, 150, $4, $5, $6, $7, $8, $9, $10, 0.95, 1.0, 110.0, 141.0, 125.0, 138.0, 120)",
        SLA_ROWS,
    )


@pytest.fixture
async def sla_dsn(pg_dsn: str) -> str:
    """A migrated database holding the fixture: three schools, their outages, speed tests, gaps and SLA rows."""
    await migrate(pg_dsn)
    conn = await asyncpg.connect(pg_dsn)
    try:
        await _insert_fixture(conn)
    finally:
        await conn.close()
    return pg_dsn


async def _fetch(dsn: str, sql: str, *, timezone: str = "UTC", **variables: Value) -> list[asyncpg.Record]:
    """Render `sql` with SELECTED (overridden by `variables`) and run it in a session of `timezone`."""
    conn = await asyncpg.connect(dsn, server_settings={"TimeZone": timezone})
    try:
        rendered = render(sql, {**SELECTED, **variables}, time_from=TIME_FROM, time_to=TIME_TO)
        return list(await conn.fetch(rendered))
    finally:
        await conn.close()


# --- the renderer ---------------------------------------------------------------------------------


def test_render_matches_grafana_sqlstring_and_time_filter() -> None:
    """Multi values become a quoted IN-list with quotes doubled; $__timeFilter becomes BETWEEN in UTC."""
    sql = "SELECT 1 FROM t WHERE $__timeFilter(t.time) AND s IN (${school:sqlstring}) AND m = ${month:sqlstring}"
    assert render(sql, {"school": ["s1", "O'Neil"], "month": "2026-02"}, time_from=TIME_FROM, time_to=TIME_TO) == (
        "SELECT 1 FROM t WHERE t.time BETWEEN '2026-02-01T00:00:00Z' AND '2026-03-01T00:00:00Z'"
        " AND s IN ('s1','O''Neil') AND m = '2026-02'"
    )


@pytest.mark.parametrize("sql", ["WHERE s = '$school'", "WHERE s IN ($school)", "WHERE $__unixEpochFilter(t)"])
def test_render_refuses_other_forms(sql: str) -> None:
    """Only the syntax the dashboard is written in is rendered; anything else fails loudly."""
    with pytest.raises(AssertionError):
        render(sql, {"school": ["s1"]}, time_from=TIME_FROM, time_to=TIME_TO)


# --- every query of the dashboard ------------------------------------------------------------------


def test_queries_found() -> None:
    """Sanity: three variables and every panel's targets were collected."""
    assert [key for key, _ in QUERIES[:3]] == ["variable:month", "variable:district", "variable:school"]
    assert len(QUERIES) >= 14


@pytest.mark.parametrize(("key", "sql"), QUERIES, ids=[key for key, _ in QUERIES])
async def test_query_returns_rows(sla_dsn: str, key: str, sql: str) -> None:
    """Rendered with the test values, the query runs on the migrated schema and returns at least one row."""
    rows = await _fetch(sla_dsn, sql)
    assert rows, f"{key}: no rows"


async def test_month_variable_lists_saved_months_newest_first(sla_dsn: str) -> None:
    """`month` offers every month of sla_monthly as YYYY-MM, newest first (Grafana's default pick)."""
    rows = await _fetch(sla_dsn, _variable_sql("month"))
    assert [r[0] for r in rows] == ["2026-02", "2026-01"]


async def test_school_variable_follows_district(sla_dsn: str) -> None:
    """`school` lists the schools of the selected districts, named where a name is known."""
    rows = await _fetch(sla_dsn, _variable_sql("school"))
    assert [(r["__value"], r["__text"]) for r in rows] == [("s1", "School No. 1 (s1)"), ("s2", "s2")]


# --- what the panels show --------------------------------------------------------------------------


@pytest.mark.parametrize("timezone", ["UTC", "America/Los_Angeles", "Asia/Almaty"])
async def test_router_outages_are_clipped_to_the_local_month(sla_dsn: str, timezone: str) -> None:
    """Router outages overlapping February (UTC+05:00) are cut at its edges, whatever the session's time zone."""
    rows = await _fetch(sla_dsn, _panel_sql("Link outages (routers)"), timezone=timezone)
    assert [(r["school"], r["device"], r["start"], r["end"], float(r["duration"]), r["ongoing"]) for r in rows] == [
        # 22:00 local on 31 January .. 06:30 local on 1 February: from midnight local, 6.5 h.
        ("s1", "s1-router", _at("2026-01-31T19:00:00Z"), _at("2026-02-01T01:30:00Z"), 6.5 * 3600, False),
        ("s2", "s2-router", _at("2026-02-10T10:00:00Z"), _at("2026-02-10T10:20:00Z"), 20 * 60, False),
        # 23:00 local on 28 February .. 01:00 local on 1 March: until midnight local, 1 h.
        ("s1", "s1-router", _at("2026-02-28T18:00:00Z"), _at("2026-02-28T19:00:00Z"), 3600, False),
    ]


async def test_outages_follow_the_school_selection(sla_dsn: str) -> None:
    """Only the selected schools' outages are listed."""
    rows = await _fetch(sla_dsn, _panel_sql("Link outages (routers)"), school=["s2"])
    assert [r["device"] for r in rows] == ["s2-router"]


async def test_alarm_panel_outages_include_one_still_going_on(sla_dsn: str) -> None:
    """Alarm-panel outages: a finished one, and one never ended that runs to the end of the month."""
    rows = await _fetch(sla_dsn, _panel_sql("Alarm-panel outages"))
    assert [(r["device"], float(r["duration"]), r["ongoing"]) for r in rows] == [
        ("s1-alarm", 120, False),
        ("s2-alarm", 33 * 3600, True),  # 2026-02-27T10:00Z .. 2026-02-28T19:00Z
    ]


async def test_summary_weights_availability_by_monitored_time(sla_dsn: str) -> None:
    """Link availability of s1 (98.5 %, 2e6 s) and s2 (99.95 %, 1e6 s) is 98.9833 %; one school below 99 %."""
    [availability] = await _fetch(sla_dsn, _panel_sql("Link availability, weighted"))
    assert availability[0] == pytest.approx(100 * (0.985 * 2e6 + 0.9995 * 1e6) / 3e6)
    [[below]] = await _fetch(sla_dsn, _panel_sql("Schools below 99 %"))
    assert below == 1
    [[outages]] = await _fetch(sla_dsn, _panel_sql("Link outages"))
    assert outages == 3


async def test_all_expands_to_every_option_like_grafana(sla_dsn: str) -> None:
    """District and school set to All: the options of each variable in turn, so every school counts."""
    districts = [r[0] for r in await _fetch(sla_dsn, _variable_sql("district"))]
    assert districts == ["Abay", "Al-Farabi"]
    schools = [r["__value"] for r in await _fetch(sla_dsn, _variable_sql("school"), district=districts)]
    assert schools == ["s1", "s2", "s3"]
    [[below]] = await _fetch(sla_dsn, _panel_sql("Schools below 99 %"), district=districts, school=schools)
    assert below == 2
    rows = await _fetch(sla_dsn, _panel_sql("Link availability per school"), district=districts, school=schools)
    assert [(r["school"], r["name"]) for r in rows] == [("s3", "School No. 3"), ("s1", "School No. 1"), ("s2", "s2")]


async def test_speed_tests_and_their_floor(sla_dsn: str) -> None:
    """Successful tests in the time range, one series per school and direction; the floor is 150 × 0.8."""
    rows = await _fetch(sla_dsn, _panel_sql("Speed tests", "A"))
    assert [(r["metric"], r["value"]) for r in rows] == [
        ("s1 download", 142.0),
        ("s1 upload", 138.5),
        ("s2 download", 19.7),
    ]
    floors = await _fetch(sla_dsn, _panel_sql("Speed tests", "B"))
    assert {(r["metric"], r["value"]) for r in floors} == {
        ("s1 download floor", 120.0),
        ("s1 upload floor", 120.0),
        ("s2 download floor", 120.0),
    }


async def test_monitoring_gaps_are_clipped_to_the_local_month(sla_dsn: str) -> None:
    """A gap across the month's local start counts from midnight local; one in March is not listed."""
    rows = await _fetch(sla_dsn, _panel_sql("Monitoring gaps"))
    assert [(r["reason"], float(r["duration"])) for r in rows] == [("restart", 300), ("crash", 600)]
