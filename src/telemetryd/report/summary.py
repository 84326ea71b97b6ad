"""The report's first page (issue 14): how the city and each district did, as plain figures.

Pure: a `Report` (and optionally the previous month's) in, frozen dataclasses out. Nothing
here formats: ratios are 0-1, durations are seconds, names are as the inventory writes
them, reasons are text keys. Templates in any language turn them into words.

Definitions (what "met the contract" means on this page):

* **Monitored**: a school where anything was measured in the period (figures.py
  ``SchoolReport.has_data``: link or device time, a speed test, saturation samples). A
  school without is *not monitored*: listed by name, judged on nothing. A monitored
  school whose link had no monitored time (e.g. only speed tests) is *not judged* on
  link availability.
* **Link availability met**: ``link.ratio >= link_target``. The inventory and settings
  carry no availability target, so `LINK_AVAILABILITY_TARGET` is the 99 % the HTML
  report already marks green (render.py ``AVAILABILITY_MARKS[0]``); it is a keyword
  argument so a contract's figure can be passed in.
* **Speed met**: each round is already judged against ``below_contract_ratio`` ×
  contract in figures.py (confirmation re-tests included). A school's speed compliance
  is its *worse* direction's compliance (a direction without judged rounds is left
  out); met when ``>= speed_target``, default `SPEED_COMPLIANCE_TARGET` = the 95 %
  render.py marks green (``COMPLIANCE_MARKS[0]``). No judged round at all: *not judged*.
* **Outage time attributable to the link**: Σ counted link-down seconds (maintenance,
  monitoring gaps and unknown time already removed by figures.py).
* **Device availability** (camera, NVR, alarm panel) over an area: Σ up / Σ monitored
  device-seconds of every school's devices of that kind (a school with many cameras
  weighs more, as the city pays per device).
* **Area link availability**: Σ up / Σ monitored link-seconds of its schools.
* **Worst schools** (at most `WORST_COUNT`): first the schools that missed the link
  target, lowest link availability first (ties: more counted outage time, then id);
  then those that met it but missed the speed target, lowest speed compliance first
  (ties: id). A dead link is the harsher failure: no cameras, no alarm path, no
  lessons, and speed is only measured while the link is up. Schools that met both
  are never listed, so the list can be shorter than ten.
* **Change against the previous month**: the same area figures of the previous month's
  report, this month minus that one; None when there is no previous report, the area
  did not exist then, or either side has no figure.
* **Excluded time**: maintenance windows and monitoring gaps as applied to the
  schools (figures.py ``Excluded``), counted as distinct windows, wall-clock seconds
  of their union inside the period, school-seconds, and schools touched.
* **Chain head**: the head link and its digest at generation, how to check it again,
  and a QR code (SVG) of `chain_payload` so a printed copy can be checked.

The command builds this month's report and, for the deltas, the previous month's for
the same schools: `previous_period` gives that period.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import segno

from telemetryd.report.figures import (
    Availability,
    Excluded,
    Period,
    Report,
    SchoolReport,
    by_district,
    measure,
    merge_intervals,
    month_period,
)

LINK_AVAILABILITY_TARGET = 0.99
SPEED_COMPLIANCE_TARGET = 0.95
WORST_COUNT = 10
DEVICE_KINDS = ("camera", "nvr", "alarm_panel")

REASON_LINK = "link_availability"
REASON_SPEED = "speed_compliance"


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class SchoolRef:
    """A school as the page names it."""

    id: str
    name: str
    district: str


@dataclass(frozen=True, slots=True)
class DeviceFigure:
    """Availability of one kind of device over an area."""

    kind: str
    devices: int
    availability: float | None
    """Σ up / Σ monitored device-seconds; None when nothing of the kind was monitored."""
    down_seconds: float


@dataclass(frozen=True, slots=True)
class AreaDelta:
    """This month minus the previous month, for one area; a None field had no figure on one side."""

    previous_month: str
    schools: int
    monitored: int
    link_met: int
    link_missed: int
    speed_met: int
    speed_missed: int
    link_availability: float | None
    """Difference of ratios (0.003 = +0.3 percentage points)."""
    link_outage_seconds: float
    camera_availability: float | None
    nvr_availability: float | None
    alarm_panel_availability: float | None


@dataclass(frozen=True, slots=True)
class AreaSummary:
    """The city or one district."""

    district: str | None
    """None for the city; the district name as written ("" when the inventory gives none)."""
    schools: int
    monitored: int
    not_monitored: tuple[SchoolRef, ...]
    link_met: tuple[SchoolRef, ...]
    link_missed: tuple[SchoolRef, ...]
    link_not_judged: tuple[SchoolRef, ...]
    """Monitored or not, no monitored link time."""
    speed_met: tuple[SchoolRef, ...]
    speed_missed: tuple[SchoolRef, ...]
    speed_not_judged: tuple[SchoolRef, ...]
    """Monitored or not, no judged speed round (no test, or no known contract)."""
    link_availability: float | None
    link_outages: int
    """Link outages with counted time."""
    link_outage_seconds: float
    devices: tuple[DeviceFigure, ...]
    """One per `DEVICE_KINDS`, in that order."""
    delta: AreaDelta | None = None

    @property
    def link_outage_hours(self) -> float:
        """The counted link-down time in hours."""
        return self.link_outage_seconds / 3600

    def device(self, kind: str) -> DeviceFigure:
        """The figure of one kind of device."""
        return next(d for d in self.devices if d.kind == kind)


@dataclass(frozen=True, slots=True)
class WorstSchool:
    """One of the worst schools and the figure that put it there."""

    rank: int
    """1 = worst."""
    school: SchoolRef
    reason: str
    """`REASON_LINK` or `REASON_SPEED`: which figure ranks it."""
    value: float
    """That figure (a ratio)."""
    target: float
    """The target it missed."""
    link_availability: float | None
    speed_compliance: float | None
    speed_direction: str | None
    """The worse direction (``download``/``upload``) behind `speed_compliance`."""
    link_outages: int
    link_outage_seconds: float
    previous_value: float | None = None
    """The same figure in the previous month; None without one."""


@dataclass(frozen=True, slots=True)
class ExcludedSummary:
    """Maintenance and monitoring gaps of the period, for one line of the page."""

    period_seconds: float
    maintenance_windows: int
    maintenance_seconds: float
    """Wall-clock seconds of the windows' union inside the period."""
    maintenance_school_seconds: float
    maintenance_schools: int
    gaps: int
    gap_seconds: float
    gap_school_seconds: float
    gap_schools: int


@dataclass(frozen=True, slots=True)
class ChainSummary:
    """The hash-chain head at generation and how to check it."""

    head_seq: int | None
    head_hex: str
    sealed_at: float | None
    ok: bool
    links_verified: int
    problems: int
    first_seq: int | None
    last_seq: int | None
    payload: str
    """What the QR code holds (`chain_payload`); "" for an empty chain."""
    verify_command: str
    """Re-verifies every link holding the month's rows; exit 3 when one does not match."""
    verify_sql: str
    """Shows whether the printed head is still the head of its link ("" for an empty chain)."""
    qr_svg: str | None
    """Inline SVG of `payload`; None for an empty chain."""


@dataclass(frozen=True, slots=True)
class CitySummary:
    """Everything the first page shows."""

    month: str
    period_start: float
    period_end: float
    complete: bool
    utc_offset_hours: float
    generated_at: float
    link_target: float
    speed_target: float
    city: AreaSummary
    districts: tuple[AreaSummary, ...]
    """Sorted by name (code points of the case-folded name; "" last)."""
    worst: tuple[WorstSchool, ...]
    excluded: ExcludedSummary
    chain: ChainSummary | None
    previous_month: str | None
    """The month the deltas compare with (``YYYY-MM``); None without a previous report."""
    previous_period_start: float | None
    """Its first instant (for a localised month name); None without a previous report."""


# ----------------------------------------------------------------------------- per school


def _ref(s: SchoolReport) -> SchoolRef:
    return SchoolRef(s.school.id, s.school.name, s.school.district)


def speed_compliance(s: SchoolReport) -> tuple[float | None, str | None]:
    """The school's worse direction's compliance and that direction; (None, None) without judged rounds."""
    judged = [(d.compliance, str(d.direction)) for d in (s.download, s.upload) if d.compliance is not None]
    if not judged:
        return None, None
    ratio, direction = min(judged, key=lambda j: j[0] or 0.0)  # min keeps the first (download) on a tie
    return ratio, direction


def _monitored(s: SchoolReport) -> bool:
    return s.has_data


def _link_met(s: SchoolReport, target: float) -> bool | None:
    ratio = s.link.ratio
    return None if ratio is None else ratio >= target


def _speed_met(s: SchoolReport, target: float) -> bool | None:
    ratio, _ = speed_compliance(s)
    return None if ratio is None else ratio >= target


# ----------------------------------------------------------------------------- areas


def _area(
    district: str | None, schools: Sequence[SchoolReport], link_target: float, speed_target: float
) -> AreaSummary:
    link = sum((s.link for s in schools), Availability())
    devices = []
    for kind in DEVICE_KINDS:
        total = sum((s.kind(kind).availability for s in schools), Availability())
        devices.append(DeviceFigure(kind, sum(s.kind(kind).devices for s in schools), total.ratio, total.down_seconds))
    link_verdicts = [(s, _link_met(s, link_target)) for s in schools]
    speed_verdicts = [(s, _speed_met(s, speed_target)) for s in schools]
    return AreaSummary(
        district=district,
        schools=len(schools),
        monitored=sum(_monitored(s) for s in schools),
        not_monitored=tuple(_ref(s) for s in schools if not _monitored(s)),
        link_met=tuple(_ref(s) for s, met in link_verdicts if met is True),
        link_missed=tuple(_ref(s) for s, met in link_verdicts if met is False),
        link_not_judged=tuple(_ref(s) for s, met in link_verdicts if met is None),
        speed_met=tuple(_ref(s) for s, met in speed_verdicts if met is True),
        speed_missed=tuple(_ref(s) for s, met in speed_verdicts if met is False),
        speed_not_judged=tuple(_ref(s) for s, met in speed_verdicts if met is None),
        link_availability=link.ratio,
        link_outages=sum(len(s.counted_outages) for s in schools),
        link_outage_seconds=sum(s.outage_seconds for s in schools),
        devices=tuple(devices),
    )


def _difference(now: float | None, before: float | None) -> float | None:
    return None if now is None or before is None else now - before


def _delta(now: AreaSummary, before: AreaSummary, previous_month: str) -> AreaDelta:
    return AreaDelta(
        previous_month=previous_month,
        schools=now.schools - before.schools,
        monitored=now.monitored - before.monitored,
        link_met=len(now.link_met) - len(before.link_met),
        link_missed=len(now.link_missed) - len(before.link_missed),
        speed_met=len(now.speed_met) - len(before.speed_met),
        speed_missed=len(now.speed_missed) - len(before.speed_missed),
        link_availability=_difference(now.link_availability, before.link_availability),
        link_outage_seconds=now.link_outage_seconds - before.link_outage_seconds,
        camera_availability=_difference(now.device("camera").availability, before.device("camera").availability),
        nvr_availability=_difference(now.device("nvr").availability, before.device("nvr").availability),
        alarm_panel_availability=_difference(
            now.device("alarm_panel").availability, before.device("alarm_panel").availability
        ),
    )


def _areas(report: Report, link_target: float, speed_target: float) -> tuple[AreaSummary, dict[str, AreaSummary]]:
    city = _area(None, report.schools, link_target, speed_target)
    districts = {name: _area(name, schools, link_target, speed_target) for name, schools in by_district(report.schools)}
    return city, districts


# ----------------------------------------------------------------------------- worst schools


def worst_schools(
    report: Report,
    *,
    link_target: float = LINK_AVAILABILITY_TARGET,
    speed_target: float = SPEED_COMPLIANCE_TARGET,
    count: int = WORST_COUNT,
    previous: Report | None = None,
) -> tuple[WorstSchool, ...]:
    """The schools that missed the contract, worst first (see the module docstring for the order)."""
    before = {s.school.id: s for s in previous.schools} if previous is not None else {}
    link_missed = [s for s in report.schools if _link_met(s, link_target) is False]
    link_missed.sort(key=lambda s: (s.link.ratio, -s.outage_seconds, s.school.id))
    below_link = {s.school.id for s in link_missed}
    speed_missed = [
        s for s in report.schools if _link_met(s, link_target) is not False and _speed_met(s, speed_target) is False
    ]
    speed_missed.sort(key=lambda s: (speed_compliance(s)[0], s.school.id))
    ranked: list[WorstSchool] = []
    for s in [*link_missed, *speed_missed][:count]:
        compliance, direction = speed_compliance(s)
        by_link = s.school.id in below_link
        earlier = before.get(s.school.id)
        if earlier is None:
            previous_value = None
        elif by_link:
            previous_value = earlier.link.ratio
        else:
            previous_value = speed_compliance(earlier)[0]
        value = s.link.ratio if by_link else compliance
        assert value is not None  # both lists hold only schools judged on their figure
        ranked.append(
            WorstSchool(
                rank=len(ranked) + 1,
                school=_ref(s),
                reason=REASON_LINK if by_link else REASON_SPEED,
                value=value,
                target=link_target if by_link else speed_target,
                link_availability=s.link.ratio,
                speed_compliance=compliance,
                speed_direction=direction,
                link_outages=len(s.counted_outages),
                link_outage_seconds=s.outage_seconds,
                previous_value=previous_value,
            )
        )
    return tuple(ranked)


# ----------------------------------------------------------------------------- excluded time


def _excluded_part(listed: Iterable[tuple[str, Excluded]], period: Period) -> tuple[int, float, float, int]:
    """(distinct windows, wall-clock seconds of their union, school-seconds, schools) inside the period."""
    windows: set[tuple[float, float, str, str]] = set()
    schools: set[str] = set()
    school_seconds = 0.0
    for school_id, e in listed:
        windows.add((e.start, e.end, e.reason, e.shard))
        schools.add(school_id)
        school_seconds += e.seconds_in_period
    union = merge_intervals((w[0], w[1]) for w in windows)
    wall = sum(measure(w, (period.start, period.end)) for w in union)
    return len(windows), wall, school_seconds, len(schools)


def excluded_summary(report: Report) -> ExcludedSummary:
    """Maintenance and monitoring gaps of the report in one summary.

    School-seconds come from the listed windows (``Excluded.seconds_in_period``); they
    can exceed the school's `maintenance_seconds` when two windows of one school overlap.
    """
    maintenance = _excluded_part(((s.school.id, e) for s in report.schools for e in s.maintenance), report.period)
    gaps = _excluded_part(((s.school.id, e) for s in report.schools for e in s.gaps), report.period)
    return ExcludedSummary(report.period.seconds, *maintenance, *gaps)


# ----------------------------------------------------------------------------- chain


def chain_payload(head_seq: int, head_hex: str) -> str:
    """The text of the chain QR code: ``telemetryd-chain:<link>:<head hex>``."""
    return f"telemetryd-chain:{head_seq}:{head_hex}"


def chain_qr_svg(payload: str) -> str:
    """An inline SVG QR code of `payload`: error correction M, a 4-module quiet zone, one user unit per
    module and a viewBox without width/height, so CSS sizes it without clipping; same text, same SVG."""
    return segno.make(payload, error="m", micro=False, boost_error=False).svg_inline(
        scale=1, border=4, omitsize=True, svgclass="chain-qr", title=payload
    )


def _chain(report: Report) -> ChainSummary | None:
    chain = report.chain
    if chain is None:
        return None
    payload = verify_sql = ""
    if chain.head_seq is not None and chain.head_hex:
        payload = chain_payload(chain.head_seq, chain.head_hex)
        verify_sql = f"SELECT encode(head, 'hex') = '{chain.head_hex}' FROM history_chain WHERE seq = {chain.head_seq};"
    return ChainSummary(
        head_seq=chain.head_seq,
        head_hex=chain.head_hex,
        sealed_at=chain.sealed_at,
        ok=chain.ok,
        links_verified=chain.links_verified,
        problems=len(chain.problems),
        first_seq=chain.first_seq,
        last_seq=chain.last_seq,
        payload=payload,
        verify_command=f"telemetryd report sla --month {report.period.month} --format json -o /dev/null",
        verify_sql=verify_sql,
        qr_svg=chain_qr_svg(payload) if payload else None,
    )


# ----------------------------------------------------------------------------- the page


def previous_period(period: Period) -> Period:
    """The whole month before `period` (same local offset): the report the deltas compare with."""
    return month_period("previous", period.utc_offset_hours, period.start)


def summarize(
    report: Report,
    previous: Report | None = None,
    *,
    link_target: float = LINK_AVAILABILITY_TARGET,
    speed_target: float = SPEED_COMPLIANCE_TARGET,
) -> CitySummary:
    """The first page of `report`; with `previous` (the month before, same schools) the changes too."""
    city, districts = _areas(report, link_target, speed_target)
    if previous is not None:
        month = previous.period.month
        city_before, districts_before = _areas(previous, link_target, speed_target)
        city = replace(city, delta=_delta(city, city_before, month))
        districts = {
            name: replace(area, delta=_delta(area, districts_before[name], month)) if name in districts_before else area
            for name, area in districts.items()
        }
    period = report.period
    return CitySummary(
        month=period.month,
        period_start=period.start,
        period_end=period.end,
        complete=period.complete,
        utc_offset_hours=period.utc_offset_hours,
        generated_at=report.generated_at,
        link_target=link_target,
        speed_target=speed_target,
        city=city,
        districts=tuple(districts.values()),
        worst=worst_schools(report, link_target=link_target, speed_target=speed_target, previous=previous),
        excluded=excluded_summary(report),
        chain=_chain(report),
        previous_month=previous.period.month if previous is not None else None,
        previous_period_start=previous.period.start if previous is not None else None,
    )
