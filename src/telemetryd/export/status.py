"""The status JSON (`/api/v1/status`) and the plain status page (`/`) for when Grafana is not at hand."""

from __future__ import annotations

import html
import time
from dataclasses import dataclass
from typing import Any

from telemetryd import __version__
from telemetryd.export.instance import InstanceStatus
from telemetryd.link.compliance import Compliance, LinkState, SchoolLink
from telemetryd.model import DeviceKind, Direction, Health
from telemetryd.reachability.state import State


@dataclass(frozen=True, slots=True)
class StatusSources:
    """What the status JSON and page read."""

    state: State
    links: LinkState
    instance: InstanceStatus


def _iso(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def status_document(sources: StatusSources, school_id: str | None = None) -> dict[str, Any]:
    """The JSON status: instance facts, and per school its roll-up and down devices.

    With `school_id`, only that school, with every device listed.
    """
    roster = sources.state.roster
    counts = roster.count_by_health()
    links = dict(sources.links.schools)
    schools = []
    for summary in roster.school_summaries():
        school = summary.school
        if school_id is not None and school.id != school_id:
            continue
        entry: dict[str, Any] = {
            "id": school.id,
            "name": school.name,
            "district": school.district,
            "contract": {
                "total_mbps": school.contract.total_mbps,
                "segments_mbps": {s.value: v for s, v in school.contract.segments_mbps},
            },
            "devices": {
                kind.value: {"total": c.total, "up": c.up, "down": c.down, "unknown": c.unknown}
                for kind, c in summary.by_kind.items()
            },
            "link": link_document(links.get(school.id)),
            "down": [
                {
                    "device": d.device.id,
                    "kind": d.device.kind.value,
                    "host": d.device.host,
                    "reason": d.down_reason(),
                    "since": _iso(d.last_change),
                }
                for d in summary.down_devices
            ],
        }
        if school_id is not None:
            entry["all_devices"] = [
                {
                    "device": d.id,
                    "kind": d.kind.value,
                    "name": d.name,
                    "host": d.host,
                    "health": roster.devices[d.id].health.value,
                    "probes": {
                        name: {
                            "health": p.health.value,
                            "reason": p.last_result.reason if p.last_result else None,
                            "detail": p.last_result.detail if p.last_result else None,
                            "rtt_seconds": p.last_result.rtt if p.last_result else None,
                            "last_run": _iso(p.last_run),
                            "flaps": p.flaps,
                        }
                        for name, p in roster.devices[d.id].probes.items()
                    },
                }
                for d in school.devices
            ]
        schools.append(entry)
    return {
        "version": __version__,
        "shard": str(sources.instance.shard),
        "started_at": _iso(sources.instance.started_at),
        "devices": {h.value: n for h, n in counts.items()},
        "schools": schools,
    }


def link_document(link: SchoolLink | None) -> dict[str, Any] | None:
    """One school's speed-test verdict and segment rates, for /api/v1/status."""
    if link is None:
        return None
    return {
        "compliance": link.compliance.value,
        "last_success": _iso(link.last_success_at),
        "speedtest": {
            d.value: {
                "ok": r.ok,
                "mbps": round(r.mbps, 3) if r.ok else None,
                "contract_ratio": round(link.ratio(d) or 0.0, 4) if r.ok else None,
                "bytes_used": r.bytes_used,
                "duration_seconds": round(r.duration, 3),
                "streams": r.streams,
                "reason": r.reason or None,
                "detail": r.detail or None,
            }
            for d, r in link.last.items()
        },
        "snmp": None
        if link.router_id is None
        else {
            "router": link.router_id,
            "ok": link.snmp_ok,
            "reason": link.snmp_reason or None,
            "detail": link.snmp_detail or None,
            "segments": {
                role: {
                    "in_mbps": round(v.rate.in_bps / 1e6, 3) if v.rate else None,
                    "out_mbps": round(v.rate.out_bps / 1e6, 3) if v.rate else None,
                    "utilisation": round(v.utilisation, 4) if v.utilisation is not None else None,
                    "saturated": v.saturated,
                }
                for role, v in link.segments.items()
            },
        },
    }


def _speed_cell(link: SchoolLink | None, contract_mbps: float) -> str:
    """Measured download/upload against the contract, flagged when below."""
    if link is None or not link.last_good:
        failed = link is not None and any(not r.ok for r in link.last.values())
        reason = next((r.reason for r in link.last.values() if not r.ok), "") if link else ""
        text = f"test failed: {html.escape(reason)}" if failed else "not tested"
        return f'<td class="muted">{text}</td>'
    down = link.last_good.get(Direction.DOWNLOAD)
    up = link.last_good.get(Direction.UPLOAD)
    text = f"↓{down.mbps:.1f} ↑{up.mbps:.1f}" if down and up else f"{(down or up).mbps:.1f}"  # type: ignore[union-attr]
    verdict = {
        Compliance.BELOW: ("bad", " below contract"),
        Compliance.SUSPECT: ("bad", " low, re-testing"),
        Compliance.COMPLIANT: ("ok", ""),
        Compliance.UNKNOWN: ("muted", ""),
    }[link.compliance]
    return f'<td class="n {verdict[0]}">{text} / {contract_mbps:g} Mbps{verdict[1]}</td>'


_PAGE_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;width:100%;margin-bottom:2em}
th,td{border-bottom:1px solid #ddd;padding:.3em .6em;text-align:left}
th{background:#f4f4f4} .bad{color:#b00020;font-weight:600} .ok{color:#1b5e20}
.muted{color:#777} td.n{text-align:right;font-variant-numeric:tabular-nums}
"""


def _ratio_cell(up: int, total: int) -> str:
    if total == 0:
        return '<td class="n muted">–</td>'
    css = "ok" if up == total else "bad"
    return f'<td class="n {css}">{up}/{total}</td>'


def render_status_page(sources: StatusSources) -> str:
    """A plain server-rendered status page for when Grafana is not at hand."""
    roster = sources.state.roster
    counts = roster.count_by_health()
    links = dict(sources.links.schools)

    def below(school_id: str) -> bool:
        link = links.get(school_id)
        return link is not None and link.compliance is Compliance.BELOW

    # Schools below contract first, then by devices down: what the NOC acts on comes first.
    summaries = sorted(
        roster.school_summaries(),
        key=lambda s: (not below(s.school.id), -len(s.down_devices), s.school.district, s.school.id),
    )
    below_count = sum(below(s.id) for s in roster.inventory.schools)
    rows, down_rows = [], []
    for summary in summaries:
        school = summary.school
        router = summary.count(DeviceKind.ROUTER)
        link = (
            '<td class="muted">unknown</td>'
            if router.up + router.down == 0
            else '<td class="bad">down</td>'
            if router.down
            else '<td class="ok">up</td>'
        )
        cams, nvrs, alarms = (summary.count(k) for k in (DeviceKind.CAMERA, DeviceKind.NVR, DeviceKind.ALARM_PANEL))
        rows.append(
            f"<tr><td>{html.escape(school.id)}</td><td>{html.escape(school.name)}</td>"
            f"<td>{html.escape(school.district)}</td>{link}"
            f"{_speed_cell(links.get(school.id), school.contract.total_mbps)}"
            f"{_ratio_cell(cams.up, cams.total)}{_ratio_cell(nvrs.up, nvrs.total)}"
            f"{_ratio_cell(alarms.up, alarms.total)}</tr>"
        )
        for device_state in summary.down_devices:
            device = device_state.device
            down_rows.append(
                f"<tr><td>{html.escape(school.id)}</td><td>{html.escape(device.id)}</td>"
                f"<td>{device.kind.value}</td><td>{html.escape(device.host)}</td>"
                f"<td>{html.escape(device.name)}</td><td>{html.escape(device_state.down_reason())}</td>"
                f"<td>{_iso(device_state.last_change) or ''}</td></tr>"
            )
    down_table = (
        "<table><tr><th>School</th><th>Device</th><th>Kind</th><th>Address</th><th>Name</th>"
        "<th>Reason</th><th>Down since (UTC)</th></tr>" + "".join(down_rows) + "</table>"
        if down_rows
        else '<p class="ok">No device is down.</p>'
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><meta http-equiv='refresh' content='30'>"
        f"<title>telemetryd status</title><style>{_PAGE_STYLE}</style></head><body>"
        f"<h1>telemetryd</h1><p>{len(roster.inventory.schools)} schools, {len(roster.devices)} devices: "
        f"<span class='ok'>{counts[Health.UP]} up</span>, "
        f"<span class='bad'>{counts[Health.DOWN]} down</span>, "
        f"<span class='muted'>{counts[Health.UNKNOWN]} not yet probed</span>. "
        f"Shard {sources.instance.shard}. Version {__version__}. "
        "<a href='/metrics'>/metrics</a> · <a href='/api/v1/status'>/api/v1/status</a></p>"
        f"<p class='{'bad' if below_count else 'ok'}'>{below_count} school(s) confirmed below contract.</p>"
        f"<h2>Down devices ({len(down_rows)})</h2>{down_table}"
        "<h2>Schools</h2><table><tr><th>School</th><th>Name</th><th>District</th><th>Router</th>"
        "<th>Measured / contract</th><th>Cameras up</th><th>NVRs up</th><th>Alarm panels up</th></tr>"
        + "".join(rows)
        + "</table></body></html>"
    )
