"""A city of 300 routers in one snmpsim process on 127.0.0.1, polled through `poll_router` at scale.

No root and nothing external: snmpsim is a Python dev dependency, so these always run.
"""

from __future__ import annotations

import asyncio
import os
import resource
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from telemetryd.link.counters import LinkRates
from telemetryd.model import SnmpSample
from telemetryd.probes.snmp import SnmpSessions, poll_router, timeout_detail
from telemetryd.sim.snmpsim import SimRouterSpec, SnmpSimCity

pytestmark = [pytest.mark.integration]

ROUTERS = 300
CONCURRENCY = 64
INTERVAL = 5.0
TOLERANCE = 0.05
TIMEOUT = 2.0
RETRIES = 2


@dataclass(frozen=True, slots=True)
class Sweep:
    """One poll of every router: the samples (in router order) and what the sweep cost."""

    samples: list[SnmpSample]
    wall: float
    cpu: float
    """CPU of this (poller) process: user + system."""
    simulator_cpu: float

    @property
    def answered(self) -> int:
        """How many routers answered with a complete sample."""
        return sum(sample.ok for sample in self.samples)


@pytest.fixture(scope="module")
def city() -> Iterator[SnmpSimCity]:
    """300 routers behind one snmpsim process, torn down after the module."""
    with SnmpSimCity(ROUTERS, seed=2024) as simulated:
        yield simulated


async def _sweep(city: SnmpSimCity, sessions: SnmpSessions, limit: asyncio.Semaphore) -> Sweep:
    async def poll(router: SimRouterSpec) -> SnmpSample:
        async with limit:
            return await poll_router(
                city.host,
                router.community,
                router.interfaces,
                port=router.port,
                timeout=TIMEOUT,
                retries=RETRIES,
                session_cache=sessions,
            )

    usage_before, simulator_before = resource.getrusage(resource.RUSAGE_SELF), city.responder_cpu_seconds()
    started = time.perf_counter()
    samples = await asyncio.gather(*(poll(router) for router in city.routers))
    wall = time.perf_counter() - started
    usage_after, simulator_after = resource.getrusage(resource.RUSAGE_SELF), city.responder_cpu_seconds()
    cpu = (usage_after.ru_utime + usage_after.ru_stime) - (usage_before.ru_utime + usage_before.ru_stime)
    return Sweep(list(samples), wall, cpu, simulator_after - simulator_before)


async def test_every_router_answers_and_rates_match_the_simulated_load(city: SnmpSimCity) -> None:
    """300/300 routers answer two sweeps 5 s apart and every segment's rate is within 5 % of the truth.

    The ``numeric`` variation computes each counter as initial + rate x (now - start) from
    the wall clock at the moment snmpsim handles the GET, in whole octets per second, so
    the counters themselves carry no error worth counting (below 1e-9 over 5 s). What does
    is timing: `LinkRates` times a sample by its arrival at the poller, and snmpsim, being
    one single-threaded process, queues up to 64 GETs; a router whose answer waits longer
    in one sweep than in the other gets its interval wrong by the difference. Answers take
    ~0.5 s at most, and a router sits at the same place in both sweeps, so the difference
    measured is ~0.5 % of 5 s; 5 % leaves room for a loaded CI machine (0.25 s of skew).
    A warm-up sweep first walks every router's ifName table, so the two measured sweeps
    are alike (one GET per router each).
    """
    sessions = SnmpSessions()
    limit = asyncio.Semaphore(CONCURRENCY)
    rates = {router.community: LinkRates(INTERVAL) for router in city.routers}
    try:
        warm_up = await _sweep(city, sessions, limit)
        first = await _sweep(city, sessions, limit)
        await asyncio.sleep(INTERVAL - first.wall)
        second = await _sweep(city, sessions, limit)
    finally:
        sessions.close()

    for sweep in (warm_up, first, second):
        failed = [(r.name, s.reason, s.detail) for r, s in zip(city.routers, sweep.samples, strict=True) if not s.ok]
        assert sweep.answered == ROUTERS, failed[:5]
    errors: list[tuple[float, str]] = []
    for router, before, after in zip(city.routers, first.samples, second.samples, strict=True):
        rates[router.community].update(before)
        measured = rates[router.community].update(after)
        assert measured is not None, (router.name, rates[router.community].skipped)
        assert set(measured) == set(router.interfaces)
        for role, rate in measured.items():
            expected_in, expected_out = city.expected_rate(router.community, role)
            for direction, got, want in (("in", rate.in_bps, expected_in), ("out", rate.out_bps, expected_out)):
                errors.append((got / want - 1, f"{router.name} {role} {direction}: {got:.0f} vs {want:.0f} bit/s"))
    worst_error, worst = max(errors, key=lambda e: abs(e[0]))
    mean_error = sum(abs(e) for e, _ in errors) / len(errors)

    print(
        f"\nsnmpsim city, {ROUTERS} routers, concurrency {CONCURRENCY}, one GET of 37 OIDs per router:"
        f"\n  warm-up sweep (ifName walk + GET): wall {warm_up.wall:.2f} s, poller CPU {warm_up.cpu:.2f} s,"
        f" snmpsim CPU {warm_up.simulator_cpu:.2f} s"
        + "".join(
            f"\n  sweep {n}: wall {s.wall:.2f} s, poller CPU {s.cpu:.2f} s, snmpsim CPU {s.simulator_cpu:.2f} s"
            for n, s in ((1, first), (2, second))
        )
        + f"\n  rates: {len(errors)} (router, role, direction) values, mean |error| {mean_error:.3%},"
        f" worst {worst_error:+.3%} ({worst})"
    )
    assert abs(worst_error) <= TOLERANCE, worst


async def test_wrong_community_times_out_without_naming_it(city: SnmpSimCity) -> None:
    """A community no router has gets silence, reported as the v2c timeout sentence with no community in it."""
    router = city.routers[0]
    wrong = secrets.token_hex(12)
    sample = await poll_router(city.host, wrong, router.interfaces, port=router.port, timeout=0.3, retries=1)
    assert not sample.ok
    assert sample.reason == "timeout"
    assert sample.detail == timeout_detail(city.host)
    assert wrong not in sample.detail
    assert all(r.community not in sample.detail for r in city.routers)


def test_communities_are_secret_and_never_shown(city: SnmpSimCity) -> None:
    """Communities are distinct random strings that no repr or lookup error of the city shows."""
    communities = [router.community for router in city.routers]
    assert len(set(communities)) == ROUTERS
    assert all(len(c) >= 24 and c not in {"public", "private"} for c in communities)
    shown = repr(city.routers) + repr(city.routers[0])
    with pytest.raises(KeyError) as missing:
        city.expected_rate("not-" + communities[0], "wan")
    shown += str(missing.value)
    assert not any(c in shown for c in communities)


def test_stop_ends_the_process_and_removes_the_data() -> None:
    """stop() ends snmpsim by PID and deletes the temp dir holding the community-named data files; repeatable."""
    city = SnmpSimCity(3).start()
    pid, workdir = city.pid, city.workdir
    assert pid is not None and workdir is not None
    assert sorted(p.name for p in (workdir / "data").iterdir()) == sorted(
        f"{r.community}.snmprec" for r in city.routers
    )
    assert workdir.stat().st_mode & 0o077 == 0  # file names are communities: private to us
    city.stop()
    city.stop()
    assert not workdir.exists()
    assert city.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
