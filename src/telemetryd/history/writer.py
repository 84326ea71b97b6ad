"""The history writer: one bounded queue, one task writing batches to PostgreSQL, a spool when it is down.

Probing never waits on the database: `submit` is non-blocking. The drain task takes up
to `batch_size` rows or `batch_seconds` of them, COPYs them into a per-connection temp
table and moves them with ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` (COPY
itself cannot skip duplicates). When PostgreSQL is unreachable, batches go to the spool;
reconnects are retried every `retry_seconds`, and on success the spool is replayed in
order before live rows resume, so history stays in time order per source. Replays that
overlap rows already committed are harmless: every row has an idempotency key.

Every committed batch of new rows is one link of the history hash chain (migration
0002): its rows get the link's `chain_seq` and `telemetryd_chain_seal` stores their
digest and the new head, under an advisory lock shared by every shard's writer.

The writer writes only to a database whose schema is current: with migrations pending
it behaves as if PostgreSQL were down (spools, says so once) until `telemetryd db
migrate` has run.

Rows are lost only when the spool's size cap is hit, and then counted (`rows_dropped`).
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
REPLAY_TRUNCATE_ROWS = 50_000
"""Cut the replayed head off the spool this often, so a failure mid-replay redoes little."""
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


class HistoryWriter:
    """Writes history events to PostgreSQL in batches; spools to disk while the database is down."""

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
        self._queue: asyncio.Queue[Row] = asyncio.Queue(queue_size)
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
        self._drops_logged = 0
        self._down_logged = False
        self._next_drop_log = 0.0

    @property
    def queue_depth(self) -> int:
        """Rows waiting in memory."""
        return self._queue.qsize()

    @property
    def spool_bytes(self) -> int:
        """Bytes waiting on disk for PostgreSQL to come back."""
        return self._spool.size_bytes

    @property
    def rows_dropped(self) -> int:
        """Rows lost because the spool was full (the only loss there is)."""
        return self._spool.dropped_records

    def start(self) -> None:
        """Start the drain task (call from a running event loop)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="history-writer")

    def submit(self, event: HistoryEvent) -> None:
        """Queue one event; never blocks. A full queue spills straight to the spool (fsync on the caller)."""
        self.submit_row(to_row(event))

    def submit_row(self, row: Row) -> None:
        """Queue one already-converted row (see `records.to_row`)."""
        try:
            self._queue.put_nowait(row)
        except asyncio.QueueFull:
            # Backpressure lands on disk, not on memory and not on the prober.
            self._spooled(self._spool.append([row]))

    async def close(self, *, deadline: float = 10.0) -> None:
        """Flush the queue (to PostgreSQL, else the spool) and stop; after `deadline` s, spool what is left."""
        self._closing = True
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(task, deadline)
            except TimeoutError:
                log.warning("history_close_deadline", queued=self._queue.qsize())
        leftover = self._drain_queue()
        if leftover:
            self._spooled(await asyncio.to_thread(self._spool.append, leftover))
        await self._disconnect()

    def _drain_queue(self) -> list[Row]:
        rows: list[Row] = []
        while not self._queue.empty():
            rows.append(self._queue.get_nowait())
        return rows

    async def _run(self) -> None:
        await self._recover()  # connect (and check the schema) at once, not at the first event
        while True:
            batch = await self._collect()
            if batch:
                try:
                    await self._deliver(batch)
                except Exception:  # a writer bug must not end history: log, keep the rows, reconnect
                    log.exception("history_writer_error", rows=len(batch), action="spooled; reconnecting")
                    self._spooled(await asyncio.to_thread(self._spool.append, batch))
                    await self._lost(RuntimeError("writer error"))
            elif self._closing and self._queue.empty():
                # Only an empty queue ends it: a collect that timed out just as rows arrived returns
                # nothing, and ending then left those rows to close()'s spool (a flaky CI test).
                if self._spool.size_bytes:
                    self._next_connect = 0.0  # one last try, whatever the retry timer says
                    await self._recover()
                return
            elif self._conn is not None and self._conn.is_closed():
                # The server went away while we were idle: say so now, not at the next event.
                await self._lost(ConnectionError("connection closed by the server"))
            elif self._conn is None or self._spool.size_bytes:
                await self._recover()  # reconnects at most every retry_seconds

    async def _collect(self) -> list[Row]:
        loop = asyncio.get_running_loop()
        batch: list[Row] = []
        deadline = loop.time() + self._batch_seconds
        while len(batch) < self._batch_size:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - loop.time()
            if remaining <= 0 or (self._closing and not batch):
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _deliver(self, batch: list[Row]) -> None:
        try:
            if self._conn is None or self._spool.size_bytes:
                await self._recover()
            if self._conn is not None and not self._spool.size_bytes:
                try:
                    await self._write(batch)
                    return
                except _UNAVAILABLE as exc:
                    await self._lost(exc)
                except asyncpg.PostgresError as exc:
                    if not _is_bad_data(exc):
                        await self._lost(exc)
                    else:
                        self._reject(batch, exc)
                        return
            self._spooled(await asyncio.to_thread(self._spool.append, batch))
        except asyncio.CancelledError:
            # Cancelled mid-write: the rows may or may not be committed; spool them, the key dedups.
            self._spooled(self._spool.append(batch))
            raise

    def _spooled(self, rows: int) -> None:
        """Count rows the spool took; say so (at most once a minute) when its cap made it drop some."""
        self.stats.rows_spooled += rows
        dropped = self._spool.dropped_records
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
                log.info("history_db_up", spool_bytes=self._spool.size_bytes)
        if self._spool.size_bytes:
            await self._replay()

    async def _replay(self) -> None:
        """Write the spool to PostgreSQL oldest first, cutting off the head as it goes."""
        while self._spool.size_bytes:
            try:
                done = await self._replay_pass()
            except _UNAVAILABLE as exc:
                await self._lost(exc)
                return
            except asyncpg.PostgresError as exc:
                await self._lost(exc)
                return
            if done == 0:
                return  # nothing readable past a corrupt record; it was repaired on open
            await asyncio.to_thread(self._spool.truncate_through, done)
        log.info("history_spool_replayed", rows=self.stats.rows_replayed)

    async def _replay_pass(self) -> int:
        """Replay up to REPLAY_TRUNCATE_ROWS rows from the head; returns the offset written through."""
        chunk: list[Row] = []
        done = end = rows = 0
        for entry in self._spool.replay():
            chunk.append(entry.record)
            end = entry.end
            if len(chunk) >= self._batch_size:
                done, rows = await self._replay_chunk(chunk, end), rows + len(chunk)
                chunk = []
                if rows >= REPLAY_TRUNCATE_ROWS:
                    return done
        if chunk:
            done = await self._replay_chunk(chunk, end)
        return done

    async def _replay_chunk(self, chunk: list[Row], end: int) -> int:
        try:
            await self._write(chunk)
            self.stats.rows_replayed += len(chunk)
        except asyncpg.PostgresError as exc:
            if not _is_bad_data(exc):
                raise
            # A spooled batch PostgreSQL will never take: count it and move past it.
            self._reject(chunk, exc)
        return end

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
