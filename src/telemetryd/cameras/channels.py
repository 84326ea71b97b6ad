"""Every camera's verdict over one roster: its own reachability, its NVR's, and the NVR's channel view.

Pure: reads State's roster (reachability and the NVRs' typed ISAPI findings), no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator

from telemetryd.cameras.verdict import (
    REACHABILITY_PROTOCOLS,
    ChannelView,
    Judgement,
    SchoolCameras,
    attribute,
    reachability,
)
from telemetryd.model import Device, DeviceKind, Health, School
from telemetryd.probes.isapi import AuthState, IsapiHealth
from telemetryd.reachability.state import DeviceState, ProbeState, Roster

NOT_CHECKED = ChannelView(missing="nvr_not_checked")
"""The NVR has no ISAPI check (or none has finished): nothing says whether it records the camera."""
AUTH_FAILED = ChannelView(missing="nvr_auth_failed")
CANNOT_REPORT = ChannelView(missing="nvr_cannot_report_channel")


class NvrViews:
    """What every NVR's last ISAPI check said about each of its channels, and why a channel has no view."""

    __slots__ = ("_gaps", "_views")

    def __init__(self) -> None:
        self._views: dict[tuple[str, int], ChannelView] = {}
        self._gaps: dict[str, ChannelView] = {}

    def view(self, nvr_id: str, channel: int) -> ChannelView:
        """The channel's view; a `ChannelView` whose `missing` names the gap when the NVR cannot give one."""
        found = self._views.get((nvr_id, channel))
        if found is not None:
            return found
        return self._gaps.get(nvr_id, NOT_CHECKED)


def nvr_channels(roster: Roster) -> NvrViews:
    """Every NVR's channel views (IP channels and a DVR's analog inputs) from its last ISAPI finding."""
    views = NvrViews()
    for device_state in roster.probing("isapi"):
        if device_state.device.kind is not DeviceKind.NVR:
            continue
        found = device_state.finding(IsapiHealth)
        if found is None:
            continue
        nvr_id = device_state.device.id
        if found.auth in (AuthState.AUTH_FAILED, AuthState.LOCKED):
            views._gaps[nvr_id] = AUTH_FAILED
            continue  # an old channel list says nothing about now
        views._gaps[nvr_id] = CANNOT_REPORT if found.identity is not None else NOT_CHECKED
        recorded = dict(found.recording)
        for channel in found.channels:
            views._views[nvr_id, channel.id] = ChannelView(
                channel.online, recorded.get(channel.id), channel.detect_result
            )
        for analog in found.inputs:
            if not analog.enabled or (nvr_id, analog.id) in views._views:
                continue  # a hybrid recorder's IP channel of the same number is the one the inventory means
            views._views[nvr_id, analog.id] = ChannelView(
                analog.has_video, recorded.get(analog.id), "" if analog.has_video else "NO VIDEO"
            )
    return views


Reachability = dict[str, tuple[DeviceState, int, Health]]
"""device id → (its state, the `DeviceState.version` it was judged at, whether it answers): a memo."""


def camera_verdicts(roster: Roster, memo: Reachability | None = None) -> Iterator[tuple[Device, Judgement]]:
    """(camera, verdict) for every camera, school by school in inventory order."""
    channels = nvr_channels(roster)
    for school in roster.inventory.schools:
        yield from school_verdicts(roster, school, channels, memo)


def school_verdicts(
    roster: Roster,
    school: School,
    channels: NvrViews,
    memo: Reachability | None = None,
) -> list[tuple[Device, Judgement]]:
    """(camera, verdict) for the school's cameras, given every NVR's channel view (`nvr_channels`).

    With a `memo` (one per roster), a device with a reachability probe is judged again only
    after its health changed; an ISAPI-only device depends on its last reasons, so always.
    """

    def answers(device_id: str) -> Health | None:
        device_state = roster.devices.get(device_id)
        if device_state is None:
            return None
        version = device_state.version  # before the healths it stands for, as DeviceExposition reads it
        if memo is not None:
            hit = memo.get(device_id)
            if hit is not None and hit[0] is device_state and hit[1] == version:
                return hit[2]
        health = reachability(
            {
                name: (probe.health, probe.last_result.reason if probe.last_result is not None else None)
                for name, probe in device_state.probes.items()
            }
        )
        if memo is not None and any(spec.protocol in REACHABILITY_PROTOCOLS for spec in device_state.device.probes):
            memo[device_id] = (device_state, version, health)
        return health

    cameras = [d for d in school.devices if d.kind is DeviceKind.CAMERA and d.id in roster.devices]
    alive = {d.id: answers(d.id) or Health.UNKNOWN for d in cameras}
    known = [h for h in alive.values() if h is not Health.UNKNOWN]
    summary = SchoolCameras(down=known.count(Health.DOWN), known=len(known))
    verdicts = []
    for device in cameras:
        nvr_health: Health | None = None
        channel = None
        if device.nvr is not None:
            nvr_id, channel_id = device.nvr
            nvr_health = answers(nvr_id) or Health.UNKNOWN  # named but not in this roster: not "no NVR"
            channel = channels.view(nvr_id, channel_id)
        verdicts.append((device, attribute(alive[device.id], nvr_health, channel, summary)))
    return verdicts


def verdict_inputs(roster: Roster, school: School) -> tuple[tuple[str, ...], tuple[ProbeState, ...]]:
    """What the school's verdicts depend on beyond its own health: (other schools, probe states).

    The other schools hold NVRs its cameras record on; the probe states are those whose
    every result matters, not only health changes: the probes of devices judged by ISAPI
    reasons alone, and the NVRs' ISAPI probes that carry the channel views. A caller can
    keep verdicts until `Roster.school_version` of these schools or the `runs` of these
    probes move.
    """
    involved: dict[str, DeviceState] = {}
    for device in school.devices:
        if device.kind is DeviceKind.CAMERA:
            for device_id in (device.id, device.nvr[0] if device.nvr is not None else None):
                state = roster.devices.get(device_id) if device_id is not None else None
                if state is not None:
                    involved[state.device.id] = state
    schools = tuple(dict.fromkeys(s.device.school_id for s in involved.values() if s.device.school_id != school.id))
    volatile: list[ProbeState] = []
    for state in involved.values():
        specs = state.device.probes
        if not any(spec.protocol in REACHABILITY_PROTOCOLS for spec in specs):
            volatile.extend(state.probes.values())
        elif state.device.kind is DeviceKind.NVR:
            volatile.extend(state.probes[spec.name] for spec in specs if spec.protocol == "isapi")
    return schools, tuple(volatile)
