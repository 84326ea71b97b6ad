"""The hand-encoded school families print what prometheus-client prints, and follow the roster's tally."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from prometheus_client import generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.registry import Collector

from telemetryd.export.families import MBIT_BYTES
from telemetryd.export.reachability import (
    CONTRACT,
    DEVICES,
    DEVICES_DOWN,
    DEVICES_UP,
    LATITUDE,
    LONGITUDE,
    SCHOOL_INFO,
    SEGMENT_CONTRACT,
    SchoolExposition,
)
from telemetryd.model import Contract, Device, DeviceKind, Inventory, ProbeResult, ProbeSpec, School, Segment
from telemetryd.reachability.state import Roster, State
from tests.conftest import require_binary


class Reference(Collector):
    """The school families the prometheus-client way, counting every device: what the encoder must match."""

    def __init__(self, roster: Roster) -> None:
        self.roster = roster

    def collect(self) -> Iterator[Metric]:
        """Info, location, contracts and roll-ups by kind, from school summaries."""
        info = InfoMetricFamily(SCHOOL_INFO.name, SCHOOL_INFO.doc, labels=["school", "name", "district"])
        latitude = GaugeMetricFamily(LATITUDE.name, LATITUDE.doc, labels=["school"])
        longitude = GaugeMetricFamily(LONGITUDE.name, LONGITUDE.doc, labels=["school"])
        contract = GaugeMetricFamily(CONTRACT.name, CONTRACT.doc, labels=["school"])
        segments = GaugeMetricFamily(SEGMENT_CONTRACT.name, SEGMENT_CONTRACT.doc, labels=["school", "segment"])
        total = GaugeMetricFamily(DEVICES.name, DEVICES.doc, labels=["school", "kind"])
        up = GaugeMetricFamily(DEVICES_UP.name, DEVICES_UP.doc, labels=["school", "kind"])
        down = GaugeMetricFamily(DEVICES_DOWN.name, DEVICES_DOWN.doc, labels=["school", "kind"])
        for summary in self.roster.school_summaries():
            school = summary.school
            info.add_metric([school.id, school.name, school.district], {})
            if school.latitude is not None and school.longitude is not None:
                latitude.add_metric([school.id], school.latitude)
                longitude.add_metric([school.id], school.longitude)
            contract.add_metric([school.id], school.contract.total_mbps * MBIT_BYTES)
            for segment, mbps in school.contract.segments_mbps:
                segments.add_metric([school.id, segment.value], mbps * MBIT_BYTES)
            for kind in DeviceKind:
                count = summary.count(kind)
                if count.total:
                    total.add_metric([school.id, kind.value], count.total)
                    up.add_metric([school.id, kind.value], count.up)
                    down.add_metric([school.id, kind.value], count.down)
        yield from (info, latitude, longitude, contract, segments, total, up, down)


def _state() -> State:
    odd = School(
        's1 "north"',
        'Школа №1 "Abay"\\n',
        "Аль-Фараби",
        Contract(20.0, ((Segment.ALARM, 2.5),)),
        (
            Device("s1-router", 's1 "north"', DeviceKind.ROUTER, "10.0.0.1", (ProbeSpec("icmp"),)),
            Device("s1-cam", 's1 "north"', DeviceKind.CAMERA, "10.0.0.2", (ProbeSpec("icmp"),)),
        ),
        latitude=42.3417,
        longitude=69.5901,
    )
    plain = School(
        "s2",
        "School 2",
        "Abay",
        Contract(),
        tuple(Device(f"s2-cam-{i}", "s2", DeviceKind.CAMERA, f"10.0.1.{i}", (ProbeSpec("icmp"),)) for i in range(4)),
    )
    state = State(down_after=1, up_after=1)
    state.sync(Inventory.build([odd, plain]))
    return state


def _apply(state: State, device: str, ok: bool, now: float) -> None:
    state.apply(device, "icmp", ProbeResult(ok, 0.01, "" if ok else "timeout"), now)


@pytest.mark.parametrize("openmetrics", [False, True])
def test_school_families_are_byte_for_byte_prometheus_clients(openmetrics: bool) -> None:
    """Escapes, Cyrillic, a school without a location, a one-segment contract: the same bytes, as devices move."""
    state = _state()
    exposition = SchoolExposition()
    encode = generate_openmetrics if openmetrics else generate_latest
    moves = [("s1-cam", True), ("s2-cam-0", False), ("s2-cam-1", True), ("s2-cam-0", True), ("s1-router", False)]
    for now, (device, ok) in enumerate(moves):
        _apply(state, device, ok, float(now))
        ours = exposition.render(state.roster, openmetrics=openmetrics)
        assert ours == encode(Reference(state.roster)).removesuffix(b"# EOF\n"), (device, ok)
    body = exposition.render(state.roster).decode()
    assert 'telemetryd_school_devices_up{kind="camera",school="s2"} 2.0' in body
    assert 'telemetryd_school_devices_down{kind="router",school="s1 \\"north\\""} 1.0' in body


def test_a_reload_re_encodes_the_facts_and_keeps_the_tally() -> None:
    """After a reload the new school shows; devices kept across it keep their health in the roll-ups."""
    state = _state()
    exposition = SchoolExposition()
    _apply(state, "s2-cam-0", False, 0.0)
    exposition.render(state.roster)
    school = state.inventory.schools[1]
    renamed = School(school.id, "School Two", school.district, school.contract, school.devices)
    state.sync(Inventory.build([state.inventory.schools[0], renamed]))
    body = exposition.render(state.roster).decode()
    assert 'name="School Two"' in body and 'name="School 2"' not in body
    assert 'telemetryd_school_devices_down{kind="camera",school="s2"} 1.0' in body
    assert body.encode() == generate_latest(Reference(state.roster))


def test_promtool_accepts_the_school_families() -> None:
    """`promtool check metrics` finds nothing to report in them."""
    promtool = require_binary("promtool", "prometheus")
    body = SchoolExposition().render(_state().roster)
    proc = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
