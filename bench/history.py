"""History write benchmark: rows/s with COPY + INSERT ... ON CONFLICT vs executemany, and spool replay rate.

Starts a throwaway PostgreSQL 15 as the postgres user (needs root), writes the same
state-change rows into the same table both ways, and replays a spool of them.

    sudo .venv/bin/python bench/history.py [--rows 100000] [--batch 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pwd
import shutil
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.store.conftest import PgServer, _free_port

from telemetryd.model import DeviceKind, Health, StateChange
from telemetryd.store import HistoryWriter, Spool, migrate, to_row
from telemetryd.store.records import TABLES, to_copy_record
from telemetryd.store.writer import _copy_insert


def _rows(n: int, offset: int) -> list[list[object]]:
    return [
        to_row(
            StateChange(1_700_000_000.0 + offset + i, f"s{i % 500}", f"cam{i}", DeviceKind.CAMERA, "icmp",
                        Health.UP, Health.DOWN, "timeout")
        )["v"]
        for i in range(n)
    ]  # fmt: skip


async def _copy(dsn: str, rows: list[list[object]], batch: int) -> float:
    table = TABLES["state_changes"]
    conn = await asyncpg.connect(dsn)
    temp: set[str] = set()
    started = time.perf_counter()
    for i in range(0, len(rows), batch):
        async with conn.transaction():
            await _copy_insert(conn, table, rows[i : i + batch], temp)
    elapsed = time.perf_counter() - started
    await conn.close()
    return len(rows) / elapsed


async def _executemany(dsn: str, rows: list[list[object]], batch: int) -> float:
    table = TABLES["state_changes"]
    columns = ", ".join(table.columns)
    params = ", ".join(f"${i + 1}" for i in range(len(table.columns)))
    sql = f"INSERT INTO state_changes ({columns}) VALUES ({params}) ON CONFLICT {table.conflict} DO NOTHING"
    conn = await asyncpg.connect(dsn)
    started = time.perf_counter()
    for i in range(0, len(rows), batch):
        async with conn.transaction():
            await conn.executemany(sql, [to_copy_record(table, v) for v in rows[i : i + batch]])
    elapsed = time.perf_counter() - started
    await conn.close()
    return len(rows) / elapsed


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
    print(f"{rows} rows, batches of {batch}, PostgreSQL 15 on loopback (fsync off)")
    print(f"{'method':<34}{'rows/s':>12}")
    print(f"{'COPY + INSERT ON CONFLICT':<34}{copy_rate:>12,.0f}")
    print(f"{'executemany INSERT ON CONFLICT':<34}{many_rate:>12,.0f}")
    print(f"{'spool append (fsync per batch)':<34}{append_rate:>12,.0f}")
    print(f"{'spool replay into PostgreSQL':<34}{replay_rate:>12,.0f}")
    print(f"COPY / executemany: {copy_rate / many_rate:.1f}x")


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="telemetryd-pg-bench-"))
    pw = pwd.getpwnam("postgres")
    os.chown(root, pw.pw_uid, pw.pw_gid)
    server = PgServer(root, _free_port())
    server.initdb()
    server.start()
    try:
        asyncio.run(_main(args.rows, args.batch, server))
    finally:
        server.kill()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
