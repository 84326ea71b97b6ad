"""Cameras and NVRs beyond up/down: what their ISAPI checks found, and each camera's verdict."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from telemetryd.cameras.channels import NvrViews, Reachability, nvr_channels, school_verdicts, verdict_inputs
from telemetryd.cameras.verdict import Judgement
from telemetryd.export.families import DEVICE_LABELS, Family, RosterCollector, escape, flag
from telemetryd.model import Device, School
from telemetryd.probes.isapi import AuthState, IsapiHealth
from telemetryd.probes.isapi.events import EventStreams
from telemetryd.reachability.state import ProbeState, Roster

MIB = 1024 * 1024


class CameraCollector(RosterCollector):
    """Hardware identity, login state, clock, uptime, NVR channels and disks (the verdict: `VerdictExposition`).

    Everything comes from the typed ISAPI findings State holds per device: a device or
    probe removed by a reload takes its series with it.
    """

    def families(self, roster: Roster) -> Iterator[Metric]:
        """Yield the ISAPI and verdict families from one roster."""
        labels = DEVICE_LABELS
        hardware = InfoMetricFamily(
            "telemetryd_device_hardware",
            "Model, firmware and serial the device reports over ISAPI (a new serial = the device was swapped).",
            labels=[*labels, "model", "firmware", "serial"],
        )
        auth = GaugeMetricFamily(
            "telemetryd_isapi_auth_ok",
            "0 when the device rejected our credential or is locked: fix the password before operators are locked out.",
            labels=labels,
        )
        locked = GaugeMetricFamily(
            "telemetryd_isapi_locked_until_timestamp_seconds",
            "The device locked logins from us until then; no request is sent before.",
            labels=labels,
        )
        certificate = GaugeMetricFamily(
            "telemetryd_isapi_certificate_changed",
            "1 when an HTTPS device shows another certificate than the one pinned on first use; nothing is sent to it "
            "until `telemetryd pins forget HOST:PORT`.",
            labels=labels,
        )
        drift = GaugeMetricFamily(
            "telemetryd_device_clock_drift_seconds",
            "Device clock minus this server's (positive: ahead).",
            labels=labels,
        )
        ntp = GaugeMetricFamily("telemetryd_device_time_ntp", "1 when the device sets its clock by NTP.", labels=labels)
        uptime = GaugeMetricFamily("telemetryd_device_uptime_seconds", "Uptime the device reports.", labels=labels)
        channel_labels = ["school", "device", "channel"]
        channel_up = GaugeMetricFamily(
            "telemetryd_nvr_channel_up", "1 when the NVR sees the channel's camera online.", labels=channel_labels
        )
        recording = GaugeMetricFamily(
            "telemetryd_nvr_channel_recording",
            "1 when the channel has footage within probes.isapi.recording_window.",
            labels=channel_labels,
        )
        unsupported = GaugeMetricFamily(
            "telemetryd_isapi_check_unsupported",
            "1 for each ISAPI check the device does not offer (a capability, not a fault: it is judged on the rest); "
            "asked again daily or after a firmware change.",
            labels=[*labels, "check"],
        )
        input_video = GaugeMetricFamily(
            "telemetryd_dvr_input_video",
            "1 when the DVR's analog input has a video signal, 0 for NO VIDEO (cut cable, dead or unpowered camera).",
            labels=["school", "device", "input"],
        )
        disk_labels = ["school", "device", "disk"]
        disk_ok = GaugeMetricFamily("telemetryd_nvr_disk_healthy", "1 when the disk reports ok.", labels=disk_labels)
        disk_size = GaugeMetricFamily("telemetryd_nvr_disk_capacity_bytes", "Disk capacity.", labels=disk_labels)
        disk_free = GaugeMetricFamily("telemetryd_nvr_disk_free_bytes", "Free space on the disk.", labels=disk_labels)
        for device_state in roster.probing("isapi"):
            found = device_state.finding(IsapiHealth)
            if found is None:
                continue
            device = device_state.device
            base = [device.school_id, device.id, device.kind.value]
            auth.add_metric(base, flag(found.auth not in (AuthState.AUTH_FAILED, AuthState.LOCKED)))
            if found.locked_until is not None:
                locked.add_metric(base, found.locked_until)
            if found.certificate or found.certificate_changed:  # pinned HTTPS devices only
                certificate.add_metric(base, flag(found.certificate_changed))
            if found.identity is not None:
                identity = found.identity
                hardware.add_metric([*base, identity.model, identity.firmware, identity.serial], {})
            if found.clock_drift is not None:
                drift.add_metric(base, found.clock_drift)
            if found.time is not None:
                ntp.add_metric(base, flag(found.time.ntp))
            if found.status is not None and found.status.uptime is not None:
                uptime.add_metric(base, found.status.uptime)
            for channel in found.channels:
                channel_up.add_metric([device.school_id, device.id, str(channel.id)], flag(channel.online))
            for channel_id, recorded in found.recording:
                recording.add_metric([device.school_id, device.id, str(channel_id)], flag(recorded))
            for check in found.unsupported:
                unsupported.add_metric([*base, check], 1.0)
            for analog in found.inputs:
                if analog.enabled:
                    input_video.add_metric([device.school_id, device.id, str(analog.id)], flag(analog.has_video))
            for disk in found.disks:
                if not disk.present:
                    continue
                disk_values = [device.school_id, device.id, str(disk.id)]
                disk_ok.add_metric(disk_values, flag(disk.healthy))
                if disk.capacity_mb is not None:
                    disk_size.add_metric(disk_values, disk.capacity_mb * MIB)
                if disk.free_mb is not None:
                    disk_free.add_metric(disk_values, disk.free_mb * MIB)
        yield from (hardware, auth, locked, certificate, drift, ntp, uptime, channel_up, recording, unsupported)
        yield from (input_video, disk_ok, disk_size, disk_free)


class EventCollector(Collector):
    """What the devices' event streams say now: active events, and how the streams stand.

    Rendered in the scrape's worker thread while the loop updates the streams: it reads
    copies (`list()` of a dict is taken whole under the GIL), never iterates a live dict.
    """

    def __init__(self, events: EventStreams | None) -> None:
        self.events = events

    def collect(self) -> Iterator[Metric]:
        """Event states per (device, event, channel) ever active, stream states, event and reconnect counts."""
        events = self.events
        if events is None:
            return
        active = GaugeMetricFamily(
            "telemetryd_camera_event_active",
            "1 while the device's event stream reports the event (video_loss, tampering, disk_error, disk_full, "
            "illegal_access, io_alarm) on the channel (0: the device itself); 0 once it ended.",
            labels=["school", "device", "event", "channel"],
        )
        since = GaugeMetricFamily(
            "telemetryd_camera_event_since_timestamp_seconds",
            "When the active event began (this server's clock).",
            labels=["school", "device", "event", "channel"],
        )
        for stream in list(events.streams.values()):
            device, book = stream.device, stream.book
            now_active = dict(book.active)
            for event, channel in sorted(set(book.seen)):
                labels = [device.school_id, device.id, event, str(channel)]
                held = now_active.get((event, channel))
                active.add_metric(labels, flag(held is not None))
                if held is not None:
                    since.add_metric(labels, held[0])
        streams = GaugeMetricFamily(
            "telemetryd_isapi_event_streams",
            "Event streams by state: open, connecting, backoff (reconnecting), unsupported (the device has none; "
            "asked again daily), auth_failed (waiting for a changed credential).",
            labels=["state"],
        )
        for state, count in sorted(events.states().items()):
            streams.add_metric([state], count)
        total = CounterMetricFamily(
            "telemetryd_isapi_stream_events", "Tracked events that became active, by event.", labels=["event"]
        )
        for event, count in sorted(list(events.events_total.items())):
            total.add_metric([event], count)
        reconnects = CounterMetricFamily(
            "telemetryd_isapi_stream_reconnects", "Event streams opened again after they ended or failed."
        )
        reconnects.add_metric([], events.reconnects)
        yield from (active, since, streams, total, reconnects)


VERDICT = Family(
    "telemetryd_camera_verdict",
    "gauge",
    "1, labelled with the camera's current verdict: ok, camera_down, not_recorded, lan_fault, nvr_down or unknown "
    "(with the missing evidence in reason: not_probed, no_nvr, nvr_not_checked, nvr_auth_failed, "
    "nvr_cannot_report_channel, no_recording_evidence).",
)


@dataclass(slots=True)
class _VerdictGeneration:
    """One roster's per-school inputs and cached verdict lines."""

    roster: Roster
    schools: tuple[tuple[School, tuple[str, ...], tuple[ProbeState, ...]], ...]
    """(school, other schools its verdicts depend on, probes whose every result counts): `verdict_inputs`."""
    blocks: dict[str, tuple[tuple[int, ...], str]]
    """school id → (the key its lines were judged at, the lines)."""
    memo: Reachability = field(default_factory=dict)


class VerdictExposition:
    """`telemetryd_camera_verdict`: one series per camera, its current verdict in a label, encoded by hand.

    One series per camera, not one per possible verdict: ``sum by (verdict)`` counts cameras
    and an alert on ``verdict="camera_down"`` resolves when the series moves on. A school's
    lines are judged again only when its version (or an NVR's school's) or the runs of a
    probe whose every result counts moved (`verdict_inputs`).
    """

    def __init__(self) -> None:
        self._generation: _VerdictGeneration | None = None

    def render(self, roster: Roster, *, openmetrics: bool = False) -> bytes:
        """The verdict family for every camera of `roster`, school by school."""
        generation = self._generation
        if generation is None or generation.roster is not roster:  # a reload: judge everything afresh
            schools = tuple((school, *verdict_inputs(roster, school)) for school in roster.inventory.schools)
            generation = self._generation = _VerdictGeneration(roster, schools, {})
        blocks = generation.blocks
        channels: NvrViews | None = None
        lines = [VERDICT.header(openmetrics=openmetrics)]
        for school, others, volatile in generation.schools:
            # Read before the states they stand for (see State.apply): a race only re-judges later.
            key = (
                roster.school_version(school.id),
                sum(probe.runs for probe in volatile),
                *(roster.school_version(other) for other in others),
            )
            block = blocks.get(school.id)
            if block is None or block[0] != key:
                if channels is None:
                    channels = nvr_channels(roster)
                verdicts = school_verdicts(roster, school, channels, generation.memo)
                block = blocks[school.id] = (key, "".join(_verdict_line(c, v) for c, v in verdicts))
            lines.append(block[1])
        return "".join(lines).encode()


def _verdict_line(camera: Device, judgement: Judgement) -> str:
    # `reason` is always there (empty unless unknown): one label set per family, as Prometheus clients write it.
    labels = (
        f'device="{escape(camera.id)}",reason="{judgement.reason}",'
        f'school="{escape(camera.school_id)}",verdict="{judgement.verdict.value}"'
    )
    return f"{VERDICT.sample}{{{labels}}} 1.0\n"
