"""Cameras answering hostile XML to the real daemon: a reason on their result, no stall of the loop.

Four simulated cameras answer `/ISAPI/System/deviceInfo` with a document built to be
expensive — 100,000 nested elements, 5,000 nested elements, 45,000 attributes on one element,
120,000 sibling elements — and a fifth with a billion-laughs DTD. Every one is probed every
half second beside the healthy control device. Unbounded, each document held the event loop
0.1–0.3 s while it was parsed; bounded, it is refused in about a millisecond with a reason.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from telemetryd.sim.hikvision import BodyFault, HikvisionSim, SimDevice
from tests.helpers import school
from tests.hostile.harness import ControlDevice, Watch, assert_control_healthy, hostile_daemon, loop_lag_above

pytestmark = [pytest.mark.hostile, pytest.mark.integration]

PASSWORD = "Sch00l-cam-Pa55"
STALL_LIMIT = 0.05
"""No loop-lag observation may exceed this while hostile documents arrive."""
EXPECTED: dict[BodyFault, str] = {
    "deep": "xml_too_large",  # 200,000 tags: refused on the count of '<', never parsed
    "nested": "xml_too_deep",
    "wide": "xml_too_large",
    "flat": "xml_too_large",
    "billion_laughs": "bad_xml",  # defusedxml refuses the DTD
}
"""The reason each camera's result must carry."""
DOCUMENTS = 6
"""Hostile documents each camera must have served during the attack."""


@contextmanager
def sim_in_thread() -> Iterator[tuple[HikvisionSim, asyncio.AbstractEventLoop]]:
    """A Hikvision simulator on its own event loop in a thread: the test's blocking waits do not stall it."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="hikvision-sim", daemon=True)
    thread.start()
    sim = asyncio.run_coroutine_threadsafe(_new_sim(), loop).result(10)
    try:
        yield sim, loop
    finally:
        asyncio.run_coroutine_threadsafe(sim.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()


async def _new_sim() -> HikvisionSim:
    return HikvisionSim()


def hostile_cameras(sim: HikvisionSim, loop: asyncio.AbstractEventLoop) -> tuple[dict[str, SimDevice], list[Any]]:
    """One camera per hostile document, each serving it for deviceInfo; their inventory entries."""
    cameras, entries = {}, []
    for number, fault in enumerate(EXPECTED, start=2):
        device = SimDevice(kind="camera", password=PASSWORD, body_faults={"/ISAPI/System/deviceInfo": fault})
        # One address each: the inventory refuses two devices on one host (the control device has 127.0.0.1).
        host, port = asyncio.run_coroutine_threadsafe(sim.add(device, f"127.0.13.{number}"), loop).result(10)
        device_id = camera_id(fault)
        cameras[device_id] = device
        entries.append(
            {
                "id": device_id,
                "kind": "camera",
                "host": host,
                "credentials": "hik",
                "probes": [f"isapi:{port}"],
            }
        )
    return cameras, entries


def camera_id(fault: str) -> str:
    """The inventory id of the camera serving `fault`."""
    return "hx-" + fault.replace("_", "-")


def isapi_reasons(status: dict[str, Any]) -> dict[str, str | None]:
    """device id → the reason of its last isapi result, from /api/v1/status?school=hx."""
    (entry,) = status["schools"]
    return {
        device["device"]: next(
            (probe["reason"] for name, probe in device["probes"].items() if name.startswith("isapi")), None
        )
        for device in entry["all_devices"]
    }


def test_hostile_xml_documents_get_a_reason_and_never_stall_the_loop(tmp_path: Path) -> None:
    """Five hostile cameras probed every 0.5 s: each result carries its reason; loop lag stays under 50 ms."""
    (tmp_path / "credentials").mkdir()
    (tmp_path / "credentials" / "hik").write_text(f"admin:{PASSWORD}\n")
    with sim_in_thread() as (sim, loop), ControlDevice() as control:
        cameras, entries = hostile_cameras(sim, loop)
        settings = {
            "credentials_directory": "credentials",
            "probes": {"isapi": {"interval": "500ms", "timeout": "5s"}},
        }
        with hostile_daemon(tmp_path, control, schools=[school("hx", entries)], **settings) as daemon:
            with Watch(daemon) as watch:
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and any(
                    device.asked.get("/ISAPI/System/deviceInfo", 0) < DOCUMENTS for device in cameras.values()
                ):
                    time.sleep(0.2)
                text = daemon.scrape()
            served = {name: device.asked.get("/ISAPI/System/deviceInfo", 0) for name, device in cameras.items()}
            assert all(count >= DOCUMENTS for count in served.values()), f"hostile documents served: {served}"
            stalls = loop_lag_above(text, STALL_LIMIT)
            assert stalls == 0, f"{stalls:.0f} loop-lag observations above {STALL_LIMIT} s during {served}"
            reasons = isapi_reasons(json.loads(daemon.scrape("/api/v1/status?school=hx")))
            expected = {camera_id(fault): reason for fault, reason in EXPECTED.items()}
            assert reasons == expected, f"isapi reasons: {reasons}"
            crashes = ("probe_crashed", "result_handler_crashed", "unparsed")
            crashed = [r for r in daemon.records() if r.get("event") in crashes]
            assert not crashed, crashed[:3]
            assert_control_healthy(daemon, control, watch)
