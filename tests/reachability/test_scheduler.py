"""Scheduler on a fake clock: phases, no overlap, concurrency bounds, reload, crashes, deadlines.

Time moves only through `FakeClock.advance`, so every test runs in milliseconds and
asserts exact times instead of wall-clock tolerances. The fake probers send no traffic.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import pytest
from structlog.testing import capture_logs

from telemetryd.config.settings import Settings
from telemetryd.model import Contract, Device, DeviceKind, Inventory, ProbeResult, ProbeSpec, School
from telemetryd.probes import ProbeContext
from telemetryd.probes.icmp import sweep_budget as icmp_sweep_budget
from telemetryd.reachability.scheduler import (
    RECANCEL_EVERY,
    MonotonicClock,
    Scheduler,
    deadline_for,
    spread_phases,
)

from .fakeclock import FakeClock, settle

T0 = 1000.0
TCP = ProbeSpec("tcp", 80)
ICMP = ProbeSpec("icmp")


def _settings(
    interval: float = 1.0, max_probes: int = 100, per_school: int = 100, timeout: float = 5.0, **icmp: Any
) -> Settings:
    return Settings.model_validate(
        {
            "probes": {"icmp": {"interval": interval, **icmp}, "tcp": {"interval": interval, "timeout": timeout}},
            "concurrency": {"max_probes": max_probes, "per_school": per_school},
        }
    )


def _inventory(schools: int, devices: int, probes: tuple[ProbeSpec, ...] = (TCP,)) -> Inventory:
    return Inventory.build(
        [
            School(
                f"s{s}",
                f"School {s}",
                "Abay",
                Contract(),
                tuple(
                    Device(f"s{s}-d{d}", f"s{s}", DeviceKind.CAMERA, f"127.0.{s}.{d + 1}", probes)
                    for d in range(devices)
                ),
            )
            for s in range(schools)
        ]
    )


class Recorder:
    """A fake prober on the fake clock: records start times and concurrency, can crash or hang on cue."""

    def __init__(self, clock: FakeClock, delay: float = 0.0, fail_for: str = "") -> None:
        self.clock = clock
        self.delay = delay
        self.fail_for = fail_for
        self.hang: dict[str, list[bool]] = {}
        """device id → per run: hang (True) or answer (False); runs past the list answer."""
        self.starts: dict[str, list[float]] = defaultdict(list)
        self.cancelled: Counter[str] = Counter()
        self.running: Counter[str] = Counter()
        self.running_per_school: Counter[str] = Counter()
        self.max_running = 0
        self.max_per_key = 0
        self.max_per_school = 0

    async def probe(self, device: Device, spec: ProbeSpec, ctx: ProbeContext) -> ProbeResult:
        if device.id == self.fail_for:
            raise RuntimeError("bug in a prober")
        run = len(self.starts[device.id])
        self.starts[device.id].append(self.clock.now())
        plan = self.hang.get(device.id, [])
        self.running[device.id] += 1
        self.running_per_school[device.school_id] += 1
        self.max_per_key = max(self.max_per_key, self.running[device.id])
        self.max_running = max(self.max_running, sum(self.running.values()))
        self.max_per_school = max(self.max_per_school, self.running_per_school[device.school_id])
        try:
            if run < len(plan) and plan[run]:
                await self.clock.sleep(1e9)
            elif self.delay:
                await self.clock.sleep(self.delay)
            else:
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            self.cancelled[device.id] += 1
            raise
        finally:
            self.running[device.id] -= 1
            self.running_per_school[device.school_id] -= 1
        return ProbeResult(True, self.delay)


def _scheduler(clock: FakeClock, settings: Settings, sink: Any = None, **probers: Any) -> Scheduler:
    probers.setdefault("batch_probers", {})  # the fakes in `probers` run one job at a time unless a test says
    return Scheduler(ProbeContext(settings), sink or (lambda *_: None), clock=clock, **probers)


async def _start(scheduler: Scheduler) -> asyncio.Task[None]:
    task = asyncio.create_task(scheduler.run())
    await settle()
    return task


async def _finish(scheduler: Scheduler, clock: FakeClock, task: asyncio.Task[None], wait: float = 60.0) -> int:
    """Stop, let runs in flight end for up to `wait` fake seconds; returns how many drain cancelled."""
    scheduler.stop()
    drain = asyncio.create_task(scheduler.drain(wait))
    await clock.advance(wait + 2.0)
    cancelled = await drain
    await task  # the run loop returns on stop()
    return cancelled


def test_spread_phases_even_and_stable() -> None:
    """Keys get distinct start times one interval/n apart, the same on every call."""
    keys = [f"dev{i}" for i in range(10)]
    first = spread_phases(keys, 10.0, start=100.0)
    assert sorted(first.values()) == pytest.approx([100.0 + i for i in range(10)])
    assert spread_phases(list(reversed(keys)), 10.0, start=100.0) == first


def test_deadline_formula() -> None:
    """A run's deadline is its timeout plus max(5 s, the timeout again); ICMP's covers the whole paced sweep."""
    settings = Settings.model_validate(
        {
            "probes": {
                "tcp": {"timeout": 2.0},
                "icmp": {"timeout": 2.0, "packets": 3, "packet_spacing": 0.25, "max_packets_per_second": 5000},
            }
        }
    )
    ctx = ProbeContext(settings)
    assert deadline_for(ctx, "tcp") == pytest.approx(7.0)  # slack floor of 5 s
    assert deadline_for(ctx, "isapi") == pytest.approx(60.0)  # 30 s + 30 s
    # 10,000 devices × 3 packets at 5000/s = 6 s, + 3 × 0.25 s spacing + 2 s timeout = 8.75 s, twice.
    assert deadline_for(ctx, "icmp", 10_000) == pytest.approx(8.75 * 2)
    assert deadline_for(ctx, "icmp", 1) == pytest.approx(3 / 5000 + 0.75 + 2.0 + 5.0, abs=1e-3)
    # A sweep queued behind 4 s of other sweeps' packets gets those 4 s on top (the budget twice).
    assert deadline_for(ctx, "icmp", 1, {"icmp": lambda c, n: 4.0 + icmp_sweep_budget(c, n)}) == pytest.approx(
        2 * (4.0 + 3 / 5000 + 0.75 + 2.0), abs=1e-3
    )


async def test_production_clock_fires_and_cancels_timers() -> None:
    """MonotonicClock reads time.monotonic and runs a callback no earlier than its due time, unless cancelled."""
    clock = MonotonicClock()
    before = time.monotonic()
    assert before <= clock.now() <= time.monotonic()
    fired: list[float] = []
    when = clock.now() + 0.01
    clock.call_at(when, lambda: fired.append(clock.now()))
    clock.call_at(when, lambda: fired.append(-1.0)).cancel()
    await asyncio.sleep(0.05)
    assert len(fired) == 1
    assert fired[0] >= when - 0.002  # the loop's own clock may round to the millisecond (uvloop)


async def test_first_runs_spread_over_interval() -> None:
    """100 jobs on a 10 s interval first start exactly interval/100 apart, each once in the first interval."""
    clock = FakeClock(T0)
    recorder = Recorder(clock)
    scheduler = _scheduler(clock, _settings(interval=10.0), probers={"tcp": recorder.probe})
    scheduler.load(_inventory(10, 10), scheduler.ctx.settings)
    task = await _start(scheduler)
    await clock.advance(9.95)
    assert all(len(starts) == 1 for starts in recorder.starts.values())
    firsts = sorted(starts[0] for starts in recorder.starts.values())
    assert firsts == pytest.approx([T0 + 0.1 * i for i in range(100)])
    await _finish(scheduler, clock, task)


async def test_idle_scheduler_holds_one_timer() -> None:
    """Between runs the scheduler holds one timer, at the next due time; a run adds only its deadline."""
    clock = FakeClock(T0)
    recorder = Recorder(clock, delay=1.0)
    scheduler = _scheduler(clock, _settings(interval=10.0, timeout=2.0), probers={"tcp": recorder.probe})
    scheduler.load(_inventory(1, 2), scheduler.ctx.settings)
    task = await _start(scheduler)
    # The first job runs: the prober's own sleep, the wake-up for the second job, its deadline (T0 + 7 s).
    assert clock.pending == pytest.approx([T0 + 1.0, T0 + 5.0, T0 + 7.0])
    await clock.advance(1.5)
    assert clock.pending == pytest.approx([T0 + 5.0])
    await _finish(scheduler, clock, task)


async def test_slow_probe_never_overlaps_itself() -> None:
    """A probe slower than its interval never runs twice at once; each run skips the slots it overran."""
    clock = FakeClock(T0)
    recorder = Recorder(clock, delay=3.5)
    scheduler = _scheduler(clock, _settings(interval=1.0), probers={"tcp": recorder.probe})
    scheduler.load(_inventory(1, 3), scheduler.ctx.settings)
    task = await _start(scheduler)
    await clock.advance(10.0)
    assert recorder.max_per_key == 1
    for starts in recorder.starts.values():
        # Runs at its phase, then 4 s later each time: 3.5 s of run, rounded up to the next slot of its own.
        assert [b - a for a, b in pairwise(starts)] == pytest.approx([4.0, 4.0])
    assert scheduler.stats.skipped["tcp"] == 3 * 2 * 3  # 3 devices × 2 finished runs × 3 slots each
    await _finish(scheduler, clock, task)


async def test_global_and_per_school_concurrency_bounds() -> None:
    """In-flight probes reach but never exceed max_probes overall nor per_school towards one school."""
    clock = FakeClock(T0)
    recorder = Recorder(clock, delay=2.0)
    settings = _settings(interval=0.5, max_probes=7, per_school=3)
    scheduler = _scheduler(clock, settings, probers={"tcp": recorder.probe})
    scheduler.load(_inventory(5, 8), settings)
    task = await _start(scheduler)
    await clock.advance(8.0)
    assert recorder.max_running == 7
    assert recorder.max_per_school == 3
    assert sum(len(s) for s in recorder.starts.values()) >= 7 * 3  # the slots kept being reused
    await _finish(scheduler, clock, task)


async def test_results_reach_the_sink_and_are_counted() -> None:
    """Every run's result goes to the sink and into the runs counter by protocol and result."""
    clock = FakeClock(T0)
    seen: list[tuple[str, str, bool]] = []
    recorder = Recorder(clock)
    scheduler = _scheduler(
        clock,
        _settings(interval=1.0),
        lambda d, s, r: seen.append((d.id, s.name, r.ok)),
        probers={"tcp": recorder.probe},
    )
    scheduler.load(_inventory(1, 2), scheduler.ctx.settings)
    task = await _start(scheduler)
    await clock.advance(3.5)  # phases 0 and 0.5 s: runs at 0, 1, 2, 3 and 0.5, 1.5, 2.5, 3.5
    assert Counter(seen) == {("s0-d0", "tcp:80", True): 4, ("s0-d1", "tcp:80", True): 4}
    assert scheduler.stats.runs == {("tcp", "ok"): 8}
    await _finish(scheduler, clock, task)


async def test_crashing_prober_becomes_error_result() -> None:
    """A prober bug is an `error` result for that device; other devices keep being probed."""
    clock = FakeClock(T0)
    results: dict[str, list[ProbeResult]] = defaultdict(list)
    recorder = Recorder(clock, fail_for="s0-d0")
    scheduler = _scheduler(
        clock, _settings(interval=1.0), lambda d, s, r: results[d.id].append(r), probers={"tcp": recorder.probe}
    )
    scheduler.load(_inventory(1, 2), scheduler.ctx.settings)
    task = await _start(scheduler)
    await clock.advance(2.9)
    assert [r.reason for r in results["s0-d0"]] == ["error"] * 3
    assert "RuntimeError" in results["s0-d0"][0].detail
    assert len(results["s0-d1"]) == 3 and all(r.ok for r in results["s0-d1"])
    assert scheduler.stats.errors == 3
    assert scheduler.stats.runs[("tcp", "error")] == 3
    await _finish(scheduler, clock, task)


async def test_batch_prober_gets_due_jobs_together() -> None:
    """ICMP-style batch probers receive the jobs due in one tick as one call, each result delivered once."""
    clock = FakeClock(T0)
    batches: list[int] = []
    delivered: list[str] = []

    async def batch(devices: Sequence[tuple[Device, ProbeSpec]], ctx: ProbeContext) -> list[ProbeResult]:
        batches.append(len(devices))
        return [ProbeResult(True, 0.0)] * len(devices)

    settings = _settings(interval=0.5)
    scheduler = _scheduler(
        clock, settings, lambda d, s, r: delivered.append(d.id), probers={}, batch_probers={"icmp": batch}
    )
    scheduler.load(_inventory(4, 50, (ICMP,)), settings)  # 200 jobs 2.5 ms apart, 5 ms ticks
    task = await _start(scheduler)
    await clock.advance(0.49)
    assert sum(batches) == len(delivered) == len(set(delivered)) >= 190
    assert max(batches) > 1
    assert len(batches) < len(delivered)
    await _finish(scheduler, clock, task)


async def test_reload_keeps_phases_removes_and_adds_jobs() -> None:
    """A reload keeps a surviving job on its phase, stops removed ones and starts new ones at once."""
    clock = FakeClock(T0)
    recorder = Recorder(clock)
    settings = _settings(interval=1.0)
    scheduler = _scheduler(clock, settings, probers={"tcp": recorder.probe})
    scheduler.load(_inventory(1, 3), settings)
    task = await _start(scheduler)
    await clock.advance(2.5)
    smaller = _inventory(1, 1)
    new_device = Device("s9-d0", "s9", DeviceKind.NVR, "127.0.9.1", (TCP,))
    bigger = Inventory.build([*smaller.schools, School("s9", "New", "Abay", Contract(), (new_device,))])
    before = {k: len(v) for k, v in recorder.starts.items()}
    reloaded_at = clock.now()
    scheduler.load(bigger, settings)
    await clock.advance(3.0)
    assert len(recorder.starts["s0-d1"]) == before["s0-d1"]
    assert len(recorder.starts["s0-d2"]) == before["s0-d2"]
    kept = recorder.starts["s0-d0"]
    assert len(kept) == before["s0-d0"] + 3
    assert [b - a for a, b in pairwise(kept)] == pytest.approx([1.0] * (len(kept) - 1))
    assert recorder.starts["s9-d0"] == pytest.approx([reloaded_at + i for i in range(4)])
    assert scheduler.job_count == 2
    await _finish(scheduler, clock, task)


async def test_a_reload_planned_off_the_loop_keeps_jobs_and_waits_for_a_replaced_run() -> None:
    """plan() then commit(): kept jobs are the same objects on their phase; a job whose interval changed
    while its run was in flight starts only after that run, whose result is dropped; removed ones stop."""
    clock = FakeClock(T0)
    recorder = Recorder(clock, delay=0.4)
    delivered: list[tuple[str, float]] = []
    settings = _settings(interval=1.0)
    scheduler = _scheduler(
        clock, settings, lambda d, s, r: delivered.append((d.id, clock.now())), probers={"tcp": recorder.probe}
    )
    scheduler.load(_inventory(1, 3), settings)
    task = await _start(scheduler)
    await clock.advance(2.0)
    old_jobs = dict(scheduler._jobs)
    slower = _settings(interval=2.0)
    renumbered = Inventory.build(
        [School("s0", "School 0", "Abay", Contract(), tuple(d for d in _inventory(1, 3).schools[0].devices[:2]))]
    )
    plan = scheduler.plan(renumbered, slower)
    assert scheduler._jobs == old_jobs  # planning changes nothing
    running = [job for job in old_jobs.values() if job.running]
    assert running, "a run should be in flight at the swap"
    scheduler.commit(plan)
    assert all(old_jobs[key].retired for key in old_jobs)  # every interval changed: all replaced
    assert all(job.running for job in plan.added if old_jobs[job.key].running)
    committed_at = clock.now()
    await clock.advance(6.0)
    starts_after = {key: [t for t in recorder.starts[key] if t > committed_at] for key in ("s0-d0", "s0-d1", "s0-d2")}
    assert starts_after["s0-d2"] == []
    for key in ("s0-d0", "s0-d1"):
        gaps = [b - a for a, b in pairwise(starts_after[key])]
        assert gaps == pytest.approx([2.0] * len(gaps)) and len(gaps) >= 1, key
    # No result of a replaced job after the swap, and at most one run of each job at once.
    assert not [d for d, at in delivered if at > committed_at and d == "s0-d2"]
    assert recorder.max_per_key == 1
    await _finish(scheduler, clock, task)


async def test_hung_probe_gets_deadline_result_logged_once_until_recovery() -> None:
    """A hung prober is cancelled at its deadline and gets a `deadline` result; logged once until it answers again."""
    clock = FakeClock(T0)
    results: dict[str, list[ProbeResult]] = defaultdict(list)
    recorder = Recorder(clock)
    recorder.hang["s0-d0"] = [True, True, False, True]
    settings = _settings(interval=10.0, timeout=2.0)  # deadline: 2 s + 5 s slack
    scheduler = _scheduler(clock, settings, lambda d, s, r: results[d.id].append(r), probers={"tcp": recorder.probe})
    scheduler.load(_inventory(1, 2), settings)
    with capture_logs() as logs:
        task = await _start(scheduler)
        await clock.advance(45.0)
    # s0-d0's phase is 5 s (s0-d1's 0 s): runs at 5, 15, 25, 35, 45 s.
    assert [r.reason or "ok" for r in results["s0-d0"]] == ["deadline", "deadline", "ok", "deadline", "ok"]
    hung = results["s0-d0"][0]
    assert hung == ProbeResult(False, pytest.approx(7.0), "deadline", "no result within 7 s")
    assert recorder.cancelled["s0-d0"] == 3
    assert [r.ok for r in results["s0-d1"]] == [True] * 5
    assert scheduler.stats.deadlines == {"tcp": 3}
    assert scheduler.stats.runs == {("tcp", "deadline"): 3, ("tcp", "ok"): 7}
    assert scheduler.stats.skipped["tcp"] == 0  # the job kept its slots
    deadline_logs = [e for e in logs if e["event"] == "probe_deadline"]
    assert (
        deadline_logs
        == [
            {
                "event": "probe_deadline",
                "log_level": "warning",
                "school": "s0",
                "device": "s0-d0",
                "probe": "tcp:80",
                "seconds": 7.0,
            }
        ]
        * 2
    )
    await _finish(scheduler, clock, task)


async def test_batch_deadline_covers_the_whole_sweep() -> None:
    """A batch's deadline is sized for its sweep: a slow but working sweep ends normally, a hung one is cut."""
    clock = FakeClock(T0)
    sweep = 20 * 3 / 10 + 3 * 0.25 + 2.0  # 20 devices × 3 packets at 10/s, spacing, timeout: 8.75 s
    limit = sweep * 2  # the slack is the budget again (it is over the 5 s floor)
    batches: list[int] = []
    results: list[ProbeResult] = []

    async def batch(devices: Sequence[tuple[Device, ProbeSpec]], ctx: ProbeContext) -> list[ProbeResult]:
        batches.append(len(devices))
        await clock.sleep(sweep if len(batches) == 1 else 1e9)  # the first sweep works, later ones hang
        return [ProbeResult(True, sweep)] * len(devices)

    settings = _settings(interval=0.001, timeout=2.0, packets=3, packet_spacing=0.25, max_packets_per_second=10)
    scheduler = _scheduler(
        clock, settings, lambda d, s, r: results.append(r), probers={}, batch_probers={"icmp": batch}
    )
    scheduler.load(_inventory(1, 20, (ICMP,)), settings)
    with capture_logs() as logs:
        task = await _start(scheduler)
        await clock.advance(sweep)
        # Past a single echo probe's deadline (about 8.05 s), yet a normal end: the batch has its own.
        assert results == [ProbeResult(True, sweep)] * 20
        assert batches == [20, 20]  # the next sweep started straight away (its slots were overrun)
        await clock.advance(limit)
        assert results[20:] == [ProbeResult(False, pytest.approx(limit), "deadline", "no result within 17.5 s")] * 20
        assert batches == [20, 20, 20]
        await clock.advance(limit)  # a second hung sweep: counted, not logged again
    assert scheduler.stats.deadlines == {"icmp": 40}
    assert scheduler.stats.runs == {("icmp", "ok"): 20, ("icmp", "deadline"): 40}
    deadline_logs = [e for e in logs if e["event"] == "probe_deadline"]
    assert sorted(e["device"] for e in deadline_logs) == sorted(f"s0-d{i}" for i in range(20))
    assert {e["seconds"] for e in deadline_logs} == {round(limit, 3)}
    await _finish(scheduler, clock, task)


async def test_prober_swallowing_cancellation_still_ends_at_deadline() -> None:
    """A prober that swallows CancelledError is cancelled again and still ends with a `deadline` result."""
    clock = FakeClock(T0)
    results: dict[str, list[ProbeResult]] = defaultdict(list)
    calls: Counter[str] = Counter()

    async def stubborn(device: Device, spec: ProbeSpec, ctx: ProbeContext) -> ProbeResult:
        calls[device.id] += 1
        if calls[device.id] > 1:
            return ProbeResult(True, 0.0)
        try:
            await clock.sleep(1e9)
        except asyncio.CancelledError:
            if device.id == "s0-d0":
                return ProbeResult(True, 0.0)  # swallows it and answers late
        await clock.sleep(1e9)  # swallowed it and hangs on: the second cancel ends this
        return ProbeResult(True, 0.0)

    settings = _settings(interval=10.0, timeout=2.0)
    scheduler = _scheduler(clock, settings, lambda d, s, r: results[d.id].append(r), probers={"tcp": stubborn})
    scheduler.load(_inventory(1, 2), settings)
    task = await _start(scheduler)
    await clock.advance(19.0)
    assert [(r.reason, r.duration) for r in results["s0-d0"][:1]] == [("deadline", pytest.approx(7.0))]
    assert [(r.reason, r.duration) for r in results["s0-d1"][:1]] == [("deadline", pytest.approx(7.0 + RECANCEL_EVERY))]
    assert [r.ok for r in results["s0-d0"][1:]] == [True]
    assert [r.ok for r in results["s0-d1"][1:]] == [True]
    assert scheduler.in_flight == 0
    await _finish(scheduler, clock, task)


async def test_cancellation_from_outside_is_not_a_deadline() -> None:
    """drain() cancelling a run in flight propagates CancelledError: no result, no deadline counted."""
    clock = FakeClock(T0)
    results: list[ProbeResult] = []
    recorder = Recorder(clock)
    recorder.hang["s0-d0"] = [True]
    settings = _settings(interval=10.0, timeout=20.0)  # deadline 30 s, well after the drain gives up
    scheduler = _scheduler(clock, settings, lambda d, s, r: results.append(r), probers={"tcp": recorder.probe})
    scheduler.load(_inventory(1, 1), settings)
    task = await _start(scheduler)
    await clock.advance(1.0)
    cancelled = await _finish(scheduler, clock, task, wait=5.0)
    assert cancelled == 1
    assert recorder.cancelled["s0-d0"] == 1
    assert results == []
    assert not scheduler.stats.deadlines
    assert scheduler.in_flight == 0


async def test_cancellation_from_outside_wins_over_a_fired_deadline() -> None:
    """Cancelled by drain() after its deadline fired (and was swallowed), a run still propagates CancelledError."""
    clock = FakeClock(T0)
    results: list[ProbeResult] = []
    outcome: list[str] = []

    async def swallows_once(device: Device, spec: ProbeSpec, ctx: ProbeContext) -> ProbeResult:
        try:
            await clock.sleep(1e9)
        except asyncio.CancelledError:
            outcome.append("swallowed")
        try:
            await clock.sleep(1e9)
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise
        return ProbeResult(True, 0.0)

    settings = _settings(interval=10.0, timeout=2.0)  # deadline at 7 s, cancelled again at 8 s
    scheduler = _scheduler(clock, settings, lambda d, s, r: results.append(r), probers={"tcp": swallows_once})
    scheduler.load(_inventory(1, 1), settings)
    task = await _start(scheduler)
    await clock.advance(7.5)
    assert outcome == ["swallowed"]
    cancelled = await _finish(scheduler, clock, task, wait=0.2)  # drain cancels at 7.7 s
    assert cancelled == 1
    assert outcome == ["swallowed", "cancelled"]
    assert results == []
    assert scheduler.in_flight == 0


@pytest.mark.parametrize(
    ("hung", "right_after", "later"), [(False, ["timeout"], ["timeout"]), (True, [], ["deadline"])]
)
async def test_a_stalled_loop_lets_the_probers_own_timeout_answer(
    hung: bool, right_after: list[str], later: list[str]
) -> None:
    """After a loop stall past the deadline the prober's own timeout answers; a hung one is cut a stall later."""
    clock = FakeClock(T0)
    results: list[ProbeResult] = []

    async def own_timeout(device: Device, spec: ProbeSpec, ctx: ProbeContext) -> ProbeResult:
        await clock.sleep(1e9 if hung else 2.0)  # its own 2 s timeout, or none at all
        return ProbeResult(False, 2.0, "timeout", "no answer")

    settings = _settings(interval=100.0, timeout=2.0)  # deadline at 7 s
    scheduler = _scheduler(clock, settings, lambda d, s, r: results.append(r), probers={"tcp": own_timeout})
    scheduler.load(_inventory(1, 1), settings)
    task = await _start(scheduler)
    await clock.stall(30.0)  # both timers fire in one loop turn, as after a long render
    assert [r.reason for r in results] == right_after
    await clock.advance(22.9)  # the deadline fired 23 s late: the stall is counted out of the prober's time
    assert [r.reason for r in results] == right_after
    await clock.advance(0.2)
    assert [r.reason for r in results] == later
    assert scheduler.stats.deadlines == ({"tcp": 1} if hung else {})
    await _finish(scheduler, clock, task)


async def test_a_sweep_may_run_one_interval_past_its_budget() -> None:
    """A batch sweep gets its budget plus one interval before the deadline: slow sends under a busy loop are no hang."""
    clock = FakeClock(T0)
    budget = 1 * 3 / 10 + 3 * 0.25 + 2.0  # 1 device × 3 packets at 10/s, spacing, timeout: 3.05 s
    results: list[ProbeResult] = []

    async def slow_sweep(devices: Sequence[tuple[Device, ProbeSpec]], ctx: ProbeContext) -> list[ProbeResult]:
        await clock.sleep(budget + 20.0)  # far slower than planned, yet it answers
        return [ProbeResult(True, budget + 20.0)] * len(devices)

    settings = _settings(interval=30.0, timeout=2.0, packets=3, packet_spacing=0.25, max_packets_per_second=10)
    scheduler = _scheduler(
        clock, settings, lambda d, s, r: results.append(r), probers={}, batch_probers={"icmp": slow_sweep}
    )
    scheduler.load(_inventory(1, 1, (ICMP,)), settings)
    task = await _start(scheduler)
    await clock.advance(budget + 20.0)
    assert results == [ProbeResult(True, pytest.approx(budget + 20.0))]
    assert not scheduler.stats.deadlines
    await _finish(scheduler, clock, task)


async def test_a_sweep_does_not_wait_behind_single_probes_of_its_tick() -> None:
    """With max_probes taken by slow TCP runs, the ICMP sweeps due meanwhile still start on time."""
    clock = FakeClock(T0)
    tcp = Recorder(clock, delay=20.0)  # each TCP run holds its max_probes slot for 20 s
    sweeps: list[tuple[float, int]] = []

    async def sweep(devices: Sequence[tuple[Device, ProbeSpec]], ctx: ProbeContext) -> list[ProbeResult]:
        sweeps.append((clock.now(), len(devices)))
        return [ProbeResult(True, 0.0)] * len(devices)

    settings = _settings(interval=5.0, max_probes=2, timeout=30.0)
    scheduler = _scheduler(clock, settings, probers={"tcp": tcp.probe}, batch_probers={"icmp": sweep})
    scheduler.load(_inventory(2, 10, (ICMP, TCP)), settings)  # 20 devices, an ICMP and a TCP job each
    task = await _start(scheduler)
    await clock.advance(5.0)
    swept = sum(count for _, count in sweeps)
    assert swept == 20, sweeps  # every device swept within its first interval
    assert max(started for started, _ in sweeps) < T0 + 5.0
    assert sum(len(starts) for starts in tcp.starts.values()) == 2  # while TCP was stuck at max_probes
    await _finish(scheduler, clock, task)
