"""The writer with no reachable PostgreSQL: everything spools, and a full spool is logged, not silent."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from structlog.testing import capture_logs

from telemetryd.history import HistoryWriter, Spool
from telemetryd.model import DeviceKind, Health, StateChange

DEAD_DSN = "postgresql://postgres@127.0.0.1:1/postgres"


def _change(i: int) -> StateChange:
    return StateChange(1_700_000_000.0 + i, "s1", f"cam{i}", DeviceKind.CAMERA, None, Health.UP, Health.DOWN, "timeout")


async def test_full_spool_is_logged_once_and_counted(tmp_path: Path) -> None:
    """With the DB down, 1000 changes into a 16 KiB spool are spooled or dropped, and spool-full is logged once."""
    spool = Spool(tmp_path / "spool", max_bytes=16 * 1024)
    writer = HistoryWriter(DEAD_DSN, spool, batch_seconds=0.01, retry_seconds=60, connect_timeout=0.5)
    with capture_logs() as logs:
        writer.start()
        for i in range(1000):
            writer.submit(_change(i))
        await writer.close(deadline=10)
    assert not writer.stats.db_up
    assert writer.rows_dropped > 0
    assert writer.stats.rows_spooled + writer.rows_dropped == 1000
    full = [e for e in logs if e["event"] == "history_spool_full"]
    assert len(full) == 1  # at most once a minute, however many batches overflowed
    assert full[0]["log_level"] == "error" and full[0]["rows_dropped"] > 0
    assert full[0]["max_bytes"] == 16 * 1024


async def test_unreachable_from_the_start_is_logged_once_not_per_retry(tmp_path: Path) -> None:
    """A DB refused from the start is retried 3+ times but history_db_down is logged once, with the error."""
    writer = HistoryWriter(DEAD_DSN, Spool(tmp_path / "spool"), batch_seconds=0.01, retry_seconds=0.02)
    with capture_logs() as logs:
        writer.start()
        await asyncio.sleep(0.5)
        await writer.close(deadline=5)
    assert writer.stats.write_failures >= 3  # it kept retrying
    down = [e for e in logs if e["event"] == "history_db_down"]
    assert len(down) == 1
    assert down[0]["action"] == "spooling to disk" and "ConnectionRefusedError" in down[0]["error"]


class _BrokenConnection:
    """Stands in for an asyncpg connection that is up but whose writes fail: what a mid-COMMIT outage looks like."""

    def __init__(self) -> None:
        self.terminated = False

    def is_closed(self) -> bool:
        return False

    def terminate(self) -> None:
        self.terminated = True


@pytest.mark.parametrize(
    ("failure", "logged"),
    [(asyncpg.InternalClientError("cannot switch to state 15"), []), (RuntimeError("a bug"), ["history_writer_error"])],
    ids=["server-stopped-mid-commit", "writer-bug"],
)
async def test_a_broken_connection_or_a_writer_bug_spools_and_keeps_the_writer_alive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: Exception, logged: list[str]
) -> None:
    """asyncpg's InternalClientError (a server stopping mid-COMMIT) and an unexpected bug both end in the spool."""
    writer = HistoryWriter(DEAD_DSN, Spool(tmp_path / "spool"), batch_seconds=0.01, retry_seconds=60)
    connection = _BrokenConnection()

    async def connect_once() -> None:
        if writer._conn is None and not writer.stats.write_failures:
            writer._conn = connection  # type: ignore[assignment]

    async def failing_write(rows: list[Any]) -> None:
        raise failure

    monkeypatch.setattr(writer, "_recover", connect_once)
    monkeypatch.setattr(writer, "_write", failing_write)
    with capture_logs() as logs:
        writer.start()
        writer.submit(_change(1))
        await asyncio.sleep(0.2)
        assert writer._task is not None and not writer._task.done()  # still draining
        writer.submit(_change(2))
        await writer.close(deadline=5)
    assert writer.stats.rows_spooled == 2 and writer.spool_bytes > 0
    assert writer.stats.write_failures == 1 and connection.terminated
    assert [e["event"] for e in logs if e["event"] == "history_writer_error"] == logged


async def test_rows_queued_when_a_collect_comes_back_empty_at_close_are_still_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close() just as a collect timed out: the queued rows go to PostgreSQL, not to the spool."""
    writer = HistoryWriter(DEAD_DSN, Spool(tmp_path / "spool"), batch_seconds=0.01, retry_seconds=60)
    written: list[Any] = []
    collect = writer._collect
    raced = False

    async def connect() -> None:
        if writer._conn is None:
            writer._conn = _BrokenConnection()  # type: ignore[assignment]

    async def write(rows: list[Any]) -> None:
        written.extend(rows)

    async def collect_racing_close() -> list[Any]:
        nonlocal raced
        if not raced:
            while not writer._closing:  # noqa: ASYNC110 - close() sets a plain flag, no event to wait on
                await asyncio.sleep(0.001)
            raced = True
            return []  # what wait_for's timeout firing just as the rows arrive looks like
        return await collect()

    monkeypatch.setattr(writer, "_recover", connect)
    monkeypatch.setattr(writer, "_write", write)
    monkeypatch.setattr(writer, "_collect", collect_racing_close)
    writer.start()
    await asyncio.sleep(0.05)
    for i in range(35):
        writer.submit(_change(i))
    await writer.close(deadline=5)
    assert raced
    assert len(written) == 35
    assert writer.stats.rows_spooled == 0 and writer.spool_bytes == 0


def test_a_submitted_row_is_in_the_journal_before_submit_returns(tmp_path: Path) -> None:
    """No writer task, no fsync, no close: what another process opening the spool finds right after submit."""
    writer = HistoryWriter(DEAD_DSN, Spool(tmp_path / "spool"))  # never started: only submit runs
    writer.submit(_change(1))
    writer.submit_many([_change(2), _change(3)])
    found = Spool(tmp_path / "spool")  # what the next start sees after a kill -9 here
    assert [e.record["v"][2] for e in found.replay()] == ["cam1", "cam2", "cam3"]
    assert writer.queue_depth == 3 and writer.spool_bytes == 0  # in memory too: not yet spool


async def test_queue_overflow_is_spooled_once_and_replayed_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full queue leaves rows in the journal only; they and the rows queued before them go out once, in order."""
    writer = HistoryWriter(DEAD_DSN, Spool(tmp_path / "spool"), queue_size=10, batch_seconds=0.01, retry_seconds=60)
    written: list[str] = []

    async def connect() -> None:
        if writer._conn is None:
            writer._conn = _BrokenConnection()  # type: ignore[assignment]
        if writer.spool_bytes:
            await writer._replay()

    async def write(rows: list[Any]) -> None:
        written.extend(row["v"][2] for row in rows)

    monkeypatch.setattr(writer, "_recover", connect)
    monkeypatch.setattr(writer, "_write", write)
    for i in range(25):  # before the task runs: 10 queued, 15 overflow
        writer.submit(_change(i))
    assert writer.spool_bytes > 0 and writer.rows_dropped == 0
    writer.start()
    await asyncio.sleep(0.1)
    for i in range(25, 30):  # live again
        writer.submit(_change(i))
    await writer.close(deadline=5)
    assert written == [f"cam{i}" for i in range(30)]
    assert writer.stats.rows_replayed == 25 and writer.spool_bytes == 0
    assert (tmp_path / "spool").stat().st_size == 0  # everything committed: the journal is empty


async def test_a_disk_that_refuses_writes_holds_rows_in_memory_and_counts_what_it_loses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC on the journal: logged once, rows kept in memory; with PostgreSQL down too they are dropped, counted."""
    spool = Spool(tmp_path / "spool")
    writer = HistoryWriter(DEAD_DSN, spool, batch_seconds=0.01, retry_seconds=60, connect_timeout=0.5)

    def full(records: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool, "write", full)
    with capture_logs() as logs:
        writer.start()
        for i in range(20):
            writer.submit(_change(i))
        assert writer.queue_depth == 20
        await writer.close(deadline=10)
    assert writer.rows_dropped == 20 and writer.stats.rows_spooled == 0
    failed = [e for e in logs if e["event"] == "history_journal_write_failed"]
    assert len(failed) == 1 and "No space" in failed[0]["error"]
    assert [e["event"] for e in logs].count("history_spool_full") == 1
