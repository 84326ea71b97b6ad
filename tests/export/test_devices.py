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
from tests.export.test_findings import nvr_health

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
    assert exposition._generation is not None
    cached = exposition._generation.labels
    state.sync(_state(host_of_cam="10.9.9.9").inventory)
    body = exposition.render(state.roster).decode()
    assert 'host="10.9.9.9"' in body and 'host="10.0.0.2"' not in body
    assert exposition._generation.labels["s1-router"] is cached["s1-router"]
    assert exposition._generation.labels['cam "east"\\gate\n2'] is not cached['cam "east"\\gate\n2']
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
        family = GaugeMetricFamily(VERDICT.name, VERDICT.doc, labels=["school", "device", "verdict", "reason"])
        for camera, (verdict, reason) in camera_verdicts(self.roster):
            family.add_metric([camera.school_id, camera.id, verdict.value, reason], 1.0)
        yield family


@pytest.mark.parametrize("openmetrics", [False, True])
def test_camera_verdicts_are_byte_for_byte_prometheus_clients(openmetrics: bool) -> None:
    """The hand-encoded verdict family equals prometheus-client's, a down camera reading camera_down."""
    roster = _state().roster
    ours = VerdictExposition().render(roster, openmetrics=openmetrics)
    reference = (generate_openmetrics if openmetrics else generate_latest)(VerdictReference(roster))
    assert ours == reference.removesuffix(b"# EOF\n")
    assert b'device="\\xd1\\x88' not in ours  # UTF-8 stays UTF-8
    assert 'device="школа-камера",reason="",school="s1",verdict="camera_down"} 1.0'.encode() in ours


def test_only_a_state_change_re_encodes_a_school() -> None:
    """A result that keeps the health reuses the school's cached lines; a transition re-encodes that school alone."""
    devices = [
        Device(f"{school}-cam", school, DeviceKind.CAMERA, f"10.0.{n}.2", (ProbeSpec("tcp", 80),))
        for n, school in enumerate(("s1", "s2"))
    ]
    state = State(down_after=1, up_after=1)
    state.sync(Inventory.build([School(d.school_id, "School", "Abay", Contract(), (d,)) for d in devices]))
    for device in devices:
        state.apply(device.id, "tcp:80", ProbeResult(False, 3.0, "refused"), 1.7e9)
    exposition = DeviceExposition()
    exposition.render(state.roster)
    assert exposition._generation is not None
    before = dict(exposition._generation.blocks)
    state.apply("s1-cam", "tcp:80", ProbeResult(False, 3.0, "refused"), 1.7e9 + 6)  # still down
    exposition.render(state.roster)
    assert exposition._generation.blocks["s1"] is before["s1"]
    state.apply("s1-cam", "tcp:80", ProbeResult(True, 0.001, rtt=0.001), 1.7e9 + 7)  # up_after=1: back up
    body = exposition.render(state.roster)
    assert exposition._generation.blocks["s1"] is not before["s1"]
    assert exposition._generation.blocks["s2"] is before["s2"]
    assert body == generate_latest(Reference(state.roster))
    assert b'telemetryd_probe_up{device="s1-cam",kind="camera",probe="tcp:80",school="s1"} 1.0' in body
    assert b'telemetryd_probe_up{device="s2-cam",kind="camera",probe="tcp:80",school="s2"} 0.0' in body


def test_verdicts_are_re_judged_when_their_inputs_move() -> None:
    """Cached per school: an NVR's new channel view and a camera's fall re-judge their school; others are kept."""
    devices = (
        Device("s1-nvr", "s1", DeviceKind.NVR, "10.0.0.2", (ProbeSpec("icmp"), ProbeSpec("isapi", 80))),
        Device("s1-cam-1", "s1", DeviceKind.CAMERA, "10.0.0.11", (ProbeSpec("icmp"),), nvr=("s1-nvr", 1)),
        Device("s1-cam-2", "s1", DeviceKind.CAMERA, "10.0.0.12", (ProbeSpec("icmp"),), nvr=("s1-nvr", 2)),
    )
    other = Device("s2-cam", "s2", DeviceKind.CAMERA, "10.0.1.11", (ProbeSpec("icmp"),))
    state = State(down_after=1, up_after=1)
    state.sync(
        Inventory.build(
            [School("s1", "One", "Abay", Contract(), devices), School("s2", "Two", "Abay", Contract(), (other,))]
        )
    )
    up = ProbeResult(True, 0.001, rtt=0.001)
    for device in (*devices, other):
        state.apply(device.id, "icmp", up, 1.0)
    exposition = VerdictExposition()

    def render_and_check() -> str:
        body = exposition.render(state.roster)
        assert body == generate_latest(VerdictReference(state.roster))  # the cache never shows a stale verdict
        return body.decode()

    # No NVR check yet: no evidence either way.
    assert 'device="s1-cam-2",reason="nvr_not_checked",school="s1",verdict="unknown"' in render_and_check()
    assert exposition._generation is not None
    kept = exposition._generation.blocks["s2"]
    state.apply("s1-nvr", "isapi:80", nvr_health(channel_2_online=False).probe_result(), 2.0)  # health stays up
    assert 'device="s1-cam-2",reason="",school="s1",verdict="not_recorded"' in render_and_check()
    state.apply("s1-nvr", "isapi:80", nvr_health(channel_2_online=True).probe_result(), 3.0)
    body = render_and_check()
    # Channel 2 is online now, but the finding holds no recording match for it: unknown, not ok.
    assert 'device="s1-cam-2",reason="no_recording_evidence",school="s1",verdict="unknown"' in body
    assert 'device="s1-cam-1",reason="",school="s1",verdict="ok"' in body
    state.apply("s1-cam-1", "icmp", ProbeResult(False, 2.0, "timeout"), 4.0)
    assert 'device="s1-cam-1",reason="",school="s1",verdict="camera_down"' in render_and_check()
    assert exposition._generation.blocks["s2"] is kept
