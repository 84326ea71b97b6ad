"""kill -9 at random moments, 20 times: every state change the daemon logged is in PostgreSQL exactly once.

Four cameras flap: their TCP listeners are opened and closed by the test every 0.2-0.6 s,
so with a 100 ms probe and a hysteresis of one result the daemon decides a change every
few tenths of a second. The daemon is SIGKILLed 20 times — half of them within 50 ms of a
``device_down``/``device_recovered`` line (the finding: those changes sat in the writer's
in-memory batch), half at a random moment — and restarted each time on the same spool
directory. Then a last, undisturbed run replays what the kills left, and:

- every logged change is a row (same device, old and new state, time within 0.5 s): 0 lost;
- no row is there twice, and the hash chain has no gap, no empty link, rows that add up to
  the tables', and verifies: 0 duplicated;
- ``rows_dropped`` is 0, and the control device was never misjudged in the last run.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import select
import socket
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from telemetryd.history import migrate
from tests.daemon_process import DaemonProcess, metric
from tests.helpers import school, write_config
from tests.hostile.harness import (
    ControlDevice,
    Watch,
    assert_control_healthy,
    control_school,
    control_settings,
    wait_control_up,
)
from tests.pg import PgServer

pytestmark = [pytest.mark.hostile, pytest.mark.integration]

KILLS = 20
FLAPPERS = 4
CHANGE_EVENTS = ("device_down", "device_recovered")


class Flapper:
    """TCP listeners on 127.0.0.2-5 standing for cameras, each opened and closed on its own random schedule."""

    def __init__(self, count: int, seed: int) -> None:
        self._random = random.Random(seed)
        self.hosts = [f"127.0.0.{n + 2}" for n in range(count)]  # one address per camera (the loader insists)
        self._servers: list[socket.socket | None] = [socket.create_server((host, 0)) for host in self.hosts]
        self.ports = [s.getsockname()[1] for s in self._servers if s is not None]
        self._next = [time.monotonic() + self._random.uniform(0.2, 0.6) for _ in range(count)]
        self.flapping = threading.Event()
        self.flapping.set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flapper", daemon=True)

    def __enter__(self) -> Flapper:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for server in self._servers:
            if server is not None:
                server.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            for i, due in enumerate(self._next):
                if now < due:
                    continue
                self._next[i] = now + self._random.uniform(0.2, 0.6)
                server = self._servers[i]
                if server is not None:
                    if self.flapping.is_set():
                        server.close()  # refused from now on: a down camera
                        self._servers[i] = None
                else:
                    self._servers[i] = socket.create_server((self.hosts[i], self.ports[i]))
            live = [s for s in self._servers if s is not None]
            if not live:
                time.sleep(0.02)
                continue
            readable, _, _ = select.select(live, [], [], 0.02)
            for server in readable:
                with contextlib.suppress(OSError):
                    conn, _ = server.accept()
                    conn.close()


def _config(tmp_path: Path, dsn: str, flapper: Flapper, control: ControlDevice) -> Path:
    cameras = [
        {"id": f"flap-{n}", "kind": "camera", "host": host, "probes": [f"tcp:{port}"]}
        for n, (host, port) in enumerate(zip(flapper.hosts, flapper.ports, strict=True))
    ]
    settings = control_settings(
        probes={"tcp": {"interval": "100ms", "timeout": "300ms"}},
        hysteresis={"down_after": 1, "up_after": 1},
        history={"dsn": dsn, "spool_directory": "spool", "retry_seconds": "500ms", "heartbeat_interval": "1s"},
    )
    return write_config(tmp_path, [control_school(control), school("flap", cameras)], **settings)


def _logged_changes(records: list[dict[str, Any]]) -> list[tuple[str, str, str, float]]:
    """(device, old, new, logged at) of each device_down / device_recovered line of the flapping cameras."""
    out = []
    for r in records:
        if r.get("event") not in CHANGE_EVENTS or not str(r.get("device", "")).startswith("flap-"):
            continue
        at = datetime.fromisoformat(str(r["timestamp"]).replace("Z", "+00:00")).timestamp()
        old, new = (str(r["was"]), "down") if r["event"] == "device_down" else ("down", "up")
        out.append((str(r["device"]), old, new, at))
    return out


def _changes_since(daemon: DaemonProcess, cursor: int) -> int:
    return len(_logged_changes(daemon.records()[cursor:]))


def _kill_soon_after_a_change(daemon: DaemonProcess, rng: random.Random) -> None:
    """Wait for the next logged change, then kill -9 within 50 ms of it."""
    cursor = len(daemon.records())
    deadline = time.monotonic() + 5
    while _changes_since(daemon, cursor) == 0 and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(rng.uniform(0, 0.05))
    daemon.stop()


async def _rows(dsn: str) -> tuple[list[asyncpg.Record], list[asyncpg.Record], int, list[asyncpg.Record]]:
    conn = await asyncpg.connect(dsn)
    try:
        changes = list(
            await conn.fetch(
                "SELECT device, old, new, time FROM state_changes "
                "WHERE probe IS NULL AND device LIKE 'flap-%' ORDER BY time"
            )
        )
        links = list(await conn.fetch("SELECT seq, rows FROM history_chain ORDER BY seq"))
        total = 0
        for table in ("state_changes", "speedtests", "link_samples", "monitoring_gaps", "alarm_events"):
            total += await conn.fetchval(f"SELECT count(*) FROM {table}")
        last = links[-1]["seq"] if links else 0
        problems = list(await conn.fetch("SELECT * FROM telemetryd_chain_verify(1, $1)", last))
        return changes, links, total, problems
    finally:
        await conn.close()


def _lost(logged: list[tuple[str, str, str, float]], rows: list[asyncpg.Record]) -> list[tuple[str, str, str, float]]:
    """Logged changes with no row of their own (each row matches at most one logged change)."""
    unused: dict[str, list[tuple[str, str, float]]] = {}
    for row in rows:
        unused.setdefault(row["device"], []).append((row["old"], row["new"], row["time"].timestamp()))
    lost = []
    for device, old, new, at in logged:
        candidates = unused.get(device, [])
        match = next((c for c in candidates if c[:2] == (old, new) and abs(c[2] - at) < 0.5), None)
        if match is None:
            lost.append((device, old, new, at))
        else:
            candidates.remove(match)
    return lost


def test_kill9_at_random_moments_loses_and_duplicates_nothing(tmp_path: Path, pg_server: PgServer, pg_dsn: str) -> None:
    """20 SIGKILLs of a daemon whose cameras flap: 0 logged changes lost, 0 rows duplicated, the chain intact."""
    asyncio.run(migrate(pg_dsn))
    rng = random.Random(13)
    logged: list[tuple[str, str, str, float]] = []
    with ControlDevice() as control, Flapper(FLAPPERS, seed=13) as flapper:
        config = _config(tmp_path, pg_dsn, flapper, control)
        started = time.monotonic()
        for kill in range(KILLS):
            with DaemonProcess(config, tee=tmp_path / "daemon.log") as daemon:
                daemon.started()
                if kill % 2 == 0:
                    _kill_soon_after_a_change(daemon, rng)
                else:
                    time.sleep(rng.uniform(0.05, 0.8))
                    daemon.stop()
                assert daemon.proc.returncode == -9, daemon.output()
                logged += _logged_changes(daemon.records())
        killing = time.monotonic() - started
        flapper.flapping.clear()  # the cameras come up and stay up: the last run is undisturbed

        with DaemonProcess(config, tee=tmp_path / "daemon.log") as daemon:
            daemon.started()
            wait_control_up(daemon)
            with Watch(daemon) as watch:
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:
                    rows = asyncio.run(_rows(pg_dsn))[0]
                    if not _lost(logged, rows):
                        break
                    time.sleep(0.2)
                time.sleep(1.0)
            assert_control_healthy(daemon, control, watch)
            metrics = daemon.scrape()
            assert metric(metrics, "telemetryd_history_rows_dropped_total") == 0.0
            assert metric(metrics, "telemetryd_history_spool_bytes") == 0.0
            daemon.terminate()
            logged += _logged_changes(daemon.records())

    rows, links, total, problems = asyncio.run(_rows(pg_dsn))
    assert len(logged) >= KILLS, f"too few changes to judge: {len(logged)} in {killing:.0f} s"
    lost = _lost(logged, rows)
    assert not lost, f"{len(lost)} of {len(logged)} logged changes lost: {lost[:5]}"
    seen = [(r["device"], r["time"]) for r in rows]
    assert len(seen) == len(set(seen)), "a state change is in PostgreSQL twice"
    assert [link["seq"] for link in links] == list(range(1, len(links) + 1)), "a gap in the hash chain"
    assert all(link["rows"] > 0 for link in links), "a chain link without rows"
    assert sum(link["rows"] for link in links) == total, "rows outside the chain, or counted twice"
    assert problems == []
    print(f"kill9: {KILLS} kills in {killing:.0f} s, {len(logged)} logged changes, 0 lost, {len(rows)} rows")
