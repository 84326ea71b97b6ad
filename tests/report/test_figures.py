"""The SLA report's arithmetic on the hand-computed fixture month (tests/report/sla_fixture.py).

February 2026 in local time (UTC+5) has 28 days = 28 × 86,400 = 2,419,200 s. Every
expected figure below is worked out from the fixture's event list, not from the code.
"""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime
from xml.etree import ElementTree

import pytest

from telemetryd.history.records import LinkSample, MonitoringGap, SpeedTestRecord
from telemetryd.model import StateChange
from telemetryd.report.figures import (
    ChainStatus,
    ChangeRow,
    DeviceRow,
    GapRow,
    LinkSampleRow,
    MaintenanceRow,
    Report,
    ReportInput,
    SchoolReport,
    SchoolRow,
    SpeedTestRow,
    build_report,
    device_timeline,
    month_period,
    saturation_from_samples,
    schools_to_report,
)
from telemetryd.report.render import CSV_COLUMNS, render_csv, render_html, render_json
from tests.report import sla_fixture as fx
from tests.report.sla_fixture import local

MONTH_SECONDS = 2_419_200
HOUR = 3_600


def _inputs(now: float = fx.NOW, chain: ChainStatus | None = None) -> ReportInput:
    """The fixture's events as the rows report_db would read (device-level changes only)."""
    period = month_period(fx.MONTH, fx.OFFSET_HOURS, now)
    evs = [e for e in fx.events() if not isinstance(e, StateChange) or e.at < now]
    changes = [ChangeRow(e.at, e.device_id, str(e.new)) for e in evs if isinstance(e, StateChange) and e.probe is None]
    tests = [
        SpeedTestRow(
            e.at,
            e.school_id,
            str(e.result.direction),
            e.result.mbps,
            e.result.ok,
            e.confirmation,
            e.contract_mbps,
            e.floor_ratio,
            e.result.reason,
        )
        for e in evs
        if isinstance(e, SpeedTestRecord)
    ]
    samples = [
        LinkSampleRow(e.at, e.school_id, e.segment, str(e.direction), e.saturated_seconds)
        for e in evs
        if isinstance(e, LinkSample)
    ]
    devices = [DeviceRow(d, s, k) for d, s, k in fx.DEVICES_TABLE]
    devices += [DeviceRow("cam21", "shy-002", "camera"), DeviceRow("ap21", "shy-002", "alarm_panel")]
    inventory = [
        SchoolRow(s["id"], s["name"], s["district"], float(s.get("contract", {}).get("total_mbps", 150)))
        for s in fx.INVENTORY
    ]
    maintenance = [
        MaintenanceRow(
            datetime.fromisoformat(w["start"]).timestamp(),
            datetime.fromisoformat(w["end"]).timestamp(),
            tuple(w.get("schools", [])),
            w["reason"],
        )
        for w in fx.MAINTENANCE
    ]
    return ReportInput(
        period=period,
        schools=schools_to_report([SchoolRow(*row) for row in fx.SCHOOLS_TABLE], inventory, {"shy-002"}),
        devices=devices,
        changes=changes,
        gaps=[GapRow(g.started, g.ended, g.shard, g.reason) for g in evs if isinstance(g, MonitoringGap)],
        maintenance=maintenance,
        speedtests=tests,
        saturation=saturation_from_samples(samples, period),
        below_contract_ratio=fx.SETTINGS_RATIO,
        chain=chain,
    )


@pytest.fixture(scope="module")
def report() -> Report:
    """The fixture month's report, as if generated on March 20."""
    return build_report(_inputs(), generated_at=fx.NOW)


def _school(report: Report, school_id: str) -> SchoolReport:
    return next(s for s in report.schools if s.school.id == school_id)


def test_month_is_local_midnight_to_midnight() -> None:
    """February 2026 at UTC+5 runs from Jan 31 19:00 UTC for 28 days; a running month ends now."""
    period = month_period("2026-02", 5, fx.NOW)
    assert period.start == 1_769_886_000  # 2026-01-31T19:00:00Z
    assert period.end - period.start == MONTH_SECONDS
    assert period.complete
    running = month_period("2026-02", 5, local(2, 10, 12))
    assert running.end == local(2, 10, 12)
    assert not running.complete
    with pytest.raises(ValueError, match="has not begun"):
        month_period("2026-03", 5, local(2, 10, 12))
    with pytest.raises(ValueError, match="expected YYYY-MM"):
        month_period("2026-2", 5, fx.NOW)


def test_current_and_previous_are_local_months() -> None:
    """The timer's `--month current/previous`: 1 March 03:00 local is still 28 February in UTC."""
    first_of_march = datetime.fromisoformat("2026-03-01T03:00:00+05:00").timestamp()
    assert month_period("current", 5, first_of_march).month == "2026-03"
    assert month_period("previous", 5, first_of_march).month == "2026-02"
    new_year = datetime.fromisoformat("2027-01-01T00:30:00+05:00").timestamp()
    assert month_period("previous", 5, new_year).month == "2026-12"


def test_schools_come_from_table_then_inventory(report: Report) -> None:
    """Table names win, the inventory fills in the rest, and an inventory-only school shows as no data."""
    assert [s.school for s in report.schools] == [
        SchoolRow("shy-001", "School No. 1", "Al-Farabi", 150.0),
        SchoolRow("shy-002", "School No. 2 <Abay>", "Abay", 100.0),
        SchoolRow("shy-003", "School No. 3", "Karatau", 150.0),
    ]
    quiet = _school(report, "shy-003")
    assert not quiet.has_data
    assert quiet.link.ratio is None
    assert quiet.download.compliance is None
    assert quiet.kind("camera").availability.ratio is None
    # The 0/1 gap (every school) is 2 h; the shard 1/3 gap holds shy-003 alone
    # (shard_of(·, 3): shy-001 → 2, shy-002 → 0, shy-003 → 1): 1 h more.
    assert quiet.gap_seconds == 3 * HOUR


def test_router_link_availability(report: Report) -> None:
    """shy-001's link follows its router: carried-over outage, maintenance cut out, gap and restart unknown."""
    s = _school(report, "shy-001")
    assert s.link_basis == "router"
    # Down inside February, maintenance (Feb 12 22:00 - Feb 13 02:00) removed:
    #   Feb 1 00:00-02:00 (from Jan 31 22:00)   7,200
    #   Feb 13 01:00-03:00 minus 01:00-02:00     3,600
    #   Feb 20 09:00-10:00 (gap starts)          3,600
    #   Feb 28 23:00-Mar 1 00:00                 3,600   → 18,000
    # Unknown: gap Feb 20 10:00-12:00 + r1 unknown until its 12:30 change = 9,000.
    # Maintenance: 4 h = 14,400 (router known throughout: up 22-01, down 01-02).
    # Monitored = 2,419,200 - 9,000 - 14,400 = 2,395,800; up = 2,395,800 - 18,000 = 2,377,800.
    assert s.link.down_seconds == pytest.approx(18_000)
    assert s.link.monitored_seconds == pytest.approx(2_395_800)
    assert s.link.up_seconds == pytest.approx(2_377_800)
    assert s.link.ratio == pytest.approx(2_377_800 / 2_395_800)
    assert s.maintenance_seconds == pytest.approx(14_400)
    assert s.gap_seconds == pytest.approx(7_200)  # the 1/3 gap is not shy-001's


def test_link_outages_real_start_end_and_counted(report: Report) -> None:
    """Outages carry real times outside the month; maintenance shortens but does not split; a gap ends one."""
    s = _school(report, "shy-001")
    got = [(o.start, o.end, o.duration_seconds, o.counted_seconds) for o in s.outages]
    assert got == [
        # Jan 31 22:00 → Feb 1 02:00: 4 h long, 2 h of it in February.
        (local(1, 31, 22), local(2, 1, 2), 4 * HOUR, pytest.approx(2 * HOUR)),
        # Feb 13 01:00 → 03:00: 2 h, 01:00-02:00 is maintenance → 1 h counted.
        (local(2, 13, 1), local(2, 13, 3), 2 * HOUR, pytest.approx(HOUR)),
        # Feb 20 09:00 → the gap at 10:00 (state unknown from then): 1 h.
        (local(2, 20, 9), local(2, 20, 10), HOUR, pytest.approx(HOUR)),
        # Feb 28 23:00 → Mar 1 03:00 (the March change read past month end): 4 h, 1 h in February.
        (local(2, 28, 23), local(3, 1, 3), 4 * HOUR, pytest.approx(HOUR)),
    ]
    assert len(s.counted_outages) == 4
    assert s.outage_seconds == pytest.approx(18_000)  # = link down seconds, 300 minutes


def test_device_availability_per_kind(report: Report) -> None:
    """Cameras, NVR and alarm panel: up / (up + down) outside gaps and maintenance."""
    s = _school(report, "shy-001")
    # cam1 (up since Dec 15), cam2, nvr1: unknown Feb 20 10:00-12:30 = 9,000; maintenance 14,400
    #   → monitored 2,419,200 - 9,000 - 14,400 = 2,395,800 each.
    # cam2 down Feb 10 08:00-14:00 = 21,600 → up 2,374,200; cam1 never down → up 2,395,800.
    camera = s.kind("camera")
    assert camera.devices == 2
    assert camera.availability.monitored_seconds == pytest.approx(2 * 2_395_800)
    assert camera.availability.down_seconds == pytest.approx(21_600)
    assert camera.availability.ratio == pytest.approx((2_395_800 + 2_374_200) / 4_791_600)
    # nvr1 down Feb 25 00:00-00:30 = 1,800.
    assert s.kind("nvr").availability.ratio == pytest.approx(2_394_000 / 2_395_800)
    # ap1 unknown from the gap (10:00) to its 13:00 change = 10,800 → monitored 2,394,000, never down.
    alarm = s.kind("alarm_panel").availability
    assert alarm.monitored_seconds == pytest.approx(2_394_000)
    assert alarm.ratio == pytest.approx(1.0)
    got = [(o.device_id, o.kind, o.start, o.end, o.counted_seconds) for o in s.device_outages]
    assert got == [
        ("cam2", "camera", local(2, 10, 8), local(2, 10, 14), pytest.approx(21_600)),
        ("nvr1", "nvr", local(2, 25), local(2, 25, 0, 30), pytest.approx(1_800)),
    ]


def test_link_without_router_and_ongoing_outage(report: Report) -> None:
    """shy-002 has no router: its link is up while any device is up; its last outage is still running."""
    s = _school(report, "shy-002")
    assert s.link_basis == "devices"
    # Unknown: Feb 1-5 (no history yet) 4 d = 345,600; gap 10:00-12:00 + until cam21's 12:30 change = 9,000.
    # Down: from Feb 27 10:00 (ap21, the last device up, goes down; cam21 went at 09:00) to the end:
    #   38 h = 136,800. Monitored = 2,419,200 - 345,600 - 9,000 = 2,064,600; up = 1,927,800.
    assert s.link.monitored_seconds == pytest.approx(2_064_600)
    assert s.link.down_seconds == pytest.approx(136_800)
    assert s.link.ratio == pytest.approx(1_927_800 / 2_064_600)
    [outage] = s.outages
    assert (outage.start, outage.end, outage.duration_seconds) == (local(2, 27, 10), None, None)
    assert outage.counted_seconds == pytest.approx(136_800)
    # cam21: up Feb 5 00:00-Feb 20 10:00 = 15 d 10 h = 1,332,000; up Feb 20 12:30-Feb 27 09:00 = 592,200;
    #   down Feb 27 09:00-Mar 1 = 39 h = 140,400 → 1,924,200 / 2,064,600.
    assert s.kind("camera").availability.ratio == pytest.approx(1_924_200 / 2_064_600)
    # ap21: up 1,332,000 + Feb 21 00:00-Feb 27 10:00 (6 d 10 h = 554,400); unknown Feb 20 10:00-Feb 21 (14 h);
    #   down 136,800 → 1,886,400 / 2,023,200.
    assert s.kind("alarm_panel").availability.ratio == pytest.approx(1_886_400 / 2_023_200)
    assert s.kind("nvr").availability.ratio is None
    assert [(o.device_id, o.end, o.counted_seconds) for o in s.device_outages] == [
        ("cam21", None, pytest.approx(140_400)),
        ("ap21", None, pytest.approx(136_800)),
    ]
    assert s.maintenance == ()
    assert s.maintenance_seconds == 0


def test_speed_tests_and_confirmation_rounds(report: Report) -> None:
    """n/min/median over successful tests; a confirmation decides a low round; failed tests only counted."""
    s = _school(report, "shy-001")
    # Floor 0.9 × 150 = 135 from the rows; the Feb 14 row has none → 0.95 (settings) × 150 = 142.5.
    # Download rounds (scheduled, ok): Feb 3 140 ✓ | Feb 5 60, re-test 142 ✓ (forgiven) | Feb 7 50, re-test 55 ✗
    #   | Feb 11 150 ✓ | Feb 12 146 ✓ | Feb 14 140 < 142.5 ✗ | Feb 16 147 ✓ | Feb 28 60, re-test failed ✗
    #   → 5 of 8 = 0.625. Feb 9 failed, Feb 28 23:30 re-test failed: 2 failed.
    # Successful downloads: 140 60 142 50 55 150 146 140 147 60 → n 10, min 50,
    #   sorted 50 55 60 60 140 | 140 142 146 147 150 → median (140 + 140) / 2 = 140.
    d = s.download
    assert (d.tests, d.failed, d.rounds, d.compliant_rounds, d.forgiven_rounds) == (10, 2, 8, 5, 1)
    assert d.compliance == pytest.approx(0.625)
    assert (d.min_mbps, d.median_mbps) == (50, 140)
    # Upload rounds: Feb 3 138 ✓ | Feb 5 140 ✓ | Feb 7 45, re-test 140 ✓ (forgiven) | Feb 11 120 ✗ (next is
    #   scheduled, no re-test) | Feb 12 136 ✓ | Feb 14 145 ≥ 142.5 ✓ | Feb 16 146 ✓ | Feb 28 139 ✓ → 7/8.
    # Successful uploads: 138 140 141 45 140 120 136 145 146 139 → min 45,
    #   sorted 45 120 136 138 139 | 140 140 141 145 146 → median 139.5.
    u = s.upload
    assert (u.tests, u.failed, u.rounds, u.compliant_rounds, u.forgiven_rounds) == (10, 2, 8, 7, 1)
    assert u.compliance == pytest.approx(0.875)
    assert (u.min_mbps, u.median_mbps) == (45, 139.5)
    # January's and March's tests are left out; each kept point carries its floor.
    assert len(s.tests) == 24  # 12 tests × 2 directions
    assert sorted({round(p.floor_mbps or 0, 9) for p in s.tests}) == [135.0, 142.5]


def test_saturation_per_segment(report: Report) -> None:
    """Per bucket the busier direction, summed; wan apart; samples outside local February ignored."""
    s = _school(report, "shy-001")
    # video: max(120, 30) + max(0, 300) = 420 (2 buckets); education max(200, 250) = 250; wan max(100, 50) = 100.
    # Jan 31 23:55 and Mar 1 00:00 local buckets are outside the period.
    assert [(x.segment, x.saturated_seconds, x.buckets) for x in s.saturation] == [
        ("education", 250, 1),
        ("video", 420, 2),
        ("wan", 100, 1),
    ]
    assert s.saturated_seconds == 670


def test_maintenance_and_gaps_listed(report: Report) -> None:
    """Only windows and gaps that touch the period and the school are listed, with their seconds inside."""
    s = _school(report, "shy-001")
    assert [(w.start, w.end, w.seconds_in_period, w.reason) for w in s.maintenance] == [
        (local(2, 12, 22), local(2, 13, 2), 14_400, "router firmware upgrade")
    ]
    assert [(g.start, g.end, g.seconds_in_period, g.shard) for g in s.gaps] == [
        (local(2, 20, 10), local(2, 20, 12), 7_200, "0/1")
    ]


def test_daily_link_availability(report: Report) -> None:
    """Local days: 28 bars; Feb 1 lost 2 h, Feb 13 lost 1 h after 2 h of maintenance, Feb 20 partly unknown."""
    s = _school(report, "shy-001")
    assert len(s.daily) == 28
    assert s.daily[0].start == local(2, 1)
    by_day = {datetime.fromtimestamp(d.start, fx.SHYMKENT).day: d.availability for d in s.daily}
    assert by_day[1].ratio == pytest.approx(79_200 / 86_400)  # down 00:00-02:00
    assert by_day[12].monitored_seconds == pytest.approx(79_200)  # 22:00-24:00 maintenance
    assert by_day[12].ratio == pytest.approx(1.0)
    assert (by_day[13].up_seconds, by_day[13].down_seconds) == (pytest.approx(75_600), pytest.approx(3_600))
    # Feb 20: down 09:00-10:00, unknown 10:00-12:30 → up 86,400 - 3,600 - 9,000 = 73,800.
    assert (by_day[20].up_seconds, by_day[20].down_seconds) == (pytest.approx(73_800), pytest.approx(3_600))
    assert by_day[28].ratio == pytest.approx(82_800 / 86_400)


def test_running_month_ends_now_with_ongoing_outage() -> None:
    """Generated on Feb 1 01:00 local: the month is 1 h long and the carried-over outage is ongoing."""
    now = local(2, 1, 1)
    s = _school(build_report(_inputs(now=now), generated_at=now), "shy-001")
    [outage] = s.outages
    assert (outage.start, outage.end, outage.counted_seconds) == (local(1, 31, 22), None, pytest.approx(HOUR))
    assert s.link.ratio == pytest.approx(0.0)
    # cam1 up for the whole hour, cam2 too: both available.
    assert s.kind("camera").availability.monitored_seconds == pytest.approx(2 * HOUR)


def test_gap_resets_state_until_next_change() -> None:
    """After a gap a device is unknown until its next change, even if a change was recorded inside the gap."""
    spans = device_timeline([(0.0, "up"), (15.0, "down"), (40.0, "up")], [(10.0, 20.0)], origin=0.0, horizon=50.0)
    assert [(s.start, s.end, s.state) for s in spans] == [
        (0.0, 10.0, "up"),
        (10.0, 40.0, "unknown"),
        (40.0, 50.0, "up"),
    ]


def _chain(problems: tuple[str, ...] = ()) -> ChainStatus:
    return ChainStatus(7, "ab" * 32, local(3, 20), 2, 6, 5, problems)


def test_json_states_period_offset_and_figures() -> None:
    """JSON: local ISO times with +05:00, ratios 0-1, null where nothing was measured, the chain."""
    doc = json.loads(render_json(build_report(_inputs(chain=_chain()), generated_at=fx.NOW)))
    assert doc["period"]["start"] == "2026-02-01T00:00:00+05:00"
    assert doc["period"]["end"] == "2026-03-01T00:00:00+05:00"
    assert doc["period"]["utc_offset"] == "+05:00"
    assert doc["chain"]["summary"] == "5 links verified, OK"
    one, two, three = doc["schools"]
    assert one["outages"][0]["start"] == "2026-01-31T22:00:00+05:00"
    assert one["link"]["availability"] == pytest.approx(2_377_800 / 2_395_800)
    assert one["speedtests"]["download"]["compliance"] == pytest.approx(0.625)
    assert two["outages"][0]["end"] is None
    assert two["outages"][0]["ongoing"] is True
    assert three["has_data"] is False
    assert three["link"]["availability"] is None


def test_csv_has_one_row_per_school() -> None:
    """CSV: the documented columns, one row per school, empty where nothing was measured."""
    text = render_csv(build_report(_inputs(chain=_chain()), generated_at=fx.NOW))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [r["school"] for r in rows] == ["shy-001", "shy-002", "shy-003"]
    assert float(rows[0]["upload_compliance"]) == pytest.approx(0.875)
    assert rows[0]["outages"] == "4"
    assert float(rows[0]["outage_seconds"]) == pytest.approx(18_000)
    assert rows[0]["utc_offset_hours"] == "5.0"
    assert rows[2]["link_availability"] == ""


def test_html_escapes_and_shows_chain_problems() -> None:
    """HTML: names escaped, inline SVG only, a page per school, the chain head and every problem."""
    page = render_html(
        build_report(_inputs(chain=_chain(("link 4: rows changed since they were sealed",))), generated_at=fx.NOW)
    )
    assert "School No. 2 &lt;Abay&gt;" in page
    assert "<Abay>" not in page
    assert "<script" not in page
    assert "ab" * 32 in page
    assert "link 4: rows changed since they were sealed" in page
    assert page.count('<section class="school"') == 3
    assert "UTC+05:00" in page
    assert "No data for this period" in page
    assert "page-break-before: always" in page
    assert "min 45, median 139.5 Mbps" in page  # upload min / median, not rounded away
    charts = re.findall(r"<svg.*?</svg>", page, re.S)
    assert len(charts) == 3  # daily bars of the two schools with data, speed tests of shy-001 (shy-002 has none)
    for chart in charts:
        ElementTree.fromstring(chart)  # well-formed, self-contained SVG
