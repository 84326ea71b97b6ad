"""End to end: an event raised on a simulated camera shows in the running daemon's /metrics within seconds."""

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
TAMPERED = 'telemetryd_camera_event_active{channel="1",device="s1-cam",event="tampering",school="s1"}'
VIDEO_LOSS = 'telemetryd_camera_event_active{channel="2",device="s1-cam",event="video_loss",school="s1"}'


async def _within(seconds: float, daemon: DaemonProcess, needle: str) -> float:
    """How long until `needle` is in /metrics; fails after `seconds`."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if needle in await asyncio.to_thread(daemon.scrape, "/metrics", 10):
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    raise AssertionError(f"not in /metrics within {seconds}s: {needle}")


async def test_events_reach_metrics_in_seconds_resolve_and_survive_a_dropped_stream(tmp_path: Path) -> None:
    """Tampering is 1 within 5 s and 0 within 5 s of its end; a dropped stream reconnects; checks run rarely."""
    async with HikvisionSim() as sim:
        camera = SimDevice(kind="camera", password=PASSWORD)
        host, port = await sim.add(camera, "127.0.0.1")
        (tmp_path / "credentials").mkdir()
        (tmp_path / "credentials" / "hik").write_text(f"admin:{PASSWORD}\n")
        device = {"id": "s1-cam", "kind": "camera", "host": host, "credentials": "hik", "probes": [f"isapi:{port}"]}
        config = write_config(
            tmp_path,
            [school("s1", [device])],
            credentials_directory="credentials",
            state_directory="state",
            # Checks every 5 minutes: whatever shows in seconds came over the event stream.
            probes={"isapi": {"interval": "5m", "timeout": 5, "event_hold": 3}},
        )
        with DaemonProcess(config) as daemon:
            await asyncio.to_thread(daemon.started)
            await _within(10, daemon, 'telemetryd_isapi_event_streams{state="open"} 1.0')
            camera.raise_event("shelteralarm", 1)
            assert await _within(5, daemon, TAMPERED + " 1.0") < 5
            camera.clear_event("shelteralarm", 1)
            assert await _within(5, daemon, TAMPERED + " 0.0") < 5
            camera.drop_streams()
            await _within(15, daemon, "telemetryd_isapi_stream_reconnects_total 1.0")
            await _within(10, daemon, 'telemetryd_isapi_event_streams{state="open"} 1.0')
            camera.raise_event("videoloss", 2)
            await _within(5, daemon, VIDEO_LOSS + " 1.0")
            camera.clear_event("videoloss", 2)  # its inactive is a heartbeat: it ends when the repeats stop
            await _within(8, daemon, VIDEO_LOSS + " 0.0")
            await asyncio.to_thread(daemon.terminate, 20)
        events = [r for r in daemon.records() if r["event"] == "camera_event"]
        assert [(r["alert"], r["active"]) for r in events] == [
            ("tampering", True),
            ("tampering", False),
            ("video_loss", True),
            ("video_loss", False),
        ]
        assert camera.failed_logins == 0
