"""The fixture month of the SLA report tests: February 2026 in Shymkent (UTC+5), three schools.

Written once as history events, so the pure test (test_report.py) and the PostgreSQL
test (test_report_pg.py) compute from exactly the same rows. Every expected figure is
worked out by hand in test_report.py.

shy-001 (router r1, cameras cam1 cam2, NVR nvr1, alarm panel ap1; contract 150 Mbps):
  Dec 15 10:00  cam1 up (its only change before the gap: state from the previous year)
  Jan 20 10:00  r1, cam2, nvr1, ap1 up
  Jan 31 22:00  r1 down  ── outage crossing into February
  Feb  1 02:00  r1 up
  Feb 10 08:00  cam2 down; 14:00 cam2 up (6 h)
  Feb 12 22:00 – Feb 13 02:00  maintenance window (settings) for shy-001
  Feb 13 01:00  r1 down; 03:00 r1 up (half inside maintenance)
  Feb 15 10:00  cam1 icmp probe down (probe-level: not a device change, ignored)
  Feb 20 09:00  r1 down
  Feb 20 10:00 – 12:00  monitoring gap, shard 0/1 (every school)
  Feb 20 12:30  r1, cam1, cam2, nvr1 up (unknown since the gap); 13:00 ap1 up
  Feb 25 00:00  nvr1 down; 00:30 nvr1 up
  Feb 28 23:00  r1 down  ── outage into March
  Mar  1 03:00  r1 up
shy-002 (no router; camera cam21, alarm panel ap21; not in the schools/devices tables):
  Feb  5 00:00  cam21, ap21 up
  Feb 20 12:30  cam21 up; Feb 21 00:00 ap21 up (after the gap)
  Feb 27 09:00  cam21 down; 10:00 ap21 down (still down: ongoing)
shy-003: only in the inventory, no history; a shard 1/3 gap Feb 15 10:00-11:00 holds it alone.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from telemetryd.history.records import HistoryEvent, LinkSample, MonitoringGap, SpeedTestRecord
from telemetryd.model import DeviceKind, Direction, Health, SpeedResult, StateChange

OFFSET_HOURS = 5.0
SHYMKENT = timezone(timedelta(hours=OFFSET_HOURS))
MONTH = "2026-02"


def local(month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    """Unix time of a Shymkent wall-clock time around February 2026 (month 12 = December 2025)."""
    year = 2025 if month == 12 else 2026
    return datetime(year, month, day, hour, minute, tzinfo=SHYMKENT).timestamp()


PERIOD_START = local(2, 1)
PERIOD_END = local(3, 1)
NOW = local(3, 20, 9)
"""When the pure test "runs" the report: the month is over."""

CONTRACT = 150.0
FLOOR_RATIO = 0.9
SETTINGS_RATIO = 0.95
"""settings.speedtest.below_contract_ratio: used only for rows without their own floor."""

SCHOOLS_TABLE = [("shy-001", "School No. 1", "Al-Farabi", CONTRACT)]
"""(id, name, district, contract_mbps) rows of the schools table; shy-002 and shy-003 are missing."""
DEVICES_TABLE = [
    ("r1", "shy-001", "router"),
    ("cam1", "shy-001", "camera"),
    ("cam2", "shy-001", "camera"),
    ("nvr1", "shy-001", "nvr"),
    ("ap1", "shy-001", "alarm_panel"),
]
"""(id, school, kind) rows of the devices table; shy-002's devices are only in state_changes."""

INVENTORY: list[dict[str, Any]] = [
    {
        "id": "shy-001",
        "name": "Inventory name of school 1",
        "district": "Inventory district",
        "devices": [
            {"id": "r1", "kind": "router", "host": "10.1.0.1"},
            {"id": "cam1", "kind": "camera", "host": "10.1.0.11"},
            {"id": "cam2", "kind": "camera", "host": "10.1.0.12"},
            {"id": "nvr1", "kind": "nvr", "host": "10.1.0.20"},
            {"id": "ap1", "kind": "alarm_panel", "host": "10.1.0.30"},
        ],
    },
    {
        "id": "shy-002",
        "name": "School No. 2 <Abay>",
        "district": "Abay",
        "contract": {"total_mbps": 100, "segments": {"alarm": 20, "video": 30, "education": 50}},
        "devices": [
            {"id": "cam21", "kind": "camera", "host": "10.2.0.11"},
            {"id": "ap21", "kind": "alarm_panel", "host": "10.2.0.30"},
        ],
    },
    {
        "id": "shy-003",
        "name": "School No. 3",
        "district": "Karatau",
        "devices": [{"id": "r3", "kind": "router", "host": "10.3.0.1"}],
    },
]
"""Inventory YAML `schools:` (the config the CLI test writes)."""

MAINTENANCE: list[dict[str, Any]] = [
    {
        "start": "2026-02-12T22:00:00+05:00",
        "end": "2026-02-13T02:00:00+05:00",
        "schools": ["shy-001"],
        "reason": "router firmware upgrade",
    },
    # January, every school: outside the period, must not show up.
    {"start": "2026-01-10T00:00:00+05:00", "end": "2026-01-11T00:00:00+05:00", "reason": "city-wide works"},
]
"""settings history.maintenance."""

_KINDS = {device: DeviceKind(kind) for device, _, kind in DEVICES_TABLE} | {
    "cam21": DeviceKind.CAMERA,
    "ap21": DeviceKind.ALARM_PANEL,
}
_SCHOOL = {device: school for device, school, _ in DEVICES_TABLE} | {"cam21": "shy-002", "ap21": "shy-002"}


def _change(at: float, device: str, old: str, new: str, probe: str | None = None) -> StateChange:
    return StateChange(at, _SCHOOL[device], device, _KINDS[device], probe, Health(old), Health(new), "fixture")


def _changes() -> list[StateChange]:
    events = [_change(local(12, 15, 10), "cam1", "unknown", "up")]
    events += [_change(local(1, 20, 10), d, "unknown", "up") for d in ("r1", "cam2", "nvr1", "ap1")]
    events += [
        _change(local(1, 31, 22), "r1", "up", "down"),
        _change(local(2, 1, 2), "r1", "down", "up"),
        _change(local(2, 5), "cam21", "unknown", "up"),
        _change(local(2, 5), "ap21", "unknown", "up"),
        _change(local(2, 10, 8), "cam2", "up", "down"),
        _change(local(2, 10, 14), "cam2", "down", "up"),
        _change(local(2, 13, 1), "r1", "up", "down"),
        _change(local(2, 13, 3), "r1", "down", "up"),
        _change(local(2, 15, 10), "cam1", "up", "down", probe="icmp"),
        _change(local(2, 20, 9), "r1", "up", "down"),
    ]
    events += [_change(local(2, 20, 12, 30), d, "unknown", "up") for d in ("r1", "cam1", "cam2", "nvr1", "cam21")]
    events += [
        _change(local(2, 20, 13), "ap1", "unknown", "up"),
        _change(local(2, 21), "ap21", "unknown", "up"),
        _change(local(2, 25, 0), "nvr1", "up", "down"),
        _change(local(2, 25, 0, 30), "nvr1", "down", "up"),
        _change(local(2, 27, 9), "cam21", "up", "down"),
        _change(local(2, 27, 10), "ap21", "up", "down"),
        _change(local(2, 28, 23), "r1", "up", "down"),
        _change(local(3, 1, 3), "r1", "down", "up"),
    ]
    return events


def _test(
    at: float,
    download: float | None,
    upload: float | None,
    *,
    confirmation: bool = False,
    judged: bool = True,
) -> list[SpeedTestRecord]:
    """Both directions of one test at shy-001; None Mbps = the direction failed (timeout)."""
    records = []
    for direction, mbps in ((Direction.DOWNLOAD, download), (Direction.UPLOAD, upload)):
        ok = mbps is not None
        result = SpeedResult(
            ok, direction, mbps or 0.0, 50_000_000 if ok else 0, 8.0, 4, reason="" if ok else "timeout"
        )
        records.append(
            SpeedTestRecord(
                at,
                "shy-001",
                result,
                contract_mbps=CONTRACT if judged else None,
                floor_ratio=FLOOR_RATIO if judged else None,
                confirmation=confirmation,
            )
        )
    return records


def _speedtests() -> list[SpeedTestRecord]:
    return [
        *_test(local(1, 31, 20), 10, 10),  # January: not this period
        *_test(local(2, 3, 10), 140, 138),
        *_test(local(2, 5, 10), 60, 140),
        *_test(local(2, 5, 10, 2), 142, 141, confirmation=True),
        *_test(local(2, 7, 10), 50, 45),
        *_test(local(2, 7, 10, 2), 55, 140, confirmation=True),
        *_test(local(2, 9, 10), None, None),
        *_test(local(2, 11, 10), 150, 120),
        *_test(local(2, 12, 10), 146, 136),
        *_test(local(2, 14, 10), 140, 145, judged=False),  # a row without contract/floor (pre-0002)
        *_test(local(2, 16, 10), 147, 146),
        *_test(local(2, 28, 22, 30), 60, 139),
        *_test(local(2, 28, 23, 30), None, None, confirmation=True),  # the re-test failed: link down
        *_test(local(3, 1, 10), 20, 20),  # March: not this period
    ]


def _sample(at: float, segment: str, download: float, upload: float) -> list[LinkSample]:
    allocation = {"wan": 150.0, "video": 30.0, "education": 100.0}[segment]
    return [
        LinkSample(at, "shy-001", segment, direction, 10.0, 20.0, 1000, 5, allocation, seconds)
        for direction, seconds in ((Direction.DOWNLOAD, download), (Direction.UPLOAD, upload))
    ]


def _link_samples() -> list[LinkSample]:
    return [
        *_sample(local(2, 4, 12), "video", 120, 30),
        *_sample(local(2, 4, 12, 5), "video", 0, 300),
        *_sample(local(2, 4, 12), "education", 200, 250),
        *_sample(local(2, 4, 12), "wan", 100, 50),
        *_sample(local(1, 31, 23, 55), "education", 300, 300),  # January
        *_sample(local(3, 1), "video", 300, 0),  # March
    ]


GAPS = [
    MonitoringGap(local(2, 20, 10), local(2, 20, 12), "0/1", "daemon not running"),
    MonitoringGap(local(2, 15, 10), local(2, 15, 11), "1/3", "shard 1 host rebooted"),
]


def events() -> list[HistoryEvent]:
    """Every history event of the fixture, in no particular order."""
    return [*_changes(), *_speedtests(), *_link_samples(), *GAPS]
