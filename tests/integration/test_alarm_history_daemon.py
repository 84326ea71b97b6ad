"""Alarm events through the running daemon: a DC-09 panel's alarm and restoral land in PostgreSQL, chained.

A simulated panel reports over TCP to the daemon's receiver; the daemon records each
event in `alarm_events` (once, though the panel resends one), counts it by class in
/metrics, and the hash chain the SLA report verifies covers those rows.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from telemetryd.history import migrate
from telemetryd.report.figures import month_period
from telemetryd.report.queries import chain_status
from telemetryd.sim.panels import PanelSpec, ReceiverPath, SimPanel
from tests.daemon_process import DaemonProcess, metric
from tests.helpers import school, write_config

pytestmark = pytest.mark.integration


def _config(tmp_path: Path, dsn: str) -> Path:
    panel: dict[str, Any] = {
        "id": "s1-alarm",
        "kind": "alarm_panel",
        "host": "127.0.0.1",
        "probes": ["icmp"],
        "sia": {"account": "4321AB", "interval": 1},
    }
    return write_config(
        tmp_path,
        [school("s1", [panel])],
        shutdown_timeout="3s",
        sia={"listen": "127.0.0.1:0", "grace": 2},
        history={"dsn": dsn, "spool_directory": "spool", "batch_seconds": "200ms", "retry_seconds": "500ms"},
    )


async def _rows(dsn: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(
            await conn.fetch(
                "SELECT school, device, account, code, zone, event_class, chain_seq FROM alarm_events ORDER BY time"
            )
        )
    finally:
        await conn.close()


async def _chain(dsn: str) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await chain_status(conn, month_period(time.strftime("%Y-%m", time.gmtime()), 0.0, now=time.time()))
    finally:
        await conn.close()


async def _report(port: int) -> list[str]:
    panel = SimPanel(PanelSpec("4321AB", (ReceiverPath("127.0.0.1", port, "tcp"),), interval=0.5))
    panel.start()
    try:
        outcomes = [await panel.send_event("BA", zone="07", text="Corridor 2")]
        outcomes.append(await panel.send_event("BR", zone="07"))
    finally:
        await panel.stop()
    return [str(outcome) for sent in outcomes for outcome in sent.values()]


def test_alarm_events_reach_postgresql_in_the_chain(tmp_path: Path, pg_dsn: str) -> None:
    """A burglary alarm and its restoral from a DC-09 panel are rows of alarm_events, counted, and chain-verified."""
    asyncio.run(migrate(pg_dsn))
    with DaemonProcess(_config(tmp_path, pg_dsn)) as daemon:
        port = int(daemon.wait_event("sia_receiver_listening")["port"])
        daemon.started()
        assert asyncio.run(_report(port)) == ["ack", "ack"]
        deadline = time.monotonic() + 15
        while len(rows := asyncio.run(_rows(pg_dsn))) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        text = daemon.scrape()
        assert daemon.terminate() == 0
    assert all(r["chain_seq"] is not None for r in rows), "every alarm event is sealed in a chain link"
    assert [tuple(r)[:6] for r in rows] == [
        ("s1", "s1-alarm", "4321AB", "BA", "07", "alarm"),
        ("s1", "s1-alarm", "4321AB", "BR", "07", "restoral"),
    ]
    assert metric(text, "telemetryd_alarm_events_total", **{"class": "alarm"}) == 1.0
    assert metric(text, "telemetryd_alarm_events_total", **{"class": "restoral"}) == 1.0
    assert (metric(text, "telemetryd_alarm_panel_events_total", device="s1-alarm") or 0) >= 2
    status = asyncio.run(_chain(pg_dsn))
    assert status.problems == ()
    assert status.links_verified >= 1
