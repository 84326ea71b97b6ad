"""Every camera's verdict over one roster: its own reachability, its NVR's, and the NVR's channel view.

Pure: reads State's roster (reachability and the NVRs' typed ISAPI findings), no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator

from telemetryd.cameras.verdict import (
    REACHABILITY_PROTOCOLS,
    ChannelView,
    SchoolCameras,
    Verdict,
    attribute,
    reachability,
)
from telemetryd.model import Device, DeviceKind, Health
from telemetryd.probes.isapi import IsapiHealth
from telemetryd.reachability.state import DeviceState, Roster


def nvr_channels(roster: Roster) -> dict[tuple[str, int], ChannelView]:
    """(NVR id, channel) → what the NVR's last ISAPI check said about that channel."""
    views: dict[tuple[str, int], ChannelView] = {}
    for device_state in roster.probing("isapi"):
        if device_state.device.kind is not DeviceKind.NVR:
            continue
        found = device_state.finding(IsapiHealth)
        if found is None:
            continue
        recorded = dict(found.recording)
        nvr_id = device_state.device.id
        for channel in found.channels:
            views[nvr_id, channel.id] = ChannelView(channel.online, recorded.get(channel.id), channel.detect_result)
    return views


Reachability = dict[str, tuple[DeviceState, int, Health]]
"""device id → (its state, the `DeviceState.version` it was judged at, whether it answers): a memo."""


def camera_verdicts(roster: Roster, memo: Reachability | None = None) -> Iterator[tuple[Device, Verdict]]:
    """(camera, verdict) for every camera, school by school in inventory order.

    With a `memo` (one per roster), a device with a reachability probe is judged again only
    after its health changed; an ISAPI-only device depends on its last reasons, so always.
    """
    channels = nvr_channels(roster)

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

    for school in roster.inventory.schools:
        cameras = [d for d in school.devices if d.kind is DeviceKind.CAMERA and d.id in roster.devices]
        alive = {d.id: answers(d.id) or Health.UNKNOWN for d in cameras}
        known = [h for h in alive.values() if h is not Health.UNKNOWN]
        summary = SchoolCameras(down=known.count(Health.DOWN), known=len(known))
        for device in cameras:
            nvr_health: Health | None = None
            channel = None
            if device.nvr is not None:
                nvr_id, channel_id = device.nvr
                nvr_health = answers(nvr_id)
                channel = channels.get((nvr_id, channel_id))
            yield device, attribute(alive[device.id], nvr_health, channel, summary)
