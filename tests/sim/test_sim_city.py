"""Pure tests of the simulated city: generation, truth and the inventory it writes."""

from __future__ import annotations

import ipaddress
from collections import Counter
from pathlib import Path

import pytest

from telemetryd.config.inventory import DEFAULT_PROBES
from telemetryd.config.loader import load_inventory
from telemetryd.model import DeviceKind, ProbeSpec, Segment
from telemetryd.sim.city import (
    DISTRICTS,
    GENERATED_MARKER,
    Condition,
    generate_city,
    school_blocks,
)
from telemetryd.sim.schedule import FlapSchedule


def test_same_seed_gives_the_same_city() -> None:
    """Two cities from the same arguments and seed are identical, truth included."""
    first = generate_city(20, 35, seed=7)
    second = generate_city(20, 35, seed=7)
    assert first.inventory == second.inventory
    assert first.truth == second.truth


def test_other_seed_gives_other_faults() -> None:
    """A different seed changes which devices are dead, flapping or refusing ports."""
    first = generate_city(20, 35, seed=1)
    second = generate_city(20, 35, seed=2)
    faulty = {Condition.DEAD, Condition.FLAPPING, Condition.CLOSED_PORTS}
    assert {t.device_id for t in first.devices() if t.condition in faulty} != {
        t.device_id for t in second.devices() if t.condition in faulty
    }


def test_addresses_are_unique_and_stay_off_edges_and_the_link_range() -> None:
    """Every device has its own address in the base /16, never .0/.255, never in the last /24."""
    city = generate_city(300, 35, base="10.210.0.0/16")
    hosts = [ipaddress.IPv4Address(d.host) for d in city.inventory.devices_by_id.values()]
    assert len(hosts) == len(set(hosts)) == 10_500
    network = ipaddress.IPv4Network("10.210.0.0/16")
    link_range = ipaddress.IPv4Network("10.210.255.0/24")
    for host in hosts:
        assert host in network
        assert host not in link_range
        assert int(host) & 0xFF not in (0, 255)
    assert city.link_network == ipaddress.IPv4Network("10.210.255.0/30")


def test_each_school_gets_a_contiguous_block() -> None:
    """A school's devices fill the start of its own block, and blocks follow each other in order."""
    city = generate_city(12, 35)
    blocks = school_blocks(city.network, 35)
    previous_last = -1
    for index, school in enumerate(city.inventory.schools):
        hosts = [int(ipaddress.IPv4Address(d.host)) for d in school.devices]
        assert hosts == blocks[index][:35]
        assert hosts == list(range(hosts[0], hosts[0] + 35))  # 64-address blocks never straddle .255
        assert hosts[0] > previous_last
        previous_last = hosts[-1]


def test_large_schools_span_several_24s_without_edge_addresses() -> None:
    """Schools of more than 254 devices take whole /24s and still skip .0 and .255."""
    city = generate_city(3, 300)
    for school in city.inventory.schools:
        octets = [int(d.host.split(".")[3]) for d in school.devices]
        assert 0 not in octets
        assert 255 not in octets
    assert len(set(city.inventory.devices_by_id)) == 900


def test_school_of_35_has_router_nvr_alarm_panel_and_cameras() -> None:
    """35 devices are 1 router, 1 NVR, 1 alarm panel and 32 cameras, with the default probes."""
    city = generate_city(3, 35)
    for school in city.inventory.schools:
        kinds = Counter(d.kind for d in school.devices)
        assert kinds == {
            DeviceKind.ROUTER: 1,
            DeviceKind.NVR: 1,
            DeviceKind.ALARM_PANEL: 1,
            DeviceKind.CAMERA: 32,
        }
        for device in school.devices:
            assert device.probes == DEFAULT_PROBES[device.kind]
            assert device.school_id == school.id
        assert school.contract.total_mbps == 150.0
        assert school.contract.segment_mbps(Segment.ALARM) == 20.0
        assert school.contract.segment_mbps(Segment.VIDEO) == 30.0
        assert school.contract.segment_mbps(Segment.EDUCATION) == 100.0
    assert [s.id for s in city.inventory.schools] == ["sim-school-0001", "sim-school-0002", "sim-school-0003"]


def test_schools_from_40_devices_have_two_nvrs() -> None:
    """Schools of 40 devices or more get a second NVR; smaller ones keep one."""
    big = generate_city(2, 40)
    small = generate_city(2, 39)
    assert all(sum(d.kind is DeviceKind.NVR for d in s.devices) == 2 for s in big.inventory.schools)
    assert all(sum(d.kind is DeviceKind.NVR for d in s.devices) == 1 for s in small.inventory.schools)


def test_schools_spread_over_shymkent_districts() -> None:
    """Schools fall in Shymkent's five districts and lie around the city centre."""
    city = generate_city(10, 5)
    assert {s.district for s in city.inventory.schools} == set(DISTRICTS)
    for school in city.inventory.schools:
        assert school.latitude is not None
        assert school.longitude is not None
        assert abs(school.latitude - 42.3) < 0.15
        assert abs(school.longitude - 69.6) < 0.15


def test_fault_shares_are_met() -> None:
    """Dead, flapping and closed-port devices are the asked shares of all devices."""
    city = generate_city(100, 35, dead_share=0.03, flapping_share=0.01, closed_port_share=0.02)
    counts = city.counts()
    assert counts[Condition.DEAD] == 105
    assert counts[Condition.FLAPPING] == 35
    assert counts[Condition.CLOSED_PORTS] == 70
    assert sum(counts.values()) == 3500


def test_closed_ports_only_on_devices_probed_over_tcp() -> None:
    """A closed-port device refuses a non-empty subset of its TCP ports and keeps ICMP."""
    city = generate_city(100, 35, closed_port_share=0.3)  # enough NVRs (two TCP ports) among them
    closed = list(city.devices(Condition.CLOSED_PORTS))
    assert closed
    for truth in closed:
        assert truth.tcp_ports
        assert truth.closed_ports
        assert truth.closed_ports <= set(truth.tcp_ports)
        assert set(truth.open_ports) == set(truth.tcp_ports) - truth.closed_ports
    assert any(t.open_ports for t in closed), "some devices should lose only some ports"


def test_flap_periods_stay_within_bounds() -> None:
    """Flapping devices cycle within the asked period range with a phase inside the period."""
    city = generate_city(50, 35, flapping_share=0.05, flap_period=(20.0, 60.0))
    for truth in city.devices(Condition.FLAPPING):
        assert truth.flap is not None
        assert 20.0 <= truth.flap.period <= 60.0
        assert 0.0 <= truth.flap.phase <= truth.flap.period


def test_expected_follows_each_condition() -> None:
    """Alive answers everything, dead nothing, closed-port devices ICMP and their open ports only."""
    city = generate_city(30, 35, dead_share=0.05, closed_port_share=0.05, flapping_share=0.0)
    at = 1_800_000_000.0
    for truth in city.devices():
        device = city.inventory.devices_by_id[truth.device_id]
        for probe in device.probes:
            answer = city.expected(truth.device_id, probe.name, at)
            if truth.condition is Condition.ALIVE:
                assert answer is True
            elif truth.condition is Condition.DEAD:
                assert answer is False
            elif probe.port is None:
                assert answer is True
            else:
                assert answer is (probe.port not in truth.closed_ports)


def test_expected_flapping_follows_schedule_and_hedges_near_edges() -> None:
    """A flapping device is up, then down, per its schedule, and None within the margin of a flip."""
    city = generate_city(10, 35, flapping_share=0.05)
    truth = next(city.devices(Condition.FLAPPING))
    assert truth.flap is not None
    edge = truth.flap.next_transition(1_800_000_000.0)
    before = city.expected(truth.device_id, "icmp", edge - 2.0, margin=1.0)
    after = city.expected(truth.device_id, "icmp", edge + 2.0, margin=1.0)
    assert before is not None
    assert after is (not before)
    assert city.expected(truth.device_id, "icmp", edge - 0.5, margin=1.0) is None
    assert city.expected(truth.device_id, "icmp", edge + 0.5, margin=1.0) is None


def test_expected_rejects_unknown_probes() -> None:
    """Asking about a probe that is neither icmp nor tcp:PORT is a programmer error."""
    city = generate_city(1, 5)
    device_id = next(iter(city.truth))
    with pytest.raises(ValueError, match="unknown probe"):
        city.expected(device_id, "snmp", 0.0)


def test_flap_schedule_alternates_every_half_period() -> None:
    """The square wave flips at every half period, and next_transition lands on a flip."""
    schedule = FlapSchedule(period=10.0, phase=3.0)
    at = 1_000.0
    flip = schedule.next_transition(at)
    assert at < flip <= at + 5.0
    assert schedule.is_up(flip - 0.01) != schedule.is_up(flip + 0.01)
    assert schedule.is_up(flip + 0.01) != schedule.is_up(flip + 5.01)
    assert schedule.seconds_from_transition(flip + 0.25) == pytest.approx(0.25)
    assert schedule.seconds_from_transition(flip - 0.25) == pytest.approx(0.25)


def test_inventory_written_loads_back_identical(tmp_path: Path) -> None:
    """The YAML files, one per district, load with load_inventory into the same schools."""
    city = generate_city(12, 35, seed=3)
    files = city.write_inventory(tmp_path)
    assert sorted(p.name for p in files) == [
        "abay.yaml",
        "al-farabi.yaml",
        "enbekshi.yaml",
        "karatau.yaml",
        "turan.yaml",
    ]
    loaded = load_inventory(tmp_path)
    assert {s.id: s for s in loaded.schools} == {s.id: s for s in city.inventory.schools}
    assert loaded.device_count == city.inventory.device_count


def test_inventory_with_port_offset_lists_probes(tmp_path: Path) -> None:
    """A city with moved TCP ports writes explicit probe lists that load back as those ports."""
    city = generate_city(2, 8, base="127.200.0.0/16", tcp_port_offset=10000)
    city.write_inventory(tmp_path)
    loaded = load_inventory(tmp_path)
    camera = next(d for d in loaded.devices_by_id.values() if d.kind is DeviceKind.CAMERA)
    assert camera.probes == (ProbeSpec("icmp"), ProbeSpec("tcp", 10554))
    nvr = next(d for d in loaded.devices_by_id.values() if d.kind is DeviceKind.NVR)
    assert nvr.probes == (ProbeSpec("icmp"), ProbeSpec("tcp", 10080), ProbeSpec("tcp", 10554))
    assert {s.id: s for s in loaded.schools} == {s.id: s for s in city.inventory.schools}


def test_rewriting_removes_our_stale_files_only(tmp_path: Path) -> None:
    """A smaller city deletes district files an earlier run generated, but not files people wrote."""
    generate_city(10, 5).write_inventory(tmp_path)
    hand_written = tmp_path / "extra.yaml"
    hand_written.write_text("schools: []\n", encoding="utf-8")
    files = generate_city(2, 5).write_inventory(tmp_path)
    remaining = sorted(p.name for p in tmp_path.glob("*.yaml"))
    assert remaining == sorted([*(p.name for p in files), "extra.yaml"])
    assert all(p.read_text(encoding="utf-8").startswith(GENERATED_MARKER) for p in files)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"schools": 2000, "devices_per_school": 35}, "do not fit"),
        ({"schools": 1, "devices_per_school": 2}, "at least 3 devices"),
        ({"schools": 1, "base": "10.200.0.0/24"}, "must be a /16"),
        ({"schools": 1, "dead_share": 0.6, "flapping_share": 0.6}, "must not exceed 1"),
        ({"schools": 1, "dead_share": -0.1}, "between 0 and 1"),
        ({"schools": 0}, "at least one school"),
        ({"schools": 1, "flap_period": (0.0, 5.0)}, "flap_period"),
    ],
)
def test_generate_city_rejects_impossible_cities(kwargs: dict[str, object], message: str) -> None:
    """Cities that cannot be built are refused with a reason, not silently trimmed."""
    with pytest.raises(ValueError, match=message):
        generate_city(**kwargs)  # type: ignore[arg-type]
