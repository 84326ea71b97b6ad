"""When each probe runs. No protocol knowledge: it calls probers from the registry.

Every (device, probe) is a job with an interval. Phases are spread evenly over the
interval (a city of 10,000 devices must not all be probed at second 0), a job is
rescheduled only when its run has finished (so two runs of one job never overlap).
Probers that offer a batch path (ICMP, TCP) get all their jobs due in one tick as one
call: one sweep instead of thousands of tasks. The others (session probes: RTSP, ISAPI,
AX PRO) are bounded globally (`max_probes`, beyond which they queue without holding up
dispatch) and per school.

Every run has a deadline (`deadline_for`): a prober that hangs is cancelled and its
job gets a `deadline` result instead of being parked forever. Time and timers come
from a `Clock`, so tests can drive the scheduler on a fake one.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import math
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol

import structlog

from telemetryd.config.settings import Settings
from telemetryd.histogram import PROBE_BUCKETS, Histogram
from telemetryd.model import Device, DeviceKind, Inventory, ProbeResult, ProbeSpec
from telemetryd.probes import BATCH_PROBERS, BUDGETS, PROBERS, BatchProber, Budget, ProbeContext, Prober
from telemetryd.slices import Steps, finish

log = structlog.get_logger("telemetryd.scheduler")

TICK = 0.005
"""Jobs due within this much of now are dispatched together."""

IDLE_WAIT = 3600.0
"""How long the run loop sleeps with no jobs at all (a `load` wakes it sooner)."""

_JOBS_PER_STEP = 1000
"""Devices (or phases) a reload's planning handles between two yields: about a millisecond."""

DEADLINE = "deadline"
"""The `reason` of a run the scheduler gave up on."""

RECANCEL_EVERY = 1.0
"""A prober that swallowed the deadline's cancellation is cancelled again this often."""

DEADLINE_SLACK = 5.0
"""At least this much past a run's own worst case before the deadline: it is for hung probers, not slow loops."""

STALL_GRACE = 0.5
"""A deadline timer that fires late (the event loop was stalled: a big render, a reload) waits as long
again as it was late, at least this: the prober's own timers fired in the same stall, its result is a
loop turn or a few paced sends away, and it is the more precise answer."""


ResultSink = Callable[[Device, ProbeSpec, ProbeResult], None]


class Timer(Protocol):
    """A pending callback; `asyncio.TimerHandle` is one."""

    def cancel(self) -> None:
        """Drop the callback if it has not run yet."""


class Clock(Protocol):
    """Where the scheduler reads the time and sets its timers (run-loop wake-ups, deadlines, drain).

    Seconds on a monotonic scale. Production uses `MonotonicClock`; tests pass a fake
    one and move time forward themselves.
    """

    def now(self) -> float:
        """The current time."""
        ...

    def call_at(self, when: float, callback: Callable[..., object], *args: object) -> Timer:
        """Call `callback(*args)` on the running event loop once `now()` reaches `when`."""
        ...


class MonotonicClock:
    """The real clock: `time.monotonic` and the running event loop's timers."""

    __slots__ = ()

    def now(self) -> float:
        """`time.monotonic()`."""
        return time.monotonic()

    def call_at(self, when: float, callback: Callable[..., object], *args: object) -> Timer:
        """One `loop.call_later`; the delay is taken from monotonic time, whatever the loop's own base."""
        return asyncio.get_running_loop().call_later(when - time.monotonic(), callback, *args)


def deadline_for(
    ctx: ProbeContext,
    protocol: str,
    devices: int = 1,
    budgets: dict[str, Budget] = BUDGETS,
    *,
    slack: float = DEADLINE_SLACK,
) -> float:
    """Seconds one run of `protocol` (a sweep of `devices` for a batch prober) may take before it is cancelled.

    The prober's own worst case — its module's entry in `probes.BUDGETS` (ICMP: the whole paced
    sweep, behind what other sweeps queued), else its `timeout` — plus the budget again, at least `slack`.
    """
    budget_of = budgets.get(protocol)
    budget = budget_of(ctx, devices) if budget_of is not None else ctx.settings.timeout_for(protocol)
    # The deadline is for a prober that hangs, not for a busy loop (a prober's own timers start
    # late then), so the slack is generous. A working prober thus ends with its own, more precise
    # reason (`timeout`, `unreachable`); only a hung one gets here.
    return budget + max(slack, budget)


class _Overstayed(Exception):
    """Raised by `_Deadline` on leaving a block that outlived its deadline."""


class _Deadline:
    """`asyncio.timeout_at` on the scheduler's clock: one timer, which cancels the task when it fires.

    Leaving the block after it fired raises `_Overstayed` in place of the CancelledError it
    caused (or of a result that came too late), unless someone else has also cancelled the
    task: their CancelledError then propagates. Like asyncio.timeout it undoes its own
    cancel requests (`Task.uncancel`). A prober that swallows CancelledError is cancelled
    again every `RECANCEL_EVERY`, so it cannot hold its job and slots forever.
    """

    __slots__ = ("_baseline", "_cancels", "_clock", "_graced", "_task", "_timer", "_when")

    def __init__(self, clock: Clock, when: float) -> None:
        task = asyncio.current_task()
        assert task is not None, "a deadline needs a task"
        self._clock = clock
        self._task = task
        self._baseline = task.cancelling()
        self._cancels = 0
        self._when = when
        self._graced = False
        self._timer = clock.call_at(when, self._expire)

    def _expire(self) -> None:
        if self._task.done():
            return
        now = self._clock.now()
        late = now - self._when
        if not self._cancels and not self._graced and late > STALL_GRACE:
            self._graced = True  # the loop was stalled: count the stall out of the prober's time
            self._timer = self._clock.call_at(now + late, self._expire)
            return
        self._cancels += 1
        self._task.cancel()
        self._timer = self._clock.call_at(self._clock.now() + RECANCEL_EVERY, self._expire)

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._timer.cancel()
        if not self._cancels:
            return
        left = self._task.cancelling()
        for _ in range(self._cancels):
            left = self._task.uncancel()
        if left > self._baseline:
            return  # cancelled from outside as well (stop, drain): that cancellation wins
        if exc_type is None or issubclass(exc_type, (Exception, asyncio.CancelledError)):
            raise _Overstayed from exc


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
    return finish(spreading_phases(keys, interval, start))


def spreading_phases(keys: Sequence[str], interval: float, start: float) -> Steps[dict[str, float]]:
    """`spread_phases` in steps: the hashing yields now and then, the sort itself is one C call."""
    fractions: dict[str, float] = {}
    for count, key in enumerate(keys, 1):
        fractions[key] = stable_fraction(key)
        if count % _JOBS_PER_STEP == 0:
            yield
    ordered = sorted(fractions, key=fractions.__getitem__)
    step = interval / max(len(ordered), 1)
    return {key: start + i * step for i, key in enumerate(ordered)}


@dataclass(slots=True)
class SchedulerStats:
    """The scheduler's own health, exported as telemetryd_* metrics."""

    runs: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(protocol, result) → runs; result is ok or the failure reason."""
    skipped: Counter[str] = field(default_factory=Counter)
    """protocol → slots skipped because the previous run had not finished."""
    deadlines: Counter[str] = field(default_factory=Counter)
    """protocol → runs cancelled at their deadline (also in `runs` as (protocol, "deadline"))."""
    lag: Histogram = field(default_factory=Histogram)
    last_lag: float = 0.0
    errors: int = 0
    durations: dict[str, Histogram] = field(default_factory=dict)
    """protocol → seconds per run, failed runs too (one histogram per protocol, not a series per device)."""
    round_trips: dict[str, Histogram] = field(default_factory=dict)
    """protocol → round-trip time of good runs (mean ICMP echo RTT, TCP connect time)."""

    def observe(self, protocol: str, result: ProbeResult) -> None:
        """Count one run by result, with its duration and, when it answered, its round trip."""
        self.runs[(protocol, "ok" if result.ok else result.reason or "error")] += 1
        durations = self.durations.get(protocol)
        if durations is None:
            durations = self.durations[protocol] = Histogram(PROBE_BUCKETS)
            self.round_trips[protocol] = Histogram(PROBE_BUCKETS)
        durations.observe(result.duration)
        if result.ok and result.rtt is not None:
            self.round_trips[protocol].observe(result.rtt)


@dataclass(frozen=True, slots=True)
class SchedulePlan:
    """Jobs built off the loop for a new inventory; `Scheduler.commit` puts them in place."""

    inventory: Inventory
    settings: Settings
    jobs: dict[tuple[str, str], Job]
    added: tuple[Job, ...]
    """New jobs, and replacements of jobs whose device or interval changed; due times from 0 until committed."""
    retired: tuple[Job, ...]
    """Jobs of the current schedule that the plan drops or replaces."""
    replaces: dict[tuple[str, str], Job]
    """The schedule this was planned against: committing over another one plans again."""


class Scheduler:
    """Runs every job on its interval until stopped."""

    def __init__(
        self,
        ctx: ProbeContext,
        on_result: ResultSink,
        *,
        clock: Clock | None = None,
        probers: dict[str, Prober] | None = None,
        batch_probers: dict[str, BatchProber] | None = None,
        budgets: dict[str, Budget] | None = None,
    ) -> None:
        self.ctx = ctx
        self.probers = PROBERS if probers is None else probers
        self.batch_probers = BATCH_PROBERS if batch_probers is None else batch_probers
        self.budgets = BUDGETS if budgets is None else budgets
        self.on_result = on_result
        self.clock: Clock = MonotonicClock() if clock is None else clock
        self.stats = SchedulerStats()
        self._jobs: dict[tuple[str, str], Job] = {}
        self._heap: list[tuple[float, int, Job]] = []
        self._seq = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake: asyncio.Future[None] | None = None
        self._stopping = False
        self._max_singles = 1
        """max_probes: single-device runs in flight at once (sweeps are paced by their own prober)."""
        self._singles_running = 0
        self._queued: deque[Job] = deque()
        """Single-device jobs due while max_probes were in flight, oldest first."""
        self._per_school: dict[str, asyncio.Semaphore] = {}
        self._per_school_limit = 1
        self._limits: dict[str, float] = {}
        """protocol → deadline of one single-device run under the current settings."""
        self._overdue: set[tuple[str, str]] = set()
        """Jobs whose last run hit its deadline and was logged; cleared when one ends in time."""

    @property
    def job_count(self) -> int:
        """Jobs currently scheduled."""
        return len(self._jobs)

    @property
    def in_flight(self) -> int:
        """Probe tasks running now."""
        return len(self._tasks)

    def load(self, inventory: Inventory, settings: Settings) -> None:
        """Take a new inventory and settings in one step: `commit(plan(inventory, settings))`."""
        self.commit(self.plan(inventory, settings))

    def plan(self, inventory: Inventory, settings: Settings) -> SchedulePlan:
        """`planning` run to its end."""
        return finish(self.planning(inventory, settings))

    def planning(self, inventory: Inventory, settings: Settings) -> Steps[SchedulePlan]:
        """The jobs for a new inventory, built in steps against the current ones; `commit` puts them in place.

        Jobs that still exist (same device, probe and interval) are the same objects and keep
        their phase, so a reload does not bunch them up; new jobs are spread over their
        interval from the moment of the commit. Nothing running changes until then.
        """
        current = self._jobs
        jobs: dict[tuple[str, str], Job] = {}
        fresh: dict[float, list[tuple[str, Device, ProbeSpec]]] = {}
        intervals: dict[tuple[str, DeviceKind], float] = {}  # a handful of (protocol, kind) for 200,000 jobs
        for count, device in enumerate(inventory.devices_by_id.values(), 1):
            if count % _JOBS_PER_STEP == 0:
                yield
            for spec in device.probes:
                key = (device.id, spec.name)
                interval = intervals.get(kind := (spec.protocol, device.kind))
                if interval is None:
                    interval = intervals[kind] = settings.interval_for(*kind)
                old = current.get(key) if current else None
                if old is not None and old.interval == interval and old.device == device:
                    old.device = device  # equal; the new inventory's object, so the old one can go
                    jobs[key] = old
                else:
                    fresh.setdefault(interval, []).append((f"{device.id}\0{spec.name}", device, spec))
        added: list[Job] = []
        for interval, entries in fresh.items():
            # Phases from 0: `commit` adds its own time, however long the planning took.
            due_of = yield from spreading_phases([joined for joined, _, _ in entries], interval, 0.0)
            for joined, device, spec in entries:
                job = jobs[(device.id, spec.name)] = Job(device, spec, interval, due_of[joined])
                added.append(job)
        retired = []
        for count, (key, old) in enumerate(current.items(), 1):
            if jobs.get(key) is not old:
                retired.append(old)
            if count % _JOBS_PER_STEP == 0:
                yield
        return SchedulePlan(inventory, settings, jobs, tuple(added), tuple(retired), current)

    def commit(self, plan: SchedulePlan) -> None:
        """Put planned jobs in place, in time proportional to what changed.

        Retired jobs stay in the heap and are dropped when they come due; a run in flight of
        a replaced job holds its successor back until it ends (its result is dropped by State).
        """
        if plan.replaces is not self._jobs:
            plan = self.plan(plan.inventory, plan.settings)
        settings = plan.settings
        self.ctx.settings = settings
        self._max_singles = settings.concurrency.max_probes
        self._per_school_limit = settings.concurrency.per_school
        self._per_school = {}
        self._limits = {}
        for old in plan.retired:
            old.retired = True
        self._jobs = plan.jobs
        if self._overdue:
            self._overdue = {key for key in self._overdue if key in plan.jobs}
        now = self.clock.now()
        for job in plan.added:
            job.due += now
            predecessor = plan.replaces.get(job.key)
            if predecessor is not None and predecessor.running:
                job.running = True  # pushed when the predecessor's run ends
        if len(plan.added) > len(self._heap) // 4:
            self._heap = [entry for entry in self._heap if not entry[2].retired]
            self._heap.extend((job.due, self._seq + i, job) for i, job in enumerate(plan.added) if not job.running)
            self._seq += len(plan.added)
            heapq.heapify(self._heap)
        else:
            for job in plan.added:
                if not job.running:
                    self._seq += 1
                    heapq.heappush(self._heap, (job.due, self._seq, job))
        self._start_queued()
        self._kick()

    async def run(self) -> None:
        """Dispatch due jobs until `stop()`; cancellation propagates.

        Between ticks it holds one timer, at the next due time; `load` and `stop` wake it early.
        """
        loop = asyncio.get_running_loop()
        clock = self.clock
        while not self._stopping:
            now = clock.now()
            if not self._heap or self._heap[0][0] > now + TICK:
                wake = self._wake = loop.create_future()
                timer = clock.call_at(self._heap[0][0] if self._heap else now + IDLE_WAIT, _wake, wake)
                try:
                    await wake
                finally:
                    timer.cancel()
                    self._wake = None
                continue
            self._dispatch(self._pop_due(now + TICK), now)
            await asyncio.sleep(0)  # a tick's runs get the loop before the next tick is looked at

    def stop(self) -> None:
        """Stop dispatching; runs in flight are left to `drain`, queued ones never start."""
        self._stopping = True
        for job in self._queued:
            job.running = False
        self._queued.clear()
        self._kick()

    async def drain(self, timeout: float) -> int:
        """Wait up to `timeout` for runs in flight, then cancel the rest; returns how many were cancelled."""
        if not self._tasks:
            return 0
        tasks = set(self._tasks)
        await self._wait_all(tasks, timeout)
        pending = [task for task in tasks if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            await self._wait_all(pending, 1.0)
        return len(pending)

    async def _wait_all(self, tasks: Sequence[asyncio.Task[None]] | set[asyncio.Task[None]], timeout: float) -> None:
        """Until every task is done or `timeout` has passed on the scheduler's clock."""
        done = asyncio.get_running_loop().create_future()
        left = len(tasks)

        def one_done(_task: asyncio.Task[None]) -> None:
            nonlocal left
            left -= 1
            if not left:
                _wake(done)

        for task in tasks:
            task.add_done_callback(one_done)
        timer = self.clock.call_at(self.clock.now() + timeout, _wake, done)
        try:
            await done
        finally:
            timer.cancel()
            for task in tasks:
                task.remove_done_callback(one_done)

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

    def _dispatch(self, jobs: list[Job], now: float) -> None:
        batches: dict[str, list[Job]] = {}
        for job in jobs:
            job.running = True
            if job.spec.protocol in self.batch_probers:
                self._observe_lag(now - job.due)
                batches.setdefault(job.spec.protocol, []).append(job)
            else:
                self._queued.append(job)
        # Dispatch never waits: single jobs beyond max_probes queue (and start as slots free), so
        # a sweep due in the same tick is not held behind them. It was: with the dispatcher
        # waiting for a slot, ICMP ran 0 times a second at 100,000 devices.
        for protocol, batch in batches.items():
            self._spawn(self._run_batch(protocol, batch))
        self._start_queued()

    def _observe_lag(self, lag: float) -> None:
        lag = max(0.0, lag)
        self.stats.lag.observe(lag)
        self.stats.last_lag = lag

    def _start_queued(self) -> None:
        """Start queued single jobs while max_probes allows; their lag counts the wait in the queue."""
        queued = self._queued
        if not queued or self._stopping:
            return
        now = self.clock.now()
        while queued and self._singles_running < self._max_singles:
            job = queued.popleft()
            if job.retired:
                self._reschedule(job)  # hands over to its successor, as a finished run would
                continue
            self._observe_lag(now - job.due)
            self._singles_running += 1
            self._spawn(self._run_one(job))

    def _spawn(self, coro: Coroutine[None, None, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_one(self, job: Job) -> None:
        school_limit = self._per_school.get(job.device.school_id)
        if school_limit is None:
            school_limit = self._per_school[job.device.school_id] = asyncio.Semaphore(self._per_school_limit)
        try:
            async with school_limit:
                result = await self._guarded(self.probers[job.spec.protocol], job)
            self._deliver(job, result)
        finally:
            self._singles_running -= 1
            self._reschedule(job)
            self._start_queued()

    async def _guarded(self, prober: Callable[..., Awaitable[ProbeResult]], job: Job) -> ProbeResult:
        """Run one prober within its deadline; a bug in it becomes an `error` result, never a dead scheduler."""
        protocol = job.spec.protocol
        limit = self._limits.get(protocol)
        if limit is None:
            limit = self._limits[protocol] = deadline_for(self.ctx, protocol, budgets=self.budgets)
        started = self.clock.now()
        try:
            with _Deadline(self.clock, started + limit):
                return await prober(job.device, job.spec, self.ctx)
        except _Overstayed:
            return self._overstayed(job, self.clock.now() - started, limit)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the task boundary: log with the device bound, keep going
            self.stats.errors += 1
            log.exception("probe_crashed", school=job.device.school_id, device=job.device.id, probe=job.spec.name)
            return ProbeResult(False, self.clock.now() - started, "error", f"internal error: {type(exc).__name__}")

    async def _run_batch(self, protocol: str, jobs: list[Job]) -> None:
        """One sweep of many devices under one deadline, sized for the whole sweep."""
        try:
            # A sweep shares the pacer and the loop with every other sweep: while a render holds the
            # GIL its sends slow many-fold (8.5 s for a 2.75 s sweep in the demo under scrapes). It
            # cannot hang while the loop runs (its own timer ends it after the last send), so its
            # deadline only has to catch a bug: one interval more is soon enough.
            interval = max(job.interval for job in jobs)
            limit = deadline_for(self.ctx, protocol, len(jobs), self.budgets, slack=max(DEADLINE_SLACK, 4 * interval))
            started = self.clock.now()
            results: Sequence[ProbeResult]
            try:
                with _Deadline(self.clock, started + limit):
                    results = await self.batch_probers[protocol]([(j.device, j.spec) for j in jobs], self.ctx)
            except _Overstayed:
                duration = self.clock.now() - started
                results = [self._overstayed(job, duration, limit) for job in jobs]
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

    def _overstayed(self, job: Job, duration: float, limit: float) -> ProbeResult:
        """The result of a run cancelled at its deadline; logged once until the job ends in time again."""
        self.stats.deadlines[job.spec.protocol] += 1
        key = job.key
        if key not in self._overdue:
            self._overdue.add(key)
            log.warning(
                "probe_deadline",
                school=job.device.school_id,
                device=job.device.id,
                probe=job.spec.name,
                seconds=round(limit, 3),
            )
        return ProbeResult(False, duration, DEADLINE, f"no result within {round(limit, 2):g} s")

    def _deliver(self, job: Job, result: ProbeResult) -> None:
        self.stats.observe(job.spec.protocol, result)
        if self._overdue and result.reason != DEADLINE:
            self._overdue.discard(job.key)  # back in time: its next deadline is news again
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
        now = self.clock.now()
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


__all__ = [
    "DEADLINE",
    "DEADLINE_SLACK",
    "STALL_GRACE",
    "Clock",
    "Job",
    "MonotonicClock",
    "Scheduler",
    "SchedulerStats",
    "Timer",
    "deadline_for",
    "jobs_per_second",
    "spread_phases",
    "stable_fraction",
]
