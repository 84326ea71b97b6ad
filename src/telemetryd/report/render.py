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
import html
import io
import json
from collections.abc import Callable
from typing import Any

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
    local_time,
)

AVAILABILITY_MARKS = (0.99, 0.95)
COMPLIANCE_MARKS = (0.95, 0.80)
KINDS = ("camera", "nvr", "alarm_panel")
_BASIS = {"router": "the router", "devices": "all devices (no router listed)"}


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

_CSS = """
@page { size: A4; margin: 14mm 12mm; }
body { font: 10pt/1.35 "DejaVu Sans", Arial, sans-serif; color: #111; margin: 0 auto; max-width: 186mm; }
h1 { font-size: 17pt; margin: 0 0 2mm; }
h2 { font-size: 13pt; margin: 0 0 1mm; }
h3 { font-size: 10.5pt; margin: 4mm 0 1mm; }
p.meta { margin: 0 0 3mm; color: #444; }
table { border-collapse: collapse; width: 100%; margin: 1mm 0 3mm; }
th, td { border: 0.3mm solid #bbb; padding: 0.8mm 1.5mm; text-align: left; vertical-align: top; }
th { background: #eee; }
td.n { text-align: right; white-space: nowrap; }
.mark { display: inline-block; width: 2.6mm; height: 2.6mm; border-radius: 50%; margin-right: 1mm;
        vertical-align: baseline; -webkit-print-color-adjust: exact; print-color-adjust: exact; }
/* Shape as well as colour, for black-and-white printers: good ●, watch ◆, poor ■, no data ○. */
.green { background: #2e7d32; }
.amber { background: #f9a825; border-radius: 0; transform: rotate(45deg) scale(0.85); }
.red { background: #c62828; border-radius: 0; }
.none { background: none; border: 0.3mm solid #888; box-sizing: border-box; }
.school { break-before: page; page-break-before: always; }
.nodata { color: #666; font-style: italic; }
.excluded { color: #555; }
.problem { color: #c62828; font-weight: bold; }
.ok { color: #2e7d32; font-weight: bold; }
code { font-size: 8.5pt; word-break: break-all; }
svg { display: block; margin: 1mm 0 2mm; }
.legend { font-size: 8.5pt; color: #444; }
@media print { a { color: inherit; text-decoration: none; } }
"""

_E = html.escape


def _pct(ratio: float | None) -> str:
    return "—" if ratio is None else f"{ratio * 100:.2f} %"


def _mark(ratio: float | None, marks: tuple[float, float]) -> str:
    if ratio is None:
        color, label = "none", "no data"
    elif ratio >= marks[0]:
        color, label = "green", "good"
    elif ratio >= marks[1]:
        color, label = "amber", "watch"
    else:
        color, label = "red", "poor"
    return f"<span class='mark {color}' title='{label}'></span>{_pct(ratio)}"


def _mbps(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}".removesuffix(".0")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "ongoing"
    minutes = round(seconds / 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours} h {minutes:02d} min"
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


def _when(at: float | None, period: Period) -> str:
    return "ongoing" if at is None else local_time(at, period).strftime("%Y-%m-%d %H:%M")


def _daily_chart(school: SchoolReport, period: Period) -> str:
    """Bars of the link's availability per local day, 0-100 %, coloured by mark."""
    width, height, left, bottom = 640, 90, 34, 16
    days = len(school.daily) or 1
    step = (width - left - 4) / days
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}' role='img' aria-label='daily link availability'>",
        f"<line x1='{left}' y1='4' x2='{width - 4}' y2='4' stroke='#ddd'/>",
        f"<text x='{left - 3}' y='8' font-size='8' text-anchor='end'>100%</text>",
        f"<text x='{left - 3}' y='{height - bottom}' font-size='8' text-anchor='end'>0%</text>",
        f"<line x1='{left}' y1='{height - bottom}' x2='{width - 4}' y2='{height - bottom}' stroke='#888'/>",
    ]
    plot = height - bottom - 4
    for i, day in enumerate(school.daily):
        x = left + i * step + 1
        label = local_time(day.start, period).day
        ratio = day.availability.ratio
        if ratio is None:
            parts.append(
                f"<rect x='{x:.1f}' y='{height - bottom - 3}' width='{step - 2:.1f}' height='3' fill='#bdbdbd'>"
                f"<title>{label}: no data</title></rect>"
            )
        else:
            color = {"green": "#2e7d32", "amber": "#f9a825", "red": "#c62828"}[_color(ratio, AVAILABILITY_MARKS)]
            bar = max(ratio * plot, 1.0)
            parts.append(
                f"<rect x='{x:.1f}' y='{height - bottom - bar:.1f}' width='{step - 2:.1f}' height='{bar:.1f}' "
                f"fill='{color}'><title>{label}: {_pct(ratio)}</title></rect>"
            )
        if label == 1 or label % 5 == 0:
            parts.append(
                f"<text x='{x + step / 2 - 1:.1f}' y='{height - 4}' font-size='8' text-anchor='middle'>{label}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _color(ratio: float, marks: tuple[float, float]) -> str:
    return "green" if ratio >= marks[0] else "amber" if ratio >= marks[1] else "red"


def _speed_chart(school: SchoolReport, period: Period) -> str:
    """Every test as a dot (download filled, upload hollow) against the floor line."""
    width, height, left, bottom = 640, 130, 34, 16
    tests = [p for p in school.tests if p.ok]
    floors = [(p.at, p.floor_mbps) for p in school.tests if p.floor_mbps is not None]
    top = max([school.school.contract_mbps or 0.0, *(p.mbps for p in tests), *(f for _, f in floors), 1.0]) * 1.1
    plot_w, plot_h = width - left - 8, height - bottom - 6

    def x_of(at: float) -> float:
        return left + (at - period.start) / max(period.nominal_end - period.start, 1.0) * plot_w

    def y_of(mbps: float) -> float:
        return height - bottom - mbps / top * plot_h

    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}' role='img' aria-label='speed tests against the contract floor'>",
        f"<line x1='{left}' y1='{height - bottom}' x2='{width - 4}' y2='{height - bottom}' stroke='#888'/>",
        f"<text x='{left - 3}' y='{height - bottom}' font-size='8' text-anchor='end'>0</text>",
        f"<text x='{left - 3}' y='{y_of(top / 1.1) + 3:.1f}' font-size='8' text-anchor='end'>{top / 1.1:.0f}</text>",
        f"<text x='{left}' y='{height - 4}' font-size='8'>{_E(_when(period.start, period))}</text>",
        f"<text x='{width - 4}' y='{height - 4}' font-size='8' text-anchor='end'>"
        f"{_E(_when(period.nominal_end, period))}</text>",
    ]
    if floors:
        points = [(period.start, floors[0][1]), *floors, (period.nominal_end, floors[-1][1])]
        path = " ".join(f"{x_of(at):.1f},{y_of(f):.1f}" for at, f in points)
        parts.append(f"<polyline points='{path}' fill='none' stroke='#c62828' stroke-dasharray='4 2'/>")
        parts.append(
            f"<text x='{width - 6}' y='{y_of(floors[-1][1]) - 3:.1f}' font-size='8' text-anchor='end' fill='#c62828'>"
            f"floor {floors[-1][1]:.0f} Mbps</text>"
        )
    for p in tests:
        fill = "#1565c0" if p.direction == "download" else "none"
        radius = 2.8 if p.confirmation else 2.2
        parts.append(
            f"<circle cx='{x_of(p.at):.1f}' cy='{y_of(p.mbps):.1f}' r='{radius}' fill='{fill}' stroke='#1565c0'>"
            f"<title>{_E(_when(p.at, period))} {_E(p.direction)} {p.mbps:.1f} Mbps"
            f"{' (confirmation)' if p.confirmation else ''}</title></circle>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _summary_row(s: SchoolReport) -> str:
    contract = s.school.contract_mbps
    speed = (
        f"↓ {_mbps(s.download.min_mbps)} / {_mbps(s.download.median_mbps)}<br>"
        f"↑ {_mbps(s.upload.min_mbps)} / {_mbps(s.upload.median_mbps)}<br>of {_mbps(contract)}"
    )
    return (
        f"<tr><td><a href='#school-{_E(s.school.id)}'>{_E(s.school.name or s.school.id)}</a>"
        f"<br><small>{_E(s.school.id)}</small></td>"
        f"<td>{_E(s.school.district)}</td>"
        f"<td class='n'>{_mark(s.link.ratio, AVAILABILITY_MARKS)}</td>"
        f"<td class='n'>↓ {_mark(s.download.compliance, COMPLIANCE_MARKS)}<br>"
        f"↑ {_mark(s.upload.compliance, COMPLIANCE_MARKS)}</td>"
        f"<td class='n'>{speed}</td>"
        f"<td class='n'>{_mark(s.kind('camera').availability.ratio, AVAILABILITY_MARKS)}</td>"
        f"<td class='n'>{_mark(s.kind('alarm_panel').availability.ratio, AVAILABILITY_MARKS)}</td>"
        f"<td class='n'>{len(s.counted_outages)}<br>{s.outage_seconds / 60:.0f} min</td></tr>"
    )


def _outage_table(outages: tuple[Outage, ...], period: Period, *, devices: bool) -> str:
    if not outages:
        return "<p>None.</p>"
    head = "<th>Device</th><th>Kind</th>" if devices else ""
    rows = "".join(
        "<tr>"
        + (f"<td>{_E(o.device_id)}</td><td>{_E(o.kind.replace('_', ' '))}</td>" if devices else "")
        + f"<td>{_E(_when(o.start, period))}</td><td>{_E(_when(o.end, period))}</td>"
        f"<td class='n'>{_E(_duration(o.duration_seconds))}</td>"
        f"<td class='n'>{_E(_duration(o.counted_seconds))}</td></tr>"
        for o in outages
    )
    return f"<table><tr>{head}<th>Start</th><th>End</th><th>Duration</th><th>Counted this month</th></tr>{rows}</table>"


def _excluded_table(title: str, rows: tuple[Excluded, ...], period: Period) -> str:
    if not rows:
        return f"<p class='excluded'>{_E(title)}: none.</p>"
    body = "".join(
        f"<tr><td>{_E(_when(e.start, period))}</td><td>{_E(_when(e.end, period))}</td>"
        f"<td class='n'>{_E(_duration(e.seconds_in_period))}</td><td>{_E(e.reason or '—')}</td></tr>"
        for e in rows
    )
    return (
        f"<p class='excluded'>{_E(title)} (excluded from availability):</p>"
        f"<table class='excluded'><tr><th>Start</th><th>End</th><th>In this month</th><th>Reason</th></tr>"
        f"{body}</table>"
    )


def _figures(s: SchoolReport) -> str:
    rows = [
        (
            "School link",
            _mark(s.link.ratio, AVAILABILITY_MARKS),
            f"{s.link.monitored_seconds / 3600:.1f} h monitored, {s.link.down_seconds / 60:.0f} min down, "
            f"{len(s.counted_outages)} outage(s); judged by {_BASIS.get(s.link_basis, 'nothing')}",
        )
    ]
    for kind in s.kinds:
        label = {"camera": "Cameras", "nvr": "Video recorders (NVR)", "alarm_panel": "Alarm panel"}[kind.kind]
        rows.append(
            (
                label,
                _mark(kind.availability.ratio, AVAILABILITY_MARKS),
                f"{kind.devices} device(s), {kind.availability.down_seconds / 60:.0f} min down",
            )
        )
    for d in (s.download, s.upload):
        arrow = "Download ↓" if d.direction == "download" else "Upload ↑"
        rows.append(
            (
                f"Speed {arrow}",
                _mark(d.compliance, COMPLIANCE_MARKS),
                f"{d.compliant_rounds} of {d.rounds} rounds at or above the floor"
                f" ({d.forgiven_rounds} low result(s) not confirmed by the re-test); "
                f"{d.tests} tests, min {_mbps(d.min_mbps)}, median {_mbps(d.median_mbps)} Mbps; {d.failed} failed",
            )
        )
    segments = ", ".join(f"{x.segment} {x.saturated_seconds / 60:.0f} min" for x in s.saturation) or "no samples"
    rows.append(("Saturation (≥ 95 % of allocation)", f"{s.saturated_seconds / 60:.0f} min", segments))
    body = "".join(f"<tr><th>{_E(a)}</th><td class='n'>{b}</td><td>{_E(c)}</td></tr>" for a, b, c in rows)
    return f"<table>{body}</table>"


def _school_section(s: SchoolReport, period: Period) -> str:
    contract = f"contract {_mbps(s.school.contract_mbps)} Mbps" if s.school.contract_mbps else "contract unknown"
    head = (
        f"<section class='school' id='school-{_E(s.school.id)}'>"
        f"<h2>{_E(s.school.name or s.school.id)}</h2>"
        f"<p class='meta'>{_E(s.school.id)} · {_E(s.school.district or 'district unknown')} · {_E(contract)}</p>"
    )
    if not s.has_data:
        return head + "<p class='nodata'>No data for this period: nothing was measured at this school.</p></section>"
    return (
        head
        + _figures(s)
        + "<h3>Link availability per day</h3>"
        + _daily_chart(s, period)
        + "<h3>Speed tests (Mbps)</h3>"
        + (
            _speed_chart(s, period)
            + "<p class='legend'>● download · ○ upload · larger dot: confirmation re-test · dashed red: floor</p>"
            if s.tests
            else "<p>No speed tests this month.</p>"
        )
        + "<h3>Link outages</h3>"
        + _outage_table(s.outages, period, devices=False)
        + "<h3>Camera, NVR and alarm panel outages</h3>"
        + _outage_table(s.device_outages, period, devices=True)
        + "<h3>Excluded time</h3>"
        + _excluded_table("Maintenance windows", s.maintenance, period)
        + _excluded_table("Monitoring gaps", s.gaps, period)
        + "</section>"
    )


def _chain_section(chain: ChainStatus | None, period: Period) -> str:
    if chain is None:
        return "<section><h2>Evidence chain</h2><p>Not checked.</p></section>"
    verdict = (
        f"<p class='ok'>{_E(chain.summary)}</p>"
        if chain.ok
        else f"<p class='problem'>{_E(chain.summary)}</p><ul>"
        + "".join(f"<li class='problem'>{_E(p)}</li>" for p in chain.problems)
        + "</ul>"
    )
    return (
        "<section><h2>Evidence chain</h2>"
        "<p>Every batch of history rows is sealed into a hash chain; editing, adding or deleting a sealed row "
        "changes the digests below. Keep this head with the report to check it later.</p>"
        f"<p>Head at generation: link {chain.head_seq if chain.head_seq is not None else '—'}, sealed "
        f"{_E(_when(chain.sealed_at, period) if chain.sealed_at is not None else '—')}<br>"
        f"<code>{_E(chain.head_hex or '(empty chain)')}</code></p>"
        f"<p>Links {chain.first_seq if chain.first_seq is not None else '—'}–"
        f"{chain.last_seq if chain.last_seq is not None else '—'} hold this month's rows.</p>"
        f"{verdict}</section>"
    )


def render_html(report: Report) -> str:
    """A printable A4 report for department staff."""
    period = report.period
    first = local_time(period.start, period)
    title = f"SLA report {first.strftime('%B %Y')}"
    span = f"{_when(period.start, period)} – {_when(period.end, period)} local time (UTC{_offset(period)})" + (
        "" if period.complete else ", month not over yet"
    )
    summary = "".join(_summary_row(s) for s in report.schools)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_E(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_E(title)}</h1>"
        f"<p class='meta'>Period {_E(span)}. Generated {_E(_when(report.generated_at, period))}.</p>"
        "<p class='legend'>Availability counts only monitored time: monitoring gaps and agreed maintenance are "
        "left out. A low speed test that the re-test minutes later did not confirm is not held against the "
        "contractor. Marks: green circle good, amber diamond watch, red square poor, hollow circle no data.</p>"
        "<table><tr><th>School</th><th>District</th><th>Link availability</th><th>Speed compliance</th>"
        "<th>Mbps min / median</th><th>Cameras</th><th>Alarm panel</th><th>Outages</th></tr>"
        f"{summary}</table>"
        + "".join(_school_section(s, period) for s in report.schools)
        + _chain_section(report.chain, period)
        + "</body></html>\n"
    )


RENDERERS: dict[str, Callable[[Report], str]] = {"json": render_json, "csv": render_csv, "html": render_html}
