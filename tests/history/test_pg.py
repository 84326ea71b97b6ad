"""The store against a real PostgreSQL 15: migrations, load, outages, crashes, the spool cap."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from telemetryd.history import HistoryWriter, Spool, check, migrate, to_row
from telemetryd.history.migrate import available
from telemetryd.history.spool import COMPACT_BYTES, encode
from telemetryd.model import DeviceKind, Health, StateChange
from tests.pg import PgServer

pytestmark = pytest.mark.integration

BASE = 1_700_000_000.0  # 2023-11-14: older than the migration's premade partitions, so made on demand
SRC = Path(__file__).resolve().parents[2] / "src"
DEAD_DSN = "postgresql://postgres@127.0.0.1:1/postgres"


def _change(i: int) -> StateChange:
    new = Health.DOWN if i % 2 else Health.UP
    old = Health.UP if i % 2 else Health.DOWN
    return StateChange(BASE + i * 60.0, f"s{i % 50}", f"cam{i}", DeviceKind.CAMERA, "icmp", old, new, "timeout")


async def _devices_in_time_order(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return [r["device"] for r in await conn.fetch("SELECT device FROM state_changes ORDER BY time")]
    finally:
        await conn.close()


async def _wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - polls writer stats, which have no event to wait on
            await asyncio.sleep(0.02)


def _writer(dsn: str, spool: Spool, **kwargs: float) -> HistoryWriter:
    options: dict[str, float] = {"batch_seconds": 0.05, "retry_seconds": 0.2, "connect_timeout": 1.0, **kwargs}
    writer = HistoryWriter(dsn, spool, **options)  # type: ignore[arg-type]
    writer.start()
    return writer


async def test_migrations_from_empty_then_noop(pg_dsn: str) -> None:
    """An empty database gets every migration in order; a second run applies nothing."""
    versions = [v for v, _ in available()]
    assert await check(pg_dsn) == versions
    assert await migrate(pg_dsn) == versions
    assert await check(pg_dsn) == []
    assert await migrate(pg_dsn) == []
    conn = await asyncpg.connect(pg_dsn)
    try:
        parts = await conn.fetchval("SELECT count(*) FROM pg_inherits WHERE inhparent = 'state_changes'::regclass")
        assert parts >= 4  # last month .. two ahead
    finally:
        await conn.close()


async def test_concurrent_migrations_apply_once(pg_dsn: str) -> None:
    """Two shards migrating at once: one applies, the other finds nothing to do."""
    results = await asyncio.gather(migrate(pg_dsn), migrate(pg_dsn))
    assert sorted(len(r) for r in results) == [0, len(available())]


async def test_load_every_event_once(pg_dsn: str, tmp_path: Path) -> None:
    """50,000 state changes (some submitted twice) land exactly once, with months partitioned on demand."""
    await migrate(pg_dsn)
    writer = _writer(pg_dsn, Spool(tmp_path / "spool"))
    for i in range(50_000):
        writer.submit(_change(i))
        if i % 5000 == 0:
            writer.submit(_change(i))  # a duplicate: the key makes it a no-op
            await asyncio.sleep(0)
    await writer.close(deadline=60)
    assert writer.spool_bytes == 0
    assert writer.rows_dropped == 0
    assert await _devices_in_time_order(pg_dsn) == [f"cam{i}" for i in range(50_000)]


async def test_postgres_outage_spools_then_replays_in_order(pg_server: PgServer, pg_dsn: str, tmp_path: Path) -> None:
    """PostgreSQL stopped mid-run and restarted: submits never block, every event lands once, in time order."""
    await migrate(pg_dsn)
    writer = _writer(pg_dsn, Spool(tmp_path / "spool"))
    total = 9000
    try:
        for i in range(total):
            writer.submit(_change(i))
            if i % 100 == 0:
                await asyncio.sleep(0.005)
            if i == 3000:
                await asyncio.to_thread(pg_server.stop)
            if i == 6000:
                await _wait_for(lambda: writer.spool_bytes > 0)
                assert not writer.stats.db_up
                await asyncio.to_thread(pg_server.start)
    finally:
        if pg_server.pid() is None:
            pg_server.start()
    await writer.close(deadline=60)
    assert writer.stats.rows_spooled > 0
    assert writer.stats.rows_replayed > 0
    assert writer.spool_bytes == 0
    assert await _devices_in_time_order(pg_dsn) == [f"cam{i}" for i in range(total)]


async def test_cancelled_writer_spool_is_replayed_by_the_next(pg_dsn: str, tmp_path: Path) -> None:
    """A writer cancelled abruptly with a spooled backlog loses nothing: the next writer replays it once."""
    await migrate(pg_dsn)
    first = _writer(DEAD_DSN, Spool(tmp_path / "spool"), retry_seconds=60)
    for i in range(3000):
        first.submit(_change(i))
    await _wait_for(lambda: first.stats.rows_spooled == 3000)
    assert first._task is not None
    first._task.cancel()  # no close(): as abrupt as asyncio gets
    with pytest.raises(asyncio.CancelledError):
        await first._task
    second = _writer(pg_dsn, Spool(tmp_path / "spool"))
    for i in range(3000, 4000):
        second.submit(_change(i))
    await second.close(deadline=30)
    assert await _devices_in_time_order(pg_dsn) == [f"cam{i}" for i in range(4000)]


CHILD = textwrap.dedent(
    """
    import asyncio, sys, time
    from telemetryd.model import DeviceKind, Health, StateChange
    from telemetryd.history import HistoryWriter, Spool

    async def main() -> None:
        writer = HistoryWriter(sys.argv[2], Spool(sys.argv[1]), batch_seconds=0.05, retry_seconds=60)
        writer.start()
        for i in range(int(sys.argv[3])):
            writer.submit(StateChange(1_700_000_000.0 + i * 60.0, f"s{i % 50}", f"cam{i}", DeviceKind.CAMERA,
                                      "icmp", Health.UP, Health.DOWN, "timeout"))
        while writer.stats.rows_spooled < int(sys.argv[3]):
            await asyncio.sleep(0.01)
        print("spooled", flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


async def test_sigkilled_process_spool_is_replayed(pg_dsn: str, tmp_path: Path) -> None:
    """A daemon killed with SIGKILL (torn last record included) leaves a spool the next writer replays in full."""
    await migrate(pg_dsn)
    spool_path = tmp_path / "spool"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, str(spool_path), DEAD_DSN, "5000", stdout=asyncio.subprocess.PIPE, env=env
    )
    try:
        assert child.stdout is not None
        async with asyncio.timeout(30):
            # The writer's own log lines (history_db_down) come first, on the same stdout.
            while (line := await child.stdout.readline()) and line.strip() != b"spooled":
                pass
        assert line.strip() == b"spooled"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        await child.wait()
    with spool_path.open("ab") as f:
        f.write(b"\x00\x00\x01\x00garbage")  # the kill landed mid-append
    spool = Spool(spool_path)
    assert spool.torn_bytes > 0
    writer = _writer(pg_dsn, spool)
    await writer.close(deadline=30)
    assert writer.stats.rows_replayed == 5000
    assert await _devices_in_time_order(pg_dsn) == [f"cam{i}" for i in range(5000)]


async def test_spool_cap_is_the_only_loss_and_is_counted(pg_dsn: str, tmp_path: Path) -> None:
    """With PostgreSQL down and a small spool, the overflow is counted; everything else arrives once."""
    await migrate(pg_dsn)
    spool = Spool(tmp_path / "spool", max_bytes=64 * 1024)
    down = _writer(DEAD_DSN, spool, retry_seconds=60)
    total = 2000
    for i in range(total):
        down.submit(_change(i))
    await down.close(deadline=30)
    assert down.rows_dropped > 0
    assert down.stats.rows_spooled + down.rows_dropped == total
    up = _writer(pg_dsn, Spool(tmp_path / "spool", max_bytes=64 * 1024))
    await up.close(deadline=30)
    kept = total - down.rows_dropped
    # The cap refuses the newest rows: the oldest `kept` are what survive.
    assert await _devices_in_time_order(pg_dsn) == [f"cam{i}" for i in range(kept)]


async def test_other_tables_round_trip(pg_dsn: str, tmp_path: Path) -> None:
    """Speed tests, link samples and monitoring gaps are written and deduplicated like state changes."""
    from telemetryd.history import LinkSample, MonitoringGap, SpeedTestRecord
    from telemetryd.model import Direction, SpeedResult

    await migrate(pg_dsn)
    writer = _writer(pg_dsn, Spool(tmp_path / "spool"))
    events = [
        SpeedTestRecord(BASE, "s1", SpeedResult(True, Direction.DOWNLOAD, 140.0, 50_000_000, 3.0, 4)),
        LinkSample(BASE, "s1", "video", Direction.DOWNLOAD, 12.5, 28.0, 470_000_000, 30),
        MonitoringGap(BASE, BASE + 120, "shard-0", "restart"),
    ]
    for event in events * 2:
        writer.submit(event)
    await writer.close(deadline=30)
    conn = await asyncpg.connect(pg_dsn)
    try:
        for table in ("speedtests", "link_samples", "monitoring_gaps"):
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 1, table
    finally:
        await conn.close()


async def test_every_batch_is_a_sealed_chain_link_and_tampering_shows(pg_dsn: str, tmp_path: Path) -> None:
    """Rows carry their link; the stored heads follow from the rows; an edited or deleted row breaks its link."""
    await migrate(pg_dsn)
    writer = _writer(pg_dsn, Spool(tmp_path / "spool"))
    for batch in range(3):
        for i in range(batch * 100, batch * 100 + 100):
            writer.submit(_change(i))
        written = batch * 100 + 100
        await _wait_for(lambda: writer.stats.rows_written >= written)  # noqa: B023 - awaited before the next loop
    for i in range(100):
        writer.submit(_change(i))  # duplicates only: no new link
    await writer.close(deadline=30)
    conn = await asyncpg.connect(pg_dsn)
    try:
        links = await conn.fetch("SELECT seq, rows FROM history_chain ORDER BY seq")
        assert len(links) == writer.stats.chain_links >= 3
        assert sum(r["rows"] for r in links) == 300
        assert await conn.fetchval("SELECT count(*) FROM state_changes WHERE chain_seq IS NULL") == 0
        last = links[-1]["seq"]
        assert await conn.fetch("SELECT * FROM telemetryd_chain_verify(1, $1)", last) == []
        await conn.execute("UPDATE state_changes SET new = 'up' WHERE device = 'cam7'")
        await conn.execute("DELETE FROM state_changes WHERE device = 'cam250'")
        problems = await conn.fetch("SELECT * FROM telemetryd_chain_verify(1, $1)", last)
        bad = {r["seq"] for r in problems}
        tampered = await conn.fetchval("SELECT chain_seq FROM state_changes WHERE device = 'cam7'")
        assert tampered in bad
        assert len(bad) == 2  # the edited row's link and the deleted row's link, nothing else
        assert all(r["problem"] == "rows changed since they were sealed" for r in problems)
    finally:
        await conn.close()


async def test_outdated_schema_spools_until_migrated(pg_dsn: str, tmp_path: Path) -> None:
    """A database without the migrations takes nothing: rows spool, and land once `db migrate` has run."""
    writer = _writer(pg_dsn, Spool(tmp_path / "spool"))
    for i in range(50):
        writer.submit(_change(i))
    await _wait_for(lambda: writer.stats.rows_spooled == 50)
    assert writer.stats.schema_pending == [v for v, _ in available()]
    assert not writer.stats.db_up
    await migrate(pg_dsn)
    await _wait_for(lambda: writer.stats.db_up and writer.spool_bytes == 0)
    await writer.close(deadline=30)
    assert await _devices_in_time_order(pg_dsn) == [f"cam{i}" for i in range(50)]


async def test_inventory_sync_marks_removed_only_in_its_own_shard(pg_dsn: str) -> None:
    """Schools and devices are upserted; those gone from this shard are marked removed, other shards' kept."""
    from telemetryd.config.loader import shard_of
    from telemetryd.config.settings import Shard
    from telemetryd.history.inventory_sync import sync_inventory
    from telemetryd.model import Contract, Device, Inventory, ProbeSpec, School

    def school(school_id: str, devices: int, contract: float = 150.0) -> School:
        kit = tuple(
            Device(f"{school_id}-cam{n}", school_id, DeviceKind.CAMERA, f"10.0.0.{n}", (ProbeSpec("icmp"),))
            for n in range(devices)
        )
        return School(school_id, f"School {school_id}", "Al-Farabi", Contract(contract), kit)

    ids = [f"sch{n}" for n in range(20)]
    mine = [i for i in ids if shard_of(i, 2) == 0]
    theirs = [i for i in ids if shard_of(i, 2) == 1]
    assert mine and theirs
    await migrate(pg_dsn)
    conn = await asyncpg.connect(pg_dsn)
    try:
        await sync_inventory(conn, Inventory.build([school(i, 2) for i in ids]), Shard(index=0, count=1))
        assert await conn.fetchval("SELECT count(*) FROM devices WHERE removed_at IS NULL") == 40
        # Shard 0 of 2 now watches its schools minus one, with a new contract for another.
        kept = [school(i, 2) for i in mine[1:]]
        kept[0] = school(mine[1], 1, contract=100.0)
        removed = await sync_inventory(conn, Inventory.build(kept), Shard(index=0, count=2))
        assert removed == (1, 3)  # mine[0] with its 2 cameras, and mine[1]'s second camera
        gone = {r["id"] for r in await conn.fetch("SELECT id FROM schools WHERE removed_at IS NOT NULL")}
        assert gone == {mine[0]}
        assert await conn.fetchval("SELECT contract_mbps FROM schools WHERE id = $1", mine[1]) == 100.0
        other = await conn.fetchval(
            "SELECT count(*) FROM devices WHERE school = ANY($1) AND removed_at IS NULL", theirs
        )
        assert other == 2 * len(theirs)
        # Back in the inventory: no longer removed.
        await sync_inventory(conn, Inventory.build([school(i, 2) for i in mine]), Shard(index=0, count=2))
        assert await conn.fetchval("SELECT count(*) FROM schools WHERE removed_at IS NOT NULL") == 0
    finally:
        await conn.close()


async def _chain(dsn: str) -> tuple[list[asyncpg.Record], int, list[asyncpg.Record]]:
    """The links, the rows of every history table, and telemetryd_chain_verify's findings."""
    conn = await asyncpg.connect(dsn)
    try:
        links = list(await conn.fetch("SELECT seq, rows FROM history_chain ORDER BY seq"))
        rows = 0
        for table in ("state_changes", "speedtests", "link_samples", "monitoring_gaps", "alarm_events"):
            rows += await conn.fetchval(f"SELECT count(*) FROM {table}")
        last = links[-1]["seq"] if links else 0
        return links, rows, list(await conn.fetch("SELECT * FROM telemetryd_chain_verify(1, $1)", last))
    finally:
        await conn.close()


async def test_rows_committed_but_not_marked_replay_without_gaps_or_double_links(
    pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed between PostgreSQL's commit and the journal's mark: the replay adds no row twice and no empty link.

    200 rows committed whose marks never reached the journal, then 100 journaled only: the
    next writer replays all 300; only the 100 are new, they make the only new links, and the
    chain stays gapless (seq 1..n), its row counts add up to the tables, and it verifies.
    """
    await migrate(pg_dsn)
    spool_path = tmp_path / "spool"
    first_spool = Spool(spool_path)
    monkeypatch.setattr(first_spool, "commit", lambda offset: None)  # the crash lands right after COMMIT
    first = _writer(pg_dsn, first_spool)
    for i in range(200):
        first.submit(_change(i))
    await _wait_for(lambda: first.stats.rows_written == 200)
    links_before, _, _ = await _chain(pg_dsn)
    for i in range(200, 300):
        first_spool.write([to_row(_change(i))])  # journaled, never sent: the kill came first
    assert first._task is not None
    first._task.cancel()  # no close: as abrupt as asyncio gets
    with pytest.raises(asyncio.CancelledError):
        await first._task
    monkeypatch.undo()

    second = _writer(pg_dsn, Spool(spool_path))
    await second.close(deadline=30)
    assert second.stats.rows_replayed >= 300  # the 200 went out again (and were skipped by their keys)
    links, rows, problems = await _chain(pg_dsn)
    assert [link["seq"] for link in links] == list(range(1, len(links) + 1))  # no gap
    assert sum(link["rows"] for link in links) == rows == 300  # no row twice, no link without rows
    assert sum(link["rows"] for link in links[len(links_before) :]) == 100
    assert problems == []
    assert await _devices_in_time_order(pg_dsn) == [f"cam{i}" for i in range(300)]
    assert spool_path.stat().st_size == 0  # all committed: the journal is cut to nothing


async def test_the_journal_stays_small_while_postgres_keeps_up(pg_dsn: str, tmp_path: Path) -> None:
    """Rows arriving without a pause (so the queue is never empty at a commit): the committed head is still cut."""
    await migrate(pg_dsn)
    spool = Spool(tmp_path / "spool")
    writer = _writer(pg_dsn, spool)
    total, largest = 20_000, 0
    for i in range(0, total, 100):
        for j in range(i, i + 100):
            writer.submit(_change(j))
        largest = max(largest, spool.file_bytes)
        await asyncio.sleep(0.01)
    await writer.close(deadline=60)
    written = sum(len(encode(to_row(_change(i)))) for i in range(total))
    assert largest < 2 * COMPACT_BYTES < written  # cut as it goes, not only when idle
    assert (tmp_path / "spool").stat().st_size == 0 and writer.spool_bytes == 0
    assert writer.stats.rows_spooled == 0 and writer.rows_dropped == 0
    assert len(await _devices_in_time_order(pg_dsn)) == total
