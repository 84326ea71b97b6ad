"""The per-device families, encoded by hand: the bulk of every scrape.

A device costs a handful of series (`SERIES_BUDGET`), and every one of them changes only
when the device's health does: each device's lines are encoded once per change, with its
label sets escaped once per `Device` (immutable), and a scrape joins cached strings.
The output is what prometheus-client prints for the same families, byte for byte, in
the text format and in OpenMetrics (tests/export/test_devices.py holds both against
prometheus-client's own encoding of them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from prometheus_client.utils import floatToGoString

from telemetryd.export.families import Family, escape
from telemetryd.model import Device, DeviceKind, Health
from telemetryd.reachability.state import DeviceState, Roster

DEVICE_INFO = Family("telemetryd_device", "info", "Device inventory facts.")
DEVICE_UP = Family("telemetryd_device_up", "gauge", "1 when every probe of the device is up, 0 when one is down.")
PROBE_UP = Family("telemetryd_probe_up", "gauge", "1 when the probe's debounced state is up, 0 when down.")
LINK_RTT = Family(
    "telemetryd_school_link_rtt_seconds",
    "gauge",
    "Mean ICMP echo round trip to the school's router in its last answered run: the school link's latency.",
)
LINK_LOSS = Family(
    "telemetryd_school_link_loss_ratio",
    "gauge",
    "Share of echo requests to the school's router unanswered in its last run (0-1).",
)
FAMILIES = (DEVICE_INFO, DEVICE_UP, PROBE_UP, LINK_RTT, LINK_LOSS)
SERIES_BUDGET = {DeviceKind.CAMERA: 6, DeviceKind.NVR: 5, DeviceKind.ALARM_PANEL: 4, DeviceKind.ROUTER: 5}
"""Most series a device of each kind may cost with its default probes, the verdict included (README, Metrics).

Durations and round trips are one histogram per protocol (`telemetryd_probe_duration_seconds`,
`telemetryd_probe_rtt_seconds`); only the router's round trip and loss stay per device,
as the school link's latency.
"""
LINK_PROBE = "icmp"


@dataclass(frozen=True, slots=True)
class _Labels:
    """A device's escaped label sets, sorted by label name as prometheus-client prints them."""

    device: str
    """``{device="…",kind="…",school="…"}``"""
    info: str
    """The same with ``host``."""
    probes: dict[str, str]
    """probe name → the device's labels with ``probe``."""
    link: str | None
    """``{device="…",school="…"}`` for a router (its ICMP run is the school link's latency), else None."""


def _labels(device: Device, probe_names: list[str]) -> _Labels:
    school, name, kind = escape(device.school_id), escape(device.id), escape(device.kind.value)
    link = f'{{device="{name}",school="{school}"}}' if device.kind is DeviceKind.ROUTER else None
    return _Labels(
        f'{{device="{name}",kind="{kind}",school="{school}"}}',
        f'{{device="{name}",host="{escape(device.host)}",kind="{kind}",school="{school}"}}',
        {p: f'{{device="{name}",kind="{kind}",probe="{escape(p)}",school="{school}"}}' for p in probe_names},
        link,
    )


_FLAG = {Health.UP: " 1.0\n", Health.DOWN: " 0.0\n"}
_number = cast(Callable[[float], str], floatToGoString)
"""prometheus-client's own number format (Go's), so both encodings agree to the byte."""


@dataclass(frozen=True, slots=True)
class _Lines:
    """One device's encoded lines as of one `DeviceState.version`: what a scrape joins without formatting."""

    state: DeviceState
    version: int
    labels: _Labels
    info: str
    up: str
    """``telemetryd_device_up`` line, empty while the device is unknown."""
    probe_up: str
    """Its ``telemetryd_probe_up`` lines, probes in inventory order, unknown ones left out."""


def _encode(state: DeviceState, version: int, labels: _Labels) -> _Lines:
    up = _FLAG.get(state.health)
    probe_up = "".join(
        PROBE_UP.sample + labels.probes[name] + flag
        for name, probe in state.probes.items()
        if (flag := _FLAG.get(probe.health)) is not None
    )
    return _Lines(
        state,
        version,
        labels,
        f"{DEVICE_INFO.sample}{labels.info} 1.0\n",
        DEVICE_UP.sample + labels.device + up if up is not None else "",
        probe_up,
    )


class DeviceExposition:
    """Renders the device families of one roster from lines encoded once per state change.

    A device's lines change only when its health or a probe's does (`DeviceState.version`),
    so a scrape mostly joins cached strings; only routers' link latency is formatted each time.
    Safe to call from several threads at once: the cache is replaced, never changed in place,
    and an entry read with a stale version is re-encoded at the next scrape.
    """

    def __init__(self) -> None:
        self._cache: dict[str, _Lines] = {}

    def render(self, roster: Roster, *, openmetrics: bool = False) -> bytes:
        """The device, probe and link families for every device of `roster`, in inventory order."""
        cached = self._cache
        fresh: dict[str, _Lines] = {}
        info: list[str] = [DEVICE_INFO.header(openmetrics=openmetrics)]
        up: list[str] = [DEVICE_UP.header(openmetrics=openmetrics)]
        probe_up: list[str] = [PROBE_UP.header(openmetrics=openmetrics)]
        rtt: list[str] = [LINK_RTT.header(openmetrics=openmetrics)]
        loss: list[str] = [LINK_LOSS.header(openmetrics=openmetrics)]
        for device_id, state in roster.devices.items():
            lines = cached.get(device_id)
            version = state.version  # read before the health it stands for: a race only re-encodes later
            if lines is None or lines.state is not state or lines.version != version:
                lines = _encode(state, version, self._labels(lines, state))
            fresh[device_id] = lines
            info.append(lines.info)
            up.append(lines.up)
            probe_up.append(lines.probe_up)
            if lines.labels.link is not None:
                self._link(state, lines.labels.link, rtt, loss)
        self._cache = fresh
        return "".join(info + up + probe_up + rtt + loss).encode()

    @staticmethod
    def _labels(old: _Lines | None, state: DeviceState) -> _Labels:
        """The cached labels when the device and its probes are unchanged (a reload), else new ones."""
        names = list(state.probes)
        if old is not None and old.state.device == state.device and list(old.labels.probes) == names:
            return old.labels
        return _labels(state.device, names)

    @staticmethod
    def _link(state: DeviceState, labels: str, rtt: list[str], loss: list[str]) -> None:
        probe = state.probes.get(LINK_PROBE)
        result = probe.last_result if probe is not None else None
        if result is None:
            return
        if result.ok and result.rtt is not None:
            rtt.append(f"{LINK_RTT.sample}{labels} {_number(result.rtt)}\n")
        if result.loss is not None:
            loss.append(f"{LINK_LOSS.sample}{labels} {_number(result.loss)}\n")
