"""When each school's link is measured: SNMP polls of routers and speed tests.

Two loops beside the reachability scheduler, sharing its phase spreading:

* SNMP: every router with `snmp:` is polled once per `probes.snmp.interval`, phases
  spread over the interval, at most `max_concurrent` polls at once, never two polls of
  one router at once (the next poll is planned when the last one ends).
* Speed tests: every school with `speedtest:` once per `speedtest.interval`, spread
  over the interval; not inside quiet windows; a test starts only when the NOC uplink
  budget has room for the school's contracted total; a low result is re-tested after
  `confirm_after` before the school is declared below contract.

Results go into `LinkState` (pure); this module only decides when and does the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from telemetryd.config.settings import Settings
from telemetryd.link.budget import Budget, quiet_wait
from telemetryd.link.compliance import ComplianceChange, LinkState, SchoolLink
from telemetryd.model import Direction, Inventory, School, SnmpSample, SpeedResult
from telemetryd.probes import snmp, speedtest
from telemetryd.reachability.scheduler import spread_phases
from telemetryd.secrets import SecretMissing, Secrets

log = structlog.get_logger("telemetryd.links")

SpeedTestFn = Callable[[School, str, Settings], Awaitable[tuple[SpeedResult, SpeedResult]]]
SnmpPollFn = Callable[..., Awaitable[SnmpSample]]
SpeedTestSink = Callable[[School, tuple[SpeedResult, SpeedResult], bool], None]
"""Called after every test with (school, (download, upload), was it a confirmation re-test)."""
PollSink = Callable[[SchoolLink], None]
"""Called after every SNMP poll with the school's link state, rates updated."""


async def run_speedtest(school: School, token: str, settings: Settings) -> tuple[SpeedResult, SpeedResult]:
    """The real test: download then upload against the school's responder."""
    assert school.speedtest is not None
    options = settings.speedtest
    return await speedtest.run_test(
        school.speedtest.url,
        token,
        streams=options.streams,
        max_bytes=options.max_bytes,
        max_seconds=options.max_seconds,
    )


def _failed(reason: str, detail: str, streams: int) -> tuple[SpeedResult, SpeedResult]:
    return tuple(  # type: ignore[return-value]
        SpeedResult(False, d, 0.0, 0, 0.0, streams, reason=reason, detail=detail) for d in Direction
    )


@dataclass(slots=True)
class LinkStats:
    """The link monitor's own health, for /metrics."""

    snmp_polls: int = 0
    snmp_failures: int = 0
    speedtests_deferred_quiet: int = 0
    speedtests_waiting_budget: int = 0


class LinkMonitor:
    """Runs SNMP polls and speed tests for the current inventory until cancelled."""

    def __init__(
        self,
        state: LinkState,
        *,
        speedtest_fn: SpeedTestFn = run_speedtest,
        snmp_poll: SnmpPollFn = snmp.poll_router,
        on_change: Callable[[ComplianceChange], None] | None = None,
        on_speedtest: SpeedTestSink | None = None,
        on_poll: PollSink | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.state = state
        self.speedtest_fn = speedtest_fn
        self.snmp_poll = snmp_poll
        self.on_change = on_change
        self.on_speedtest = on_speedtest
        self.on_poll = on_poll
        self.clock = clock
        self.wall = wall
        self.stats = LinkStats()
        self.budget = Budget(1000.0)
        self._settings: Settings | None = None
        self._inventory = Inventory.build([])
        self._secrets = Secrets(None)
        self._sessions = snmp.SnmpSessions()
        self._wake = asyncio.Event()
        self._budget_freed = asyncio.Event()
        self._wake_planner = asyncio.Event()
        self._generation = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.running_tests: set[str] = set()

    def configure(self, settings: Settings, inventory: Inventory) -> None:
        """Take a (new) configuration; takes effect at once, running work finishes."""
        self._settings = settings
        self._inventory = inventory
        self._secrets = Secrets(settings.credentials_directory)
        self.budget.capacity_mbps = settings.speedtest.central_capacity_mbps
        self.state.below_ratio = settings.speedtest.below_contract_ratio
        self.state.confirm_after = settings.speedtest.confirm_after
        self.state.snmp_interval = settings.probes.snmp.interval
        self.state.sync(inventory.schools)
        # Routers that stay keep their socket and ifName table; a changed community opens a fresh session by itself.
        kept = {(r.host, r.snmp.port) for r in (school.router for school in inventory.schools) if r and r.snmp}
        for host, port in self._sessions.routers() - kept:
            self._sessions.forget(host, port)
        self._generation += 1
        self._wake.set()

    async def run(self) -> None:
        """Plan and run until cancelled; re-plans on every `configure`."""
        planner: asyncio.Task[None] | None = None
        try:
            while True:
                self._wake.clear()
                planner = asyncio.create_task(self._plan(self._generation), name="link-planner")
                wake = asyncio.create_task(self._wake.wait())
                try:
                    await asyncio.wait({planner, wake}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    wake.cancel()
                    planner.cancel()
                    await asyncio.gather(planner, wake, return_exceptions=True)
                if not planner.cancelled() and planner.exception() is not None:
                    log.error("link_planner_crashed", error=repr(planner.exception()))
                    await asyncio.sleep(1.0)  # do not spin on a bug
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._sessions.close()

    async def _plan(self, generation: int) -> None:
        settings = self._settings
        if settings is None:
            await asyncio.Event().wait()
            return
        now = self.clock()
        routers = {s.id: s for s in self._inventory.schools if s.router is not None}
        testable = {s.id: s for s in self._inventory.schools if s.speedtest is not None}
        heap: list[tuple[float, int, str, str]] = []
        order = itertools.count()
        snmp_interval = settings.probes.snmp.interval
        test_interval = settings.speedtest.interval
        for school_id, due in spread_phases(list(routers), snmp_interval, now).items():
            heapq.heappush(heap, (due, next(order), "snmp", school_id))
        for school_id, due in spread_phases(list(testable), test_interval, now).items():
            heapq.heappush(heap, (due, next(order), "speedtest", school_id))
        snmp_limit = asyncio.Semaphore(settings.probes.snmp.max_concurrent)

        def again(job: str, school_id: str, interval: float) -> Callable[[], None]:
            """Plan the next run one interval after this one started (later if it overran)."""
            started = self.clock()

            def plan_next() -> None:
                if generation == self._generation:
                    heapq.heappush(heap, (max(self.clock(), started + interval), next(order), job, school_id))
                    self._wake_planner.set()

            return plan_next

        while True:
            for school_id in self.state.due_confirmations(self.clock()):
                link = self.state.schools[school_id]
                link.confirmation_due = None  # once: the re-test's result decides
                if school_id in testable and school_id not in self.running_tests:
                    heapq.heappush(heap, (self.clock(), next(order), "confirm", school_id))
            if not heap:
                await self._sleep_until(self.clock() + 60)
                continue
            due, _, job, school_id = heap[0]
            if due > self.clock():
                await self._sleep_until(min(due, self.clock() + 5))
                continue
            heapq.heappop(heap)
            if job == "snmp":
                self._spawn(self._poll(routers[school_id], snmp_limit, again(job, school_id, snmp_interval)))
            else:
                self._spawn(
                    self._speedtest(
                        testable[school_id],
                        confirmation=job == "confirm",
                        plan_next=again("speedtest", school_id, test_interval) if job != "confirm" else None,
                    )
                )

    async def _sleep_until(self, when: float) -> None:
        self._wake_planner.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake_planner.wait(), timeout=max(0.0, when - self.clock()))

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _poll(self, school: School, limit: asyncio.Semaphore, plan_next: Callable[[], None]) -> None:
        settings = self._settings
        router = school.router
        assert settings is not None and router is not None and router.snmp is not None
        try:
            async with limit:
                try:
                    community = self._secrets.get(router.credentials or "")
                except SecretMissing as exc:
                    sample = SnmpSample(False, self.clock(), 0.0, reason="credentials", detail=str(exc))
                else:
                    sample = await self.snmp_poll(
                        router.host,
                        community,
                        dict(router.snmp.interfaces),
                        port=router.snmp.port,
                        timeout=settings.probes.snmp.timeout,
                        retries=settings.probes.snmp.retries,
                        session_cache=self._sessions,
                    )
            self.stats.snmp_polls += 1
            link = self.state.schools.get(school.id)
            was_ok = link.snmp_ok if link else None
            if not sample.ok:
                self.stats.snmp_failures += 1
                if was_ok is not False:
                    log.warning(
                        "snmp_poll_failed",
                        school=school.id,
                        device=router.id,
                        reason=sample.reason,
                        detail=sample.detail,
                    )
            elif was_ok is False:
                log.info("snmp_poll_recovered", school=school.id, device=router.id)
            self.state.record_snmp(school.id, sample)
            link = self.state.schools.get(school.id)
            if self.on_poll is not None and link is not None:
                self.on_poll(link)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("snmp_poll_crashed", school=school.id, device=router.id)
        finally:
            plan_next()

    async def _speedtest(self, school: School, *, confirmation: bool, plan_next: Callable[[], None] | None) -> None:
        settings = self._settings
        assert settings is not None and school.speedtest is not None
        if school.id in self.running_tests:
            return  # one test per school at a time; the running one will plan the next
        self.running_tests.add(school.id)
        try:
            wait = quiet_wait(self.wall(), settings.speedtest.quiet_windows, settings.speedtest.utc_offset_hours)
            if wait > 0:
                self.stats.speedtests_deferred_quiet += 1
                await asyncio.sleep(wait)
            mbps = school.contract.total_mbps
            waited = False
            while not self.budget.fits(mbps):
                if not waited:
                    self.stats.speedtests_waiting_budget += 1
                    waited = True
                self._budget_freed.clear()
                await self._budget_freed.wait()
            self.budget.take(mbps)
            try:
                try:
                    token = self._secrets.get(school.speedtest.credentials)
                except SecretMissing as exc:
                    download, upload = _failed("credentials", str(exc), settings.speedtest.streams)
                else:
                    download, upload = await self.speedtest_fn(school, token, settings)
            finally:
                self.budget.give_back(mbps)
                self._budget_freed.set()
            log.info(
                "speedtest_done",
                school=school.id,
                confirmation=confirmation,
                download_mbps=round(download.mbps, 2),
                upload_mbps=round(upload.mbps, 2),
                contract_mbps=mbps,
                reason=download.reason or upload.reason,
                detail=download.detail or upload.detail,
            )
            change = self.state.record_speedtest(school.id, download, upload, now=self.clock(), wall=self.wall())
            if self.on_speedtest is not None:
                self.on_speedtest(school, (download, upload), confirmation)
            if change is not None:
                _log_compliance(change)
                if self.on_change is not None:
                    self.on_change(change)
                self._wake_planner.set()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("speedtest_crashed", school=school.id)
        finally:
            self.running_tests.discard(school.id)
            if plan_next is not None:
                plan_next()


def _log_compliance(change: ComplianceChange) -> None:
    fields = {
        "school": change.school_id,
        "download_mbps": round(change.download_mbps or 0.0, 2),
        "upload_mbps": round(change.upload_mbps or 0.0, 2),
        "contract_mbps": change.contract_mbps,
        "was": change.old.value,
    }
    if change.new.value == "below_contract":
        log.warning("school_below_contract", **fields)
    elif change.new.value == "suspect":
        log.info("school_speed_low_retesting", **fields)
    else:
        log.info("school_speed_" + change.new.value, **fields)
