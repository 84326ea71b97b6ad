"""Scheduler: phase spreading, no overlapping runs, concurrency bounds, reload, crash isolation."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Sequence

import pytest

from telemetryd.config.settings import Settings
from telemetryd.model import Contract, Device, DeviceKind, Inventory, ProbeResult, ProbeSpec, School
from telemetryd.probes import ProbeContext
from telemetryd.reachability.scheduler import Scheduler, spread_phases


def _settings(interval: float = 0.2, max_probes: int = 100, per_school: int = 100) -> Settings:
    return Settings.model_validate(
        {
            "probes": {"icmp": {"interval": interval}, "tcp": {"interval": interval}},
            "concurrency": {"max_probes": max_probes, "per_school": per_school},
        }
    )


def _inventory(schools: int, devices: int, probes: tuple[ProbeSpec, ...] = (ProbeSpec("tcp", 80),)) -> Inventory:
    return Inventory.build(
        [
            School(
                f"s{s}",
                f"School {s}",
                "Abay",
                Contract(),
                tuple(
                    Device(f"s{s}-d{d}", f"s{s}", DeviceKind.CAMERA, f"10.0.{s}.{d + 1}", probes)
                    for d in range(devices)
                ),
            )
            for s in range(schools)
        ]
    )


class Recorder:
    """A fake prober that records start times and concurrency."""

    def __init__(self, delay: float = 0.0, fail_for: str = "") -> None:
        self.delay = delay
        self.fail_for = fail_for
        self.starts: dict[str, list[float]] = defaultdict(list)
        self.running: Counter[str] = Counter()
        self.running_per_school: Counter[str] = Counter()
        self.max_running = 0
        self.max_per_key = 0
        self.max_per_school = 0

    async def probe(self, device: Device, spec: ProbeSpec, ctx: ProbeContext) -> ProbeResult:
        if device.id == self.fail_for:
            raise RuntimeError("bug in a prober")
        self.starts[device.id].append(time.monotonic())
        self.running[device.id] += 1
        self.running_per_school[device.school_id] += 1
        self.max_per_key = max(self.max_per_key, self.running[device.id])
        self.max_running = max(self.max_running, sum(self.running.values()))
        self.max_per_school = max(self.max_per_school, self.running_per_school[device.school_id])
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.running[device.id] -= 1
            self.running_per_school[device.school_id] -= 1
        return ProbeResult(True, self.delay)


async def _run_for(scheduler: Scheduler, seconds: float) -> None:
    task = asyncio.create_task(scheduler.run())
    await asyncio.sleep(seconds)
    scheduler.stop()
    await scheduler.drain(1.0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def test_spread_phases_even_and_stable() -> None:
    """Keys get distinct start times one interval/n apart, the same on every call."""
    keys = [f"dev{i}" for i in range(10)]
    first = spread_phases(keys, 10.0, start=100.0)
    assert sorted(first.values()) == pytest.approx([100.0 + i for i in range(10)])
    assert spread_phases(list(reversed(keys)), 10.0, start=100.0) == first


async def test_first_runs_spread_over_interval() -> None:
    """100 jobs on a 0.5 s interval start spread over the interval, not all at once."""
    recorder = Recorder()
    settings = _settings(interval=0.5)
    scheduler = Scheduler(ProbeContext(settings), lambda *_: None, probers={"tcp": recorder.probe})
    scheduler.load(_inventory(10, 10), settings)
    t0 = time.monotonic()
    await _run_for(scheduler, 0.45)
    firsts = sorted(starts[0] - t0 for starts in recorder.starts.values())
    assert len(firsts) >= 80
    # Evenly spread: each fifth of the interval holds roughly a fifth of the starts.
    buckets = Counter(min(int(f / 0.1), 4) for f in firsts)
    assert all(10 <= buckets[b] <= 30 for b in range(4)), buckets


async def test_slow_probe_never_overlaps_itself() -> None:
    """A probe slower than its interval never runs twice at once; the missed slots are counted."""
    recorder = Recorder(delay=0.35)
    settings = _settings(interval=0.1)
    scheduler = Scheduler(ProbeContext(settings), lambda *_: None, probers={"tcp": recorder.probe})
    scheduler.load(_inventory(1, 3), settings)
    await _run_for(scheduler, 1.0)
    assert recorder.max_per_key == 1
    assert all(2 <= len(s) <= 4 for s in recorder.starts.values()), recorder.starts
    assert scheduler.stats.skipped["tcp"] >= 6


async def test_global_and_per_school_concurrency_bounds() -> None:
    """In-flight probes never exceed max_probes overall nor per_school towards one school."""
    recorder = Recorder(delay=0.2)
    settings = _settings(interval=0.05, max_probes=7, per_school=3)
    scheduler = Scheduler(ProbeContext(settings), lambda *_: None, probers={"tcp": recorder.probe})
    scheduler.load(_inventory(5, 8), settings)
    await _run_for(scheduler, 0.8)
    assert recorder.max_running == 7
    assert recorder.max_per_school == 3


async def test_results_reach_the_sink_and_are_counted() -> None:
    """Every run's result goes to the sink and into the runs counter by protocol and result."""
    seen: list[tuple[str, str, bool]] = []
    recorder = Recorder()
    settings = _settings(interval=0.1)
    scheduler = Scheduler(
        ProbeContext(settings),
        lambda d, s, r: seen.append((d.id, s.name, r.ok)),
        probers={"tcp": recorder.probe},
    )
    scheduler.load(_inventory(1, 2), settings)
    await _run_for(scheduler, 0.35)
    assert {d for d, _, _ in seen} == {"s0-d0", "s0-d1"}
    assert scheduler.stats.runs[("tcp", "ok")] == len(seen) >= 4


async def test_crashing_prober_becomes_error_result() -> None:
    """A prober bug is an `error` result for that device; other devices keep being probed."""
    results: dict[str, list[ProbeResult]] = defaultdict(list)
    recorder = Recorder(fail_for="s0-d0")
    settings = _settings(interval=0.1)
    scheduler = Scheduler(
        ProbeContext(settings), lambda d, s, r: results[d.id].append(r), probers={"tcp": recorder.probe}
    )
    scheduler.load(_inventory(1, 2), settings)
    await _run_for(scheduler, 0.35)
    assert results["s0-d0"] and all(r.reason == "error" for r in results["s0-d0"])
    assert "RuntimeError" in results["s0-d0"][0].detail
    assert len(results["s0-d1"]) >= 3 and all(r.ok for r in results["s0-d1"])
    assert scheduler.stats.errors >= 3


async def test_batch_prober_gets_due_jobs_together() -> None:
    """ICMP-style batch probers receive the jobs due in one tick as one call, each result delivered."""
    batches: list[int] = []
    delivered: list[str] = []

    async def batch(devices: Sequence[Device], ctx: ProbeContext) -> list[ProbeResult]:
        batches.append(len(devices))
        return [ProbeResult(True, 0.0)] * len(devices)

    settings = _settings(interval=0.2)
    scheduler = Scheduler(
        ProbeContext(settings),
        lambda d, s, r: delivered.append(d.id),
        probers={},
        batch_probers={"icmp": batch},
    )
    scheduler.load(_inventory(4, 50, (ProbeSpec("icmp"),)), settings)
    await _run_for(scheduler, 0.3)
    assert sum(batches) == len(delivered) >= 200
    assert max(batches) > 1


async def test_reload_removes_and_adds_jobs() -> None:
    """After a reload, removed devices are no longer probed and new ones are."""
    recorder = Recorder()
    settings = _settings(interval=0.1)
    scheduler = Scheduler(ProbeContext(settings), lambda *_: None, probers={"tcp": recorder.probe})
    scheduler.load(_inventory(1, 3), settings)
    task = asyncio.create_task(scheduler.run())
    await asyncio.sleep(0.25)
    smaller = _inventory(1, 1)
    bigger = Inventory.build(
        [
            *smaller.schools,
            School(
                "s9",
                "New",
                "Abay",
                Contract(),
                (Device("s9-d0", "s9", DeviceKind.NVR, "10.9.0.1", (ProbeSpec("tcp", 80),)),),
            ),
        ]
    )
    scheduler.load(bigger, settings)
    before = {k: len(v) for k, v in recorder.starts.items()}
    await asyncio.sleep(0.35)
    scheduler.stop()
    await scheduler.drain(1.0)
    await asyncio.gather(task, return_exceptions=True)
    assert len(recorder.starts["s0-d1"]) - before["s0-d1"] <= 1  # at most the run already in flight
    assert len(recorder.starts["s9-d0"]) >= 2
    assert len(recorder.starts["s0-d0"]) - before["s0-d0"] >= 2
    assert scheduler.job_count == 2
