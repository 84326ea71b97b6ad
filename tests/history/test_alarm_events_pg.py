"""Alarm events in a real PostgreSQL 15: migration 0003, exactly-once writes and the hash chain."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from telemetryd.alarm import dc09
from telemetryd.alarm.dc09 import AccountKey, PanelEvent
from telemetryd.alarm.receiver import Reception, SiaReceiver
from telemetryd.alarm.supervision import SupervisedPanel, Supervision, panel_devices
from telemetryd.config.settings import HistorySettings, Settings
from telemetryd.history import AlarmEventRecord, HistoryWriter, Spool, check, migrate
from telemetryd.history.migrate import available
from telemetryd.history.recorder import History
from telemetryd.history.records import TABLES
from telemetryd.model import Contract, Device, DeviceKind, Health, Inventory, ProbeSpec, School, SiaAccount, StateChange
from telemetryd.report.figures import month_period
from telemetryd.report.queries import chain_status

pytestmark = pytest.mark.integration

BASE = datetime(2026, 2, 10, 8, 30, tzinfo=UTC).timestamp()
PANEL = AccountKey("", "0", "1001")
DEAD_DSN = "postgresql://postgres@127.0.0.1:1/postgres"
FEBRUARY = month_period("2026-02", 0.0, now=2_000_000_000.0)


def _alarm(i: int, code: str = "BA") -> AlarmEventRecord:
    return AlarmEventRecord(
        BASE + i * 60.0,
        PANEL,
        "SIA-DCS",
        f"{i % 10_000:04d}",
        PanelEvent(code, zone=f"{i % 100:02d}", partition="1"),
        school_id="s1",
        device_id="s1-panel",
        panel_time=BASE + i * 60.0 - 1,
        transport="tcp",
        peer="127.0.0.1:4000",
    )


def _writer(dsn: str, spool: Spool, **kwargs: float) -> HistoryWriter:
    options: dict[str, float] = {"batch_seconds": 0.05, "retry_seconds": 0.2, "connect_timeout": 1.0, **kwargs}
    writer = HistoryWriter(dsn, spool, **options)  # type: ignore[arg-type]
    writer.start()
    return writer


async def _wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - polls writer stats, which have no event to wait on
            await asyncio.sleep(0.02)


async def _fetch(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


def _inventory() -> Inventory:
    panel = Device("s1-panel", "s1", DeviceKind.ALARM_PANEL, "", (ProbeSpec("sia"),), sia=SiaAccount("1001"))
    return Inventory.build([School("s1", "School 1", "Al-Farabi", Contract(100.0), (panel,))])


async def test_migrate_from_empty_applies_0003(pg_dsn: str) -> None:
    """From empty, 0003 is applied last; alarm_events is month-partitioned with exactly the writer's columns."""
    assert (await check(pg_dsn))[-1] == "0003_alarm_events"
    assert await migrate(pg_dsn) == [v for v, _ in available()]
    assert await check(pg_dsn) == []
    [table] = await _fetch(pg_dsn, "SELECT relkind::text FROM pg_class WHERE relname = 'alarm_events'")
    assert table["relkind"] == "p"
    columns = await _fetch(
        pg_dsn,
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_name = 'alarm_events' ORDER BY ordinal_position",
    )
    assert [c["column_name"] for c in columns] == [*TABLES["alarm_events"].columns, "chain_seq"]
    [parts] = await _fetch(pg_dsn, "SELECT count(*) FROM pg_inherits WHERE inhparent = 'alarm_events'::regclass")
    assert parts["count"] >= 4  # last month .. two ahead
    await _fetch(pg_dsn, "SELECT telemetryd_ensure_partitions('2020-01-05', '2020-02-05')")
    made = await _fetch(
        pg_dsn,
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'alarm_events'::regclass AND c.relname LIKE 'alarm_events_2020_%' ORDER BY 1",
    )
    assert [r["relname"] for r in made] == ["alarm_events_2020_01", "alarm_events_2020_02"]


async def test_receiver_to_postgres_stores_a_resent_frame_once(pg_dsn: str, tmp_path: Path) -> None:
    """Receiver → History → writer: an alarm sent three times (TCP twice, then UDP) is one row; a stranger's is kept."""
    await migrate(pg_dsn)
    inventory = _inventory()
    settings = Settings(
        history=HistorySettings(dsn=pg_dsn, spool_directory=str(tmp_path / "history"), batch_seconds=0.05)
    )
    history = History(settings, None)
    history.start(inventory)
    devices = panel_devices(inventory)

    def on_reception(reception: Reception) -> None:
        history.record_reception(reception, devices.get(reception.key) if reception.key else None)

    loop = asyncio.get_running_loop()
    sup = Supervision([SupervisedPanel(PANEL, 60.0)], started_at=loop.time())
    stamp = datetime.now(UTC)
    alarm = dc09.build_sia_event(11, PanelEvent("FA", zone="04", partition="1"), prefix="0", account="1001", at=stamp)
    stranger = dc09.build_sia_event(1, PanelEvent("PA", zone="01"), prefix="0", account="BEEF", at=None)
    try:
        async with SiaReceiver(sup, clock=loop.time, on_reception=on_reception) as rcv:
            await rcv.start("127.0.0.1", 0)
            reader, writer = await asyncio.open_connection("127.0.0.1", rcv.port)
            try:
                writer.write(alarm + alarm + dc09.build_null(12, prefix="0", account="1001", at=None) + stranger)
                replies = [await asyncio.wait_for(reader.readuntil(b"\r"), 2.0) for _ in range(4)]
            finally:
                writer.close()
            udp, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, remote_addr=("127.0.0.1", rcv.port))
            udp.sendto(alarm)
            await _wait_for(lambda: sum(rcv.counts.repeats.values()) == 2)
            udp.close()
    finally:
        await history.close(10.0)
    assert [dc09.parse_frame(r).message_type for r in replies] == ["ACK"] * 4
    assert rcv.counts.events == {"alarm": 2}
    assert history.writer is not None and history.writer.stats.rows_written == 4  # three copies + the stranger's
    found = await _fetch(
        pg_dsn,
        "SELECT account, code, zone, school, device, event_class, transport, panel_time, chain_seq "
        "FROM alarm_events ORDER BY account",
    )
    assert [(r["account"], r["code"], r["school"], r["device"], r["event_class"]) for r in found] == [
        ("1001", "FA", "s1", "s1-panel", "alarm"),
        ("BEEF", "PA", None, None, "alarm"),
    ]
    assert found[0]["transport"] == "tcp"  # the first copy's row won
    assert found[0]["panel_time"] == stamp.replace(microsecond=0)
    assert all(r["chain_seq"] is not None for r in found)


async def test_spool_replay_and_duplicates_store_each_event_once(pg_dsn: str, tmp_path: Path) -> None:
    """Alarm events spooled while PostgreSQL is down (each twice) and resubmitted live land exactly once."""
    await migrate(pg_dsn)
    events = [_alarm(i, code) for i in range(300) for code in ("BA", "BR")]
    down = _writer(DEAD_DSN, Spool(tmp_path / "spool"), retry_seconds=60)
    for event in events + events:
        down.submit(event)
    await down.close(deadline=30)
    assert down.stats.rows_spooled == 2 * len(events)
    up = _writer(pg_dsn, Spool(tmp_path / "spool"))
    for event in events[:100]:
        up.submit(event)  # the live copies of what the spool also holds
    await up.close(deadline=30)
    assert up.stats.rows_replayed == 2 * len(events)
    assert up.spool_bytes == 0
    [count] = await _fetch(pg_dsn, "SELECT count(*), count(DISTINCT key) AS keys FROM alarm_events")
    assert (count["count"], count["keys"]) == (len(events), len(events))
    again = _writer(pg_dsn, Spool(tmp_path / "spool"))
    for event in events:
        again.submit(event)
    await again.close(deadline=30)
    assert again.stats.chain_links == 0  # pure duplicates add no link
    [count] = await _fetch(pg_dsn, "SELECT count(*) FROM alarm_events")
    assert count["count"] == len(events)


async def test_chain_with_alarm_events_verifies_as_the_report_does(pg_dsn: str, tmp_path: Path) -> None:
    """The report's chain check passes with alarm events in mixed and alarm-only links, and catches tampering."""
    await migrate(pg_dsn)
    writer = _writer(pg_dsn, Spool(tmp_path / "spool"))
    for i in range(50):
        writer.submit(_alarm(i))
        writer.submit(
            StateChange(BASE + i, "s1", f"cam{i}", DeviceKind.CAMERA, None, Health.UP, Health.DOWN, "timeout")
        )
    await _wait_for(lambda: writer.stats.rows_written >= 100)
    for i in range(50, 80):
        writer.submit(_alarm(i, "YT"))  # an alarm-only link
    await writer.close(deadline=30)
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM alarm_events WHERE chain_seq IS NULL") == 0
        alarm_only = await conn.fetchval("SELECT max(chain_seq) FROM alarm_events WHERE code = 'YT'")
        assert await conn.fetchval("SELECT count(*) FROM state_changes WHERE chain_seq = $1", alarm_only) == 0
        status = await chain_status(conn, FEBRUARY)
        assert status.problems == ()
        assert status.links_verified == writer.stats.chain_links >= 2
        assert status.last_seq == alarm_only

        edited = await conn.fetchval(
            "UPDATE alarm_events SET event_class = 'test' WHERE sequence = '0007' RETURNING chain_seq"
        )
        await conn.execute("DELETE FROM alarm_events WHERE chain_seq = $1", alarm_only)  # all of an alarm-only link
        await conn.execute(
            "INSERT INTO alarm_events (time, prefix, account, token, sequence, event_index, code, event_class, "
            "transport, key) VALUES ('2026-02-11 10:00+00', '0', '1001', 'SIA-DCS', '0999', 0, 'BA', 'alarm', "
            "'tcp', gen_random_uuid())"
        )
        tampered = await chain_status(conn, FEBRUARY)
        # Emptying a link of its alarm events drops its alarm section from the digest: that shows too.
        broken = {r["seq"] for r in await conn.fetch("SELECT seq FROM telemetryd_chain_verify(1, $1)", alarm_only)}
    finally:
        await conn.close()
    assert tampered.problems[0] == "1 alarm_events row(s) of the period are outside the chain (chain_seq is NULL)"
    assert f"link {edited}: rows changed since they were sealed" in tampered.problems
    assert broken == {edited, alarm_only}


async def test_links_sealed_before_0003_keep_their_digest(pg_dsn: str, tmp_path: Path) -> None:
    """A chain sealed under 0002 still verifies after 0003 replaced the digest function, and grows with alarm events."""
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(
            "CREATE TABLE schema_migrations (version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, sql in available()[:2]:
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
        await conn.execute("SELECT telemetryd_ensure_partition('state_changes', to_timestamp($1))", BASE)
        await conn.execute(
            "INSERT INTO state_changes (time, school, device, kind, old, new, key, chain_seq) "
            "VALUES (to_timestamp($1), 's1', 'cam1', 'camera', 'up', 'down', gen_random_uuid(), 1)",
            BASE,
        )
        await conn.execute(
            "INSERT INTO monitoring_gaps (started_at, ended_at, key, chain_seq) "
            "VALUES (to_timestamp($1), to_timestamp($1 + 60), gen_random_uuid(), 1)",
            BASE,
        )
        sealed = await conn.fetchval("SELECT telemetryd_chain_seal(1, 2)")
        old_digest = await conn.fetchval("SELECT digest FROM history_chain WHERE seq = 1")
        assert await migrate(pg_dsn) == ["0003_alarm_events"]
        assert await conn.fetchval("SELECT telemetryd_chain_digest(1)") == old_digest
        assert await conn.fetch("SELECT * FROM telemetryd_chain_verify(1, 1)") == []
        writer = _writer(pg_dsn, Spool(tmp_path / "spool"))
        writer.submit(_alarm(1))
        await writer.close(deadline=30)
        assert await conn.fetchval("SELECT chain_seq FROM alarm_events") == 2
        assert await conn.fetch("SELECT * FROM telemetryd_chain_verify(1, 2)") == []
        head = await conn.fetchval("SELECT head FROM history_chain WHERE seq = 2")
        assert head != sealed
    finally:
        await conn.close()
