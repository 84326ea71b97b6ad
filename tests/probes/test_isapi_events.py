"""Event streams against the simulated Hikvision devices on 127.0.0.1: events in seconds, reconnects, lockout rules."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from telemetryd.model import Contract, Device, DeviceKind, Inventory, ProbeSpec, School
from telemetryd.probes.isapi import IsapiPolicy, IsapiProber
from telemetryd.probes.isapi.alerts import Change
from telemetryd.probes.isapi.events import EventStreams
from telemetryd.secrets import Secrets
from telemetryd.sim.hikvision import FIRMWARE, HikvisionSim, SimDevice
from tests.probes.isapi_sim import PASSWORD, WRONG


@pytest.fixture
async def real_sim() -> AsyncIterator[HikvisionSim]:
    """The simulator on the real clock (streams pace themselves by it)."""
    simulator = HikvisionSim()
    yield simulator
    await simulator.close()


def _secrets(tmp_path: Path, password: str = PASSWORD) -> Secrets:
    (tmp_path / "hik").write_text(f"admin:{password}\n")
    return Secrets(str(tmp_path))


def _inventory(*devices: tuple[str, str, int, DeviceKind]) -> Inventory:
    listed = tuple(
        Device(device_id, "s1", kind, host, (ProbeSpec("isapi", port),), credentials="hik")
        for device_id, host, port, kind in devices
    )
    return Inventory.build([School("s1", "School", "Abay", Contract(), listed)])


async def _until(what: str, check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.02)


async def _streams(
    sim: HikvisionSim, tmp_path: Path, *devices: SimDevice, password: str = PASSWORD, **options: float
) -> tuple[EventStreams, IsapiProber, list[Change], Inventory]:
    entries = []
    for index, device in enumerate(devices):
        host, port = await sim.add(device, f"127.0.0.{index + 1}")
        entries.append((f"s1-dev-{index}", host, port, DeviceKind.NVR if device.kind == "nvr" else DeviceKind.CAMERA))
    prober = IsapiProber(policy=IsapiPolicy(request_timeout=1.0, check_timeout=5.0))
    changes: list[Change] = []
    streams = EventStreams(
        prober,
        _secrets(tmp_path, password),
        on_change=lambda _d, c: changes.append(c),
        **options,  # type: ignore[arg-type]
    )
    inventory = _inventory(*entries)
    streams.sync(inventory)
    return streams, prober, changes, inventory


@pytest.mark.parametrize("firmware", ["ipc-v5", "ipc-json-events", "nvr-snapshots", "ipc-old"])
async def test_an_event_is_seen_in_seconds_and_ends_on_its_inactive(
    real_sim: HikvisionSim, tmp_path: Path, firmware: str
) -> None:
    """Tampering raised on the device is active within 5 s, and ends on its inactive part; XML, JSON, snapshots."""
    camera = SimDevice(kind="nvr" if firmware.startswith("nvr") else "camera", firmware=FIRMWARE[firmware])
    camera.password = PASSWORD
    streams, prober, changes, _ = await _streams(real_sim, tmp_path, camera)
    try:
        await _until("the stream open", lambda: camera.open_streams == 1)
        camera.raise_event("shelteralarm", 1)
        await _until("tampering active", lambda: ("tampering", 1) in streams.streams["s1-dev-0"].book.active)
        camera.clear_event("shelteralarm", 1)
        await _until("tampering ended", lambda: not streams.streams["s1-dev-0"].book.active)
        assert [(c.event, c.channel, c.active) for c in changes] == [("tampering", 1, True), ("tampering", 1, False)]
        assert streams.events_total["tampering"] == 1 and streams.states()["open"] == 1
        assert camera.failed_logins == 0
    finally:
        await streams.close()
        await prober.close()


async def test_a_dropped_stream_reconnects(real_sim: HikvisionSim, tmp_path: Path) -> None:
    """The device closes the stream: it is opened again after the backoff, and events flow again."""
    camera = SimDevice(password=PASSWORD)
    streams, prober, _, _ = await _streams(real_sim, tmp_path, camera, backoff=(0.05, 0.2))
    try:
        await _until("the stream open", lambda: camera.open_streams == 1)
        camera.drop_streams()
        await _until("a second stream", lambda: streams.streams["s1-dev-0"].opened == 2)
        camera.raise_event("videoloss", 2)
        await _until("video loss active", lambda: ("video_loss", 2) in streams.streams["s1-dev-0"].book.active)
        assert streams.reconnects >= 1 and camera.failed_logins == 0
    finally:
        await streams.close()
        await prober.close()


async def test_a_silent_stream_is_given_up_and_reopened(real_sim: HikvisionSim, tmp_path: Path) -> None:
    """No bytes for heartbeat_timeout (a hung device, a dead path): the stream ends as silent and is reopened."""
    camera = SimDevice(password=PASSWORD, heartbeat_interval=30.0)
    streams, prober, _, _ = await _streams(real_sim, tmp_path, camera, heartbeat_timeout=0.3, backoff=(0.05, 0.2))
    try:
        await _until("two opens", lambda: streams.streams["s1-dev-0"].opened >= 2)
    finally:
        await streams.close()
        await prober.close()


async def test_a_rejected_credential_is_never_sent_again(real_sim: HikvisionSim, tmp_path: Path) -> None:
    """A 401 on the stream spends the credential for the stream and the checks alike: one failed login."""
    camera = SimDevice(password=PASSWORD)
    streams, prober, _, _ = await _streams(real_sim, tmp_path, camera, password=WRONG, backoff=(0.01, 0.02))
    try:
        await _until("auth_failed", lambda: streams.states()["auth_failed"] == 1)
        await asyncio.sleep(0.3)
        assert camera.failed_logins == 1
        host, port = next(iter(real_sim.devices))
        health = await prober.check(host, port, "admin", WRONG, "camera", now=time.time())
        assert health.reason == "auth_failed" and health.requests == 0 and camera.failed_logins == 1
    finally:
        await streams.close()
        await prober.close()


async def test_a_device_without_the_stream_is_not_asked_again(real_sim: HikvisionSim, tmp_path: Path) -> None:
    """404/notSupport: unsupported, asked once (not again for a day)."""
    camera = SimDevice(password=PASSWORD, lacks={"/ISAPI/Event/notification/alertStream"})
    streams, prober, _, _ = await _streams(real_sim, tmp_path, camera, backoff=(0.01, 0.02))
    try:
        await _until("unsupported", lambda: streams.states()["unsupported"] == 1)
        await asyncio.sleep(0.2)
        assert camera.asked["/ISAPI/Event/notification/alertStream"] == 1
    finally:
        await streams.close()
        await prober.close()


async def test_an_endless_part_does_not_stop_other_streams(real_sim: HikvisionSim, tmp_path: Path) -> None:
    """One device streaming one endless part; the other device's event still arrives."""
    hostile = SimDevice(password=PASSWORD, stream_fault="endless_part")
    camera = SimDevice(password=PASSWORD)
    streams, prober, _, _ = await _streams(real_sim, tmp_path, hostile, camera)
    try:
        await _until("both open", lambda: streams.states()["open"] == 2)
        await asyncio.sleep(0.3)  # megabytes of the endless part meanwhile
        camera.raise_event("diskerror", 0)
        await _until("disk error", lambda: ("disk_error", 0) in streams.streams["s1-dev-1"].book.active)
    finally:
        await streams.close()
        await prober.close()


async def test_a_removed_device_stream_closes_and_its_events_end(real_sim: HikvisionSim, tmp_path: Path) -> None:
    """A reload without the device: its stream closes and an active event ends."""
    camera = SimDevice(password=PASSWORD)
    streams, prober, changes, _ = await _streams(real_sim, tmp_path, camera)
    try:
        await _until("the stream open", lambda: camera.open_streams == 1)
        camera.raise_event("shelteralarm", 1)
        await _until("tampering", lambda: bool(changes))
        streams.sync(Inventory.build([]))
        await _until("closed on the device", lambda: camera.open_streams == 0)
        assert [c.active for c in changes] == [True, False] and not streams.streams
    finally:
        await streams.close()
        await prober.close()


async def test_open_streams_do_not_take_the_checks_connections(real_sim: HikvisionSim, tmp_path: Path) -> None:
    """Three streams held open on a prober whose check pool has two connections: a check still runs at once."""
    devices = [SimDevice(password=PASSWORD) for _ in range(3)]
    entries = []
    for index, device in enumerate(devices):
        host, port = await real_sim.add(device, f"127.0.0.{index + 1}")
        entries.append((f"s1-dev-{index}", host, port, DeviceKind.CAMERA))
    prober = IsapiProber(policy=IsapiPolicy(request_timeout=1.0, check_timeout=2.0), connections=2)
    streams = EventStreams(prober, _secrets(tmp_path))
    streams.sync(_inventory(*entries))
    try:
        await _until("three streams open", lambda: streams.states()["open"] == 3)
        host, port = next(iter(real_sim.devices))
        health = await prober.check(host, port, "admin", PASSWORD, "camera", now=time.time())
        assert health.ok, health.detail
    finally:
        await streams.close()
        await prober.close()
