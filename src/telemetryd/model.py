"""Domain types shared by every layer: schools, devices, probes, results, state changes.

Plain frozen dataclasses, no I/O. The config layer builds them from YAML; probers,
the scheduler, State and the exporter only ever see these.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from telemetryd.slices import Steps, finish


class DeviceKind(enum.StrEnum):
    """What a device is; also the `kind` metric label."""

    ROUTER = "router"
    CAMERA = "camera"
    NVR = "nvr"
    ALARM_PANEL = "alarm_panel"


class Segment(enum.StrEnum):
    """A contracted share of a school's link."""

    ALARM = "alarm"
    VIDEO = "video"
    EDUCATION = "education"


class Health(enum.StrEnum):
    """Debounced state of a (device, probe) or a device."""

    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class Contract:
    """The link a school pays for, in Mbit/s: a total and its per-segment split."""

    total_mbps: float = 150.0
    segments_mbps: tuple[tuple[Segment, float], ...] = (
        (Segment.ALARM, 20.0),
        (Segment.VIDEO, 30.0),
        (Segment.EDUCATION, 100.0),
    )

    def segment_mbps(self, segment: Segment) -> float | None:
        """The allocation of one segment, or None when the contract does not split it out."""
        for name, mbps in self.segments_mbps:
            if name is segment:
                return mbps
        return None


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    """One check that applies to a device: `icmp`, or `tcp` on a port.

    `name` is stable and short (``icmp``, ``tcp:554``); it keys schedules and state and
    is the `probe` metric label, so it must stay low-cardinality.
    """

    protocol: str
    port: int | None = None
    tls: bool = False
    """Over TLS (``isapis:443``: ISAPI over HTTPS); the protocol stays ``isapi`` for settings and findings."""
    name: str = field(init=False, compare=False, repr=False)
    """The probe's label value, e.g. ``tcp:554``, ``isapis:443`` (kept: looked up millions of times)."""

    def __post_init__(self) -> None:
        protocol = f"{self.protocol}s" if self.tls else self.protocol
        object.__setattr__(self, "name", protocol if self.port is None else f"{protocol}:{self.port}")


@dataclass(frozen=True, slots=True)
class Device:
    """A camera, NVR, alarm panel or router at one school."""

    id: str
    school_id: str
    kind: DeviceKind
    host: str
    probes: tuple[ProbeSpec, ...]
    name: str = ""
    credentials: str | None = None
    snmp: SnmpTarget | None = None
    """For a router: where its segment counters are read (community = `credentials`)."""
    sia: SiaAccount | None = None
    """For an alarm panel that dual-reports to telemetryd's DC-09 receiver."""
    nvr: tuple[str, int] | None = None
    """For a camera: (NVR device id, channel) that records it."""


@dataclass(frozen=True, slots=True)
class SiaAccount:
    """A panel's DC-09 identity (hex, upper case) and its heartbeat interval in seconds."""

    account: str
    prefix: str = "0"
    receiver: str = ""
    interval: float = 90.0


@dataclass(frozen=True, slots=True)
class SnmpTarget:
    """A router's SNMP agent and which interface carries the WAN and each segment."""

    interfaces: tuple[tuple[str, str | int], ...]
    """Role (``wan`` or a Segment value) → ifName or ifIndex."""
    port: int = 161


@dataclass(frozen=True, slots=True)
class SpeedTestTarget:
    """The speed-test responder at a school (token = the named credential)."""

    url: str
    credentials: str


@dataclass(frozen=True, slots=True)
class School:
    """A school with its contracted link and the devices on its network."""

    id: str
    name: str
    district: str
    contract: Contract
    devices: tuple[Device, ...]
    latitude: float | None = None
    longitude: float | None = None
    speedtest: SpeedTestTarget | None = None

    @property
    def router(self) -> Device | None:
        """The router whose counters are polled, if any has `snmp:`."""
        return next((d for d in self.devices if d.snmp is not None), None)


@dataclass(frozen=True, slots=True)
class Inventory:
    """Every school this instance watches, with lookup tables built once."""

    schools: tuple[School, ...]
    devices_by_id: dict[str, Device] = field(default_factory=dict, compare=False)
    schools_by_id: dict[str, School] = field(default_factory=dict, compare=False)

    @classmethod
    def build(cls, schools: tuple[School, ...] | list[School]) -> Inventory:
        """Index schools and devices by id."""
        return finish(cls.assembling(schools))

    @classmethod
    def assembling(cls, schools: Iterable[School]) -> Steps[Inventory]:
        """`build` in steps, a school at a time (a reload assembles 100,000 devices on the event loop)."""
        kept: list[School] = []
        devices_by_id: dict[str, Device] = {}
        for school in schools:
            kept.append(school)
            for device in school.devices:
                devices_by_id[device.id] = device
            yield
        return cls(schools=tuple(kept), devices_by_id=devices_by_id, schools_by_id={s.id: s for s in kept})

    @property
    def device_count(self) -> int:
        """How many devices all schools hold."""
        return len(self.devices_by_id)

    def restricted_to(self, school_ids: set[str]) -> Inventory:
        """The same inventory holding only the given schools (used for sharding)."""
        return Inventory.build([s for s in self.schools if s.id in school_ids])


class Finding:
    """Base of a prober's rich, typed finding beyond ok/reason (ISAPI health, AX PRO status).

    It rides on the ProbeResult into State, which keeps it per (device, probe) and drops
    it with the device or probe on reload; the exporter reads it from there.
    """

    __slots__ = ()


class ProbeResult(NamedTuple):
    """What one probe run found. Device faults are results, never exceptions.

    A NamedTuple rather than a frozen dataclass: a sweep builds 10,000 of these, and a
    tuple is built in a third of the time (immutable all the same).

    `reason` is a short machine-friendly word (``timeout``, ``refused``, ``unreachable``,
    ``error``) when `ok` is false; `detail` is a human sentence for logs and the status
    page and never carries a secret.
    """

    ok: bool
    duration: float
    reason: str = ""
    detail: str = ""
    rtt: float | None = None
    loss: float | None = None
    sent: int = 0
    received: int = 0
    finding: Finding | None = None


@dataclass(frozen=True, slots=True)
class StateChange:
    """A debounced transition of a device or one of its probes, for logs and history."""

    at: float
    school_id: str
    device_id: str
    kind: DeviceKind
    probe: str | None
    old: Health
    new: Health
    reason: str = ""
    detail: str = ""


class Direction(enum.StrEnum):
    """Which way a speed test moved its bytes, seen from the school: the `direction` label."""

    DOWNLOAD = "download"
    """NOC → school (the responder sends)."""
    UPLOAD = "upload"
    """School → NOC (the responder receives)."""


@dataclass(frozen=True, slots=True)
class SpeedResult:
    """One direction of one active speed test against a school's responder.

    `mbps` is the goodput of the steady part of the test (the slow-start ramp left out),
    in Mbit/s (10^6 bit/s). `bytes_used` counts every payload byte moved, ramp included,
    because that is what the test cost the link. Failures carry a reason word
    (``timeout``, ``refused``, ``unauthorized``, ``error``, ``http``) and a detail
    sentence without secrets.
    """

    ok: bool
    direction: Direction
    mbps: float
    bytes_used: int
    duration: float
    streams: int
    stable: bool = False
    """True when the test stopped early because the rate had settled."""
    reason: str = ""
    detail: str = ""


@dataclass(frozen=True, slots=True)
class InterfaceCounters:
    """One router interface as read over SNMP (raw values, no rates)."""

    name: str
    index: int
    in_octets: int
    out_octets: int
    counter_bits: int
    """64 when read from ifHCIn/OutOctets, 32 when the agent only had ifIn/OutOctets."""
    speed_mbps: int | None = None
    """ifHighSpeed."""
    oper_up: bool | None = None
    in_errors: int | None = None
    out_errors: int | None = None
    in_discards: int | None = None
    out_discards: int | None = None


@dataclass(frozen=True, slots=True)
class SnmpSample:
    """One SNMP poll of a school router: its WAN and per-segment interfaces.

    `interfaces` maps a role (``wan`` or a Segment value) to what was read; `uptime_ticks`
    is sysUpTime in 1/100 s, used to see reboots (counters restart from zero).
    `at` is the monotonic time the answer arrived.
    """

    ok: bool
    at: float
    duration: float
    uptime_ticks: int | None = None
    interfaces: tuple[tuple[str, InterfaceCounters], ...] = ()
    reason: str = ""
    detail: str = ""
