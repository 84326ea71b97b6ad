"""What the daemon keeps in PostgreSQL, and when: the glue between its events and the store.

* every state change (probe and device level) as it happens;
* every speed test direction, with the contract and floor it was judged against;
* SNMP rates as 5-minute link samples per segment and direction;
* its own monitoring gaps, from the heartbeat file, at start-up;
* every event an alarm panel reports to the DC-09 receiver (one row per event);
* the schools and devices tables, on start and on every reload.

Nothing here waits on the database: each call writes its rows to the on-disk journal
before it returns (so a kill -9 right after a state change loses nothing; the next start
replays it) and queues them to the writer, which keeps them there as the spool while
PostgreSQL is down; the inventory sync retries in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import structlog

from telemetryd.config.settings import Settings, Shard
from telemetryd.history.inventory_sync import sync_inventory
from telemetryd.history.liveness import Liveness, gap_since
from telemetryd.history.records import HistoryEvent, SpeedTestRecord, alarm_records
from telemetryd.history.sampler import LinkSampler
from telemetryd.history.spool import Spool
from telemetryd.history.writer import HistoryWriter
from telemetryd.link.compliance import SchoolLink, allocation
from telemetryd.model import Inventory, School, SpeedResult, StateChange

if TYPE_CHECKING:
    from telemetryd.alarm.receiver import Reception

log = structlog.get_logger("telemetryd.history")

SPOOL_FILE = "spool"


class History:
    """The daemon's history recorder; `start` inside the event loop, `close` at shutdown."""

    def __init__(self, settings: Settings, password: str | None, *, wall: Callable[[], float] = time.time) -> None:
        options = settings.history
        assert options.dsn is not None
        self.settings = settings
        self.directory = Path(options.spool_directory)
        self.shard = str(settings.shard)
        self.liveness = Liveness(self.directory, self.shard)
        self.sampler = LinkSampler(options.sample_interval)
        self._dsn = options.dsn
        self._password = password
        self._wall = wall
        self.writer: HistoryWriter | None = None
        self.spool_max_bytes = options.spool_max_bytes
        self.inventory_synced: float | None = None
        self._inventory: tuple[Inventory, Shard] | None = None
        self._inventory_changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, inventory: Inventory) -> None:
        """Lock the spool directory, record the gap since the last run, start writing.

        Raises SpoolDirectoryBusy or OSError when the directory cannot be used.
        """
        options = self.settings.history
        self.liveness.lock()
        started = self._wall()
        last = self.liveness.last_run()
        self.liveness.beat(started)
        spool = Spool(self.directory / SPOOL_FILE, max_bytes=options.spool_max_bytes)
        if spool.torn_bytes:
            log.warning("history_spool_torn_tail", bytes=spool.torn_bytes, note="a crash cut the last write short")
        self.writer = HistoryWriter(
            self._dsn,
            spool,
            password=self._password,
            queue_size=options.queue_size,
            batch_size=options.batch_size,
            batch_seconds=options.batch_seconds,
            retry_seconds=options.retry_seconds,
        )
        self.writer.start()
        gap = gap_since(last, started)
        if gap is not None:
            self.writer.submit(gap)
            log.info("monitoring_gap", seconds=round(gap.ended - gap.started, 1), reason=gap.reason, shard=gap.shard)
        self.inventory_changed(inventory, self.settings.shard)
        self._tasks = [
            asyncio.create_task(self._beat(), name="history-heartbeat"),
            asyncio.create_task(self._sync_inventory(), name="history-inventory"),
        ]

    # ------------------------------------------------------------------ events

    def _submit(self, events: Iterable[HistoryEvent]) -> None:
        # One journal write for the lot: once this returns, a kill -9 cannot lose them.
        if self.writer is not None:
            self.writer.submit_many(events)

    def record_changes(self, changes: Iterable[StateChange]) -> None:
        """State changes, as State.apply returns them."""
        self._submit(changes)

    def record_speedtest(self, school: School, results: Iterable[SpeedResult], *, confirmation: bool) -> None:
        """Both directions of one test, with the contract and floor that judged them."""
        at = self._wall()
        floor = self.settings.speedtest.below_contract_ratio
        total = school.contract.total_mbps
        self._submit(SpeedTestRecord(at, school.id, r, total, floor, confirmation) for r in results)

    def record_rates(self, link: SchoolLink) -> None:
        """The rates of one SNMP poll (roles without a fresh rate are skipped)."""
        at = self._wall()
        for role, view in link.segments.items():
            if view.rate is not None:
                self._submit(self.sampler.add(link.school_id, role, view.rate, allocation(link.contract, role), at))

    def record_reception(self, reception: Reception, device: tuple[str, str] | None) -> int:
        """The events of one frame the DC-09 receiver ACKed, as alarm_events rows; returns how many.

        `device` is the panel's (school id, device id) when its account is in the inventory
        (see `alarm.receiver.panel_devices`), else None: a stranger's alarms are kept too.
        Heartbeats and refused frames give nothing; a retransmission gives its first copy's
        rows again, which the idempotency key stores once.
        """
        records = alarm_records(reception, device)
        self._submit(records)
        return len(records)

    def inventory_changed(self, inventory: Inventory, shard: Shard) -> None:
        """Sync the schools and devices tables to this inventory (in the background, retried)."""
        self._inventory = (inventory, shard)
        self._inventory_changed.set()
        self._submit(self.sampler.forget({s.id for s in inventory.schools}))

    # ------------------------------------------------------------------ background

    async def _beat(self) -> None:
        interval = self.settings.history.heartbeat_interval
        while True:
            await asyncio.sleep(interval)
            now = self._wall()
            try:
                await asyncio.to_thread(self.liveness.beat, now)
            except OSError as exc:
                log.error("history_heartbeat_failed", path=str(self.liveness.path), error=exc.strerror)
            self._submit(self.sampler.due(now))

    async def _sync_inventory(self) -> None:
        retry = self.settings.history.retry_seconds
        while True:
            await self._inventory_changed.wait()
            self._inventory_changed.clear()
            assert self._inventory is not None
            inventory, shard = self._inventory
            try:
                conn = await asyncpg.connect(self._dsn, password=self._password, timeout=10)
                try:
                    removed = await sync_inventory(conn, inventory, shard)
                finally:
                    await conn.close()
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                # The writer reports the database being down; retry quietly until it is back.
                log.debug("history_inventory_sync_failed", error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(retry)
                if not self._inventory_changed.is_set():
                    self._inventory_changed.set()
                continue
            self.inventory_synced = self._wall()
            log.info(
                "history_inventory_synced",
                schools=len(inventory.schools),
                devices=inventory.device_count,
                removed_schools=removed[0],
                removed_devices=removed[1],
            )

    async def close(self, deadline: float) -> None:
        """Flush open link buckets and the queue, record a clean stop, release the directory."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._submit(self.sampler.flush())
        if self.writer is not None:
            await self.writer.close(deadline=deadline)
        with contextlib.suppress(OSError):
            self.liveness.beat(self._wall(), clean=True)
        self.liveness.unlock()
