"""Pure tests of the fleet's safety checks and the responder's hand-over format."""

from __future__ import annotations

import ipaddress
import os

import pytest

from telemetryd.sim import fleet as fleet_module
from telemetryd.sim.city import generate_city
from telemetryd.sim.fleet import (
    Fleet,
    FleetError,
    guard_sample,
    overlapping_routes,
    resolve_mode,
    route_leads_into,
)
from telemetryd.sim.fleet_responder import HostSpec, ResponderSpec
from telemetryd.sim.schedule import FlapSchedule

VETH = "tlv4242n0a"


@pytest.mark.parametrize(
    "output",
    [
        "10.200.0.1 via 10.200.255.2 dev tlv4242n0a src 10.200.255.1 uid 0 \n    cache \n",
        "10.200.255.2 dev tlv4242n0a src 10.200.255.1 uid 0 \n    cache \n",
    ],
)
def test_route_into_our_veth_passes(output: str) -> None:
    """A route leaving through our own veth passes the guard."""
    assert route_leads_into(output, VETH)


@pytest.mark.parametrize(
    "output",
    [
        "10.200.0.1 via 192.0.2.1 dev eth0 src 192.0.2.2 uid 0 \n    cache \n",
        "10.200.0.1 via 10.200.255.2 dev tlv4242n0ab src 10.200.255.1 uid 0 \n",
        "10.200.0.1 via 10.200.255.2 dev tlv4242n0 src 10.200.255.1 uid 0 \n",
        "local 10.200.0.1 dev lo table local src 10.200.0.1 uid 0 \n",
        "unreachable 10.200.0.1 dev tlv4242n0a table main uid 0 \n",
        "blackhole 10.200.0.1 dev tlv4242n0a uid 0 \n",
        "",
        "RTNETLINK answers: Network is unreachable\n",
    ],
)
def test_route_elsewhere_fails_the_guard(output: str) -> None:
    """Routes to the real network, near-miss names, local or unreachable answers all fail the guard."""
    assert not route_leads_into(output, VETH)


def test_overlapping_routes_are_found_and_default_is_ignored() -> None:
    """Sub-, super- and equal prefixes clash with the fleet range; default and disjoint routes do not."""
    network = ipaddress.IPv4Network("10.200.0.0/16")
    routes = [
        {"dst": "default", "gateway": "192.0.2.1", "dev": "eth0"},
        {"dst": "192.0.2.0/24", "dev": "eth0"},
        {"dst": "10.201.0.0/16", "dev": "wg0"},
        {"dst": "10.200.5.0/24", "dev": "wg0"},
        {"dst": "10.0.0.0/8", "dev": "tun0"},
        {"type": "local", "dst": "10.200.7.9", "dev": "eth1", "table": "local"},
    ]
    clashes = overlapping_routes(routes, network)
    assert clashes == [
        "unicast 10.200.5.0/24 dev wg0",
        "unicast 10.0.0.0/8 dev tun0",
        "local 10.200.7.9 dev eth1 table local",
    ]
    assert overlapping_routes(routes[:3], network) == []


def test_guard_sample_covers_both_ends_and_the_first_and_last_device() -> None:
    """The guard checks the range's first and last usable address and the first and last device."""
    city = generate_city(5, 10, base="10.220.0.0/16")
    sample = guard_sample(city)
    hosts = [t.host for t in city.devices()]
    assert sample[:2] == ["10.220.0.1", "10.220.254.254"]
    assert {hosts[0], hosts[-1]} <= set(sample)
    assert len(sample) == len(set(sample)) >= 12
    assert all(ipaddress.IPv4Address(a) in city.network for a in sample)


def test_unknown_mode_is_refused() -> None:
    """A fleet mode other than auto, netns or loopback is an error naming the choices."""
    with pytest.raises(FleetError, match="auto, netns or loopback"):
        resolve_mode("docker")


def test_responder_spec_round_trips_through_json() -> None:
    """What the fleet writes for the responder reads back to the same hosts, ports and schedules."""
    spec = ResponderSpec(
        mode="netns",
        hosts=(
            HostSpec("10.200.0.2", (80, 554)),
            HostSpec("10.200.0.3", (), FlapSchedule(31.5, 7.25)),
        ),
    )
    assert ResponderSpec.from_json(spec.to_json()) == spec
    assert spec.socket_count == 2


def test_loopback_without_root_asks_for_a_port_offset(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without root, a loopback city on ports 80/554 is refused with the offset to use instead."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(fleet_module, "_unprivileged_port_start", lambda: 1024)
    assert fleet_module.port_offset_for("loopback") == fleet_module.LOOPBACK_PORT_OFFSET
    assert fleet_module.port_offset_for("netns") == 0
    assert resolve_mode("auto") == "loopback"
    fleet = Fleet(generate_city(1, 5, base="127.205.0.0/16"), mode="loopback")
    try:
        with pytest.raises(FleetError, match="tcp_port_offset=10000"):
            fleet.start()
        assert fleet.responder_pid is None
    finally:
        fleet.stop()
