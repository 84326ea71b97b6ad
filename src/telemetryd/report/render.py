"""The SLA report as JSON, CSV or printable HTML. Pure: a `Report` in, text out.

Every format states the period and the local offset. Times are local ISO 8601 with the
offset (``2026-02-01T00:00:00+05:00``); ratios are 0-1 in JSON and CSV and percentages
in HTML; durations are seconds.

JSON holds the full structure (keys are stable; ``null`` where nothing was measured).

CSV has one row per school with these columns:

``school, name, district, contract_mbps`` — who and what was contracted;
``period_start, period_end, utc_offset_hours, period_complete`` — the period;
``has_data`` — 0 when nothing at all was measured;
``link_availability, link_monitored_seconds, link_down_seconds`` — the school's link;
``outages, outage_seconds`` — link outages with counted time and the counted seconds;
``download_compliance, upload_compliance, download_rounds, upload_rounds`` — speed rounds;
``download_tests, upload_tests, failed_tests`` — successful tests per direction, failed ones;
``download_min_mbps, download_median_mbps, upload_min_mbps, upload_median_mbps``;
``camera_availability, nvr_availability, alarm_panel_availability`` — per kind of device;
``device_outages`` — camera, NVR and alarm panel outages with counted time;
``saturated_seconds, wan_saturated_seconds`` — contracted segments, and the WAN apart;
``maintenance_seconds, gap_seconds`` — time excluded;
``chain_head, chain_ok`` — the history hash chain head and whether it verified.

HTML is an A4 document for department staff: summary table with marks (green ≥ 99 %
availability / ≥ 95 % compliance, amber ≥ 95 % / ≥ 80 %, red below; marks are a reading
aid, not contract terms), then a page per school with inline SVG charts (no scripts, no
external files), outage tables and what was excluded; the chain at the end.
"""

from __future__ import annotations

import csv
import io
import json
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from statistics import median
from typing import Any, Generic, TypeVar

from telemetryd.report.figures import (
    WAN,
    Availability,
    ChainStatus,
    DirectionSummary,
    Excluded,
    Outage,
    Period,
    Report,
    SchoolReport,
    SpeedTestPoint,
    by_district,
    local_time,
)
from telemetryd.templating import Language, environment

AVAILABILITY_MARKS = (0.99, 0.95)
COMPLIANCE_MARKS = (0.95, 0.80)
KINDS = ("camera", "nvr", "alarm_panel")


def _iso(at: float | None, period: Period) -> str | None:
    return None if at is None else local_time(at, period).isoformat()


def _offset(period: Period) -> str:
    minutes = round(period.utc_offset_hours * 60)
    return f"{'-' if minutes < 0 else '+'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


# ----------------------------------------------------------------------------- json


def _availability(a: Availability) -> dict[str, Any]:
    return {
        "availability": a.ratio,
        "up_seconds": a.up_seconds,
        "down_seconds": a.down_seconds,
        "monitored_seconds": a.monitored_seconds,
    }


def _outage(o: Outage, period: Period) -> dict[str, Any]:
    out: dict[str, Any] = {"device": o.device_id, "kind": o.kind} if o.device_id else {}
    return out | {
        "start": _iso(o.start, period),
        "end": _iso(o.end, period),
        "ongoing": o.end is None,
        "duration_seconds": o.duration_seconds,
        "counted_seconds": o.counted_seconds,
    }


def _direction(d: DirectionSummary) -> dict[str, Any]:
    return {
        "tests": d.tests,
        "failed": d.failed,
        "min_mbps": d.min_mbps,
        "median_mbps": d.median_mbps,
        "rounds": d.rounds,
        "compliant_rounds": d.compliant_rounds,
        "forgiven_rounds": d.forgiven_rounds,
        "unjudged_rounds": d.unjudged_rounds,
        "compliance": d.compliance,
    }


def _excluded(e: Excluded, period: Period, *, gap: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "start": _iso(e.start, period),
        "end": _iso(e.end, period),
        "seconds_in_period": e.seconds_in_period,
        "reason": e.reason,
    }
    return out | {"shard": e.shard} if gap else out


def _chain(chain: ChainStatus | None, period: Period) -> dict[str, Any] | None:
    if chain is None:
        return None
    return {
        "head_seq": chain.head_seq,
        "head": chain.head_hex,
        "sealed_at": _iso(chain.sealed_at, period),
        "first_seq": chain.first_seq,
        "last_seq": chain.last_seq,
        "links_verified": chain.links_verified,
        "ok": chain.ok,
        "problems": list(chain.problems),
        "summary": chain.summary,
    }


def _school(s: SchoolReport, period: Period) -> dict[str, Any]:
    return {
        "school": s.school.id,
        "name": s.school.name,
        "district": s.school.district,
        "contract_mbps": s.school.contract_mbps,
        "has_data": s.has_data,
        "devices": s.devices,
        "link": {"basis": s.link_basis, **_availability(s.link)},
        "outage_count": len(s.counted_outages),
        "outage_seconds": s.outage_seconds,
        "outages": [_outage(o, period) for o in s.outages],
        "availability": {k.kind: {"devices": k.devices, **_availability(k.availability)} for k in s.kinds},
        "device_outages": [_outage(o, period) for o in s.device_outages],
        "speedtests": {
            "download": _direction(s.download),
            "upload": _direction(s.upload),
            "tests": [
                {
                    "time": _iso(p.at, period),
                    "direction": p.direction,
                    "mbps": p.mbps,
                    "ok": p.ok,
                    "confirmation": p.confirmation,
                    "floor_mbps": p.floor_mbps,
                    "reason": p.reason,
                }
                for p in s.tests
            ],
        },
        "saturation": {
            "saturated_seconds": s.saturated_seconds,
            "segments": [
                {"segment": x.segment, "saturated_seconds": x.saturated_seconds, "buckets": x.buckets}
                for x in s.saturation
            ],
        },
        "maintenance": {
            "seconds": s.maintenance_seconds,
            "windows": [_excluded(e, period, gap=False) for e in s.maintenance],
        },
        "gaps": {"seconds": s.gap_seconds, "gaps": [_excluded(e, period, gap=True) for e in s.gaps]},
        "daily": [
            {"date": local_time(d.start, period).date().isoformat(), **_availability(d.availability)} for d in s.daily
        ],
    }


def _period(period: Period) -> dict[str, Any]:
    return {
        "month": period.month,
        "start": _iso(period.start, period),
        "end": _iso(period.end, period),
        "complete": period.complete,
        "seconds": period.seconds,
        "utc_offset_hours": period.utc_offset_hours,
        "utc_offset": _offset(period),
    }


def render_json(report: Report) -> str:
    """The full report as JSON."""
    period = report.period
    document = {
        "report": "sla",
        "period": _period(period),
        "generated_at": _iso(report.generated_at, period),
        "chain": _chain(report.chain, period),
        "schools": [_school(s, period) for s in report.schools],
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


# ----------------------------------------------------------------------------- csv

CSV_COLUMNS = (
    "school",
    "name",
    "district",
    "contract_mbps",
    "period_start",
    "period_end",
    "utc_offset_hours",
    "period_complete",
    "has_data",
    "link_availability",
    "link_monitored_seconds",
    "link_down_seconds",
    "outages",
    "outage_seconds",
    "download_compliance",
    "upload_compliance",
    "download_rounds",
    "upload_rounds",
    "download_tests",
    "upload_tests",
    "failed_tests",
    "download_min_mbps",
    "download_median_mbps",
    "upload_min_mbps",
    "upload_median_mbps",
    "camera_availability",
    "nvr_availability",
    "alarm_panel_availability",
    "device_outages",
    "saturated_seconds",
    "wan_saturated_seconds",
    "maintenance_seconds",
    "gap_seconds",
    "chain_head",
    "chain_ok",
)


def _csv_row(s: SchoolReport, report: Report) -> dict[str, Any]:
    period, chain = report.period, report.chain
    return {
        "school": s.school.id,
        "name": s.school.name,
        "district": s.school.district,
        "contract_mbps": s.school.contract_mbps,
        "period_start": _iso(period.start, period),
        "period_end": _iso(period.end, period),
        "utc_offset_hours": period.utc_offset_hours,
        "period_complete": int(period.complete),
        "has_data": int(s.has_data),
        "link_availability": s.link.ratio,
        "link_monitored_seconds": s.link.monitored_seconds,
        "link_down_seconds": s.link.down_seconds,
        "outages": len(s.counted_outages),
        "outage_seconds": s.outage_seconds,
        "download_compliance": s.download.compliance,
        "upload_compliance": s.upload.compliance,
        "download_rounds": s.download.rounds,
        "upload_rounds": s.upload.rounds,
        "download_tests": s.download.tests,
        "upload_tests": s.upload.tests,
        "failed_tests": s.download.failed + s.upload.failed,
        "download_min_mbps": s.download.min_mbps,
        "download_median_mbps": s.download.median_mbps,
        "upload_min_mbps": s.upload.min_mbps,
        "upload_median_mbps": s.upload.median_mbps,
        **{f"{kind}_availability": s.kind(kind).availability.ratio for kind in KINDS},
        "device_outages": sum(o.counted_seconds > 0 for o in s.device_outages),
        "saturated_seconds": s.saturated_seconds,
        "wan_saturated_seconds": sum(x.saturated_seconds for x in s.saturation if x.segment == WAN),
        "maintenance_seconds": s.maintenance_seconds,
        "gap_seconds": s.gap_seconds,
        "chain_head": chain.head_hex if chain else "",
        "chain_ok": "" if chain is None else int(chain.ok),
    }


def render_csv(report: Report) -> str:
    """One row per school with the summary columns (see the module docstring)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for school in report.schools:
        writer.writerow({k: "" if v is None else v for k, v in _csv_row(school, report).items()})
    return out.getvalue()


# ----------------------------------------------------------------------------- html


@dataclass(frozen=True)
class Bar:
    """One day of the daily availability chart, in SVG user units."""

    x: float
    y: float
    width: float
    height: float
    color: str
    day: int
    ratio: float | None


@dataclass(frozen=True)
class SpeedChart:
    """The speed chart's geometry: each day's tests as a range with its median, against the floor.

    A month of hourly tests is ~1,500 results a direction; at print size single dots are a
    smear and, as SVG elements, most of the PDF's cost. Each field below is one SVG path.
    """

    width: int
    height: int
    left: int
    bottom: int
    top_mbps: float
    top_y: float
    floor_points: str
    floor_mbps: float | None
    floor_y: float
    download_ranges: str
    download_medians: str
    upload_ranges: str
    upload_medians: str
    below_floor: str
    """Over each day's range, the part below the floor (drawn red): one segment a day and direction
    at most, where a cross per low test cost the PDF 0.1 s a page."""


T = TypeVar("T")


@dataclass(frozen=True)
class Listing(Generic[T]):
    """What a school's page lists of some rows, and what it leaves out to stay one A4 page."""

    shown: tuple[T, ...]
    """The longest rows, in time order."""
    more: int
    more_seconds: float


PAGE_OUTAGES = 8
"""Link outages, and device outages, listed on a school's page: the longest ones. JSON has all."""
PAGE_EXCLUDED = 3
"""Maintenance windows and monitoring gaps (together) listed on a school's page."""


def excluded_time(school: SchoolReport) -> list[tuple[bool, Excluded]]:
    """The school's maintenance windows (True) and monitoring gaps (False) in time order."""
    return sorted([(True, m) for m in school.maintenance] + [(False, g) for g in school.gaps], key=lambda r: r[1].start)


def listing(rows: Sequence[T], limit: int, seconds: Callable[[T], float]) -> Listing[T]:
    """The `limit` longest of `rows` (by `seconds`) in their order, with the count and time of the rest."""
    if len(rows) <= limit:
        return Listing(tuple(rows), 0, 0.0)
    longest = sorted(range(len(rows)), key=lambda i: seconds(rows[i]), reverse=True)
    kept = sorted(longest[:limit])
    return Listing(tuple(rows[i] for i in kept), len(rows) - limit, sum(seconds(rows[i]) for i in longest[limit:]))


CHART_WIDTH = 640
DAILY_HEIGHT = 64
SPEED_HEIGHT = 92
"""SVG units: at the page's 186 mm width the two charts take 19 and 27 mm, so a school fits one page."""
_COLORS = {"green": "#2e7d32", "amber": "#f9a825", "red": "#c62828"}


def mark(ratio: float | None, marks: tuple[float, float]) -> str:
    """The reading-aid class of a ratio: green, amber, red, or none without data."""
    if ratio is None:
        return "none"
    return "green" if ratio >= marks[0] else "amber" if ratio >= marks[1] else "red"


def daily_bars(school: SchoolReport, period: Period) -> tuple[Bar, ...]:
    """Bars of the link's availability per local day, 0-100 %, coloured by mark."""
    height, left, bottom = DAILY_HEIGHT, 34, 16
    step = (CHART_WIDTH - left - 4) / (len(school.daily) or 1)
    plot = height - bottom - 4
    bars = []
    for i, day in enumerate(school.daily):
        ratio = day.availability.ratio
        bar = 3.0 if ratio is None else max(ratio * plot, 1.0)
        color = "#bdbdbd" if ratio is None else _COLORS[mark(ratio, AVAILABILITY_MARKS)]
        x = left + i * step + 1
        bars.append(Bar(x, height - bottom - bar, step - 2, bar, color, local_time(day.start, period).day, ratio))
    return tuple(bars)


def bar_paths(bars: Sequence[Bar]) -> list[tuple[str, str]]:
    """The bars as one SVG path per colour, (colour, path data): a few elements a page, not 31."""
    by_color: dict[str, list[str]] = {}
    for b in bars:
        by_color.setdefault(b.color, []).append(f"M{b.x:.1f},{b.y:.1f}h{b.width:.1f}v{b.height:.1f}h{-b.width:.1f}z")
    return [(color, "".join(d)) for color, d in sorted(by_color.items())]


def speed_chart(school: SchoolReport, period: Period) -> SpeedChart:
    """Each local day's successful tests as a low-high range with a median tick (download to the left
    of the day, upload to the right), the range's part below the floor in red, and the floor line."""
    width, height, left, bottom = CHART_WIDTH, SPEED_HEIGHT, 34, 16
    tests = [p for p in school.tests if p.ok]
    floors = [(p.at, p.floor_mbps) for p in school.tests if p.floor_mbps is not None]
    top = max([school.school.contract_mbps or 0.0, *(p.mbps for p in tests), *(f for _, f in floors), 1.0]) * 1.1
    plot_w, plot_h = width - left - 8, height - bottom - 6
    span = max(period.nominal_end - period.start, 1.0)

    def x_of(at: float) -> float:
        return left + (at - period.start) / span * plot_w

    def y_of(mbps: float) -> float:
        return height - bottom - mbps / top * plot_h

    points = ""
    if floors:
        # A step line through the floor's changes only: a month of one contract is two points, not 1,500.
        line = [(period.start, floors[0][1])]
        for at, floor in floors[1:]:
            if floor != line[-1][1]:
                line += [(at, line[-1][1]), (at, floor)]
        line.append((period.nominal_end, line[-1][1]))
        points = " ".join(f"{x_of(at):.1f},{y_of(f):.1f}" for at, f in line)
    days = [d.start for d in school.daily] or [period.start]
    day_width = plot_w / max(len(days), 1)
    paths: dict[str, tuple[str, str]] = {}
    below = []
    for direction, shift in (("download", 0.3), ("upload", 0.7)):
        by_day: dict[int, list[SpeedTestPoint]] = {}
        for p in tests:
            if p.direction == direction:
                by_day.setdefault(bisect_right(days, p.at) - 1, []).append(p)
        ranges, medians = [], []
        for day, points_of_day in sorted(by_day.items()):
            x = left + (max(day, 0) + shift) * day_width
            low = min(points_of_day, key=lambda p: p.mbps)
            high = max(p.mbps for p in points_of_day)
            ranges.append(f"M{x:.1f},{y_of(low.mbps):.1f}V{min(y_of(high), y_of(low.mbps) - 1):.1f}")
            medians.append(f"M{x - 2:.1f},{y_of(median(p.mbps for p in points_of_day)):.1f}h4")
            if low.floor_mbps is not None and low.mbps < low.floor_mbps:
                below.append(f"M{x:.1f},{y_of(low.mbps):.1f}V{y_of(low.floor_mbps):.1f}")
        paths[direction] = ("".join(ranges), "".join(medians))
    last_floor = floors[-1][1] if floors else None
    return SpeedChart(
        width,
        height,
        left,
        bottom,
        top / 1.1,
        y_of(top / 1.1),
        points,
        last_floor,
        y_of(last_floor) if last_floor is not None else 0.0,
        *paths["download"],
        *paths["upload"],
        "".join(below),
    )


def school_pages(report: Report) -> list[SchoolReport]:
    """The schools in the order of the table and of their pages: by district."""
    return [s for _, schools in by_district(report.schools) for s in schools]


def render_html(
    report: Report,
    *,
    lang: Language = "en",
    summary: object | None = None,
    summary_only: bool = False,
    schools_only: bool = False,
) -> str:
    """A printable A4 report for department staff, in `lang`.

    `summary` is the first page's city and district figures (telemetryd.report.summary), shown
    by ``report/summary.html`` when given; without it the report opens with the table.
    `summary_only` stops after the all-schools table; `schools_only` leaves the table and the
    chain page out: each school's page alone (the first one without a page break), with the
    chain head in the heading, for a principal or a district office.
    """
    return document_html(
        report,
        lang=lang,
        summary=summary,
        front=not schools_only,
        heading=schools_only,
        pages=() if summary_only else school_pages(report),
        chain=not (summary_only or schools_only),
        links=not summary_only,
    )


def document_html(
    report: Report,
    *,
    lang: Language,
    summary: object | None,
    front: bool,
    heading: bool,
    pages: Sequence[SchoolReport],
    chain: bool,
    links: bool,
    page_numbers: bool = True,
) -> str:
    """The report's parts as one HTML document (see ``report/sla.html``): the front (title,
    summary, table; links to the school pages when `links`), the short `heading`, the school
    `pages`, the `chain` page. Without `page_numbers` the footer is left blank (a PDF made of
    parts numbers its pages once joined: telemetryd.report.pdf)."""
    period = report.period

    def when(at: float | None) -> datetime | None:
        return None if at is None else local_time(at, period)

    return (
        environment(lang)
        .get_template("report/sla.html")
        .render(
            report=report,
            period=period,
            summary=summary,
            front=front,
            heading=heading,
            pages=pages,
            chain=chain,
            links=links,
            page_numbers=page_numbers,
            # PDF metadata from the period, not the clock: the same data gives the same bytes.
            document_date=local_time(period.nominal_end, period).isoformat(),
            first_day=local_time(period.start, period).date(),
            utc_offset=_offset(period),
            when=when,
            mark=mark,
            daily_bars=lambda s: daily_bars(s, period),
            bar_paths=bar_paths,
            speed_chart=lambda s: speed_chart(s, period),
            # The table and the school pages in one order: by district.
            districts=by_district(report.schools),
            outages=lambda rows: listing(rows, PAGE_OUTAGES, lambda o: o.counted_seconds),
            excluded=lambda s: listing(excluded_time(s), PAGE_EXCLUDED, lambda row: row[1].seconds_in_period),
            daily_chart=(CHART_WIDTH, DAILY_HEIGHT, 34, 16),
            availability_marks=AVAILABILITY_MARKS,
            compliance_marks=COMPLIANCE_MARKS,
        )
    )


RENDERERS: dict[str, Callable[[Report], str]] = {"json": render_json, "csv": render_csv, "html": render_html}
