"""Daemon settings (`telemetryd.yaml`): pydantic models with every default on the model."""

from __future__ import annotations

import os
import re
import zoneinfo
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from telemetryd.model import DeviceKind

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: object) -> object:
    """Accept seconds as a number or a string like ``250ms``, ``30s``, ``5m``, ``1h``."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError("expected a duration such as 30s, 250ms, 5m or 1h")
        return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    return value


Seconds = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]


class Strict(BaseModel):
    """Base for config sections: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class IcmpSettings(Strict):
    """Echo probes over one shared socket."""

    interval: Seconds = 30.0
    timeout: Seconds = 2.0
    packets: int = Field(3, ge=1, le=20, description="echo requests per probe")
    packet_spacing: Seconds = Field(0.25, description="gap between one probe's packets")
    max_packets_per_second: int = Field(15000, ge=10, description="global send pacing")
    receive_buffer_bytes: int = Field(4 * 1024 * 1024, ge=65536)


class TcpSettings(Strict):
    """TCP connect probes (RTSP 554, HTTP 80, alarm panel ports)."""

    interval: Seconds = 30.0
    timeout: Seconds = 3.0


class SnmpSettings(Strict):
    """Polling school routers' interface counters (SNMP v2c)."""

    interval: Seconds = 60.0
    timeout: Seconds = Field(2.0, description="per request send")
    retries: int = Field(2, ge=1, le=5, description="sends in all before giving up (aiosnmp counts the first)")
    max_concurrent: int = Field(64, ge=1, description="routers polled at once")


class RtspSettings(Strict):
    """RTSP OPTIONS on a camera's stream port: the stream server answers."""

    interval: Seconds = 60.0
    timeout: Seconds = 3.0


class IsapiSettings(Strict):
    """Hikvision ISAPI health checks of cameras and NVRs (digest auth, lockout-safe)."""

    interval: Seconds = 300.0
    timeout: Seconds = Field(30.0, description="a whole check, every request included")
    max_clock_drift: Seconds = Field(10.0, description="device clock vs this server before `clock_drift`")
    recording_window: Seconds = Field(3600.0, description="an NVR channel must have footage this recent")
    max_body_bytes: int = Field(1 << 20, ge=4096, description="replies larger than this are cut off")
    ca_file: str | None = Field(
        None,
        description="PEM bundle that signs the devices' HTTPS certificates (chain and IP SAN checked); relative to "
        "this file; none: trust each device's certificate on first use and pin it",
    )
    event_stream: bool = Field(True, description="hold each camera's and NVR's alertStream open for events in seconds")
    event_heartbeat_timeout: Seconds = Field(30.0, description="an event stream silent this long is reopened")
    event_hold: Seconds = Field(60.0, description="an active event not repeated for this long has ended")


class AxProSettings(Strict):
    """Hikvision AX PRO alarm panel status over ISAPI."""

    interval: Seconds = 60.0
    timeout: Seconds = 15.0


class ProbeSettings(Strict):
    """Interval and timeout per probe protocol."""

    icmp: IcmpSettings = IcmpSettings()
    tcp: TcpSettings = TcpSettings()
    snmp: SnmpSettings = SnmpSettings()
    rtsp: RtspSettings = RtspSettings()
    isapi: IsapiSettings = IsapiSettings()
    axpro: AxProSettings = AxProSettings()


class SiaSettings(Strict):
    """The SIA DC-09 receiver alarm panels dual-report to (supervision heartbeats)."""

    listen: str | None = Field(None, description="host:port for TCP and UDP; none: no receiver")
    grace: Seconds = Field(30.0, description="beyond a panel's heartbeat interval before supervision is lost")
    idle_timeout: Seconds = Field(
        120.0,
        le=3600.0,
        description="a TCP connection with no frame this long is closed; panels reconnect per message or send a "
        "heartbeat every 60-90 s, so 2 minutes never cuts a working panel and frees idle sockets within minutes",
    )
    max_connections: int = Field(4096, ge=1, description="open TCP connections in all; a new one displaces the idlest")
    max_connections_per_source: int = Field(
        64, ge=1, description="open TCP connections from one source address; a new one displaces that source's idlest"
    )
    frame_budget: int = Field(
        16, ge=1, le=1024, description="frames answered from one connection before every other peer gets a turn"
    )
    write_buffer_bytes: int = Field(
        65536, ge=1024, le=16 << 20, description="answers queued for a peer before reading from it pauses"
    )


_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def parse_window(value: object) -> object:
    """``"08:00-14:00"`` → (start minute, end minute) of the day; windows may wrap midnight."""
    if isinstance(value, str):
        match = _WINDOW.match(value)
        if not match:
            raise ValueError("expected HH:MM-HH:MM, e.g. 08:00-14:00")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2):
            raise ValueError(f"{value!r}: hours 0-24, minutes 0-59")
        return (h1 * 60 + m1, h2 * 60 + m2)
    return value


QuietWindow = Annotated[tuple[int, int], BeforeValidator(parse_window)]


class SpeedTestSettings(Strict):
    """Active speed tests against each school's responder."""

    interval: Seconds = Field(3600.0, description="per school")
    streams: int = Field(4, ge=1, le=32, description="parallel TCP connections per direction")
    max_bytes: int = Field(100 * 1000 * 1000, ge=1_000_000, description="per direction, ramp included")
    max_seconds: Seconds = Field(10.0, description="per direction")
    central_capacity_mbps: float = Field(
        1000.0, gt=0, description="NOC uplink share tests may use at once; a test reserves its school's contract"
    )
    below_contract_ratio: float = Field(0.9, gt=0, le=1, description="measured/contract under this is below contract")
    confirm_after: Seconds = Field(120.0, description="pause before the confirmation re-test")
    quiet_windows: list[QuietWindow] = Field(default_factory=list, description="local times with no tests")
    utc_offset_hours: float = Field(5.0, ge=-12, le=14, description="local time of quiet windows (Shymkent: +5)")


class MaintenanceWindow(Strict):
    """Agreed downtime: excluded from SLA availability and shown in the report."""

    start: AwareDatetime = Field(description="ISO 8601 with an offset, e.g. 2026-11-14T22:00:00+05:00")
    end: AwareDatetime
    schools: list[str] = Field(default_factory=list, description="school ids; empty: every school")
    reason: str = ""

    @model_validator(mode="after")
    def _ordered(self) -> MaintenanceWindow:
        if self.end <= self.start:
            raise ValueError(f"maintenance window ends ({self.end.isoformat()}) before it starts")
        return self


class HistorySettings(Strict):
    """PostgreSQL history (outage log, speed tests, link samples) for SLA reports."""

    dsn: str | None = Field(None, description="postgresql://user@host:5432/db without the password; none: no history")
    credentials: str | None = Field(None, description="name of the secret holding the database password")
    spool_directory: str = Field(
        "/var/lib/telemetryd/history", description="spool and heartbeat files; relative to this file"
    )
    spool_max_bytes: int = Field(1 << 30, ge=1 << 20, description="history kept on disk while PostgreSQL is down")
    queue_size: int = Field(100_000, ge=100, description="rows held in memory before they spill to the spool")
    batch_size: int = Field(1000, ge=1, le=100_000)
    batch_seconds: Seconds = Field(1.0, description="longest a row waits in memory before its batch is written")
    retry_seconds: Seconds = Field(5.0, description="between reconnects while PostgreSQL is down")
    sample_interval: Seconds = Field(300.0, description="link samples aggregate SNMP rates over this")
    heartbeat_interval: Seconds = Field(30.0, description="how precisely a crash's monitoring gap is known")
    maintenance: list[MaintenanceWindow] = Field(default_factory=list)

    @field_validator("dsn")
    @classmethod
    def _no_password(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if urlsplit(value).scheme not in {"postgresql", "postgres"}:
            raise ValueError("expected postgresql://user@host:port/database")
        refuse_credentials(value, user_allowed=True)  # the database user is no secret; its password is
        return value


def refuse_credentials(value: str, *, user_allowed: bool = False) -> None:
    """Raise ValueError when the URL `value` carries a password (or any user, unless `user_allowed`).

    Credentials in a URL reach every log line and command output that shows the URL; they belong
    in a named secret. The message never repeats the value.
    """
    parsed = urlsplit(value.strip())
    if parsed.password is not None or (parsed.username is not None and not user_allowed):
        raise ValueError("credentials must not be in the URL (it is shown in logs and output); use `credentials`")
    if re.search(r"(?:^|[?&])(?:password|passwd|pass|token)=", parsed.query, re.IGNORECASE):
        raise ValueError("secrets must not be in the URL's query (it is shown in logs and output); use `credentials`")


class DeviceKindSettings(Strict):
    """Overrides for one kind of device, e.g. alarm panels checked more often."""

    interval: Seconds | None = None


class ConcurrencySettings(Strict):
    """How many probes may run at once."""

    max_probes: int = Field(2000, ge=1, description="session probes (rtsp, isapi, axpro) across all schools")
    per_school: int = Field(32, ge=1, description="session probes towards one school")


class HysteresisSettings(Strict):
    """Debounce: a device goes down or up only after several results agree."""

    down_after: int = Field(3, ge=1, description="consecutive failures before down")
    up_after: int = Field(2, ge=1, description="consecutive successes before up")


class LoggingSettings(Strict):
    """structlog output."""

    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class HttpSettings(Strict):
    """Limits of the HTTP listener (/metrics, status): what idle or hostile clients may hold."""

    max_connections: int = Field(256, ge=1, description="connections held at once; the longest idle is evicted")
    fd_reserve: int = Field(
        512, ge=0, description="file descriptors always left to probes: the cap is at most RLIMIT_NOFILE minus this"
    )
    head_timeout: Seconds = Field(10.0, description="a request head (and a TLS handshake) must be complete by then")
    idle_timeout: Seconds = Field(60.0, description="a connection without a request is closed after this")


class ReportSettings(Strict):
    """`telemetryd report sla` (the monthly SLA report)."""

    language: Literal["en", "ru", "kk"] = Field(
        "en", description="language of the HTML and PDF report when --lang is not given"
    )


class Shard(Strict):
    """`k/N`: this instance keeps the schools whose id hashes to k of N."""

    index: int
    count: int

    @classmethod
    def parse(cls, value: object) -> object:
        """Turn ``"1/4"`` into a Shard; pass mappings through for the normal validation."""
        if isinstance(value, str):
            match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value)
            if not match:
                raise ValueError("expected k/N, e.g. 0/1 for a single instance or 2/4")
            return {"index": int(match.group(1)), "count": int(match.group(2))}
        return value

    @model_validator(mode="after")
    def _in_range(self) -> Shard:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: need 0 <= k < N and N >= 1")
        return self

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


class Settings(Strict):
    """Everything in `telemetryd.yaml`."""

    listen: str = Field("0.0.0.0:9817", description="host:port of /metrics and the status page")
    web_config_file: str | None = Field(
        None,
        description="exporter-toolkit web config (TLS, basic auth) for the listener; relative to this file; "
        "re-read when it changes; none: plain HTTP, no authentication",
    )
    http: HttpSettings = HttpSettings()
    inventory: str = Field("inventory", description="directory or file; relative to this file")
    credentials_directory: str | None = Field(
        None, description="where named secrets live; $CREDENTIALS_DIRECTORY wins when set"
    )
    state_directory: str | None = Field(
        None,
        description="what must survive a restart (credentials a device rejected, its capabilities, certificate "
        "pins); relative to this file; $STATE_DIRECTORY (systemd StateDirectory=) when unset; none: memory only",
    )
    shard: Annotated[Shard, BeforeValidator(Shard.parse)] = Shard(index=0, count=1)
    probes: ProbeSettings = ProbeSettings()
    device_kinds: dict[DeviceKind, DeviceKindSettings] = Field(default_factory=dict)
    concurrency: ConcurrencySettings = ConcurrencySettings()
    hysteresis: HysteresisSettings = HysteresisSettings()
    speedtest: SpeedTestSettings = SpeedTestSettings()
    sia: SiaSettings = SiaSettings()
    history: HistorySettings = HistorySettings()
    logging: LoggingSettings = LoggingSettings()
    report: ReportSettings = ReportSettings()
    shutdown_timeout: Seconds = 10.0
    timezone: str = Field(
        "Asia/Almaty", description="IANA zone of the times on the status page (Shymkent: Asia/Almaty, UTC+05:00)"
    )
    grafana_url: str | None = Field(
        None,
        description="base URL of the Grafana with the shipped dashboards, e.g. https://grafana.noc.example; the status "
        "page links each school to its dashboard; none: no links",
    )

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone (e.g. Asia/Almaty)") from None
        return value

    @field_validator("grafana_url")
    @classmethod
    def _grafana_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parsed = urlsplit(value.strip())
        if parsed.scheme not in {"http", "https"} or not parsed.netloc:
            raise ValueError("expected http(s)://host[:port][/path] of the Grafana")
        refuse_credentials(value)  # every NOC browser shows the link: no user, password or token in it
        if parsed.query or parsed.fragment:
            raise ValueError("expected the Grafana's base URL, without a query or fragment (the page adds its own)")
        return value.strip().rstrip("/")

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        _host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("expected host:port, e.g. 0.0.0.0:9817 or 127.0.0.1:9817")
        return value

    @property
    def state_path(self) -> Path | None:
        """Where the daemon keeps what must survive a restart: the setting, else systemd's $STATE_DIRECTORY."""
        where = self.state_directory or os.environ.get("STATE_DIRECTORY", "").split(":")[0]
        return Path(where) if where else None

    @property
    def listen_host(self) -> str:
        """Host part of `listen` (brackets of an IPv6 literal removed)."""
        return self.listen.rpartition(":")[0].strip("[]") or "0.0.0.0"

    @property
    def listen_port(self) -> int:
        """Port part of `listen`."""
        return int(self.listen.rpartition(":")[2])

    def interval_for(self, protocol: str, kind: DeviceKind) -> float:
        """How often a probe runs for a kind of device."""
        override = self.device_kinds.get(kind)
        if override is not None and override.interval is not None:
            return override.interval
        return float(getattr(self.probes, protocol).interval)

    def timeout_for(self, protocol: str) -> float:
        """How long one probe of a protocol may take."""
        return float(getattr(self.probes, protocol).timeout)
