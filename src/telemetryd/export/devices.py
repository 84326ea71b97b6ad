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
SERIES_BUDGET = {DeviceKind.CAMERA: 5, DeviceKind.NVR: 5, DeviceKind.ALARM_PANEL: 4, DeviceKind.ROUTER: 5}
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
    device_of: Device
    """The device these labels were escaped from (a reload keeps them while it is unchanged)."""


def _labels(device: Device, probe_names: list[str]) -> _Labels:
    school, name, kind = escape(device.school_id), escape(device.id), escape(device.kind.value)
    link = f'{{device="{name}",school="{school}"}}' if device.kind is DeviceKind.ROUTER else None
    return _Labels(
        f'{{device="{name}",kind="{kind}",school="{school}"}}',
        f'{{device="{name}",host="{escape(device.host)}",kind="{kind}",school="{school}"}}',
        {p: f'{{device="{name}",kind="{kind}",probe="{escape(p)}",school="{school}"}}' for p in probe_names},
        link,
        device,
    )


_FLAG = {Health.UP: " 1.0\n", Health.DOWN: " 0.0\n"}
_number = cast(Callable[[float], str], floatToGoString)
"""prometheus-client's own number format (Go's), so both encodings agree to the byte."""


@dataclass(frozen=True, slots=True)
class _Block:
    """One school's health lines as of one `Roster.school_version`: what a scrape joins without formatting."""

    version: int
    up: str
    """Its devices' ``telemetryd_device_up`` lines (unknown ones left out)."""
    probe_up: str
    """Their ``telemetryd_probe_up`` lines, probes in inventory order, unknown ones left out."""


@dataclass(slots=True)
class _Generation:
    """What one roster's scrapes share: labels and info lines (fixed for the roster) and each school's block."""

    roster: Roster
    labels: dict[str, _Labels]
    info: str
    schools: tuple[tuple[str, tuple[tuple[DeviceState, _Labels], ...]], ...]
    routers: tuple[tuple[DeviceState, str], ...]
    blocks: dict[str, _Block]


def _block(version: int, members: tuple[tuple[DeviceState, _Labels], ...]) -> _Block:
    up: list[str] = []
    probe_up: list[str] = []
    up_name, probe_up_name = DEVICE_UP.sample, PROBE_UP.sample
    for state, labels in members:
        flag = _FLAG.get(state.health)
        if flag is not None:
            up.append(up_name + labels.device + flag)
        for name, probe in state.probes.items():
            flag = _FLAG.get(probe.health)
            if flag is not None:
                probe_up.append(probe_up_name + labels.probes[name] + flag)
    return _Block(version, "".join(up), "".join(probe_up))


class DeviceExposition:
    """Renders the device families of one roster from lines encoded once per state change.

    A device's lines change only when its health or a probe's does, and then its school's
    version moves (`Roster.school_version`): a scrape re-encodes the schools that changed
    and joins cached strings for the rest; info lines are encoded once per roster and only
    the routers' link latency is formatted every time. Safe to call from several threads at
    once: blocks are replaced, never changed, and a block read under a stale version is
    re-encoded at the next scrape.
    """

    def __init__(self) -> None:
        self._generation: _Generation | None = None

    def render(self, roster: Roster, *, openmetrics: bool = False) -> bytes:
        """The device, probe and link families for every device of `roster`, in inventory order."""
        generation = self._generation_of(roster)
        blocks = generation.blocks
        up: list[str] = [DEVICE_UP.header(openmetrics=openmetrics)]
        probe_up: list[str] = [PROBE_UP.header(openmetrics=openmetrics)]
        for school_id, members in generation.schools:
            version = roster.school_version(school_id)  # before the healths it stands for (see State.apply)
            block = blocks.get(school_id)
            if block is None or block.version != version:
                block = blocks[school_id] = _block(version, members)
            up.append(block.up)
            probe_up.append(block.probe_up)
        rtt: list[str] = [LINK_RTT.header(openmetrics=openmetrics)]
        loss: list[str] = [LINK_LOSS.header(openmetrics=openmetrics)]
        for state, labels in generation.routers:
            probe = state.probes.get(LINK_PROBE)
            result = probe.last_result if probe is not None else None
            if result is None:
                continue
            if result.ok and result.rtt is not None:
                rtt.append(f"{LINK_RTT.sample}{labels} {_number(result.rtt)}\n")
            if result.loss is not None:
                loss.append(f"{LINK_LOSS.sample}{labels} {_number(result.loss)}\n")
        info = DEVICE_INFO.header(openmetrics=openmetrics) + generation.info
        return "".join([info, *up, *probe_up, *rtt, *loss]).encode()

    def _generation_of(self, roster: Roster) -> _Generation:
        """The current generation, or a new one for a new roster keeping labels of unchanged devices."""
        old = self._generation
        if old is not None and old.roster is roster:
            return old
        kept = old.labels if old is not None else {}
        labels: dict[str, _Labels] = {}
        for device_id, state in roster.devices.items():
            cached = kept.get(device_id)
            names = list(state.probes)
            if cached is None or cached.device_of != state.device or list(cached.probes) != names:
                cached = _labels(state.device, names)
            labels[device_id] = cached
        schools = tuple(
            (school.id, tuple((state, labels[state.device.id]) for state in roster.school_states(school.id)))
            for school in roster.inventory.schools
        )
        routers = tuple(
            (state, link) for state in roster.devices.values() if (link := labels[state.device.id].link) is not None
        )
        info = "".join(f"{DEVICE_INFO.sample}{labels[device_id].info} 1.0\n" for device_id in roster.devices)
        generation = _Generation(roster, labels, info, schools, routers, {})
        self._generation = generation
        return generation
