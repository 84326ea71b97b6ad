"""The link monitor: when speed tests and SNMP polls run, under the budget, quiet windows and confirmation."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from telemetryd.config.settings import Settings
from telemetryd.link.compliance import Compliance, LinkState
from telemetryd.link.monitor import LinkMonitor
from telemetryd.model import (
    Contract,
    Device,
    DeviceKind,
    Direction,
    Inventory,
    ProbeSpec,
    School,
    SnmpSample,
    SnmpTarget,
    SpeedResult,
    SpeedTestTarget,
)


def city(count: int) -> Inventory:
    schools = []
    for n in range(count):
        router = Device(
            f"s{n}-router",
            f"s{n}",
            DeviceKind.ROUTER,
            f"10.0.{n}.1",
            (ProbeSpec("icmp"),),
            credentials="snmp-ro",
            snmp=SnmpTarget((("wan", "wan0"),)),
        )
        schools.append(
            School(f"s{n}", f"School {n}", "Abay", Contract(), (router,), speedtest=SpeedTestTarget("http://x", "tok"))
        )
    return Inventory.build(schools)


def settings(tmp_path: Path, **speedtest: Any) -> Settings:
    (tmp_path / "tok").write_text("s3cret-token\n")
    (tmp_path / "snmp-ro").write_text("community-x\n")
    return Settings.model_validate(
        {
            "credentials_directory": str(tmp_path),
            "probes": {"snmp": {"interval": 0.2, "max_concurrent": 64}},
            "speedtest": {"interval": 3600, "confirm_after": 0.2, **speedtest},
        }
    )


class FakeTests:
    """A speed test that takes `seconds` and reports `mbps`, recording concurrency and tokens."""

    def __init__(self, mbps: float, seconds: float = 0.2) -> None:
        self.mbps = mbps
        self.seconds = seconds
        self.running = 0
        self.most = 0
        self.calls: list[tuple[str, str]] = []

    async def __call__(self, school: School, token: str, _settings: Settings) -> tuple[SpeedResult, SpeedResult]:
        self.calls.append((school.id, token))
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(self.seconds)
        finally:
            self.running -= 1
        return tuple(SpeedResult(True, d, self.mbps, 1000, self.seconds, 4) for d in Direction)  # type: ignore[return-value]


async def run_for(monitor: LinkMonitor, seconds: float) -> None:
    task = asyncio.create_task(monitor.run())
    await asyncio.sleep(seconds)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def idle_poll(*_args: Any, **_kwargs: Any) -> SnmpSample:
    return SnmpSample(True, 0.0, 0.0)


async def test_budget_caps_concurrent_tests(tmp_path: Path) -> None:
    """With room for two 150 Mbps schools in a 300 Mbps budget, never more than two tests run at once."""
    fake = FakeTests(149, seconds=0.3)
    monitor = LinkMonitor(LinkState(), speedtest_fn=fake, snmp_poll=idle_poll)
    monitor.configure(settings(tmp_path, interval=0.4, central_capacity_mbps=300), city(6))
    await run_for(monitor, 1.2)
    assert fake.most == 2
    assert len({school for school, _ in fake.calls}) == 6
    assert monitor.stats.speedtests_waiting_budget >= 1
    assert {token for _, token in fake.calls} == {"s3cret-token"}


async def test_low_result_is_confirmed_then_declared_below(tmp_path: Path) -> None:
    """A school at 19 of 150 Mbps is re-tested after confirm_after and only then declared below contract."""
    fake = FakeTests(19, seconds=0.05)
    state = LinkState()
    changes: list[Compliance] = []
    monitor = LinkMonitor(state, speedtest_fn=fake, snmp_poll=idle_poll, on_change=lambda c: changes.append(c.new))
    monitor.configure(settings(tmp_path), city(1))
    await run_for(monitor, 0.6)
    assert changes == [Compliance.SUSPECT, Compliance.BELOW]
    assert len(fake.calls) == 2  # the regular test and its confirmation, nothing more within the hour
    assert state.schools["s0"].compliance is Compliance.BELOW


async def test_quiet_window_defers_tests(tmp_path: Path) -> None:
    """Inside a quiet window no test starts; the deferral is counted."""
    fake = FakeTests(150, seconds=0.01)
    at_0900_local = 4 * 3600.0  # 04:00 UTC = 09:00 in Shymkent
    monitor = LinkMonitor(LinkState(), speedtest_fn=fake, snmp_poll=idle_poll, wall=lambda: at_0900_local)
    monitor.configure(settings(tmp_path, interval=0.2, quiet_windows=["08:00-14:00"]), city(2))
    await run_for(monitor, 0.3)
    assert fake.calls == []
    assert monitor.stats.speedtests_deferred_quiet == 2


async def test_missing_token_is_a_failed_test_with_a_reason(tmp_path: Path) -> None:
    """A credential file that is not there fails the test with reason `credentials`, naming the file."""
    fake = FakeTests(150)
    state = LinkState()
    monitor = LinkMonitor(state, speedtest_fn=fake, snmp_poll=idle_poll)
    config = settings(tmp_path)
    (tmp_path / "tok").unlink()
    monitor.configure(config, city(1))
    await run_for(monitor, 0.2)
    assert fake.calls == []
    result = state.schools["s0"].last[Direction.DOWNLOAD]
    assert (result.ok, result.reason) == (False, "credentials")
    assert str(tmp_path / "tok") in result.detail


async def test_snmp_polls_every_router_without_overlap(tmp_path: Path) -> None:
    """Each router is polled about once per interval with its community, and never twice at once."""
    running: dict[str, int] = {}
    overlaps: list[str] = []
    seen: list[tuple[str, str, Mapping[str, str | int]]] = []

    async def slow_poll(host: str, community: str, interfaces: Mapping[str, str | int], **_: Any) -> SnmpSample:
        seen.append((host, community, interfaces))
        running[host] = running.get(host, 0) + 1
        if running[host] > 1:
            overlaps.append(host)
        await asyncio.sleep(0.3)  # longer than the 0.2 s interval
        running[host] -= 1
        return SnmpSample(True, asyncio.get_running_loop().time(), 0.3)

    state = LinkState()
    monitor = LinkMonitor(state, speedtest_fn=FakeTests(150, 0.01), snmp_poll=slow_poll)
    monitor.configure(settings(tmp_path), city(3))
    await run_for(monitor, 1.0)
    assert overlaps == []
    per_router = {host: sum(1 for h, _, _ in seen if h == host) for host, _, _ in seen}
    assert set(per_router) == {"10.0.0.1", "10.0.1.1", "10.0.2.1"}
    assert all(3 <= n <= 4 for n in per_router.values()), per_router  # every 0.3 s (the poll overran its 0.2 s)
    assert {community for _, community, _ in seen} == {"community-x"}
    assert state.schools["s0"].snmp_ok is True
    # Every poll that finished was counted (at most one per router was still running at cancel).
    assert len(seen) - 3 <= monitor.stats.snmp_polls <= len(seen)


async def test_reload_forgets_removed_routers_and_keeps_the_rest(tmp_path: Path) -> None:
    """On reconfigure a removed router's SNMP session and ifName table go; a kept router keeps both (no re-walk)."""
    monitor = LinkMonitor(LinkState())
    options = settings(tmp_path)
    monitor.configure(options, city(2))
    sessions = monitor._sessions
    kept = sessions.session("10.0.0.1", 161, "community-x", 1.0, 1)
    sessions.tables("10.0.0.1", 161).names["wan0"] = 3
    sessions.session("10.0.1.1", 161, "community-x", 1.0, 1)
    sessions.tables("10.0.1.1", 161).names["wan0"] = 7
    assert sessions.routers() == {("10.0.0.1", 161), ("10.0.1.1", 161)}

    monitor.configure(options, city(1))

    assert monitor._sessions is sessions
    assert sessions.routers() == {("10.0.0.1", 161)}
    assert sessions.session("10.0.0.1", 161, "community-x", 1.0, 1) is kept
    assert sessions.tables("10.0.0.1", 161).names == {"wan0": 3}
    sessions.close()
