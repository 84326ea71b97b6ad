"""Domain types shared by every layer: schools, devices, probes, results, state changes.

Plain frozen dataclasses, no I/O. The config layer builds them from YAML; probers,
the scheduler, State and the exporter only ever see these.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


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

    @property
    def name(self) -> str:
        """The probe's label value, e.g. ``tcp:554``."""
        return self.protocol if self.port is None else f"{self.protocol}:{self.port}"


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


@dataclass(frozen=True, slots=True)
class Inventory:
    """Every school this instance watches, with lookup tables built once."""

    schools: tuple[School, ...]
    devices_by_id: dict[str, Device] = field(default_factory=dict, compare=False)
    schools_by_id: dict[str, School] = field(default_factory=dict, compare=False)

    @classmethod
    def build(cls, schools: tuple[School, ...] | list[School]) -> Inventory:
        """Index schools and devices by id."""
        schools = tuple(schools)
        return cls(
            schools=schools,
            devices_by_id={d.id: d for s in schools for d in s.devices},
            schools_by_id={s.id: s for s in schools},
        )

    @property
    def device_count(self) -> int:
        """How many devices all schools hold."""
        return len(self.devices_by_id)

    def restricted_to(self, school_ids: set[str]) -> Inventory:
        """The same inventory holding only the given schools (used for sharding)."""
        return Inventory.build([s for s in self.schools if s.id in school_ids])


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What one probe run found. Device faults are results, never exceptions.

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
