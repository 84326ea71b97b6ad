"""SNMP throughput end to end: a simulated school router (real snmpd, shaped veths, iperf3 load) polled over SNMP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from telemetryd.link.counters import InterfaceRate, LinkRates, NoRate
from telemetryd.model import SnmpSample
from telemetryd.probes.snmp import SnmpSessions, poll_router
from telemetryd.sim.fleet import ip_route_get, route_leads_into
from telemetryd.sim.router import DEFAULT_LOAD_MBPS, SHAPING_MBPS, WAN, WIRE_OVERHEAD, SimRouter

from ..conftest import require_binary, require_root

pytestmark = [pytest.mark.integration, pytest.mark.root]

COMMUNITY = "school-17-ro"
TOLERANCE = 0.05
NET_SNMP_CACHE = 3.0
"""net-snmp reloads its interface table at most every ~3 s: polls closer than that read stale counters."""


def _require_tools() -> None:
    require_root("network namespaces, veths and tc for a simulated router")
    for binary, package in (("snmpd", "snmpd"), ("iperf3", "iperf3"), ("tc", "iproute2")):
        require_binary(binary, package)


@pytest.fixture(scope="module")
def router() -> Iterator[SimRouter]:
    """A router carrying the default load (alarm 10, video 15, education 50 Mbit/s of UDP payload)."""
    _require_tools()
    with SimRouter(community=COMMUNITY) as sim:
        assert sim.root_veth is not None and route_leads_into(ip_route_get(sim.host), sim.root_veth)
        time.sleep(1.5)  # let the iperf3 flows reach their steady rate
        yield sim


async def _poll(sim: SimRouter, sessions: SnmpSessions) -> SnmpSample:
    return await poll_router(sim.host, COMMUNITY, sim.interfaces, timeout=1.0, retries=2, session_cache=sessions)


def _rate_of(rate: InterfaceRate, role: str) -> float:
    """The direction that carries the load: into the router on a segment, out of it on the WAN."""
    return rate.out_bps if role == WAN else rate.in_bps


async def test_throughput_from_two_polls_matches_the_generated_load(router: SimRouter) -> None:
    """Rates from two polls 8 s apart agree within 5 % with the generating end's kernel count and iperf3's -b."""
    sessions = SnmpSessions()
    rates = LinkRates(8.0)
    try:
        first = await _poll(router, sessions)
        truth_before = router.wire_octets()
        await asyncio.sleep(8.0)
        second = await _poll(router, sessions)
        truth_after = router.wire_octets()
    finally:
        sessions.close()
    assert first.ok and second.ok, (first.detail, second.detail)
    assert rates.update(first) is None
    measured = rates.update(second)
    assert measured is not None
    seconds = second.at - first.at
    expected_wan = sum(DEFAULT_LOAD_MBPS.values()) * 1e6 * WIRE_OVERHEAD
    report = []
    for role in (*DEFAULT_LOAD_MBPS, WAN):
        snmp_bps = _rate_of(measured[role], role)
        truth_bps = (truth_after[role] - truth_before[role]) * 8 / seconds
        nominal_bps = expected_wan if role == WAN else DEFAULT_LOAD_MBPS[role] * 1e6 * WIRE_OVERHEAD
        report.append(
            f"{role}: snmp {snmp_bps / 1e6:.2f} Mbit/s, wire {truth_bps / 1e6:.2f} "
            f"({snmp_bps / truth_bps - 1:+.2%}), nominal {nominal_bps / 1e6:.2f} ({snmp_bps / nominal_bps - 1:+.2%})"
        )
        assert snmp_bps == pytest.approx(truth_bps, rel=TOLERANCE), report[-1]
        assert snmp_bps == pytest.approx(nominal_bps, rel=TOLERANCE), report[-1]
    print("\n".join(report))


async def test_snmpd_restart_and_router_reboot_give_no_spike() -> None:
    """Across an snmpd restart and a full reboot no rate exceeds the shaping cap or goes negative, and rates resume."""
    _require_tools()
    interval = NET_SNMP_CACHE + 1.0
    with SimRouter(community=COMMUNITY) as sim:
        time.sleep(1.5)
        sessions = SnmpSessions()
        rates = LinkRates(interval)
        history: list[tuple[str, dict[str, InterfaceRate] | None, dict[str, NoRate]]] = []

        async def step(label: str) -> None:
            sample = await _poll(sim, sessions)
            assert sample.ok, f"{label}: {sample.detail}"
            history.append((label, rates.update(sample), dict(rates.skipped)))
            await asyncio.sleep(interval)

        try:
            await step("baseline")
            await step("steady")
            await asyncio.to_thread(sim.restart_snmpd)
            await step("after snmpd restart")
            await step("steady again")
            await asyncio.to_thread(sim.reboot)
            await asyncio.sleep(1.0)
            await step("after reboot")
            await step("steady after reboot")
        finally:
            sessions.close()

    by_label = {label: (measured, skipped) for label, measured, skipped in history}
    for label in ("after snmpd restart", "after reboot"):
        measured, skipped = by_label[label]
        assert measured is None, f"{label} produced rates {measured}"
        assert set(skipped.values()) == {NoRate.REBOOT}
    for label, measured, _ in history:
        for role, rate in (measured or {}).items():
            cap = SHAPING_MBPS[role] * 1e6 * 1.05
            assert 0 <= rate.in_bps <= cap and 0 <= rate.out_bps <= cap, f"{label}: {role} {rate}"
    for label in ("steady", "steady again", "steady after reboot"):
        measured, _ = by_label[label]
        assert measured is not None, label
        for role, mbps in DEFAULT_LOAD_MBPS.items():
            assert measured[role].in_bps == pytest.approx(mbps * 1e6 * WIRE_OVERHEAD, rel=TOLERANCE), (label, role)


async def test_silent_router_is_timeout_within_timeout_times_retries(router: SimRouter) -> None:
    """A router whose agent does not answer gives timeout with the explanation, in about timeout x retries."""
    router.freeze_snmpd()
    try:
        started = time.monotonic()
        sample = await poll_router(router.host, COMMUNITY, router.interfaces, timeout=0.5, retries=2)
        elapsed = time.monotonic() - started
    finally:
        router.thaw_snmpd()
    assert sample.reason == "timeout"
    assert sample.detail == (
        f"no answer from {router.host}: the router is down or the community is wrong (SNMP v2c cannot tell them apart)"
    )
    assert COMMUNITY not in sample.detail
    assert 0.95 <= elapsed < 1.5


async def test_wrong_community_is_the_same_timeout(router: SimRouter) -> None:
    """A wrong community looks exactly like a dead router, without either community in the detail."""
    started = time.monotonic()
    sample = await poll_router(router.host, "guessed-public", router.interfaces, timeout=0.5, retries=2)
    elapsed = time.monotonic() - started
    assert sample.reason == "timeout"
    assert "community is wrong" in sample.detail
    assert "guessed-public" not in sample.detail and COMMUNITY not in sample.detail
    assert 0.95 <= elapsed < 1.5


async def test_missing_interface_name_is_reported(router: SimRouter) -> None:
    """An inventory naming an interface the router lacks gets no_such_interface listing the real names."""
    interfaces = {**router.interfaces, "video": "video7"}
    sample = await poll_router(router.host, COMMUNITY, interfaces, timeout=1.0, retries=2)
    assert sample.reason == "no_such_interface"
    assert "'video7'" in sample.detail
    assert all(name in sample.detail for name in ("wan0", "alarm0", "video0", "edu0"))
