"""Inventory files: schools with their contract and devices, as validated YAML models.

The raw models mirror the YAML exactly (`extra="forbid"`); `to_domain` turns them into
the frozen types of `telemetryd.model` after cross-checks that need the whole
inventory (duplicate ids and addresses) have run in the loader.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from telemetryd.config.settings import parse_duration, refuse_credentials
from telemetryd.model import (
    Contract,
    Device,
    DeviceKind,
    ProbeSpec,
    School,
    Segment,
    SiaAccount,
    SnmpTarget,
    SpeedTestTarget,
)

PROTOCOLS = ("icmp", "tcp", "rtsp", "isapi", "isapis", "axpro")
DEFAULT_PORTS = {"rtsp": 554, "isapi": 80, "isapis": 443, "axpro": 80}
"""Protocols with a well-known port may leave it out (``rtsp`` means ``rtsp:554``)."""
OVER_TLS = {"isapis": "isapi"}
"""Written name → the protocol it runs over TLS (``isapis:443`` is ISAPI over HTTPS, one prober for both)."""
NEEDS_CREDENTIALS = ("isapi", "isapis", "axpro")
KINDS_FOR = {
    "isapi": (DeviceKind.CAMERA, DeviceKind.NVR),
    "isapis": (DeviceKind.CAMERA, DeviceKind.NVR),
    "axpro": (DeviceKind.ALARM_PANEL,),
    "rtsp": (DeviceKind.CAMERA, DeviceKind.NVR),
}
_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
MAX_PROBES = 32
"""Probes of one device: a camera has ~4; the cap stops an inventory standing for millions of them."""
MAX_DEVICES_PER_SCHOOL = 2000
"""A school is validated in one step of a reload (~30 µs a device): 2,000 is ~60 ms on the loop, and
far above a school's ~40 devices."""


def _at_most(limit: int) -> Callable[[Any], Any]:
    """A before-validator refusing a list longer than `limit` before any item of it is validated
    (pydantic's max_length checks after validating every item: seconds for an alias bomb's millions)."""

    def check(value: Any) -> Any:
        if isinstance(value, list) and len(value) > limit:
            raise ValueError(f"{len(value):,} items, at most {limit:,}")
        return value

    return check


DEFAULT_PROBES: dict[DeviceKind, tuple[ProbeSpec, ...]] = {
    DeviceKind.ROUTER: (ProbeSpec("icmp"),),
    DeviceKind.CAMERA: (ProbeSpec("icmp"), ProbeSpec("tcp", 554)),
    DeviceKind.NVR: (ProbeSpec("icmp"), ProbeSpec("tcp", 80), ProbeSpec("tcp", 554)),
    DeviceKind.ALARM_PANEL: (ProbeSpec("icmp"), ProbeSpec("tcp", 80)),
}

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
"""A dotted quad exactly as `ipaddress.IPv4Address` writes it (no leading zeros, no spaces)."""


class Strict(BaseModel):
    """Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_probe(value: object) -> object:
    """``icmp`` / ``tcp:554`` shorthand, or a mapping ``{protocol: tcp, port: 554}``."""
    if isinstance(value, str):
        protocol, sep, port = value.strip().partition(":")
        if sep:
            if not port.isdigit():
                raise ValueError(f"{value!r}: the port after ':' must be a number, e.g. tcp:554")
            return {"protocol": protocol, "port": int(port)}
        return {"protocol": protocol}
    return value


class ProbeEntry(Strict):
    """One probe in a device's `probes:` list."""

    protocol: str
    port: int | None = Field(None, ge=1, le=65535)

    @model_validator(mode="after")
    def _shape(self) -> ProbeEntry:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"unknown probe {self.protocol!r}; expected one of: {', '.join(PROTOCOLS)}")
        if self.protocol == "tcp" and self.port is None:
            raise ValueError("a tcp probe needs a port, e.g. tcp:554")
        if self.protocol == "icmp" and self.port is not None:
            raise ValueError("an icmp probe takes no port")
        return self

    @property
    def spec(self) -> ProbeSpec:
        """The domain ProbeSpec, well-known ports filled in."""
        port = self.port if self.port is not None else DEFAULT_PORTS.get(self.protocol)
        tls_of = OVER_TLS.get(self.protocol)
        return ProbeSpec(tls_of, port, tls=True) if tls_of else ProbeSpec(self.protocol, port)


class SnmpEntry(Strict):
    """A router's SNMP agent: which interface is the WAN and which carries each segment."""

    port: int = Field(161, ge=1, le=65535)
    interfaces: dict[str, str | int] = Field(min_length=1)

    @field_validator("interfaces")
    @classmethod
    def _roles(cls, value: dict[str, str | int]) -> dict[str, str | int]:
        roles = {"wan", *(s.value for s in Segment)}
        unknown = sorted(set(value) - roles)
        if unknown:
            raise ValueError(f"unknown interface role(s) {', '.join(unknown)}; expected wan, alarm, video, education")
        for role, name in value.items():
            if (isinstance(name, int) and name < 1) or (isinstance(name, str) and not name.strip()):
                raise ValueError(f"{role}: expected an ifName (e.g. ge-0/0/1) or an ifIndex >= 1")
        return value


class SiaEntry(Strict):
    """An alarm panel that also reports to telemetryd's SIA DC-09 receiver."""

    account: Annotated[str, Field(pattern=r"^[0-9A-Fa-f]{3,16}$")]
    prefix: Annotated[str, Field(pattern=r"^[0-9A-Fa-f]{1,6}$")] = "0"
    receiver: Annotated[str, Field(pattern=r"^[0-9A-Fa-f]{1,6}$")] | None = None
    interval: Annotated[float, BeforeValidator(parse_duration), Field(gt=0)] = 90.0
    """How often the panel sends its NULL heartbeat."""


class NvrChannelEntry(Strict):
    """Which NVR records a camera, and on which channel."""

    device: Annotated[str, Field(pattern=_ID)]
    channel: int = Field(ge=1, le=256)


class DeviceEntry(Strict):
    """A device as written in the inventory."""

    id: Annotated[str, Field(pattern=_ID)]
    kind: DeviceKind
    host: str
    name: str = ""
    credentials: Annotated[str, Field(pattern=_ID)] | None = None
    probes: Annotated[
        list[Annotated[ProbeEntry, BeforeValidator(parse_probe)]] | None, BeforeValidator(_at_most(MAX_PROBES))
    ] = None
    snmp: SnmpEntry | None = None
    sia: SiaEntry | None = None
    nvr: NvrChannelEntry | None = None

    @model_validator(mode="after")
    def _fits_kind(self) -> DeviceEntry:
        for entry in self.probes or []:
            kinds = KINDS_FOR.get(entry.protocol)
            if kinds is not None and self.kind not in kinds:
                allowed = " or ".join(k.value for k in kinds)
                raise ValueError(f"a {entry.protocol} probe applies to {allowed}, not {self.kind.value}")
            if entry.protocol in NEEDS_CREDENTIALS and self.credentials is None:
                raise ValueError(
                    f"a {entry.protocol} probe needs `credentials:` naming a secret file holding user:password"
                )
        if self.sia is not None and self.kind is not DeviceKind.ALARM_PANEL:
            raise ValueError("`sia:` belongs on an alarm panel (kind: alarm_panel)")
        if self.nvr is not None and self.kind is not DeviceKind.CAMERA:
            raise ValueError("`nvr:` belongs on a camera (kind: camera): the NVR and channel recording it")
        return self

    @model_validator(mode="after")
    def _snmp_on_router(self) -> DeviceEntry:
        if self.snmp is not None:
            if self.kind is not DeviceKind.ROUTER:
                raise ValueError("`snmp:` belongs on the school's router (kind: router)")
            if self.credentials is None:
                raise ValueError("a router with `snmp:` needs `credentials:` naming its SNMP community")
        return self

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if _CANONICAL_IPV4.fullmatch(value):
            return value  # what IPv4Address would give back, at a tenth of the cost (100,000 of them at start-up)
        try:
            return str(ipaddress.IPv4Address(value.strip()))
        except ValueError:
            raise ValueError(f"{value!r} is not an IPv4 address (e.g. 10.20.3.14)") from None

    @field_validator("probes")
    @classmethod
    def _unique_probes(cls, value: list[ProbeEntry] | None) -> list[ProbeEntry] | None:
        if value is not None:
            dupes = sorted(name for name, n in Counter(p.spec.name for p in value).items() if n > 1)
            if dupes:
                raise ValueError(f"probe listed twice: {', '.join(dupes)}")
        return value


class ContractEntry(Strict):
    """The contracted link: total and per-segment Mbit/s."""

    total_mbps: float = Field(150.0, gt=0)
    segments: dict[Segment, Annotated[float, Field(ge=0)]] = Field(
        default_factory=lambda: {Segment.ALARM: 20.0, Segment.VIDEO: 30.0, Segment.EDUCATION: 100.0}
    )

    @model_validator(mode="after")
    def _segments_fit(self) -> ContractEntry:
        total = sum(self.segments.values())
        if total > self.total_mbps + 1e-9:
            split = " + ".join(f"{k.value} {v:g}" for k, v in self.segments.items())
            raise ValueError(
                f"segments add up to {total:g} Mbps ({split}), more than the total {self.total_mbps:g} Mbps"
            )
        return self


class SpeedTestEntry(Strict):
    """The school's speed-test responder (`telemetryd responder`)."""

    url: str
    credentials: Annotated[str, Field(pattern=_ID)]

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        refuse_credentials(value)  # before anything echoes the value
        parsed = urlsplit(value.strip())
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(
                f"{value!r}: expected http://HOST:PORT of the school's responder, e.g. http://10.87.0.10:8088"
            )
        return value.strip().rstrip("/")


class LocationEntry(Strict):
    """Where the school is, for maps in Grafana."""

    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)


class SchoolEntry(Strict):
    """A school as written in the inventory."""

    id: Annotated[str, Field(pattern=_ID)]
    name: str = Field(min_length=1)
    district: str = Field(min_length=1)
    location: LocationEntry | None = None
    contract: ContractEntry = ContractEntry()
    speedtest: SpeedTestEntry | None = None
    devices: Annotated[list[DeviceEntry], BeforeValidator(_at_most(MAX_DEVICES_PER_SCHOOL))] = Field(
        default_factory=list
    )

    @model_validator(mode="after")
    def _one_snmp_router(self) -> SchoolEntry:
        if sum(d.snmp is not None for d in self.devices) > 1:
            raise ValueError("more than one device has `snmp:`; a school's counters come from one router")
        return self

    def to_domain(self) -> School:
        """The frozen domain School."""
        devices = tuple(
            Device(
                id=d.id,
                school_id=self.id,
                kind=d.kind,
                host=d.host,
                name=d.name,
                credentials=d.credentials,
                snmp=SnmpTarget(tuple(d.snmp.interfaces.items()), d.snmp.port) if d.snmp else None,
                sia=SiaAccount(
                    d.sia.account.upper(), d.sia.prefix.upper(), (d.sia.receiver or "").upper(), d.sia.interval
                )
                if d.sia
                else None,
                nvr=(d.nvr.device, d.nvr.channel) if d.nvr else None,
                probes=(tuple(p.spec for p in d.probes) if d.probes is not None else DEFAULT_PROBES[d.kind]),
            )
            for d in self.devices
        )
        return School(
            id=self.id,
            name=self.name,
            district=self.district,
            contract=Contract(
                total_mbps=self.contract.total_mbps,
                segments_mbps=tuple(self.contract.segments.items()),
            ),
            devices=devices,
            speedtest=SpeedTestTarget(self.speedtest.url, self.speedtest.credentials) if self.speedtest else None,
            latitude=self.location.latitude if self.location else None,
            longitude=self.location.longitude if self.location else None,
        )


class InventoryFile(Strict):
    """One inventory YAML file: a list of schools."""

    schools: list[SchoolEntry]


ID_PATTERN = re.compile(_ID)
