"""The history writer: every row journaled on submit, one task writing batches to PostgreSQL.

`submit` never blocks on the database and never loses a row it returns from: the row is
first written to the journal (`spool.Spool`, one ``os.write`` per submit call), so once
`submit` returns a kill -9 of the process cannot take it away — the next start replays
it. The row also goes to a bounded in-memory queue; the drain task takes up to
`batch_size` rows or `batch_seconds` of them, COPYs them into a per-connection temp table
and moves them with ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` (COPY itself cannot
skip duplicates), then marks them committed in the journal, which cuts them off.

When PostgreSQL is unreachable the batch stays in the journal as the spool (fsynced per
batch, so it survives a power loss as well) and leaves memory; a full queue spills the
same way. Reconnects are retried every `retry_seconds`, and on success the spool is
replayed from the journal in order before live rows resume, so history stays in time
order per source. Replays that overlap rows already committed (a crash between the
commit in PostgreSQL and the journal's mark) are harmless: every row has an idempotency
key, and a batch that adds no new row adds no chain link.

Every committed batch of new rows is one link of the history hash chain (migration
0002): its rows get the link's `chain_seq` and `telemetryd_chain_seal` stores their
digest and the new head, under an advisory lock shared by every shard's writer.

The writer writes only to a database whose schema is current: with migrations pending
it behaves as if PostgreSQL were down (spools, says so once) until `telemetryd db
migrate` has run.

Rows are lost only when the spool's size cap is hit (or, with the disk failing writes,
when a row that could not be journaled cannot be written to PostgreSQL either), and
then counted (`rows_dropped`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import groupby
from typing import Any

import asyncpg
import structlog

from telemetryd.histogram import Histogram
from telemetryd.history.migrate import pending as pending_migrations
from telemetryd.history.records import TABLES, HistoryEvent, Row, Table, month_of, to_copy_record, to_row
from telemetryd.history.spool import Spool

log = structlog.get_logger("telemetryd.history")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DROP_LOG_SECONDS = 60.0
"""While the spool is full, log the loss at most this often (the counter is exact)."""
CHAIN_LOCK = 0x7465_6C65_6D66
"""pg_advisory_xact_lock key serialising chain links across shards (next to the migration lock)."""


@dataclass(slots=True)
class WriterStats:
    """The writer's own health, for /metrics (counters only grow)."""

    rows_written: int = 0
    """Rows sent to PostgreSQL in committed batches (live and replayed; duplicates skipped by the key count too)."""
    rows_replayed: int = 0
    rows_spooled: int = 0
    rows_rejected: int = 0
    """Rows PostgreSQL refused as bad data (a bug, logged): never retried."""
    batches_written: int = 0
    write_failures: int = 0
    db_up: bool = False
    schema_pending: list[str] = field(default_factory=list)
    """Migrations the database lacks; while any, nothing is written (see `telemetryd db migrate`)."""
    chain_links: int = 0
    last_write_seconds: float | None = None
    latency: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    """Seconds per batch write."""

    def observe(self, seconds: float) -> None:
        """Record one batch write latency."""
        self.last_write_seconds = seconds
        self.latency.observe(seconds)


_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    # The connection's protocol state is broken (seen when the server stops mid-COMMIT): drop it.
    asyncpg.InternalClientError,
)


def _is_bad_data(exc: BaseException) -> bool:
    # SQLSTATE class 22 (data exception) and 23 (integrity): retrying the same rows would fail forever.
    sqlstate = getattr(exc, "sqlstate", None) or ""
    return isinstance(exc, asyncpg.PostgresError) and sqlstate[:2] in {"22", "23"}


UNJOURNALED = -1
"""The journal offset of a row the disk refused (held in memory only, journaled again if it must spool)."""
Pending = tuple[Row, int]
"""A queued row and the journal offset just past it."""


class HistoryWriter:
    """Journals history rows on submit and writes them to PostgreSQL in batches; the journal is the spool."""

    def __init__(
        self,
        dsn: str,
        spool: Spool,
        *,
        password: str | None = None,
        queue_size: int = 100_000,
        batch_size: int = 1000,
        batch_seconds: float = 1.0,
        retry_seconds: float = 5.0,
        connect_timeout: float = 3.0,
        command_timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stats = WriterStats()
        self._dsn = dsn
        self._password = password
        self._spool = spool
        self._queue: asyncio.Queue[Pending] = asyncio.Queue(queue_size)
        self._spilled_through = spool.end
        """Rows ending at or before this journal offset are read back from the journal, not from memory
        (a previous run's rows, batches PostgreSQL did not take, the queue's overflow)."""
        self._batch_size = batch_size
        self._batch_seconds = batch_seconds
        self._retry_seconds = retry_seconds
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._clock = clock
        self._conn: asyncpg.Connection | None = None
        self._next_connect = 0.0
        self._temp_tables: set[str] = set()
        self._partitions: set[tuple[str, int, int]] = set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._lost_unjournaled = 0
        """Rows the disk refused that could not reach PostgreSQL either (see `rows_dropped`)."""
        self._drops_logged = 0
        self._down_logged = False
        self._next_drop_log = 0.0
        self._journal_failing = False
        self._compact_failing = False
        self._unsynced = False
        """The queue overflowed into the journal since the last fsync."""

    @property
    def queue_depth(self) -> int:
        """Rows waiting in memory (each also in the journal)."""
        return self._queue.qsize()

    @property
    def spool_bytes(self) -> int:
        """Journal bytes waiting for PostgreSQL that are no longer in memory: the spool (0 while it keeps up)."""
        return max(0, self._spilled_through - self._spool.committed)

    @property
    def rows_dropped(self) -> int:
        """Rows lost: refused by the spool's cap, or refused by the disk and then by PostgreSQL."""
        return self._spool.dropped_records + self._lost_unjournaled

    def start(self) -> None:
        """Start the drain task (call from a running event loop)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="history-writer")

    def submit(self, event: HistoryEvent) -> None:
        """Journal and queue one event; never blocks (one os.write, no fsync)."""
        self.submit_rows([to_row(event)])

    def submit_many(self, events: Iterable[HistoryEvent]) -> None:
        """Journal and queue several events with one os.write."""
        self.submit_rows([to_row(event) for event in events])

    def submit_row(self, row: Row) -> None:
        """Journal and queue one already-converted row (see `records.to_row`)."""
        self.submit_rows([row])

    def submit_rows(self, rows: list[Row]) -> None:
        """Journal rows, then queue them; once this returns a kill -9 cannot lose them."""
        if not rows:
            return
        try:
            kept: list[Pending] = self._spool.write(rows)
            self._journal_failing = False
        except OSError as exc:
            # A full or failing disk: PostgreSQL may still take them, so keep them in memory.
            self._journal_failed(exc, len(rows))
            kept = [(row, UNJOURNALED) for row in rows]
        for pending in kept:
            try:
                self._queue.put_nowait(pending)
            except asyncio.QueueFull:
                # Backpressure lands on disk, not on memory and not on the prober: the journal has it already.
                if pending[1] == UNJOURNALED:
                    self._lost_unjournaled += 1
                else:
                    self._spilled_through = pending[1]
                    self.stats.rows_spooled += 1
                    self._unsynced = True
        if self.rows_dropped > self._drops_logged:
            self._log_drops()

    def _journal_failed(self, exc: OSError, rows: int) -> None:
        if not self._journal_failing:
            log.error(
                "history_journal_write_failed",
                path=str(self._spool.path),
                error=exc.strerror or str(exc),
                rows=rows,
                action="held in memory only until PostgreSQL takes them; free disk space",
            )
            self._journal_failing = True

    async def close(self, *, deadline: float = 10.0) -> None:
        """Flush the queue to PostgreSQL and stop; after `deadline` s, leave what is left to the spool."""
        self._closing = True
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(task, deadline)
            except TimeoutError:
                log.warning("history_close_deadline", queued=self._queue.qsize())
        leftover = self._drain_queue()
        if leftover:
            await self._spill(leftover)
        await self._disconnect()
        self._spool.close()

    def _drain_queue(self) -> list[Pending]:
        rows: list[Pending] = []
        while not self._queue.empty():
            rows.append(self._queue.get_nowait())
        return rows

    async def _run(self) -> None:
        await self._recover()  # connect (and check the schema) at once, not at the first event
        while True:
            batch = await self._collect()
            if self._unsynced:
                self._unsynced = False
                await asyncio.to_thread(self._spool.sync)  # the overflow is spool now: fsync it like a batch
            if batch:
                try:
                    await self._deliver(batch)
                except Exception:  # a writer bug must not end history: log, keep the rows, reconnect
                    log.exception("history_writer_error", rows=len(batch), action="spooled; reconnecting")
                    await self._spill(batch)
                    await self._lost(RuntimeError("writer error"))
            elif self._closing and self._queue.empty():
                # Only an empty queue ends it: a collect that timed out just as rows arrived returns
                # nothing, and ending then left those rows to close()'s spool (a flaky CI test).
                if self.spool_bytes:
                    self._next_connect = 0.0  # one last try, whatever the retry timer says
                    await self._recover()
                return
            elif self._conn is not None and self._conn.is_closed():
                # The server went away while we were idle: say so now, not at the next event.
                await self._lost(ConnectionError("connection closed by the server"))
            elif self._conn is None or self.spool_bytes:
                await self._recover()  # reconnects at most every retry_seconds

    async def _collect(self) -> list[Pending]:
        loop = asyncio.get_running_loop()
        batch: list[Pending] = []
        deadline = loop.time() + self._batch_seconds
        while len(batch) < self._batch_size:
            try:
                self._take(batch, self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - loop.time()
            if remaining <= 0 or (self._closing and not batch):
                break
            try:
                self._take(batch, await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    def _take(self, batch: list[Pending], pending: Pending) -> None:
        if pending[1] != UNJOURNALED and pending[1] <= self._spilled_through:
            self.stats.rows_spooled += 1  # queued before an overflow: the replay sends it, in order
        else:
            batch.append(pending)

    async def _deliver(self, batch: list[Pending]) -> None:
        try:
            delivered = await self._deliver_live([row for row, _ in batch])
        except asyncio.CancelledError:
            # Cancelled mid-write: the rows may or may not be committed; leave them to the spool, the key dedups.
            self._spill_now(batch)
            raise
        if delivered:
            self._commit(batch)  # no await since the write returned: a cancel cannot come between
            await self._compact()
        else:
            await self._spill(batch)

    async def _deliver_live(self, rows: list[Row]) -> bool:
        """Write rows to PostgreSQL when it is up with no spool to replay first; False: they must spool."""
        if self._conn is None or self.spool_bytes:
            await self._recover()
        if self._conn is None or self.spool_bytes:
            return False
        try:
            await self._write(rows)
        except _UNAVAILABLE as exc:
            await self._lost(exc)
            return False
        except asyncpg.PostgresError as exc:
            if not _is_bad_data(exc):
                await self._lost(exc)
                return False
            self._reject(rows, exc)  # never retried: move past them
        return True

    def _commit(self, batch: list[Pending]) -> None:
        """The batch is in PostgreSQL: mark it so in the journal."""
        end = max(offset for _, offset in batch)
        if end != UNJOURNALED:
            self._spool.commit(end)

    async def _compact(self) -> None:
        """Cut the committed head off the journal when it is worth it (a failure only leaves it longer)."""
        if not self._spool.compactable:
            return
        try:
            await asyncio.to_thread(self._spool.compact)
        except OSError as exc:
            if not self._compact_failing:
                log.warning(
                    "history_journal_compact_failed",
                    path=str(self._spool.path),
                    error=exc.strerror or str(exc),
                    action="the journal keeps rows already in PostgreSQL until this succeeds; free disk space",
                )
            self._compact_failing = True
        else:
            self._compact_failing = False

    async def _spill(self, batch: list[Pending]) -> None:
        """PostgreSQL did not take the batch: it becomes spool, fsynced."""
        if self._spill_now(batch):
            await asyncio.to_thread(self._spool.sync)

    def _spill_now(self, batch: list[Pending]) -> int:
        """Leave the batch to the journal (journaling rows the disk refused before); returns rows spooled."""
        ends = [offset for _, offset in batch if offset != UNJOURNALED]
        loose = [row for row, offset in batch if offset == UNJOURNALED]
        if loose:
            try:
                ends += [offset for _, offset in self._spool.write(loose)]
            except OSError as exc:
                self._journal_failed(exc, len(loose))
                self._lost_unjournaled += len(loose)
        if ends:
            self._spilled_through = max(self._spilled_through, *ends)
        self._spooled(len(ends))
        return len(ends)

    def _spooled(self, rows: int) -> None:
        self.stats.rows_spooled += rows
        self._log_drops()

    def _log_drops(self) -> None:
        """Say (at most once a minute) that rows are being lost; the counter is exact either way."""
        dropped = self.rows_dropped
        if dropped > self._drops_logged and self._clock() >= self._next_drop_log:
            log.error(
                "history_spool_full",
                rows_dropped=dropped,
                spool_bytes=self._spool.size_bytes,
                max_bytes=self._spool.max_bytes,
                action="history rows are being lost; bring PostgreSQL back or raise history.spool_max_bytes",
            )
            self._drops_logged = dropped
            self._next_drop_log = self._clock() + DROP_LOG_SECONDS

    def _reject(self, rows: list[Row], exc: BaseException) -> None:
        self.stats.rows_rejected += len(rows)
        log.error("history_rows_rejected", rows=len(rows), error=str(exc), first=rows[0])

    async def _recover(self) -> None:
        """Connect if the retry timer allows, then replay the spool in order."""
        if self._conn is None:
            if self._clock() < self._next_connect:
                return
            try:
                conn = await asyncpg.connect(
                    self._dsn,
                    password=self._password,
                    timeout=self._connect_timeout,
                    command_timeout=self._command_timeout,
                )
                pending = await pending_migrations(conn)
            except (*_UNAVAILABLE, asyncpg.PostgresError) as exc:
                self._next_connect = self._clock() + self._retry_seconds
                self.stats.write_failures += 1
                self._down(exc)
                return
            if pending:
                conn.terminate()
                self._next_connect = self._clock() + self._retry_seconds
                if pending != self.stats.schema_pending:
                    log.error(
                        "history_schema_outdated", pending=pending, action="spooling; run `telemetryd db migrate`"
                    )
                self.stats.schema_pending = pending
                self.stats.db_up = False
                return
            self.stats.schema_pending = []
            self._conn = conn
            self._temp_tables.clear()
            self._partitions.clear()
            if not self.stats.db_up:
                self.stats.db_up = True
                self._down_logged = False
                log.info("history_db_up", spool_bytes=self.spool_bytes)
        if self.spool_bytes:
            await self._replay()

    async def _replay(self) -> None:
        """Write the spool to PostgreSQL oldest first, committing (and cutting off) the journal as it goes."""
        while self.spool_bytes:
            start = self._spool.committed
            entries, reached = await asyncio.to_thread(self._spool.read, start, self._spilled_through, self._batch_size)
            if reached == start:
                # Unreadable (the disk corrupted a record after it was written): nothing past it can be trusted.
                log.error("history_spool_unreadable", path=str(self._spool.path), skipped_bytes=self.spool_bytes)
                self._spool.commit(self._spilled_through)
                break
            if entries:
                chunk = [entry.record for entry in entries]
                try:
                    await self._write(chunk)
                    self.stats.rows_replayed += len(chunk)
                except _UNAVAILABLE as exc:
                    await self._lost(exc)
                    return
                except asyncpg.PostgresError as exc:
                    if not _is_bad_data(exc):
                        await self._lost(exc)
                        return
                    self._reject(chunk, exc)  # a spooled batch PostgreSQL will never take: count it, move on
            self._spool.commit(reached)
            await self._compact()
        log.info("history_spool_replayed", rows=self.stats.rows_replayed)

    async def _lost(self, exc: BaseException) -> None:
        self.stats.write_failures += 1
        self._next_connect = self._clock() + self._retry_seconds
        self._down(exc)
        await self._disconnect()

    def _down(self, exc: BaseException) -> None:
        """Log the database going (or, at start, being) unreachable once per outage."""
        if self.stats.db_up or not self._down_logged:
            log.warning("history_db_down", error=f"{type(exc).__name__}: {exc}", action="spooling to disk")
            self._down_logged = True
        self.stats.db_up = False

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def _write(self, rows: list[Row]) -> None:
        conn = self._conn
        assert conn is not None
        started = time.perf_counter()
        ordered = sorted(rows, key=lambda row: str(row["t"]))  # stable: keeps each table's order
        grouped = [(TABLES[name], [row["v"] for row in group]) for name, group in groupby(ordered, lambda r: r["t"])]
        for table, values in grouped:
            await self._ensure_partitions(conn, table, values)
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", CHAIN_LOCK)
            link = await conn.fetchval("SELECT coalesce(max(seq), 0) + 1 FROM history_chain")
            inserted = 0
            for table, values in grouped:
                inserted += await _copy_insert(conn, table, values, self._temp_tables, link)
            if inserted:  # a batch of pure duplicates adds no link
                await conn.execute("SELECT telemetryd_chain_seal($1, $2)", link, inserted)
                self.stats.chain_links += 1
        self.stats.observe(time.perf_counter() - started)
        self.stats.rows_written += len(rows)
        self.stats.batches_written += 1

    async def _ensure_partitions(self, conn: asyncpg.Connection, table: Table, values: Iterable[list[Any]]) -> None:
        if table.partition_time is None:
            return
        index = table.columns.index(table.partition_time)
        for at in {month_of(v[index]): v[index] for v in values}.values():
            year, month = month_of(at)
            if (table.name, year, month) in self._partitions:
                continue
            moment = datetime.fromtimestamp(at, UTC)
            await conn.execute("SELECT telemetryd_ensure_partition($1, $2)", table.name, moment)
            self._partitions.add((table.name, year, month))


async def _copy_insert(
    conn: asyncpg.Connection, table: Table, values: list[list[Any]], temp_tables: set[str], link: int
) -> int:
    """COPY rows into a temp twin of `table`, then move the new ones over as chain link `link`.

    Duplicates are skipped; returns how many rows were new.
    """
    temp = f"history_tmp_{table.name}"
    if temp not in temp_tables:
        await conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {temp} (LIKE {table.name}) ON COMMIT DELETE ROWS")
        temp_tables.add(temp)
    await conn.copy_records_to_table(temp, records=[to_copy_record(table, v) for v in values], columns=table.columns)
    columns = ", ".join(table.columns)
    status = await conn.execute(
        f"INSERT INTO {table.name} ({columns}, chain_seq) SELECT {columns}, $1::bigint FROM {temp} "
        f"ON CONFLICT {table.conflict} DO NOTHING",
        link,
    )
    return int(status.rsplit(" ", 1)[1])  # "INSERT 0 <rows>"
