"""The daemon's history against a real PostgreSQL 15: live writes, an outage, kill -9 with a spool, replay.

One school of loopback cameras probed by TCP every 200 ms:
1. running with PostgreSQL up, device state changes, schools and devices land at once;
2. PostgreSQL stopped, then a reload adds cameras and removes one: those changes spool;
3. the daemon killed with SIGKILL while the spool holds them;
4. PostgreSQL started, the daemon restarted: the spool is replayed, every event is there
   exactly once, the crash is recorded as a monitoring gap, and the hash chain verifies.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from telemetryd.history import migrate
from tests.daemon_process import DaemonProcess, metric
from tests.helpers import school, write_config
from tests.pg import PgServer

pytestmark = pytest.mark.integration

PASSWORD = "pg-secret-8c1f"  # trust auth ignores it; it must still never show up anywhere


def _cameras(port: int, numbers: range) -> list[dict[str, Any]]:
    return [
        {"id": f"s1-cam-{n}", "kind": "camera", "host": f"127.0.0.{n + 1}", "probes": [f"tcp:{port}"]} for n in numbers
    ]


def _config(tmp_path: Path, dsn: str, port: int, numbers: range) -> Path:
    credentials = tmp_path / "credentials"
    credentials.mkdir(exist_ok=True)
    (credentials / "pg-password").write_text(PASSWORD + "\n")
    return write_config(
        tmp_path,
        [school("s1", _cameras(port, numbers))],
        probes={"tcp": {"interval": "200ms", "timeout": "500ms"}},
        shutdown_timeout="3s",
        credentials_directory="credentials",
        history={
            "dsn": dsn,
            "credentials": "pg-password",
            "spool_directory": "spool",
            "batch_seconds": "200ms",
            "retry_seconds": "500ms",
            "heartbeat_interval": "1s",
        },
    )


async def _fetch(dsn: str, query: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


def _query(dsn: str, query: str, *args: object) -> list[asyncpg.Record]:
    return asyncio.run(_fetch(dsn, query, *args))


def _until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _device_changes(dsn: str) -> dict[str, list[str]]:
    rows = _query(dsn, "SELECT device, old, new FROM state_changes WHERE probe IS NULL ORDER BY time, device")
    out: dict[str, list[str]] = {}
    for row in rows:
        out.setdefault(row["device"], []).append(f"{row['old']}>{row['new']}")
    return out


def test_history_survives_an_outage_and_a_kill(tmp_path: Path, pg_server: PgServer, pg_dsn: str, listener: int) -> None:
    """History written live, spooled through an outage and a kill -9, replayed exactly once with the crash's gap."""
    asyncio.run(migrate(pg_dsn))
    config = _config(tmp_path, pg_dsn, listener, range(1, 4))
    spool = tmp_path / "spool" / "spool"
    daemon = DaemonProcess(config)
    restarted: DaemonProcess | None = None
    try:
        daemon.started()
        # 1. Live: each camera's first result is a device-level unknown -> up, written within a batch.
        _until(lambda: len(_device_changes(pg_dsn)) == 3, "three cameras' first changes in PostgreSQL")
        assert _device_changes(pg_dsn) == {f"s1-cam-{n}": ["unknown>up"] for n in range(1, 4)}
        _until(lambda: len(_query(pg_dsn, "SELECT id FROM devices")) == 3, "the devices table synced")
        metrics = daemon.scrape()
        assert metric(metrics, "telemetryd_history_db_up") == 1.0
        assert (metric(metrics, "telemetryd_history_rows_written_total") or 0) >= 6  # probe + device level
        assert metric(metrics, "telemetryd_history_rows_dropped_total") == 0.0

        # 2. PostgreSQL down; a reload removes cam-1 and adds cam-4 and cam-5.
        pg_server.stop()
        _until(lambda: metric(daemon.scrape(), "telemetryd_history_db_up") == 0.0, "the writer to notice")
        config = _config(tmp_path, pg_dsn, listener, range(2, 6))
        daemon.send_signal(signal.SIGHUP)
        daemon.wait_event("reloaded")
        # 3 device-level changes (cam-1 forgotten, cam-4 and cam-5 up) and 2 probe-level ones.
        _until(lambda: (metric(daemon.scrape(), "telemetryd_history_rows_spooled_total") or 0) >= 5, "spooling")
        assert spool.stat().st_size > 0

        # 3. kill -9 with the spool holding them.
        daemon.stop()
        killed_at = time.time()
        assert daemon.proc.returncode == -signal.SIGKILL
        assert spool.stat().st_size > 0

        # 4. PostgreSQL back, daemon restarted: replay, then live again.
        pg_server.start()
        restarted = DaemonProcess(config)
        restarted.started()
        _until(lambda: "s1-cam-5" in _device_changes(pg_dsn), "the spooled changes replayed")
        _until(lambda: bool(_query(pg_dsn, "SELECT 1 FROM monitoring_gaps")), "the crash's monitoring gap")
        _until(
            lambda: len(_device_changes(pg_dsn).get("s1-cam-4", [])) == 2,
            "the restarted daemon's own first result for cam-4",
        )
    finally:
        daemon.stop()
        if restarted is not None:
            restarted.stop()
        if pg_server.pid() is None:
            pg_server.start()

    changes = _device_changes(pg_dsn)
    # Exactly once each: the first run's, the spooled ones (forgotten cam-1, new cam-4/5), the second run's.
    assert changes["s1-cam-1"] == ["unknown>up", "up>unknown"]
    assert changes["s1-cam-4"] == ["unknown>up", "unknown>up"]
    assert changes["s1-cam-2"] == ["unknown>up", "unknown>up"]
    duplicates = _query(
        pg_dsn,
        "SELECT time, device, probe, count(*) FROM state_changes GROUP BY 1, 2, 3 HAVING count(*) > 1",
    )
    assert duplicates == []
    gap_rows = _query(pg_dsn, "SELECT * FROM monitoring_gaps")
    # The crash is a monitoring gap from the last heartbeat (at most 1 s before the kill) to the restart.
    assert len(gap_rows) == 1
    gap = gap_rows[0]
    assert gap["shard"] == "0/1" and "crash" in gap["reason"]
    assert killed_at - 2.5 <= gap["started_at"].timestamp() <= killed_at
    assert gap["ended_at"].timestamp() >= killed_at
    removed = _query(pg_dsn, "SELECT id FROM devices WHERE removed_at IS NOT NULL")
    assert [r["id"] for r in removed] == ["s1-cam-1"]
    last = _query(pg_dsn, "SELECT max(seq) AS seq FROM history_chain")[0]["seq"]
    assert _query(pg_dsn, "SELECT * FROM telemetryd_chain_verify(1, $1)", last) == []
    assert not spool.exists() or spool.stat().st_size == 0
    for record in daemon.records() + (restarted.records() if restarted else []):
        assert PASSWORD not in str(record)
