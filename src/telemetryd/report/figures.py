"""The monthly SLA report (issue 6): the month's history rows in, per-school figures out.

Pure: no I/O and no clock; `now` and every row come in as arguments. Times are Unix
seconds (float) throughout; the renderers turn them into local ISO 8601.

Semantics (what the contractor is judged on):

* **Period.** A month is [first day 00:00 local, first day of the next month 00:00
  local), local = UTC + ``utc_offset_hours`` (a fixed offset: Kazakhstan has no DST).
  A month that is not over ends at `now`; a month that has not begun is an error.
* **Device state.** Device-level state changes (``probe IS NULL``) set a device to their
  ``new`` value. The state at month start is the ``new`` of the last change before it,
  so an outage that began in the previous month counts from the first second. Before a
  device's first known change it is unknown. ``up`` and ``down`` are monitored time;
  ``unknown`` is not.
* **Monitoring gaps.** A gap applies to every school for shard ``""`` and to the schools
  with ``shard_of(school, N) == k`` for shard ``"k/N"`` (an unreadable shard applies to
  every school). Inside a gap every device of those schools is unknown, and after it
  each stays unknown until its next change (the daemon restarted with every device
  unknown; a change recorded inside the gap is overridden). Gaps are never uptime.
* **Maintenance windows** (settings ``history.maintenance``) remove their time from both
  monitored and down time of the listed schools (all when the list is empty) but leave
  the state alone: they neither reset it nor split outages.
* **Removed devices** (``devices.removed_at``) are unknown from their removal on.
* **Availability** per kind (camera, nvr, alarm_panel) = Σ up / Σ (up + down) over the
  school's devices of that kind, both counted inside the period and outside gaps and
  maintenance; None when nothing was monitored.
* **Link.** With router(s): up while any router is up, down while at least one router is
  known and none is up, unknown otherwise. Without a router the same rule runs over
  every device of the school (the school is reachable when anything answers). Link
  availability is up / (up + down) on the same exclusions.
* **Outages** are maximal link-down intervals overlapping the period. A gap splits them
  (the state is unknown there), maintenance does not. ``start``/``end`` are the real
  times, possibly outside the month: the history is read from `LOOKBACK_SECONDS` before
  the month (plus each device's last change before that) to `Period.horizon`. ``end``
  is None when the link was still down at the horizon (ongoing). ``counted_seconds`` is
  the part inside the period minus maintenance. The `outages` figure counts only
  outages with counted time (an outage wholly inside maintenance is listed, not
  counted). Device outages (cameras, NVRs, alarm panels) follow the same rules per
  device.
* **Speed tests** in the period: failed tests (``ok`` false) are only counted. Per
  direction, n / min / median Mbps are over every successful test (confirmations
  included). Each successful scheduled test (``confirmation`` false) is a *round*; it is
  compliant when ``mbps >= floor_ratio × contract_mbps`` from the row, each falling back
  when NULL to the school's contract and the settings' ``below_contract_ratio``. When a
  scheduled result is low and the school's next test in that direction is a successful
  confirmation, the confirmation decides the round (a transient low the re-test did not
  confirm is not held against the contractor; a failed re-test confirms nothing, so the
  low stands). The next test may fall up to `CONFIRMATION_LOOKAHEAD_SECONDS` after the
  period. A round with no known contract is not judged. Compliance = compliant rounds /
  rounds; None without rounds.
* **Saturation** per segment (``wan`` shown separately): per 5-minute bucket the larger
  of the download and upload saturated seconds, summed over the period's buckets. The
  school's ``saturated_seconds`` is the sum over the non-``wan`` segments.
* **Daily link availability** uses local days, same exclusions.
"""

from __future__ import annotations

import calendar
import statistics
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise

from telemetryd.config.loader import shard_of
from telemetryd.model import DeviceKind, Direction, Health

DAY = 86_400.0
LOOKBACK_SECONDS = 31 * DAY
"""History before the month read to place outages that began earlier (their real start)."""
LOOKAHEAD_SECONDS = 31 * DAY
"""History after the month read to find when an outage running at month end ended."""
CONFIRMATION_LOOKAHEAD_SECONDS = DAY
"""How far past the period the confirmation of a last-minute low test is looked for."""
REPORTED_KINDS = (DeviceKind.CAMERA, DeviceKind.NVR, DeviceKind.ALARM_PANEL)
WAN = "wan"

UP, DOWN, UNKNOWN = Health.UP.value, Health.DOWN.value, Health.UNKNOWN.value


# ----------------------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class Period:
    """The month a report covers, in Unix seconds, and the history window read around it."""

    month: str
    """``YYYY-MM``."""
    start: float
    end: float
    """Exclusive; `now` while the month is not over."""
    nominal_end: float
    """First instant of the next month (local)."""
    utc_offset_hours: float

    @property
    def complete(self) -> bool:
        """True when the whole month has passed."""
        return self.end >= self.nominal_end

    @property
    def seconds(self) -> float:
        """Length of the period."""
        return self.end - self.start

    @property
    def context_start(self) -> float:
        """From when device state changes are read (each device's last earlier change too)."""
        return self.start - LOOKBACK_SECONDS

    @property
    def horizon(self) -> float:
        """Up to when state changes are read; an outage still down here is ongoing."""
        return self.nominal_end + LOOKAHEAD_SECONDS if self.complete else self.end

    @property
    def tz(self) -> timezone:
        """The local fixed offset."""
        return timezone(timedelta(hours=self.utc_offset_hours))

    @property
    def first_day(self) -> datetime:
        """Midnight local of the month's first day."""
        return datetime.fromtimestamp(self.start, self.tz)


def month_period(month: str, utc_offset_hours: float, now: float) -> Period:
    """The period of ``YYYY-MM`` (or ``current``/``previous``) in local time; ends at `now` while it runs.

    Raises ValueError for a malformed month or one that has not begun.
    """
    tz = timezone(timedelta(hours=utc_offset_hours))
    if month in {"current", "previous"}:
        today = datetime.fromtimestamp(now, tz)
        if month == "previous":
            today = today.replace(day=1) - timedelta(days=1)
        month = f"{today.year:04d}-{today.month:02d}"
    try:
        year_text, month_text = month.split("-")
        year, number = int(year_text), int(month_text)
        if len(year_text) != 4 or len(month_text) != 2 or not 1 <= number <= 12:
            raise ValueError
    except ValueError:
        raise ValueError(f"--month {month!r}: expected YYYY-MM (e.g. 2026-02), current or previous") from None
    start = datetime(year, number, 1, tzinfo=tz).timestamp()
    following = (year + 1, 1) if number == 12 else (year, number + 1)
    nominal_end = datetime(*following, 1, tzinfo=tz).timestamp()
    if now <= start:
        raise ValueError(f"{month} has not begun yet (local time UTC{utc_offset_hours:+g})")
    return Period(f"{year:04d}-{number:02d}", start, min(nominal_end, now), nominal_end, utc_offset_hours)


@dataclass(frozen=True, slots=True)
class SchoolRow:
    """A school's identity and contract (schools table, else the config inventory)."""

    id: str
    name: str = ""
    district: str = ""
    contract_mbps: float | None = None


@dataclass(frozen=True, slots=True)
class DeviceRow:
    """A device of a school (devices table, or seen in state_changes)."""

    id: str
    school_id: str
    kind: str
    removed_at: float | None = None


@dataclass(frozen=True, slots=True)
class ChangeRow:
    """A device-level state change: from `at` on the device is `new`."""

    at: float
    device_id: str
    new: str


@dataclass(frozen=True, slots=True)
class GapRow:
    """A monitoring gap of one shard (``k/N``) or of every school (``""``)."""

    started: float
    ended: float
    shard: str = ""
    reason: str = ""

    def applies_to(self, school_id: str) -> bool:
        """Whether this gap's shard holds the school."""
        if not self.shard:
            return True
        index, sep, count = self.shard.partition("/")
        if not sep or not index.strip().isdigit() or not count.strip().isdigit() or int(count) < 1:
            return True  # unreadable: treat as every school rather than count unwatched time as uptime
        return shard_of(school_id, int(count)) == int(index)


@dataclass(frozen=True, slots=True)
class MaintenanceRow:
    """An agreed maintenance window (settings); empty `schools` means every school."""

    start: float
    end: float
    schools: tuple[str, ...] = ()
    reason: str = ""

    def applies_to(self, school_id: str) -> bool:
        """Whether the window covers the school."""
        return not self.schools or school_id in self.schools


@dataclass(frozen=True, slots=True)
class SpeedTestRow:
    """One direction of one speed test."""

    at: float
    school_id: str
    direction: str
    mbps: float
    ok: bool
    confirmation: bool = False
    contract_mbps: float | None = None
    floor_ratio: float | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class LinkSampleRow:
    """The saturation part of one link sample (one 5-minute bucket, one segment, one direction)."""

    at: float
    school_id: str
    segment: str
    direction: str
    saturated_seconds: float


@dataclass(frozen=True, slots=True)
class SegmentSaturation:
    """Saturated seconds of one school segment over the period (per bucket the busier direction)."""

    school_id: str
    segment: str
    saturated_seconds: float
    buckets: int


def saturation_from_samples(samples: Iterable[LinkSampleRow], period: Period) -> list[SegmentSaturation]:
    """Per (school, segment): Σ over the period's buckets of max(download, upload) saturated seconds.

    The database computes the same with one GROUP BY (report_db); this is the rule in Python.
    """
    per_bucket: dict[tuple[str, str, float], float] = {}
    for s in samples:
        if period.start <= s.at < period.end:
            key = (s.school_id, s.segment, s.at)
            per_bucket[key] = max(per_bucket.get(key, 0.0), s.saturated_seconds)
    totals: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for (school_id, segment, _at), seconds in per_bucket.items():
        totals[school_id, segment][0] += seconds
        totals[school_id, segment][1] += 1
    return [SegmentSaturation(k[0], k[1], v[0], int(v[1])) for k, v in sorted(totals.items())]


@dataclass(frozen=True, slots=True)
class ChainStatus:
    """The history hash chain when the report was made, and the verification of the month's links."""

    head_seq: int | None
    head_hex: str
    sealed_at: float | None
    first_seq: int | None
    last_seq: int | None
    links_verified: int
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """No problem found."""
        return not self.problems

    @property
    def summary(self) -> str:
        """One line: ``N links verified, OK`` or the problem count."""
        if self.ok:
            return f"{self.links_verified} links verified, OK"
        return f"{self.links_verified} links verified, {len(self.problems)} problem(s)"


@dataclass(frozen=True, slots=True)
class ReportInput:
    """Everything the report needs, as read from the database and the settings."""

    period: Period
    schools: Sequence[SchoolRow]
    """The schools to report on, in output order."""
    devices: Sequence[DeviceRow]
    changes: Sequence[ChangeRow]
    """Device-level changes from each device's last change before `Period.context_start` to the horizon."""
    gaps: Sequence[GapRow]
    maintenance: Sequence[MaintenanceRow]
    speedtests: Sequence[SpeedTestRow]
    """The period's tests plus `CONFIRMATION_LOOKAHEAD_SECONDS` after it."""
    saturation: Sequence[SegmentSaturation]
    below_contract_ratio: float = 0.9
    chain: ChainStatus | None = None


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Outage:
    """A maximal down interval (of the link or of one device)."""

    start: float
    end: float | None
    """None: still down at the horizon (ongoing)."""
    counted_seconds: float
    """Inside the period, maintenance removed."""
    device_id: str = ""
    kind: str = ""

    @property
    def duration_seconds(self) -> float | None:
        """end - start, None while ongoing."""
        return None if self.end is None else self.end - self.start


@dataclass(frozen=True, slots=True)
class Availability:
    """Up and monitored seconds of a link, a device or a kind of device."""

    up_seconds: float = 0.0
    down_seconds: float = 0.0

    @property
    def monitored_seconds(self) -> float:
        """Up + down (gaps, unknown and maintenance already left out)."""
        return self.up_seconds + self.down_seconds

    @property
    def ratio(self) -> float | None:
        """Up / monitored, None when nothing was monitored."""
        monitored = self.monitored_seconds
        return self.up_seconds / monitored if monitored > 0 else None

    def __add__(self, other: Availability) -> Availability:
        return Availability(self.up_seconds + other.up_seconds, self.down_seconds + other.down_seconds)


@dataclass(frozen=True, slots=True)
class KindAvailability:
    """Availability of one kind of device at a school."""

    kind: str
    devices: int
    availability: Availability


@dataclass(frozen=True, slots=True)
class DayAvailability:
    """The link on one local day."""

    start: float
    availability: Availability


@dataclass(frozen=True, slots=True)
class SpeedTestPoint:
    """One test result as judged (for the listing and the chart)."""

    at: float
    direction: str
    mbps: float
    ok: bool
    confirmation: bool
    floor_mbps: float | None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class DirectionSummary:
    """Speed tests of one direction over the period."""

    direction: str
    tests: int
    """Successful tests (scheduled and confirmations)."""
    failed: int
    min_mbps: float | None
    median_mbps: float | None
    rounds: int
    compliant_rounds: int
    forgiven_rounds: int
    """Low scheduled results the confirmation re-test did not confirm (counted compliant)."""
    unjudged_rounds: int = 0
    """Scheduled results with no known contract (not in `rounds`)."""

    @property
    def compliance(self) -> float | None:
        """Compliant rounds / rounds, None without rounds."""
        return self.compliant_rounds / self.rounds if self.rounds else None


@dataclass(frozen=True, slots=True)
class Excluded:
    """A maintenance window or monitoring gap as applied to one school."""

    start: float
    end: float
    seconds_in_period: float
    reason: str = ""
    shard: str = ""


@dataclass(frozen=True, slots=True)
class SchoolReport:
    """Every figure of one school for the period."""

    school: SchoolRow
    link_basis: str
    """``router``, ``devices`` or ``none`` (no device known)."""
    link: Availability
    outages: tuple[Outage, ...]
    device_outages: tuple[Outage, ...]
    kinds: tuple[KindAvailability, ...]
    daily: tuple[DayAvailability, ...]
    download: DirectionSummary
    upload: DirectionSummary
    tests: tuple[SpeedTestPoint, ...]
    saturation: tuple[SegmentSaturation, ...]
    maintenance: tuple[Excluded, ...]
    gaps: tuple[Excluded, ...]
    maintenance_seconds: float
    gap_seconds: float
    devices: int

    @property
    def has_data(self) -> bool:
        """False when nothing at all was measured: the report says "no data"."""
        return bool(
            self.link.monitored_seconds
            or any(k.availability.monitored_seconds for k in self.kinds)
            or self.download.tests
            or self.upload.tests
            or self.download.failed
            or self.upload.failed
            or self.saturation
        )

    @property
    def counted_outages(self) -> tuple[Outage, ...]:
        """Link outages with time counted against the contractor."""
        return tuple(o for o in self.outages if o.counted_seconds > 0)

    @property
    def outage_seconds(self) -> float:
        """Counted link-down seconds (equals link.down_seconds)."""
        return sum(o.counted_seconds for o in self.outages)

    @property
    def saturated_seconds(self) -> float:
        """Saturated seconds of the contracted segments (``wan`` left out)."""
        return sum(s.saturated_seconds for s in self.saturation if s.segment != WAN)

    def kind(self, kind: DeviceKind | str) -> KindAvailability:
        """The availability of one kind (zero devices when the school has none)."""
        return next((k for k in self.kinds if k.kind == str(kind)), KindAvailability(str(kind), 0, Availability()))


@dataclass(frozen=True, slots=True)
class Report:
    """The whole SLA report."""

    period: Period
    generated_at: float
    chain: ChainStatus | None
    schools: tuple[SchoolReport, ...]


# ----------------------------------------------------------------------------- interval arithmetic

Interval = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Span:
    """A stretch of constant state: [start, end)."""

    start: float
    end: float
    state: str


def merge_intervals(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, disjoint union of [start, end) intervals (empty ones dropped)."""
    merged: list[Interval] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _overlap(a: Interval, b: Interval) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def measure(span: Interval, within: Interval, excluded: Sequence[Interval] = ()) -> float:
    """Seconds of `span` inside `within` and outside the disjoint intervals `excluded`."""
    clipped = (max(span[0], within[0]), min(span[1], within[1]))
    if clipped[1] <= clipped[0]:
        return 0.0
    return (clipped[1] - clipped[0]) - sum(_overlap(clipped, x) for x in excluded)


def _merge_spans(spans: Iterable[Span]) -> list[Span]:
    out: list[Span] = []
    for span in spans:
        if span.end <= span.start:
            continue
        if out and out[-1].state == span.state and out[-1].end == span.start:
            out[-1] = Span(out[-1].start, span.end, span.state)
        else:
            out.append(span)
    return out


def _overlay(spans: list[Span], blanks: list[Interval], state: str) -> list[Span]:
    """`spans` with the disjoint intervals `blanks` set to `state`."""
    if not blanks:
        return spans
    pieces: list[Span] = []
    for span in spans:
        cuts = sorted({span.start, span.end, *(t for b in blanks for t in b if span.start < t < span.end)})
        for lo, hi in pairwise(cuts):
            middle = (lo + hi) / 2
            index = bisect_right([b[0] for b in blanks], middle) - 1
            blank = index >= 0 and blanks[index][0] <= middle < blanks[index][1]
            pieces.append(Span(lo, hi, state if blank else span.state))
    return _merge_spans(pieces)


def device_timeline(
    changes: Sequence[tuple[float, str]],
    gaps: Sequence[Interval],
    *,
    origin: float,
    horizon: float,
    removed_at: float | None = None,
) -> list[Span]:
    """A device's states over [origin, horizon) from its time-ordered changes.

    Unknown before its first change; unknown inside each (merged) gap and after it until
    the next change; unknown from `removed_at` on.
    """
    spans: list[Span] = []
    state, since = UNKNOWN, origin
    for changed, new in changes:
        if changed >= horizon:
            break
        at = max(changed, origin)
        spans.append(Span(since, at, state))
        state, since = new, at
    spans.append(Span(since, horizon, state))
    times = [at for at, _ in changes]
    blanks: list[Interval] = []
    for started, ended in gaps:
        following = bisect_left(times, ended)
        blanks.append((started, times[following] if following < len(times) else horizon))
    if removed_at is not None:
        blanks.append((removed_at, horizon))
    return _overlay(_merge_spans(spans), merge_intervals(blanks), UNKNOWN)


def link_state(states: Iterable[str]) -> str:
    """Up when anything is up, down when something is known and nothing is up, else unknown."""
    seen = set(states)
    if UP in seen:
        return UP
    if DOWN in seen:
        return DOWN
    return UNKNOWN


def combine(
    timelines: Sequence[list[Span]], rule: Callable[[Iterable[str]], str], origin: float, horizon: float
) -> list[Span]:
    """One timeline from several over the same range, state by `rule` at every instant."""
    if not timelines:
        return [Span(origin, horizon, UNKNOWN)]
    cuts = sorted({origin, horizon, *(s.start for tl in timelines for s in tl)})
    starts = [[s.start for s in tl] for tl in timelines]
    spans: list[Span] = []
    for lo, hi in pairwise(cuts):
        states = (tl[bisect_right(st, lo) - 1].state for tl, st in zip(timelines, starts, strict=True))
        spans.append(Span(lo, hi, rule(states)))
    return _merge_spans(spans)


def availability_of(spans: Iterable[Span], within: Interval, excluded: Sequence[Interval]) -> Availability:
    """Up and down seconds of a timeline inside `within`, `excluded` removed."""
    up = down = 0.0
    for span in spans:
        if span.state == UP:
            up += measure((span.start, span.end), within, excluded)
        elif span.state == DOWN:
            down += measure((span.start, span.end), within, excluded)
    return Availability(up, down)


def outages_of(
    spans: Iterable[Span],
    period: Period,
    horizon: float,
    excluded: Sequence[Interval],
    *,
    device: DeviceRow | None = None,
) -> list[Outage]:
    """Down spans overlapping the period, with the seconds they count."""
    found: list[Outage] = []
    for span in spans:
        if span.state != DOWN or _overlap((span.start, span.end), (period.start, period.end)) <= 0:
            continue
        found.append(
            Outage(
                start=span.start,
                end=None if span.end >= horizon else span.end,
                counted_seconds=measure((span.start, span.end), (period.start, period.end), excluded),
                device_id=device.id if device else "",
                kind=device.kind if device else "",
            )
        )
    return found


# ----------------------------------------------------------------------------- speed tests


def _floor_mbps(row: SpeedTestRow, contract: float | None, ratio: float) -> float | None:
    contracted = row.contract_mbps if row.contract_mbps is not None else contract
    if contracted is None:
        return None
    return (row.floor_ratio if row.floor_ratio is not None else ratio) * contracted


def speed_summary(
    rows: Sequence[SpeedTestRow], period: Period, direction: str, contract: float | None, ratio: float
) -> tuple[DirectionSummary, list[SpeedTestPoint]]:
    """The period's tests of one direction of one school: figures and judged points.

    `rows` are the school's tests in time order, including those just after the period
    (they can only confirm a round of the period, never count on their own).
    """
    ordered = [r for r in rows if r.direction == direction]
    inside = [r for r in ordered if period.start <= r.at < period.end]
    speeds = [r.mbps for r in inside if r.ok]
    rounds = compliant = forgiven = unjudged = 0
    for index, row in enumerate(ordered):
        if not (period.start <= row.at < period.end) or not row.ok or row.confirmation:
            continue
        floor = _floor_mbps(row, contract, ratio)
        if floor is None:
            unjudged += 1
            continue
        rounds += 1
        passed = row.mbps >= floor
        following = ordered[index + 1] if index + 1 < len(ordered) else None
        if not passed and following is not None and following.confirmation and following.ok:
            confirmation_floor = _floor_mbps(following, contract, ratio)
            passed = following.mbps >= (confirmation_floor if confirmation_floor is not None else floor)
            forgiven += passed
        compliant += passed
    points = [
        SpeedTestPoint(r.at, direction, r.mbps, r.ok, r.confirmation, _floor_mbps(r, contract, ratio), r.reason)
        for r in inside
    ]
    summary = DirectionSummary(
        direction=direction,
        tests=len(speeds),
        failed=sum(not r.ok for r in inside),
        min_mbps=min(speeds) if speeds else None,
        median_mbps=statistics.median(speeds) if speeds else None,
        rounds=rounds,
        compliant_rounds=compliant,
        forgiven_rounds=forgiven,
        unjudged_rounds=unjudged,
    )
    return summary, points


# ----------------------------------------------------------------------------- the report


@dataclass(slots=True)
class _Index:
    """Input rows grouped by school and device, built once per report."""

    devices: dict[str, list[DeviceRow]] = field(default_factory=lambda: defaultdict(list))
    changes: dict[str, list[tuple[float, str]]] = field(default_factory=lambda: defaultdict(list))
    speedtests: dict[str, list[SpeedTestRow]] = field(default_factory=lambda: defaultdict(list))
    saturation: dict[str, list[SegmentSaturation]] = field(default_factory=lambda: defaultdict(list))


def _index(data: ReportInput) -> _Index:
    index = _Index()
    for device in data.devices:
        index.devices[device.school_id].append(device)
    for change in sorted(data.changes, key=lambda c: c.at):
        index.changes[change.device_id].append((change.at, change.new))
    for test in sorted(data.speedtests, key=lambda t: (t.at, t.confirmation)):
        index.speedtests[test.school_id].append(test)
    for segment in data.saturation:
        index.saturation[segment.school_id].append(segment)
    return index


def _days(period: Period) -> list[Interval]:
    days = calendar.monthrange(period.first_day.year, period.first_day.month)[1]
    starts = (period.start + d * DAY for d in range(days))
    return [(lo, min(lo + DAY, period.end)) for lo in starts if lo < period.end]


def _excluded(
    rows: Iterable[GapRow | MaintenanceRow], school_id: str, period: Period
) -> tuple[list[Excluded], list[Interval]]:
    """The windows applying to a school that overlap the period, and their merged intervals."""
    listed: list[Excluded] = []
    intervals: list[Interval] = []
    for row in rows:
        if not row.applies_to(school_id):
            continue
        start, end = (row.started, row.ended) if isinstance(row, GapRow) else (row.start, row.end)
        intervals.append((start, end))
        inside = measure((start, end), (period.start, period.end))
        if inside > 0:
            shard = row.shard if isinstance(row, GapRow) else ""
            listed.append(Excluded(start, end, inside, row.reason, shard))
    return sorted(listed, key=lambda e: e.start), merge_intervals(intervals)


def _school_report(school: SchoolRow, data: ReportInput, index: _Index, origin: float, horizon: float) -> SchoolReport:
    """Every figure of one school."""
    period = data.period
    within = (period.start, period.end)
    gaps_listed, gaps = _excluded(data.gaps, school.id, period)
    maintenance_listed, maintenance = _excluded(data.maintenance, school.id, period)
    devices = sorted(index.devices.get(school.id, []), key=lambda d: d.id)
    timelines = {
        d.id: device_timeline(
            index.changes.get(d.id, []), gaps, origin=origin, horizon=horizon, removed_at=d.removed_at
        )
        for d in devices
    }
    routers = [d for d in devices if d.kind == DeviceKind.ROUTER]
    basis = "router" if routers else "devices" if devices else "none"
    link = combine([timelines[d.id] for d in (routers or devices)], link_state, origin, horizon)

    kinds: list[KindAvailability] = []
    device_outages: list[Outage] = []
    for kind in REPORTED_KINDS:
        of_kind = [d for d in devices if d.kind == kind]
        total = Availability()
        for device in of_kind:
            total += availability_of(timelines[device.id], within, maintenance)
            device_outages += outages_of(timelines[device.id], period, horizon, maintenance, device=device)
        kinds.append(KindAvailability(kind.value, len(of_kind), total))

    tests = index.speedtests.get(school.id, [])
    download, download_points = speed_summary(
        tests, period, Direction.DOWNLOAD, school.contract_mbps, data.below_contract_ratio
    )
    upload, upload_points = speed_summary(
        tests, period, Direction.UPLOAD, school.contract_mbps, data.below_contract_ratio
    )
    return SchoolReport(
        school=school,
        link_basis=basis,
        link=availability_of(link, within, maintenance),
        outages=tuple(outages_of(link, period, horizon, maintenance)),
        device_outages=tuple(sorted(device_outages, key=lambda o: (o.start, o.device_id))),
        kinds=tuple(kinds),
        daily=tuple(DayAvailability(day[0], availability_of(link, day, maintenance)) for day in _days(period)),
        download=download,
        upload=upload,
        tests=tuple(sorted(download_points + upload_points, key=lambda p: (p.at, p.direction))),
        saturation=tuple(sorted(index.saturation.get(school.id, []), key=lambda s: s.segment)),
        maintenance=tuple(maintenance_listed),
        gaps=tuple(gaps_listed),
        maintenance_seconds=sum(measure(w, within) for w in maintenance),
        gap_seconds=sum(measure(g, within) for g in gaps),
        devices=len(devices),
    )


def build_report(data: ReportInput, *, generated_at: float) -> Report:
    """The SLA report of every school in `data.schools`, in that order."""
    period = data.period
    origin = min([period.context_start, *(c.at for c in data.changes), *(g.started for g in data.gaps)])
    index = _index(data)
    schools = tuple(_school_report(school, data, index, origin, period.horizon) for school in data.schools)
    return Report(period=period, generated_at=generated_at, chain=data.chain, schools=schools)


def by_district(schools: Iterable[SchoolReport]) -> list[tuple[str, list[SchoolReport]]]:
    """Schools grouped by district as the inventory writes it, districts alphabetically, the
    schools without one ("") last; each group in the given order."""
    groups: dict[str, list[SchoolReport]] = {}
    for s in schools:
        groups.setdefault(s.school.district, []).append(s)
    return sorted(groups.items(), key=lambda g: (g[0] == "", g[0].casefold()))


def local_time(at: float, period: Period) -> datetime:
    """A Unix time as an aware datetime in the report's local offset."""
    return datetime.fromtimestamp(at, UTC).astimezone(period.tz)


def schools_to_report(
    table: Sequence[SchoolRow],
    inventory: Sequence[SchoolRow],
    seen: Iterable[str],
    wanted: Sequence[str] | None = None,
) -> list[SchoolRow]:
    """The schools a report covers, sorted by id: schools table rows, schools seen in the
    history and inventory schools (history or not), limited to `wanted` when given (a
    wanted id found nowhere still gets its "no data" section).

    Name, district and contract come from the schools table, each falling back to the
    inventory when empty.
    """
    from_table = {s.id: s for s in table}
    from_inventory = {s.id: s for s in inventory}
    ids = {*from_table, *from_inventory, *seen}
    if wanted is not None:
        ids = set(wanted)
    chosen: list[SchoolRow] = []
    for school_id in sorted(ids):
        row = from_table.get(school_id, SchoolRow(school_id))
        fallback = from_inventory.get(school_id, SchoolRow(school_id))
        chosen.append(
            SchoolRow(
                school_id,
                row.name or fallback.name,
                row.district or fallback.district,
                row.contract_mbps if row.contract_mbps is not None else fallback.contract_mbps,
            )
        )
    return chosen
