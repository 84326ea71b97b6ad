"""The status JSON (`/api/v1/status`) and the NOC's status pages (`/status`, `/status/school/<id>`).

The JSON stays in UTC (ISO 8601, `Z`) for programs. The pages are for people on shift: every
time in the city's zone (`timezone` setting) with its offset shown. Building what a page shows
(`city_view`, `school_view`) is pure and separate from rendering it (Jinja2, autoescaped), so
the grouping, filtering and verdict rules are tested on values, and a hostile school name can
only ever reach the page escaped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from gettext import NullTranslations
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from telemetryd import __version__
from telemetryd.config.settings import Settings
from telemetryd.export.instance import InstanceStatus
from telemetryd.link.compliance import Compliance, LinkState, SchoolLink
from telemetryd.model import Device, DeviceKind, Direction, Finding, Health, School
from telemetryd.probes.isapi import AxProStatus, IsapiHealth
from telemetryd.reachability.state import DeviceState, KindCount, Roster, SchoolSummary, State
from telemetryd.templating import environment


@dataclass(frozen=True, slots=True)
class StatusSources:
    """What the status JSON and pages read; `settings` is called per request, so a reload shows at once."""

    state: State
    links: LinkState
    instance: InstanceStatus
    settings: Callable[[], Settings] = field(default=Settings)


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


# ---------------------------------------------------------------------------- the pages

_ = NullTranslations().gettext
"""Pass-through for now: the pages' strings are marked for the ru/kk catalogs to come."""

GRAFANA_SCHOOL_DASHBOARD = ("telemetryd-school", "telemetryd-school", "school")
"""uid, slug and variable of grafana/dashboards/school.json (a test keeps them in step with the file)."""

REFRESH_SECONDS = 30
DOWN_SHOWN_PER_SCHOOL = 3
"""Down devices named in a school's row on the city page; the rest are counted (a dark school has 35)."""


@dataclass(frozen=True, slots=True)
class PageOptions:
    """What the pages take from the settings: the city's zone and where Grafana is."""

    zone: ZoneInfo
    grafana_url: str | None = None

    @classmethod
    def of(cls, settings: Settings) -> PageOptions:
        """The options of these settings (ZoneInfo objects are cached by key: no file read per request)."""
        return cls(ZoneInfo(settings.timezone), settings.grafana_url)

    def local(self, ts: float | None) -> str:
        """Unix time as the city's wall clock with the offset, e.g. ``2026-12-02 21:30:05 +05:00``; "" for none."""
        if ts is None:
            return ""
        moment = datetime.fromtimestamp(ts, self.zone)
        offset = moment.strftime("%z")
        return f"{moment:%Y-%m-%d %H:%M:%S} {offset[:3]}:{offset[3:]}"

    def zone_label(self, ts: float) -> str:
        """The zone and its offset at `ts`, e.g. ``Asia/Almaty (UTC+05:00)``."""
        offset = datetime.fromtimestamp(ts, self.zone).strftime("%z")
        return f"{self.zone.key} (UTC{offset[:3]}:{offset[3:]})"

    def grafana_link(self, school_id: str) -> str | None:
        """The school's Grafana dashboard with its `school` variable set, when Grafana is configured."""
        if self.grafana_url is None:
            return None
        uid, slug, variable = GRAFANA_SCHOOL_DASHBOARD
        return f"{self.grafana_url}/d/{uid}/{slug}?var-{variable}={quote(school_id, safe='')}"


@dataclass(frozen=True, slots=True)
class SpeedView:
    """The last speed test against the contract, as one cell says it."""

    text: str
    """``↓19.0 ↑18.5 / 150 Mbps``, or why there is no figure."""
    verdict: str
    css: str
    """``ok``, ``bad`` or ``muted``."""
    problem: bool


def speed_view(link: SchoolLink | None, contract_mbps: float) -> SpeedView:
    """Measured download/upload against the contract; a shortfall (confirmed or suspected) or failed test: a problem."""
    # list(): the pages render off the loop, which may add a direction meanwhile (a C-level copy, atomic)
    failed = next((r for r in list(link.last.values()) if not r.ok), None) if link is not None else None
    if link is None or not link.last_good:
        if failed is not None:
            return SpeedView(_("test failed"), failed.reason, "bad", True)
        return SpeedView(_("not tested"), "", "muted", False)
    down = link.last_good.get(Direction.DOWNLOAD)
    up = link.last_good.get(Direction.UPLOAD)
    one = down or up  # last_good is not empty: at least one of them
    measured = f"↓{down.mbps:.1f} ↑{up.mbps:.1f}" if down and up else f"{one.mbps:.1f}" if one else ""
    text = f"{measured} / {contract_mbps:g} Mbps"
    if link.compliance is Compliance.BELOW:
        return SpeedView(text, _("below contract"), "bad", True)
    if link.compliance is Compliance.SUSPECT:
        return SpeedView(text, _("low, re-testing"), "bad", True)
    if failed is not None:  # the figure is an older test's; the latest one failed
        return SpeedView(text, _("last test failed: %s") % failed.reason, "bad", True)
    return SpeedView(text, "", "ok" if link.compliance is Compliance.COMPLIANT else "muted", False)


@dataclass(frozen=True, slots=True)
class DownDevice:
    """A down device as the pages name it."""

    id: str
    kind: str
    name: str
    reason: str
    since: str


Cell = tuple[str, str]
"""(css class, text) of one table cell: worked out in Python, since a macro call per cell costs Jinja ~10 µs."""


def _ratio_cell(count: KindCount) -> Cell:
    """up/total: red when one is down, grey while some have no result yet."""
    if count.total == 0:
        return ("muted", "–")
    css = "ok" if count.up == count.total else "bad" if count.down else "muted"
    return (css, f"{count.up}/{count.total}")


@dataclass(frozen=True, slots=True)
class SchoolRow:
    """One school's line on the city page."""

    id: str
    name: str
    district: str
    link: Health
    """The router's health: the school's link as ICMP sees it (unknown without a router or a result)."""
    speed: SpeedView
    cameras: KindCount
    nvrs: KindCount
    panels: KindCount
    down: tuple[DownDevice, ...]
    """The first `DOWN_SHOWN_PER_SCHOOL` down devices."""
    down_count: int
    grafana: str | None
    search: str
    """What the filter box matches: id, name and district, lower case (JavaScript's toLowerCase agrees)."""
    problem: bool = field(init=False)
    """What "problems only" keeps: a device down, the link down, or the speed below contract or untested."""
    link_cell: Cell = field(init=False)
    counts: tuple[Cell, Cell, Cell] = field(init=False)
    """Cameras, NVRs, alarm panels up/total."""

    def __post_init__(self) -> None:
        problem = self.down_count > 0 or self.link is Health.DOWN or self.speed.problem
        object.__setattr__(self, "problem", problem)
        object.__setattr__(self, "link_cell", _HEALTH_CELLS[self.link])
        counts = (_ratio_cell(self.cameras), _ratio_cell(self.nvrs), _ratio_cell(self.panels))
        object.__setattr__(self, "counts", counts)

    def matches(self, query: str) -> bool:
        """The filter box's rule, the same as the page's script: a substring of id, name or district."""
        return query.strip().lower() in self.search


_HEALTH_CELLS: dict[Health, Cell] = {
    Health.UP: ("ok", _("up")),
    Health.DOWN: ("bad", _("down")),
    Health.UNKNOWN: ("muted", _("unknown")),
}


@dataclass(frozen=True, slots=True)
class District:
    """A district's schools on the city page, the ones with problems first."""

    name: str
    rows: tuple[SchoolRow, ...]

    @property
    def problems(self) -> int:
        """Schools of the district with a problem."""
        return sum(row.problem for row in self.rows)


@dataclass(frozen=True, slots=True)
class CityView:
    """Everything the city page shows."""

    generated: str
    zone: str
    districts: tuple[District, ...]
    schools: int
    devices: dict[Health, int]
    below_contract: int
    problems: int
    query: str
    problems_only: bool
    shard: str
    version: str
    grafana: bool
    refresh_seconds: int = REFRESH_SECONDS
    shown_ids: frozenset[str] = field(init=False)
    """Schools the filter lets through (the others are sent hidden, for the script to show again)."""
    shown_districts: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        shown = [(d.name, row.id) for d in self.districts for row in d.rows if self.shown(row)]
        object.__setattr__(self, "shown_ids", frozenset(school_id for _district, school_id in shown))
        object.__setattr__(self, "shown_districts", frozenset(district for district, _school_id in shown))

    def shown(self, row: SchoolRow) -> bool:
        """Whether the row passes the page's filter."""
        return row.matches(self.query) and (row.problem or not self.problems_only)

    @property
    def shown_count(self) -> int:
        """Schools the filter lets through."""
        return len(self.shown_ids)


def _link_health(summary: SchoolSummary) -> Health:
    router = summary.count(DeviceKind.ROUTER)
    if router.down:
        return Health.DOWN
    return Health.UP if router.up else Health.UNKNOWN


def _down(state: DeviceState, options: PageOptions) -> DownDevice:
    device = state.device
    return DownDevice(device.id, device.kind.value, device.name, state.down_reason(), options.local(state.last_change))


def _summary(roster: Roster, school: School) -> SchoolSummary:
    """`Roster.school_summary` from the tallies State keeps: only the down devices are looked for (10,000 → 2 ms)."""
    counts = {kind: KindCount(*tally) for kind, tally in roster.tally(school.id).items()}
    down = tuple(state for state in roster.school_states(school.id) if state.health is Health.DOWN)
    return SchoolSummary(school, counts, down)


def school_row(summary: SchoolSummary, link: SchoolLink | None, options: PageOptions) -> SchoolRow:
    """One school's roll-up as the city page shows it."""
    school = summary.school
    return SchoolRow(
        id=school.id,
        name=school.name,
        district=school.district,
        link=_link_health(summary),
        speed=speed_view(link, school.contract.total_mbps),
        cameras=summary.count(DeviceKind.CAMERA),
        nvrs=summary.count(DeviceKind.NVR),
        panels=summary.count(DeviceKind.ALARM_PANEL),
        down=tuple(_down(state, options) for state in summary.down_devices[:DOWN_SHOWN_PER_SCHOOL]),
        down_count=len(summary.down_devices),
        grafana=options.grafana_link(school.id),
        search=f"{school.id} {school.name} {school.district}".lower(),
    )


def city_view(
    sources: StatusSources, options: PageOptions, *, query: str = "", problems_only: bool = False, now: float
) -> CityView:
    """The city page's content: schools grouped by district (by name), in each the ones with problems first."""
    roster = sources.state.roster
    links = sources.links.schools
    by_district: dict[str, list[SchoolRow]] = {}
    for school in roster.inventory.schools:
        row = school_row(_summary(roster, school), links.get(school.id), options)
        by_district.setdefault(row.district, []).append(row)
    districts = tuple(
        District(name, tuple(sorted(rows, key=lambda r: (not r.problem, -r.down_count, r.id))))
        for name, rows in sorted(by_district.items())
    )
    return CityView(
        generated=options.local(now),
        zone=options.zone_label(now),
        districts=districts,
        schools=len(roster.inventory.schools),
        devices=roster.count_by_health(),
        below_contract=sum(
            1 for s in roster.inventory.schools if (link := links.get(s.id)) and link.compliance is Compliance.BELOW
        ),
        problems=sum(d.problems for d in districts),
        query=query.strip(),
        problems_only=problems_only,
        shard=str(sources.instance.shard),
        version=__version__,
        grafana=options.grafana_url is not None,
    )


@dataclass(frozen=True, slots=True)
class ProbeView:
    """One probe of a device on the school page."""

    name: str
    health: Health
    reason: str
    detail: str
    rtt_ms: str
    findings: tuple[str, ...]
    """What a typed finding adds: each ISAPI/AX PRO problem with its step, the device's model and firmware."""
    health_cell: Cell = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "health_cell", _HEALTH_CELLS[self.health])

    last_run: str
    last_change: str
    flaps: int


@dataclass(frozen=True, slots=True)
class DeviceView:
    """One device on the school page, with every probe."""

    id: str
    kind: str
    name: str
    host: str
    health: Health
    reason: str
    last_change: str
    flaps: int
    recorded_by: str
    """``nvr-1 channel 3`` for a camera an NVR records."""
    probes: tuple[ProbeView, ...]
    health_cell: Cell = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "health_cell", _HEALTH_CELLS[self.health])


@dataclass(frozen=True, slots=True)
class SegmentRow:
    """One router interface role (``wan`` or a segment) as the last SNMP interval saw it."""

    role: str
    contract_mbps: str
    in_mbps: str
    out_mbps: str
    utilisation: str
    saturated: bool


@dataclass(frozen=True, slots=True)
class SchoolView:
    """Everything a school's page shows."""

    generated: str
    zone: str
    id: str
    name: str
    district: str
    row: SchoolRow
    contract: str
    speed_tests: tuple[tuple[str, str, str], ...]
    """(direction, result, reason) of the latest test per direction."""
    last_success: str
    snmp: str
    segments: tuple[SegmentRow, ...]
    devices: tuple[DeviceView, ...]
    refresh_seconds: int = REFRESH_SECONDS


def _mbps(bps: float | None) -> str:
    return "" if bps is None else f"{bps / 1e6:.1f}"


def finding_lines(finding: Finding | None) -> tuple[str, ...]:
    """An ISAPI health check's or AX PRO read's problems (``storage: disk_fault — disk 1 error``) and identity."""
    if not isinstance(finding, IsapiHealth | AxProStatus):
        return ()
    lines = [f"{p.step}: {p.reason} — {p.detail}".rstrip(" —") for p in finding.problems]
    if isinstance(finding, IsapiHealth):
        if (identity := finding.identity) is not None:
            model = {"model": identity.model, "firmware": identity.firmware}
            lines.append(_("model %(model)s, firmware %(firmware)s") % model)
        if finding.clock_drift is not None:
            lines.append(_("clock off by %(seconds).1f s") % {"seconds": finding.clock_drift})
        if finding.unsupported:
            lines.append(_("not offered: %s") % ", ".join(finding.unsupported))
    return tuple(lines)


def _device_view(device: Device, state: DeviceState, options: PageOptions) -> DeviceView:
    probes = []
    for name, probe in list(state.probes.items()):
        result = probe.last_result
        probes.append(
            ProbeView(
                name=name,
                health=probe.health,
                reason=result.reason if result else "",
                detail=result.detail if result else "",
                rtt_ms=f"{result.rtt * 1000:.1f}" if result and result.rtt is not None else "",
                findings=finding_lines(result.finding if result else None),
                last_run=options.local(probe.last_run),
                last_change=options.local(probe.last_change),
                flaps=probe.flaps,
            )
        )
    return DeviceView(
        id=device.id,
        kind=device.kind.value,
        name=device.name,
        host=device.host,
        health=state.health,
        reason=state.down_reason(),
        last_change=options.local(state.last_change),
        flaps=state.flaps,
        recorded_by=_("%(nvr)s channel %(channel)d") % {"nvr": device.nvr[0], "channel": device.nvr[1]}
        if device.nvr
        else "",
        probes=tuple(probes),
    )


def _speed_tests(link: SchoolLink | None) -> tuple[tuple[str, str, str], ...]:
    if link is None:
        return ()
    return tuple(
        (
            direction.value,
            f"{result.mbps:.1f} Mbps" if result.ok else _("failed"),
            "" if result.ok else f"{result.reason}: {result.detail}".strip(": "),
        )
        for direction, result in sorted(list(link.last.items()))
    )


def _segments(school: School, link: SchoolLink | None) -> tuple[SegmentRow, ...]:
    if link is None:
        return ()
    contract = dict(school.contract.segments_mbps)
    rows = []
    for role, view in sorted(list(link.segments.items())):  # an SNMP poll may drop a role meanwhile
        allocated = (
            school.contract.total_mbps
            if role == "wan"
            else next((mbps for segment, mbps in contract.items() if segment.value == role), None)
        )
        rows.append(
            SegmentRow(
                role=role,
                contract_mbps="" if allocated is None else f"{allocated:g}",
                in_mbps=_mbps(view.rate.in_bps if view.rate else None),
                out_mbps=_mbps(view.rate.out_bps if view.rate else None),
                utilisation="" if view.utilisation is None else f"{view.utilisation:.0%}",
                saturated=view.saturated,
            )
        )
    return tuple(rows)


def school_view(sources: StatusSources, options: PageOptions, school_id: str, *, now: float) -> SchoolView | None:
    """A school's page content: every device with every probe; None for an id this instance does not watch."""
    roster: Roster = sources.state.roster
    school = roster.inventory.schools_by_id.get(school_id)
    if school is None:
        return None
    link = sources.links.schools.get(school.id)
    if link is None or link.router_id is None:
        snmp = _("not polled")
    elif link.snmp_ok is None:
        snmp = _("not polled yet")
    else:
        snmp = _("ok") if link.snmp_ok else f"{link.snmp_reason}: {link.snmp_detail}".strip(": ")
    segments = ", ".join(f"{s.value} {mbps:g}" for s, mbps in school.contract.segments_mbps)
    return SchoolView(
        generated=options.local(now),
        zone=options.zone_label(now),
        id=school.id,
        name=school.name,
        district=school.district,
        row=school_row(roster.school_summary(school), link, options),
        contract=f"{school.contract.total_mbps:g} Mbps" + (f" ({segments})" if segments else ""),
        speed_tests=_speed_tests(link),
        last_success=options.local(link.last_success_at if link else None),
        snmp=snmp,
        segments=_segments(school, link),
        devices=tuple(_device_view(d, roster.devices[d.id], options) for d in school.devices),
    )


def render_city_page(
    sources: StatusSources, *, query: str = "", problems_only: bool = False, now: float | None = None
) -> str:
    """The city page: schools by district at a glance, with the filter box and "problems only"."""
    options = PageOptions.of(sources.settings())
    at = time.time() if now is None else now
    view = city_view(sources, options, query=query, problems_only=problems_only, now=at)
    return environment().get_template("status/city.html").render(view=view)


def render_school_page(sources: StatusSources, school_id: str, *, now: float | None = None) -> str | None:
    """A school's page (every device, probe and finding); None for an unknown school."""
    options = PageOptions.of(sources.settings())
    view = school_view(sources, options, school_id, now=time.time() if now is None else now)
    if view is None:
        return None
    return environment().get_template("status/school.html").render(view=view)
