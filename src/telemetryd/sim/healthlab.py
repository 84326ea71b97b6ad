"""A school of simulated Hikvision devices and alarm panels with one fault each, for the demo.

`HealthLab` runs in a background thread with its own event loop: a `HikvisionSim`
serving cameras, an NVR and an AX PRO panel on 127.77.0.x, and DC-09 panels reporting
to the daemon's SIA receiver. It writes ``<inventory>/health-lab.yaml`` and the
credentials the daemon needs. What each device shows (the truth) is in `FAULTS`.
Loopback only; no root needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from pathlib import Path
from typing import Any

import yaml

from telemetryd.sim.hikvision import HikvisionSim, SimDevice
from telemetryd.sim.panels import PanelSpec, ReceiverPath, SimPanel
from telemetryd.sim.rtsp import RtspCamera, RtspResponder

SCHOOL = "shy-health-lab"
PASSWORD = "Demo-Hik-2026"
DEAD_CAMERA = "127.77.0.99"
SILENT_AFTER = 60.0
"""Seconds after start when one panel stops its heartbeats (a cut line)."""
ALARM_AT, RESTORAL_AT = 30.0, 45.0
"""Seconds after start when panel 1 reports a burglary alarm on zone 3, and its restoral."""
TEST_REPORT_EVERY = 300.0
"""Panel 1's automatic test report (SIA RP), as real panels send one a day."""

FAULTS: dict[str, str] = {
    f"{SCHOOL}-cam-ok": "healthy, recorded on NVR channel 1",
    f"{SCHOOL}-cam-password": "password changed on the camera: auth_failed after exactly one try",
    f"{SCHOOL}-cam-clock": "clock 5 minutes fast, set by hand: clock_drift",
    f"{SCHOOL}-cam-offline": "NVR channel 2 lost it (netUnreachable): verdict not_recorded",
    f"{SCHOOL}-cam-idle": "NVR channel 3 has no recent footage: verdict not_recorded",
    f"{SCHOOL}-cam-dead": "nothing answers (RTSP and ISAPI refused): verdict camera_down",
    f"{SCHOOL}-nvr": "disk error, channel 2 offline, channel 3 not recording",
    f"{SCHOOL}-axpro": "AX PRO with zone 2 offline",
    f"{SCHOOL}-panel-1": (
        f"DC-09 heartbeats every 10 s; burglary alarm on zone 3 at {ALARM_AT:.0f} s, restored at {RESTORAL_AT:.0f} s,"
        f" a test report every {TEST_REPORT_EVERY:.0f} s: rows in alarm_events"
    ),
    f"{SCHOOL}-panel-2": f"DC-09 heartbeats, silent after {SILENT_AFTER:.0f} s: supervision_lost",
}


class HealthLab:
    """Start with `start(sia_port)`, stop with `stop()`; `FAULTS` says what to expect."""

    def __init__(self, inventory_dir: Path, credentials_dir: Path) -> None:
        self.inventory_dir = inventory_dir
        self.credentials_dir = credentials_dir
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self, sia_port: int) -> HealthLab:
        """Serve the devices and write the inventory; returns once they listen."""
        self._thread = threading.Thread(target=self._run, args=(sia_port,), name="health-lab", daemon=True)
        self._thread.start()
        if not self._ready.wait(20):
            raise RuntimeError("the simulated Hikvision devices did not start")
        if self._error is not None:
            raise RuntimeError(f"the simulated Hikvision devices failed: {self._error}")
        return self

    def stop(self) -> None:
        """Stop the devices and panels (safe to repeat)."""
        if self._loop is not None and self._stop is not None and self._thread is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)
        (self.inventory_dir / "health-lab.yaml").unlink(missing_ok=True)

    def _run(self, sia_port: int) -> None:
        try:
            asyncio.run(self._main(sia_port))
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()

    async def _main(self, sia_port: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        nvr = SimDevice(kind="nvr", password=PASSWORD, channels=4, offline_channels={2: "netUnreachable"})
        nvr.disk_status = "error"
        nvr.idle_channels = {3}
        devices: list[tuple[str, SimDevice, dict[str, Any]]] = [
            ("cam-ok", SimDevice(kind="camera", password=PASSWORD), {"nvr": {"device": f"{SCHOOL}-nvr", "channel": 1}}),
            ("cam-password", SimDevice(kind="camera", password="changed-by-installer"), {}),
            ("cam-clock", SimDevice(kind="camera", password=PASSWORD, clock_offset=300.0, time_mode="manual"), {}),
            (
                "cam-offline",
                SimDevice(kind="camera", password=PASSWORD),
                {"nvr": {"device": f"{SCHOOL}-nvr", "channel": 2}},
            ),
            (
                "cam-idle",
                SimDevice(kind="camera", password=PASSWORD),
                {"nvr": {"device": f"{SCHOOL}-nvr", "channel": 3}},
            ),
            ("nvr", nvr, {}),
            ("axpro", SimDevice(kind="axpro", password=PASSWORD, zone_status={2: "offline"}), {}),
        ]
        async with HikvisionSim() as sim, RtspResponder() as streams:
            entries = []
            for n, (name, device, extra) in enumerate(devices, start=1):
                host, port = await sim.add(device, f"127.77.0.{n}")
                kind = {"camera": "camera", "nvr": "nvr", "axpro": "alarm_panel"}[device.kind]
                probes = [f"{'axpro' if device.kind == 'axpro' else 'isapi'}:{port}"]
                if device.kind == "camera":
                    _, rtsp_port = await streams.add(RtspCamera(), host)
                    probes.append(f"rtsp:{rtsp_port}")
                entries.append(
                    {
                        "id": f"{SCHOOL}-{name}",
                        "kind": kind,
                        "host": host,
                        "credentials": "hik-demo",
                        "probes": probes,
                        **extra,
                    }
                )
            # A dead camera: nothing listens on its ports, so both probes are refused.
            dead_port = _unused_port(DEAD_CAMERA)
            entries.append(
                {
                    "id": f"{SCHOOL}-cam-dead",
                    "kind": "camera",
                    "host": DEAD_CAMERA,
                    "credentials": "hik-demo",
                    "probes": [f"isapi:{dead_port}", f"rtsp:{dead_port}"],
                    "nvr": {"device": f"{SCHOOL}-nvr", "channel": 4},
                }
            )
            panels = [
                SimPanel(PanelSpec(f"77{n:02d}", (ReceiverPath("127.0.0.1", sia_port, "tcp"),), interval=10))
                for n in (1, 2)
            ]
            for n, panel in enumerate(panels, start=1):
                entries.append(
                    {
                        "id": f"{SCHOOL}-panel-{n}",
                        "kind": "alarm_panel",
                        "host": f"127.77.1.{n}",
                        "probes": [],
                        "sia": {"account": panel.spec.account, "interval": 10},
                    }
                )
            self._write(entries)
            for panel in panels:
                panel.start()
            self._ready.set()
            loop = asyncio.get_running_loop()
            loop.call_later(SILENT_AFTER, panels[1].go_silent)
            events = asyncio.create_task(_panel_events(panels[0]), name="health-lab-panel-events")
            try:
                await self._stop.wait()
            finally:
                events.cancel()
                await asyncio.gather(events, return_exceptions=True)
                for panel in panels:
                    await panel.stop()

    def _write(self, devices: list[dict[str, Any]]) -> None:
        self.inventory_dir.mkdir(parents=True, exist_ok=True)
        self.credentials_dir.mkdir(parents=True, exist_ok=True)
        secret = self.credentials_dir / "hik-demo"
        secret.touch(mode=0o600, exist_ok=True)
        secret.write_text(f"admin:{PASSWORD}\n", encoding="utf-8")
        school = {
            "id": SCHOOL,
            "name": "Health lab (simulated Hikvision devices with faults)",
            "district": "Simulated devices",
            "devices": devices,
        }
        text = "# Written by telemetryd.sim.healthlab: simulated cameras, NVR and panels, one fault each.\n"
        text += yaml.safe_dump({"schools": [school]}, sort_keys=False)
        (self.inventory_dir / "health-lab.yaml").write_text(text, encoding="utf-8")


async def _panel_events(panel: SimPanel) -> None:
    """What a school's panel reports besides heartbeats: one alarm and its restoral, then periodic tests."""
    await asyncio.sleep(ALARM_AT)
    await panel.send_event("BA", zone="03", text="Corridor motion")
    await asyncio.sleep(RESTORAL_AT - ALARM_AT)
    await panel.send_event("BR", zone="03")
    while True:
        await panel.send_event("RP")
        await asyncio.sleep(TEST_REPORT_EVERY)


def _unused_port(host: str) -> int:
    """A port nothing listens on at `host` now (bound and released at once)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
