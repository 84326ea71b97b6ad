"""When each probe runs. No protocol knowledge: it calls probers from the registry.

Every (device, probe) is a job with an interval. Phases are spread evenly over the
interval (a city of 10,000 devices must not all be probed at second 0), a job is
rescheduled only when its run has finished (so two runs of one job never overlap),
and concurrency is bounded globally and per school. Probers that offer a batch path
(ICMP) get all their jobs due in one tick as one call: one paced sweep instead of
thousands of tasks.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field

import structlog

from telemetryd.config.settings import Settings
from telemetryd.histogram import Histogram
from telemetryd.model import Device, Inventory, ProbeResult, ProbeSpec
from telemetryd.probes import BATCH_PROBERS, PROBERS, BatchProber, ProbeContext, Prober

log = structlog.get_logger("telemetryd.scheduler")

TICK = 0.005
"""Jobs due within this much of now are dispatched together."""


ResultSink = Callable[[Device, ProbeSpec, ProbeResult], None]


@dataclass(slots=True, eq=False)
class Job:
    """One (device, probe) on its interval."""

    device: Device
    spec: ProbeSpec
    interval: float
    due: float
    running: bool = False
    retired: bool = False

    @property
    def key(self) -> tuple[str, str]:
        """(device id, probe name): unique per job."""
        return (self.device.id, self.spec.name)


def stable_fraction(key: str) -> float:
    """A number in [0, 1) fixed by `key`, the same on every run and machine."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") / 2.0**64


def spread_phases(keys: Sequence[str], interval: float, start: float) -> dict[str, float]:
    """First due time of each key, evenly spaced over one interval.

    Keys are ordered by a stable hash first, so devices of one school (listed together)
    do not all land in the same slice of the interval.
    """
    ordered = sorted(keys, key=stable_fraction)
    step = interval / max(len(ordered), 1)
    return {key: start + i * step for i, key in enumerate(ordered)}


@dataclass(slots=True)
class SchedulerStats:
    """The scheduler's own health, exported as telemetryd_* metrics."""

    runs: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(protocol, result) → runs; result is ok or the failure reason."""
    skipped: Counter[str] = field(default_factory=Counter)
    """protocol → slots skipped because the previous run had not finished."""
    lag: Histogram = field(default_factory=Histogram)
    last_lag: float = 0.0
    errors: int = 0


class Scheduler:
    """Runs every job on its interval until stopped."""

    def __init__(
        self,
        ctx: ProbeContext,
        on_result: ResultSink,
        *,
        clock: Callable[[], float] = time.monotonic,
        probers: dict[str, Prober] | None = None,
        batch_probers: dict[str, BatchProber] | None = None,
    ) -> None:
        self.ctx = ctx
        self.probers = PROBERS if probers is None else probers
        self.batch_probers = BATCH_PROBERS if batch_probers is None else batch_probers
        self.on_result = on_result
        self.clock = clock
        self.stats = SchedulerStats()
        self._jobs: dict[tuple[str, str], Job] = {}
        self._heap: list[tuple[float, int, Job]] = []
        self._seq = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake: asyncio.Future[None] | None = None
        self._stopping = False
        self._global: asyncio.Semaphore | None = None
        self._per_school: dict[str, asyncio.Semaphore] = {}
        self._per_school_limit = 1

    @property
    def job_count(self) -> int:
        """Jobs currently scheduled."""
        return len(self._jobs)

    @property
    def in_flight(self) -> int:
        """Probe tasks running now."""
        return len(self._tasks)

    def load(self, inventory: Inventory, settings: Settings) -> None:
        """Take a new inventory and settings in one step.

        Jobs that still exist keep their phase (a reload does not bunch them up);
        new jobs are spread over their interval; removed jobs are retired and their
        in-flight run's result is dropped by State.
        """
        self.ctx.settings = settings
        self._global = asyncio.Semaphore(settings.concurrency.max_probes)
        self._per_school_limit = settings.concurrency.per_school
        self._per_school = {}
        now = self.clock()
        wanted: dict[tuple[str, str], tuple[Device, ProbeSpec, float]] = {}
        for school in inventory.schools:
            for device in school.devices:
                for spec in device.probes:
                    interval = settings.interval_for(spec.protocol, device.kind)
                    wanted[(device.id, spec.name)] = (device, spec, interval)

        new_by_interval: dict[float, list[str]] = {}
        for key, (_device, _spec, interval) in wanted.items():
            old = self._jobs.get(key)
            if old is None or old.interval != interval or old.device != wanted[key][0]:
                new_by_interval.setdefault(interval, []).append("\0".join(key))
        due_of: dict[str, float] = {}
        for interval, keys in new_by_interval.items():
            due_of.update(spread_phases(keys, interval, now))

        jobs: dict[tuple[str, str], Job] = {}
        for key, (device, spec, interval) in wanted.items():
            old = self._jobs.get(key)
            joined = "\0".join(key)
            if joined not in due_of and old is not None:
                old.device = device
                jobs[key] = old
            else:
                jobs[key] = Job(device, spec, interval, due_of[joined])
                if old is not None:
                    old.retired = True
                    jobs[key].running = old.running
        for key, old in self._jobs.items():
            if key not in jobs:
                old.retired = True
        self._jobs = jobs
        self._heap = [(job.due, i, job) for i, job in enumerate(jobs.values()) if not job.running]
        self._seq = len(self._heap)
        heapq.heapify(self._heap)
        self._kick()

    async def run(self) -> None:
        """Dispatch due jobs until `stop()`; cancellation propagates."""
        loop = asyncio.get_running_loop()
        while not self._stopping:
            now = self.clock()
            if not self._heap or self._heap[0][0] > now + TICK:
                delay = self._heap[0][0] - now if self._heap else 3600.0
                self._wake = loop.create_future()
                handle = loop.call_later(max(delay, 0.0), _wake, self._wake)
                try:
                    await self._wake
                finally:
                    handle.cancel()
                    self._wake = None
                continue
            due_jobs = self._pop_due(now + TICK)
            await self._dispatch(due_jobs, now)

    def stop(self) -> None:
        """Stop dispatching; runs in flight are left to `drain`."""
        self._stopping = True
        self._kick()

    async def drain(self, timeout: float) -> int:
        """Wait up to `timeout` for runs in flight, then cancel the rest; returns how many were cancelled."""
        if not self._tasks:
            return 0
        _done, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)
        return len(pending)

    def _kick(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _pop_due(self, horizon: float) -> list[Job]:
        due: list[Job] = []
        while self._heap and self._heap[0][0] <= horizon:
            _, _, job = heapq.heappop(self._heap)
            if not job.retired:
                due.append(job)
        return due

    async def _dispatch(self, jobs: list[Job], now: float) -> None:
        batches: dict[str, list[Job]] = {}
        for job in jobs:
            lag = max(0.0, now - job.due)
            self.stats.lag.observe(lag)
            self.stats.last_lag = lag
            job.running = True
            if job.spec.protocol in self.batch_probers:
                batches.setdefault(job.spec.protocol, []).append(job)
            else:
                assert self._global is not None
                await self._global.acquire()  # back-pressure: dispatch waits when max_probes are in flight
                self._spawn(self._run_one(job))
        for protocol, batch in batches.items():
            self._spawn(self._run_batch(protocol, batch))

    def _spawn(self, coro: Coroutine[None, None, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_one(self, job: Job) -> None:
        assert self._global is not None
        school_limit = self._per_school.get(job.device.school_id)
        if school_limit is None:
            school_limit = self._per_school[job.device.school_id] = asyncio.Semaphore(self._per_school_limit)
        try:
            async with school_limit:
                result = await self._guarded(self.probers[job.spec.protocol], job)
            self._deliver(job, result)
        finally:
            self._global.release()
            self._reschedule(job)

    async def _guarded(self, prober: Callable[..., Awaitable[ProbeResult]], job: Job) -> ProbeResult:
        """Run one prober; a bug in it becomes an `error` result, never a dead scheduler."""
        started = self.clock()
        try:
            return await prober(job.device, job.spec, self.ctx)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the task boundary: log with the device bound, keep going
            self.stats.errors += 1
            log.exception("probe_crashed", school=job.device.school_id, device=job.device.id, probe=job.spec.name)
            return ProbeResult(False, self.clock() - started, "error", f"internal error: {type(exc).__name__}")

    async def _run_batch(self, protocol: str, jobs: list[Job]) -> None:
        try:
            try:
                results: Sequence[ProbeResult] = await self.batch_probers[protocol]([j.device for j in jobs], self.ctx)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats.errors += 1
                log.exception("probe_batch_crashed", probe=protocol, size=len(jobs))
                results = [ProbeResult(False, 0.0, "error", f"internal error: {type(exc).__name__}")] * len(jobs)
            for job, result in zip(jobs, results, strict=True):
                self._deliver(job, result)
        finally:
            for job in jobs:
                self._reschedule(job)

    def _deliver(self, job: Job, result: ProbeResult) -> None:
        self.stats.runs[(job.spec.protocol, "ok" if result.ok else result.reason or "error")] += 1
        if job.retired:
            return
        try:
            self.on_result(job.device, job.spec, result)
        except Exception:
            self.stats.errors += 1
            log.exception("result_handler_crashed", school=job.device.school_id, device=job.device.id)

    def _reschedule(self, job: Job) -> None:
        """Next run one interval after the last due time; slots missed while it ran are skipped."""
        job.running = False
        if self._stopping:
            return
        if job.retired:
            # A reload replaced this job while it ran; its successor waited for this run to end.
            current = self._jobs.get(job.key)
            if current is not None and current is not job and current.running:
                current.running = False
                self._push(current)
            return
        now = self.clock()
        next_due = job.due + job.interval
        if next_due < now:
            missed = math.ceil((now - next_due) / job.interval)
            self.stats.skipped[job.spec.protocol] += missed
            next_due += missed * job.interval
        job.due = next_due
        self._push(job)

    def _push(self, job: Job) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (job.due, self._seq, job))
        if self._heap[0][2] is job:
            self._kick()


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def jobs_per_second(inventory: Inventory, settings: Settings) -> float:
    """Average probe rate an inventory asks for; used in start-up logs and capacity checks."""
    return sum(
        1.0 / settings.interval_for(spec.protocol, device.kind)
        for school in inventory.schools
        for device in school.devices
        for spec in device.probes
    )


__all__ = ["Job", "Scheduler", "SchedulerStats", "jobs_per_second", "spread_phases", "stable_fraction"]
