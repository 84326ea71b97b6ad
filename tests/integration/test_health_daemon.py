"""End to end: the daemon checks simulated Hikvision devices over ISAPI and supervises a DC-09 panel."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
import yaml

from telemetryd.sim.hikvision import HikvisionSim, SimDevice
from telemetryd.sim.panels import PanelSpec, ReceiverPath, SimPanel

from ..daemon_process import DaemonProcess

pytestmark = pytest.mark.integration

PASSWORD = "Sch00l-cam-Pa55"


async def _get(daemon: DaemonProcess, path: str) -> str:
    """GET from the daemon without blocking the loop the simulated devices answer on."""
    return await asyncio.to_thread(daemon.scrape, path, 10)


async def _until(what: str, check: object, timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


async def test_isapi_health_lockout_safety_and_panel_supervision(tmp_path: Path) -> None:
    """Camera identity and NVR channel/disk faults reach /metrics; a wrong password costs the camera exactly one
    failed login however often the daemon checks; a panel that stops its heartbeats goes down as supervision_lost."""
    async with HikvisionSim() as sim:
        good = SimDevice(kind="camera", password=PASSWORD, serial="DS-2CD2386G2-IU20260101AAWR000001")
        wrong = SimDevice(kind="camera", password="changed-on-the-device")
        nvr = SimDevice(kind="nvr", password=PASSWORD, channels=4, offline_channels={2: "netUnreachable"})
        nvr.disk_status = "error"
        hosts = {}
        for name, device, address in (("cam-good", good, "127.0.0.1"), ("cam-wrong", wrong, "127.0.0.2")):
            hosts[name] = await sim.add(device, address)
        hosts["nvr"] = await sim.add(nvr, "127.0.0.3")

        credentials = tmp_path / "credentials"
        credentials.mkdir()
        (credentials / "hik").write_text(f"admin:{PASSWORD}\n")
        devices = [
            {
                "id": f"s1-{name}",
                "kind": "nvr" if name == "nvr" else "camera",
                "host": host,
                "credentials": "hik",
                "probes": [f"isapi:{port}"],
            }
            for name, (host, port) in hosts.items()
        ]
        devices[0]["nvr"] = {"device": "s1-nvr", "channel": 2}
        devices.append(
            {
                "id": "s1-alarm",
                "kind": "alarm_panel",
                "host": "127.0.0.4",
                "probes": [],
                "sia": {"account": "1234AB", "interval": 1},
            }
        )
        inventory = tmp_path / "inventory"
        inventory.mkdir()
        (inventory / "s1.yaml").write_text(
            yaml.safe_dump({"schools": [{"id": "s1", "name": "School 1", "district": "Abay", "devices": devices}]})
        )
        config = tmp_path / "telemetryd.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "listen": "127.0.0.1:0",
                    "inventory": "inventory",
                    "credentials_directory": "credentials",
                    "probes": {"isapi": {"interval": 1, "timeout": 5}, "tcp": {"interval": 30}},
                    "sia": {"listen": "127.0.0.1:0", "grace": 1},
                    "hysteresis": {"down_after": 1, "up_after": 1},
                    "logging": {"format": "json"},
                }
            )
        )
        with DaemonProcess(config) as daemon:
            # Waited for in a thread: the simulated devices answer on this loop meanwhile.
            sia_port = int((await asyncio.to_thread(daemon.wait_event, "sia_receiver_listening", 20))["port"])
            await asyncio.to_thread(daemon.started)
            panel = SimPanel(PanelSpec("1234AB", (ReceiverPath("127.0.0.1", sia_port, "tcp"),), interval=0.5))
            panel.start()
            try:

                async def healthy() -> bool:
                    metrics = await _get(daemon, "/metrics")
                    return (
                        'telemetryd_nvr_channel_up{channel="2",device="s1-nvr",school="s1"} 0.0' in metrics
                        and 'telemetryd_probe_up{device="s1-alarm",kind="alarm_panel",probe="sia",school="s1"} 1.0'
                        in metrics
                    )

                await _until("NVR faults and panel supervision in /metrics", healthy)
                await asyncio.sleep(4)  # several more ISAPI intervals: the wrong password must not be retried
                metrics = await _get(daemon, "/metrics")
                assert 'serial="DS-2CD2386G2-IU20260101AAWR000001"' in metrics
                assert 'telemetryd_isapi_auth_ok{device="s1-cam-wrong",kind="camera",school="s1"} 0.0' in metrics
                assert 'telemetryd_isapi_auth_ok{device="s1-cam-good",kind="camera",school="s1"} 1.0' in metrics
                assert 'telemetryd_nvr_disk_healthy{device="s1-nvr",disk="1",school="s1"} 0.0' in metrics
                assert 'telemetryd_nvr_channel_up{channel="1",device="s1-nvr",school="s1"} 1.0' in metrics
                assert wrong.failed_logins == 1
                # cam-good is recorded on the NVR's channel 2, which the NVR sees offline.
                verdict = (
                    'telemetryd_camera_verdict{device="s1-cam-good",reason="",school="s1",verdict="not_recorded"} 1.0'
                )
                assert verdict in metrics
                assert good.failed_logins == 0 and good.authenticated >= 3
                status = json.loads(await _get(daemon, "/api/v1/status?school=s1"))
                probes = {d["device"]: d["probes"] for d in status["schools"][0]["all_devices"]}
                assert probes["s1-cam-wrong"][f"isapi:{hosts['cam-wrong'][1]}"]["reason"] == "auth_failed"

                panel.go_silent()

                async def lost() -> bool:
                    metrics = await _get(daemon, "/metrics")
                    return 'telemetryd_device_up{device="s1-alarm",kind="alarm_panel",school="s1"} 0.0' in metrics

                await _until("the silent panel to go down", lost, timeout=20)
                status = json.loads(await _get(daemon, "/api/v1/status"))
                down = {d["device"]: d["reason"] for d in status["schools"][0]["down"]}
                assert down["s1-alarm"] == "sia supervision_lost"
            finally:
                await panel.stop()
                await asyncio.to_thread(daemon.terminate, 20)
    log = daemon.records()
    text = daemon.text()
    assert not [r for r in log if r["event"] == "unparsed"], text
    assert PASSWORD not in text and "changed-on-the-device" not in text
    assert any(r["event"] == "device_down" and r.get("device") == "s1-alarm" for r in log)
