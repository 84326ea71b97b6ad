"""The per-device families, encoded by hand: the bulk of every scrape.

At city scale these are ~150,000 samples of the ~230,000 in a body. Built through
prometheus-client each sample costs a `Sample`, label-name validation and escaping of
every label value on every scrape; here a device's label set is escaped once (it never
changes for a `Device`, which is immutable) and a scrape only formats values and joins
strings. The output is what prometheus-client prints for the same families, byte for
byte, in the text format and in OpenMetrics (tests/export/test_devices.py holds both
against prometheus-client's own encoding of them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from prometheus_client.utils import floatToGoString

from telemetryd.export.families import Family, escape
from telemetryd.model import Device, Health
from telemetryd.reachability.state import Roster

DEVICE_INFO = Family("telemetryd_device", "info", "Device inventory facts.")
DEVICE_UP = Family("telemetryd_device_up", "gauge", "1 when every probe of the device is up, 0 when one is down.")
DEVICE_FLAPS = Family(
    "telemetryd_device_flaps", "counter", "Up/down transitions of the device since the daemon started."
)
DEVICE_CHANGED = Family(
    "telemetryd_device_last_change_timestamp_seconds", "gauge", "When the device last changed state (Unix time)."
)
PROBE_UP = Family("telemetryd_probe_up", "gauge", "1 when the probe's debounced state is up, 0 when down.")
PROBE_DURATION = Family("telemetryd_probe_duration_seconds", "gauge", "Duration of the probe's last run.")
PROBE_RTT = Family(
    "telemetryd_probe_rtt_seconds",
    "gauge",
    "Round-trip time of the last successful run: mean ICMP echo RTT, or TCP connect time.",
)
PROBE_LOSS = Family(
    "telemetryd_probe_loss_ratio", "gauge", "Share of echo requests unanswered in the last ICMP run (0-1)."
)
FAMILIES = (
    DEVICE_INFO,
    DEVICE_UP,
    DEVICE_FLAPS,
    DEVICE_CHANGED,
    PROBE_UP,
    PROBE_DURATION,
    PROBE_RTT,
    PROBE_LOSS,
)


@dataclass(frozen=True, slots=True)
class _Labels:
    """A device's escaped label sets, sorted by label name as prometheus-client prints them."""

    device: str
    """``{device="…",kind="…",school="…"}``"""
    info: str
    """The same with ``host``."""
    probes: dict[str, str]
    """probe name → the device's labels with ``probe``."""


def _labels(device: Device, probe_names: list[str]) -> _Labels:
    school, name, kind = escape(device.school_id), escape(device.id), escape(device.kind.value)
    return _Labels(
        f'{{device="{name}",kind="{kind}",school="{school}"}}',
        f'{{device="{name}",host="{escape(device.host)}",kind="{kind}",school="{school}"}}',
        {p: f'{{device="{name}",kind="{kind}",probe="{escape(p)}",school="{school}"}}' for p in probe_names},
    )


_FLAG = {Health.UP: " 1.0\n", Health.DOWN: " 0.0\n"}
_number = cast(Callable[[float], str], floatToGoString)
"""prometheus-client's own number format (Go's), so both encodings agree to the byte."""


class DeviceExposition:
    """Renders the device families of one roster; keeps each device's escaped labels between scrapes.

    Safe to call from several threads at once: the cache is replaced, never changed in place.
    """

    def __init__(self) -> None:
        self._cache: tuple[Roster | None, dict[str, tuple[Device, _Labels]]] = (None, {})

    def _labels_for(self, roster: Roster) -> dict[str, tuple[Device, _Labels]]:
        cached_roster, cached = self._cache
        if cached_roster is roster:
            return cached
        # A reload: keep the entries of devices that did not change (same Device, same probes).
        fresh: dict[str, tuple[Device, _Labels]] = {}
        for device_id, state in roster.devices.items():
            old = cached.get(device_id)
            names = list(state.probes)
            if old is not None and old[0] == state.device and list(old[1].probes) == names:
                fresh[device_id] = old
            else:
                fresh[device_id] = (state.device, _labels(state.device, names))
        self._cache = (roster, fresh)
        return fresh

    def render(self, roster: Roster, *, openmetrics: bool = False) -> bytes:
        """The eight device and probe families for every device of `roster`, in inventory order."""
        labels_of = self._labels_for(roster)
        go = _number
        info: list[str] = [DEVICE_INFO.header(openmetrics=openmetrics)]
        up: list[str] = [DEVICE_UP.header(openmetrics=openmetrics)]
        flaps: list[str] = [DEVICE_FLAPS.header(openmetrics=openmetrics)]
        changed: list[str] = [DEVICE_CHANGED.header(openmetrics=openmetrics)]
        probe_up: list[str] = [PROBE_UP.header(openmetrics=openmetrics)]
        duration: list[str] = [PROBE_DURATION.header(openmetrics=openmetrics)]
        rtt: list[str] = [PROBE_RTT.header(openmetrics=openmetrics)]
        loss: list[str] = [PROBE_LOSS.header(openmetrics=openmetrics)]
        info_name, up_name, flaps_name = DEVICE_INFO.sample, DEVICE_UP.sample, DEVICE_FLAPS.sample
        changed_name, probe_up_name = DEVICE_CHANGED.sample, PROBE_UP.sample
        duration_name, rtt_name, loss_name = PROBE_DURATION.sample, PROBE_RTT.sample, PROBE_LOSS.sample
        for device_id, state in roster.devices.items():
            labels = labels_of[device_id][1]
            device = labels.device
            info.append(f"{info_name}{labels.info} 1.0\n")
            flag = _FLAG.get(state.health)
            if flag is not None:
                up.append(up_name + device + flag)
            flaps.append(f"{flaps_name}{device} {go(state.flaps)}\n")
            if state.last_change is not None:
                changed.append(f"{changed_name}{device} {go(state.last_change)}\n")
            probe_labels = labels.probes
            for name, probe in state.probes.items():
                result = probe.last_result
                if result is None:
                    continue
                plabels = probe_labels[name]
                flag = _FLAG.get(probe.health)
                if flag is not None:
                    probe_up.append(probe_up_name + plabels + flag)
                duration.append(f"{duration_name}{plabels} {go(result.duration)}\n")
                if result.ok and result.rtt is not None:
                    rtt.append(f"{rtt_name}{plabels} {go(result.rtt)}\n")
                if result.loss is not None:
                    loss.append(f"{loss_name}{plabels} {go(result.loss)}\n")
        return "".join(info + up + flaps + changed + probe_up + duration + rtt + loss).encode()
