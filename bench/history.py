"""History write benchmark: rows/s with COPY + INSERT ... ON CONFLICT vs executemany, and spool replay rate.

Starts a throwaway PostgreSQL 15 as the postgres user (needs root), writes the same
state-change rows into the same table both ways, and replays a spool of them. Both
ways write as the daemon does: one transaction per batch taking the chain lock,
inserting with the link's chain_seq and sealing the link. Also measured: the live
writer end to end (submit -> committed) and hash-chain verification (what
`telemetryd report sla` pays per row).

    sudo .venv/bin/python bench/history.py [--rows 100000] [--batch 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.pg import PgServer, started_server

from telemetryd.history import HistoryWriter, Spool, migrate, to_row
from telemetryd.history.records import TABLES, to_copy_record
from telemetryd.history.writer import CHAIN_LOCK, _copy_insert
from telemetryd.model import DeviceKind, Health, StateChange


def _rows(n: int, offset: int) -> list[list[object]]:
    return [
        to_row(
            StateChange(1_700_000_000.0 + offset + i, f"s{i % 500}", f"cam{i}", DeviceKind.CAMERA, "icmp",
                        Health.UP, Health.DOWN, "timeout")
        )["v"]
        for i in range(n)
    ]  # fmt: skip


async def _sealed(conn: asyncpg.Connection, insert: Callable[[int], Awaitable[int]]) -> None:
    """One batch as the writer commits it: chain lock, next link, insert, seal."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", CHAIN_LOCK)
        link = await conn.fetchval("SELECT coalesce(max(seq), 0) + 1 FROM history_chain")
        inserted = await insert(link)
        await conn.execute("SELECT telemetryd_chain_seal($1, $2)", link, inserted)


async def _copy(dsn: str, rows: list[list[object]], batch: int) -> float:
    table = TABLES["state_changes"]
    conn = await asyncpg.connect(dsn)
    temp: set[str] = set()
    started = time.perf_counter()
    for i in range(0, len(rows), batch):
        chunk = rows[i : i + batch]
        await _sealed(conn, lambda link, chunk=chunk: _copy_insert(conn, table, chunk, temp, link))  # type: ignore[misc]
    elapsed = time.perf_counter() - started
    await conn.close()
    return len(rows) / elapsed


async def _executemany(dsn: str, rows: list[list[object]], batch: int) -> float:
    table = TABLES["state_changes"]
    columns = ", ".join(table.columns)
    params = ", ".join(f"${i + 1}" for i in range(len(table.columns) + 1))
    sql = f"INSERT INTO state_changes ({columns}, chain_seq) VALUES ({params}) ON CONFLICT {table.conflict} DO NOTHING"
    conn = await asyncpg.connect(dsn)

    async def insert(chunk: list[list[object]], link: int) -> int:
        await conn.executemany(sql, [(*to_copy_record(table, v), link) for v in chunk])
        return len(chunk)

    started = time.perf_counter()
    for i in range(0, len(rows), batch):
        chunk = rows[i : i + batch]
        await _sealed(conn, lambda link, chunk=chunk: insert(chunk, link))  # type: ignore[misc]
    elapsed = time.perf_counter() - started
    await conn.close()
    return len(rows) / elapsed


async def _live(dsn: str, n: int, workdir: Path) -> float:
    """Submit n events to a running HistoryWriter; rows/s until all are committed."""
    writer = HistoryWriter(dsn, Spool(workdir / "live-spool"))
    writer.start()
    started = time.perf_counter()
    for i in range(n):
        writer.submit(
            StateChange(1_705_000_000.0 + i, "s2", f"cam{i}", DeviceKind.CAMERA, "icmp", Health.UP, Health.DOWN)
        )
        if i % 1000 == 0:
            # Let the loop run, as the daemon does between results: 5,000 rows between yields held it
            # for 0.2-0.4 s, long enough on a loaded host for the writer's 3 s connect to time out.
            await asyncio.sleep(0)
    await writer.close(deadline=600)
    assert writer.stats.rows_written == n and writer.spool_bytes == 0, writer.stats
    return n / (time.perf_counter() - started)


async def _verify(dsn: str) -> tuple[int, float]:
    """Rows per second `telemetryd_chain_verify` re-hashes over the whole chain."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetchval("SELECT sum(rows) FROM history_chain")
        last = await conn.fetchval("SELECT max(seq) FROM history_chain")
        started = time.perf_counter()
        problems = await conn.fetch("SELECT * FROM telemetryd_chain_verify(1, $1)", last)
        elapsed = time.perf_counter() - started
    finally:
        await conn.close()
    assert problems == [], problems
    return int(rows), rows / elapsed


async def _replay(dsn: str, n: int, workdir: Path) -> tuple[float, float]:
    spool = Spool(workdir / "spool")
    records = [
        to_row(StateChange(1_710_000_000.0 + i, "s1", f"cam{i}", DeviceKind.CAMERA, "icmp", Health.UP, Health.DOWN))
        for i in range(n)
    ]
    started = time.perf_counter()
    for i in range(0, n, 1000):
        spool.append(records[i : i + 1000])
    append_rate = n / (time.perf_counter() - started)
    writer = HistoryWriter(dsn, spool)
    started = time.perf_counter()
    writer.start()
    await writer.close(deadline=600)
    assert writer.stats.rows_replayed == n, writer.stats
    return append_rate, n / (time.perf_counter() - started)


async def _main(rows: int, batch: int, server: PgServer) -> None:
    dsn = server.create_database()
    await migrate(dsn)
    conn = await asyncpg.connect(dsn)
    await conn.execute("SELECT telemetryd_ensure_partitions(to_timestamp(1700000000), to_timestamp(1712000000))")
    await conn.close()
    copy_rate = await _copy(dsn, _rows(rows, 0), batch)
    many_rate = await _executemany(dsn, _rows(rows, rows * 2), batch)
    append_rate, replay_rate = await _replay(dsn, rows, server.root)
    live_rate = await _live(dsn, rows, server.root)
    verified, verify_rate = await _verify(dsn)
    print(f"{rows} rows, batches of {batch}, PostgreSQL 15 on loopback (fsync off)")
    print(f"{'method':<34}{'rows/s':>12}")
    print(f"{'COPY + INSERT ON CONFLICT':<34}{copy_rate:>12,.0f}")
    print(f"{'executemany INSERT ON CONFLICT':<34}{many_rate:>12,.0f}")
    print(f"{'spool append (fsync per batch)':<34}{append_rate:>12,.0f}")
    print(f"{'spool replay into PostgreSQL':<34}{replay_rate:>12,.0f}")
    print(f"{'live writer, submit to commit':<34}{live_rate:>12,.0f}")
    print(f"{'chain verify (' + format(verified, ',') + ' rows)':<34}{verify_rate:>12,.0f}")
    print(f"COPY / executemany: {copy_rate / many_rate:.1f}x")


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    server = started_server()
    try:
        asyncio.run(_main(args.rows, args.batch, server))
    finally:
        server.kill()
        shutil.rmtree(server.root, ignore_errors=True)


if __name__ == "__main__":
    main()
