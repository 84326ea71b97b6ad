"""Across a real restart of the daemon: a camera whose password is wrong is not sent it again."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from telemetryd.sim.hikvision import HikvisionSim, SimDevice

from ..daemon_process import DaemonProcess
from ..helpers import school, write_config

pytestmark = pytest.mark.integration

PASSWORD = "Sch00l-cam-Pa55"


async def _until(what: str, daemon: DaemonProcess, needle: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in await asyncio.to_thread(daemon.scrape, "/metrics", 10):
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_restart_costs_no_further_failed_login(tmp_path: Path) -> None:
    """Two daemon runs on one state directory: the wrong password reaches the camera once in all."""
    async with HikvisionSim() as sim:
        good = SimDevice(kind="camera", password=PASSWORD)
        wrong = SimDevice(kind="camera", password="changed-on-the-device")
        good_at = await sim.add(good, "127.0.0.1")
        wrong_at = await sim.add(wrong, "127.0.0.2")
        (tmp_path / "credentials").mkdir()
        (tmp_path / "credentials" / "hik").write_text(f"admin:{PASSWORD}\n")
        devices = [
            {"id": f"s1-{name}", "kind": "camera", "host": host, "credentials": "hik", "probes": [f"isapi:{port}"]}
            for name, (host, port) in (("cam-good", good_at), ("cam-wrong", wrong_at))
        ]
        config = write_config(
            tmp_path,
            [school("s1", devices)],
            credentials_directory="credentials",
            state_directory="state",
            probes={"isapi": {"interval": 0.5, "timeout": 5}},
            hysteresis={"down_after": 1, "up_after": 1},
        )
        rejected = 'telemetryd_isapi_auth_ok{device="s1-cam-wrong",kind="camera",school="s1"} 0.0'
        accepted = 'telemetryd_isapi_auth_ok{device="s1-cam-good",kind="camera",school="s1"} 1.0'
        for run in range(2):
            with DaemonProcess(config) as daemon:
                await asyncio.to_thread(daemon.started)
                await _until(f"run {run}: the rejection in /metrics", daemon, rejected)
                checks = good.authenticated
                await _until(f"run {run}: the good camera checked", daemon, accepted)
                while good.authenticated < checks + 9:  # noqa: ASYNC110 - a sim counter: no event to await
                    await asyncio.sleep(0.2)  # three more checks of each camera at least
                await asyncio.to_thread(daemon.terminate, 20)
            assert wrong.failed_logins == 1, f"run {run}"
            records = daemon.records()
            assert not [r for r in records if r["event"] == "isapi_memory_volatile"]
            # The first run met the rejection; the second knew it from disk and never sent the digest.
            assert len([r for r in records if r["event"] == "isapi_auth_failed"]) == (1 if run == 0 else 0)
    state = tmp_path / "state"
    assert (state / "isapi-logins.json").stat().st_mode & 0o077 == 0
    assert PASSWORD.encode() not in (state / "isapi-logins.json").read_bytes()
