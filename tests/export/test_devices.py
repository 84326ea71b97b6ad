"""The hand-encoded families (devices, probes, camera verdicts) print what prometheus-client prints, byte for byte."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from prometheus_client import generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.registry import Collector

from telemetryd.cameras.channels import camera_verdicts
from telemetryd.export.cameras import VERDICT, VerdictExposition
from telemetryd.export.devices import DEVICE_INFO, DEVICE_UP, LINK_LOSS, LINK_RTT, PROBE_UP, DeviceExposition
from telemetryd.model import Contract, Device, DeviceKind, Health, Inventory, ProbeResult, ProbeSpec, School
from telemetryd.reachability.state import Roster, State
from tests.conftest import require_binary

LABELS = ["school", "device", "kind"]


class Reference(Collector):
    """The device families built the prometheus-client way, sample by sample: what the encoder must match."""

    def __init__(self, roster: Roster) -> None:
        self.roster = roster

    def collect(self) -> Iterator[Metric]:
        """The five families, from the roster."""
        info = InfoMetricFamily(DEVICE_INFO.name, DEVICE_INFO.doc, labels=[*LABELS, "host"])
        up = GaugeMetricFamily(DEVICE_UP.name, DEVICE_UP.doc, labels=LABELS)
        probe_up = GaugeMetricFamily(PROBE_UP.name, PROBE_UP.doc, labels=[*LABELS, "probe"])
        rtt = GaugeMetricFamily(LINK_RTT.name, LINK_RTT.doc, labels=["school", "device"])
        loss = GaugeMetricFamily(LINK_LOSS.name, LINK_LOSS.doc, labels=["school", "device"])
        for state in self.roster.devices.values():
            device = state.device
            labels = [device.school_id, device.id, device.kind.value]
            info.add_metric([*labels, device.host], {})
            if state.health is not Health.UNKNOWN:
                up.add_metric(labels, 1.0 if state.health is Health.UP else 0.0)
            for name, probe_state in state.probes.items():
                if probe_state.health is not Health.UNKNOWN:
                    probe_up.add_metric([*labels, name], 1.0 if probe_state.health is Health.UP else 0.0)
            icmp = state.probes.get("icmp")
            result = icmp.last_result if icmp is not None else None
            if device.kind is DeviceKind.ROUTER and result is not None:
                if result.ok and result.rtt is not None:
                    rtt.add_metric([device.school_id, device.id], result.rtt)
                if result.loss is not None:
                    loss.add_metric([device.school_id, device.id], result.loss)
        yield from (info, up, probe_up, rtt, loss)


def _state(host_of_cam: str = "10.0.0.2") -> State:
    devices = (
        Device("s1-router", "s1", DeviceKind.ROUTER, "10.0.0.1", (ProbeSpec("icmp"),)),
        Device('cam "east"\\gate\n2', "s1", DeviceKind.CAMERA, host_of_cam, (ProbeSpec("icmp"), ProbeSpec("tcp", 554))),
        Device("школа-камера", "s1", DeviceKind.CAMERA, "10.0.0.3", (ProbeSpec("tcp", 80),)),
        Device("s1-nvr", "s1", DeviceKind.NVR, "10.0.0.4", (ProbeSpec("icmp"),)),  # never probed: unknown
    )
    state = State(down_after=1, up_after=1)
    state.sync(Inventory.build([School("s1", "School", "Abay", Contract(), devices)]))
    state.apply("s1-router", "icmp", ProbeResult(True, 0.5012, rtt=0.000123456789, loss=0.0, sent=3), 1.7e9)
    state.apply('cam "east"\\gate\n2', "icmp", ProbeResult(False, 2.0, "timeout", loss=1.0, sent=3), 1.7e9 + 0.25)
    state.apply('cam "east"\\gate\n2', "tcp:554", ProbeResult(True, 1e-7, rtt=1e-7), 1.7e9 + 3)
    state.apply('cam "east"\\gate\n2', "icmp", ProbeResult(True, 0.1, rtt=0.02, loss=1 / 3, sent=3), 1.7e9 + 4)
    state.apply("школа-камера", "tcp:80", ProbeResult(False, 3.0, "refused"), 1.7e9 + 5)
    return state


@pytest.mark.parametrize("openmetrics", [False, True])
def test_encoding_is_byte_for_byte_prometheus_clients(openmetrics: bool) -> None:
    """Escaped quotes, backslashes, newlines and Cyrillic in labels, tiny and large numbers: the same bytes."""
    roster = _state().roster
    ours = DeviceExposition().render(roster, openmetrics=openmetrics)
    reference = (generate_openmetrics if openmetrics else generate_latest)(Reference(roster))
    if openmetrics:
        assert reference.endswith(b"# EOF\n")
        reference = reference.removesuffix(b"# EOF\n")
    assert ours == reference
    assert b'device="cam \\"east\\"\\\\gate\\n2"' in ours  # the escapes are really there
    assert b"telemetryd_device_up" in ours and b"telemetryd_school_link_rtt_seconds{" in ours


def test_a_reload_re_encodes_changed_devices_only() -> None:
    """After a reload a device with a new address shows its new host; an unchanged one keeps its cached labels."""
    exposition = DeviceExposition()
    state = _state()
    exposition.render(state.roster)
    cached = dict(exposition._cache)
    state.sync(_state(host_of_cam="10.9.9.9").inventory)
    body = exposition.render(state.roster).decode()
    assert 'host="10.9.9.9"' in body and 'host="10.0.0.2"' not in body
    assert exposition._cache["s1-router"].labels is cached["s1-router"].labels
    assert exposition._cache['cam "east"\\gate\n2'].labels is not cached['cam "east"\\gate\n2'].labels
    assert body.encode() == generate_latest(Reference(state.roster))


def test_promtool_accepts_the_device_families() -> None:
    """`promtool check metrics` finds nothing to report in the hand-encoded families."""
    promtool = require_binary("promtool", "prometheus")
    body = DeviceExposition().render(_state().roster)
    proc = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()


class VerdictReference(Collector):
    """`telemetryd_camera_verdict` the prometheus-client way."""

    def __init__(self, roster: Roster) -> None:
        self.roster = roster

    def collect(self) -> Iterator[Metric]:
        """One series per camera, its verdict in a label."""
        family = GaugeMetricFamily(VERDICT.name, VERDICT.doc, labels=["school", "device", "verdict"])
        for camera, verdict in camera_verdicts(self.roster):
            family.add_metric([camera.school_id, camera.id, verdict.value], 1.0)
        yield family


@pytest.mark.parametrize("openmetrics", [False, True])
def test_camera_verdicts_are_byte_for_byte_prometheus_clients(openmetrics: bool) -> None:
    """The hand-encoded verdict family equals prometheus-client's, a down camera reading camera_down."""
    roster = _state().roster
    ours = VerdictExposition().render(roster, openmetrics=openmetrics)
    reference = (generate_openmetrics if openmetrics else generate_latest)(VerdictReference(roster))
    assert ours == reference.removesuffix(b"# EOF\n")
    assert b'device="\\xd1\\x88' not in ours  # UTF-8 stays UTF-8
    assert 'device="школа-камера",school="s1",verdict="camera_down"} 1.0'.encode() in ours


def test_only_a_state_change_re_encodes_a_device() -> None:
    """A result that keeps the health reuses the device's cached lines; a transition re-encodes that device alone."""
    exposition = DeviceExposition()
    state = _state()
    exposition.render(state.roster)
    before = dict(exposition._cache)
    camera = "школа-камера"
    state.apply(camera, "tcp:80", ProbeResult(False, 3.0, "refused"), 1.7e9 + 6)  # still down
    exposition.render(state.roster)
    assert exposition._cache[camera] is before[camera]
    state.apply(camera, "tcp:80", ProbeResult(True, 0.001, rtt=0.001), 1.7e9 + 7)  # up_after=1: back up
    body = exposition.render(state.roster)
    assert exposition._cache[camera] is not before[camera]
    assert all(exposition._cache[d] is before[d] for d in before if d != camera)
    assert body == generate_latest(Reference(state.roster))
    assert 'device="школа-камера",kind="camera",probe="tcp:80",school="s1"} 1.0'.encode() in body
