"""Each school's link against its contract: speed-test verdicts and SNMP segment rates.

Pure, no I/O: the link monitor feeds results in with the time, and reads the state the
exporter, the status page and (later) the history writer show. A school is declared
below contract only when a confirmation re-test agrees with the first low result, so
one congested minute does not become a contract breach on the record.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from telemetryd.link.counters import InterfaceRate, LinkRates, SaturationWatch, utilisation
from telemetryd.model import Contract, Direction, School, Segment, SnmpSample, SpeedResult


class Compliance(enum.StrEnum):
    """Where a school's measured speed stands against its contract."""

    UNKNOWN = "unknown"
    """No successful test yet."""
    COMPLIANT = "compliant"
    SUSPECT = "suspect"
    """One test came in low; a confirmation re-test is due."""
    BELOW = "below_contract"
    """Confirmed: two tests in a row came in low."""


@dataclass(frozen=True, slots=True)
class ComplianceChange:
    """A school's verdict changed (for logs and the history writer)."""

    at: float
    school_id: str
    old: Compliance
    new: Compliance
    download_mbps: float | None
    upload_mbps: float | None
    contract_mbps: float


@dataclass(slots=True)
class SegmentView:
    """What the last SNMP interval says about one role (``wan`` or a segment)."""

    rate: InterfaceRate | None = None
    utilisation: float | None = None
    """max(in, out) / allocation, when the role has an allocation."""
    saturated: bool = False


@dataclass(slots=True)
class SchoolLink:
    """Everything known about one school's link."""

    school_id: str
    contract: Contract
    compliance: Compliance = Compliance.UNKNOWN
    last: dict[Direction, SpeedResult] = field(default_factory=dict)
    """The latest result per direction, successful or not."""
    last_good: dict[Direction, SpeedResult] = field(default_factory=dict)
    last_success_at: float | None = None
    """Wall-clock time of the last test with both directions measured."""
    tests: dict[str, int] = field(default_factory=lambda: {"ok": 0, "failed": 0})
    bytes_used: dict[Direction, int] = field(default_factory=lambda: {d: 0 for d in Direction})
    confirmation_due: float | None = None
    """Monotonic time the confirmation re-test should run, while SUSPECT."""
    # SNMP side
    router_id: str | None = None
    snmp_ok: bool | None = None
    snmp_reason: str = ""
    snmp_detail: str = ""
    snmp_sample: SnmpSample | None = None
    segments: dict[str, SegmentView] = field(default_factory=dict)
    rates: LinkRates | None = None
    saturation: SaturationWatch = field(default_factory=SaturationWatch)

    def ratio(self, direction: Direction) -> float | None:
        """Measured / contracted total for the latest good result in `direction`."""
        result = self.last_good.get(direction)
        if result is None or self.contract.total_mbps <= 0:
            return None
        return result.mbps / self.contract.total_mbps


def verdict(download: SpeedResult, upload: SpeedResult, contract: Contract, below_ratio: float) -> bool | None:
    """True when both directions reach `below_ratio` of the contract; None when the test failed."""
    if not (download.ok and upload.ok):
        return None
    floor = contract.total_mbps * below_ratio
    return download.mbps >= floor and upload.mbps >= floor


class LinkState:
    """Link state of every school; rebuilt on reload without losing what is still valid."""

    def __init__(self, *, below_ratio: float = 0.9, confirm_after: float = 120.0, snmp_interval: float = 60.0) -> None:
        self.below_ratio = below_ratio
        self.confirm_after = confirm_after
        self.snmp_interval = snmp_interval
        self.schools: dict[str, SchoolLink] = {}

    def sync(self, schools: tuple[School, ...] | list[School]) -> None:
        """Follow the inventory: add new schools, drop removed ones, keep the rest's history."""
        wanted = {s.id: s for s in schools}
        for school_id in set(self.schools) - set(wanted):
            del self.schools[school_id]
        for school in wanted.values():
            link = self.schools.get(school.id)
            router = school.router
            if link is None:
                link = self.schools[school.id] = SchoolLink(school.id, school.contract)
            link.contract = school.contract
            router_id = router.id if router else None
            if router_id != link.router_id:
                link.router_id = router_id
                link.rates, link.segments, link.snmp_ok, link.snmp_sample = None, {}, None, None
            if router is not None and (link.rates is None or link.rates.poll_interval != self.snmp_interval):
                link.rates = LinkRates(self.snmp_interval)

    def record_speedtest(
        self, school_id: str, download: SpeedResult, upload: SpeedResult, *, now: float, wall: float
    ) -> ComplianceChange | None:
        """Take one test's two directions; returns the verdict change, if any.

        `now` is monotonic (for the confirmation timer), `wall` is Unix time (for display).
        """
        link = self.schools.get(school_id)
        if link is None:
            return None
        for result in (download, upload):
            link.last[result.direction] = result
            link.bytes_used[result.direction] += result.bytes_used
            if result.ok:
                link.last_good[result.direction] = result
        passed = verdict(download, upload, link.contract, self.below_ratio)
        if passed is None:
            link.tests["failed"] += 1
            return None  # a failed test says nothing about the speed; the verdict stands
        link.tests["ok"] += 1
        link.last_success_at = wall
        old = link.compliance
        if passed:
            new = Compliance.COMPLIANT
            link.confirmation_due = None
        elif old in (Compliance.SUSPECT, Compliance.BELOW):
            new = Compliance.BELOW
            link.confirmation_due = None
        else:
            new = Compliance.SUSPECT
            link.confirmation_due = now + self.confirm_after
        link.compliance = new
        if new is old:
            return None
        return ComplianceChange(wall, school_id, old, new, download.mbps, upload.mbps, link.contract.total_mbps)

    def record_snmp(self, school_id: str, sample: SnmpSample) -> None:
        """Take one poll of the school's router: raw counters, then rates and utilisation."""
        link = self.schools.get(school_id)
        if link is None or link.rates is None:
            return
        link.snmp_ok, link.snmp_reason, link.snmp_detail = sample.ok, sample.reason, sample.detail
        if sample.interfaces:
            link.snmp_sample = sample
        rates = link.rates.update(sample) or {}
        roles = {role for role, _ in sample.interfaces} if sample.interfaces else set(link.segments)
        for role in roles:
            view = link.segments.setdefault(role, SegmentView())
            view.rate = rates.get(role)
            allocated = allocation(link.contract, role)
            view.utilisation = (
                utilisation(max(view.rate.in_bps, view.rate.out_bps), allocated)
                if view.rate is not None and allocated
                else None
            )
            view.saturated = link.saturation.observe(role, view.utilisation)
        for role in set(link.segments) - roles:
            del link.segments[role]

    def due_confirmations(self, now: float) -> list[str]:
        """Schools whose confirmation re-test is due."""
        return [
            s.school_id for s in self.schools.values() if s.confirmation_due is not None and s.confirmation_due <= now
        ]


def allocation(contract: Contract, role: str) -> float | None:
    """What a role (`wan` or a segment) is contracted for, in Mbit/s; None for an unknown segment."""
    if role == "wan":
        return contract.total_mbps
    try:
        return contract.segment_mbps(Segment(role))
    except ValueError:
        return None
