"""What a device does not offer, what it rejected, what a DVR's analog inputs show: learnt, kept, persisted."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from telemetryd.probes.isapi import AuthState, IsapiProber
from telemetryd.probes.isapi.memory import CAPABILITY_SECONDS, DeviceMemory
from telemetryd.sim.hikvision import HikvisionSim
from tests.probes.isapi_sim import PASSWORD, POLICY, WRONG, Clock, add_device

OPTIONAL = [
    ("ipc-v5", "camera", "status", "/ISAPI/System/status"),
    ("ipc-v5", "camera", "time", "/ISAPI/System/time"),
    ("ipc-old", "camera", "time", "/ISAPI/System/time"),  # old firmware: the HTML 404 page
    ("nvr-isapi", "nvr", "channels", "/ISAPI/ContentMgmt/InputProxy/channels/status"),
    ("nvr-isapi", "nvr", "storage", "/ISAPI/ContentMgmt/Storage"),
    ("nvr-isapi", "nvr", "working_status", "/ISAPI/System/workingstatus"),
    ("nvr-v4", "nvr", "recording_search", "/ISAPI/ContentMgmt/search"),
    ("nvr-v4", "nvr", "video_inputs", "/ISAPI/System/Video/inputs/channels"),  # a hybrid DVR's firmware without it
]


@pytest.mark.parametrize("case", OPTIONAL, ids=[f"{c[0]}-{c[2]}" for c in OPTIONAL])
async def test_a_missing_endpoint_is_a_capability_asked_once_a_day(
    sim: HikvisionSim, clock: Clock, tmp_path: Path, case: tuple[str, str, str, str]
) -> None:
    """The device stays ok and is judged on the rest; the endpoint is not asked again until a day has passed."""
    firmware, kind, check, path = case
    device, port = await add_device(sim, firmware, lacks={path}, analog_inputs=2 if kind == "nvr" else 0)
    async with IsapiProber(policy=POLICY, memory=DeviceMemory(tmp_path)) as prober:
        first = await prober.check("127.0.0.1", port, "admin", PASSWORD, kind, now=clock.now)  # type: ignore[arg-type]
        assert first.ok, first.detail
        assert check in first.unsupported and first.identity is not None
        asked = device.asked[path]
        clock.now += 300
        second = await prober.check("127.0.0.1", port, "admin", PASSWORD, kind, now=clock.now)  # type: ignore[arg-type]
        assert second.ok and check in second.unsupported
        assert device.asked[path] == asked, "asked again within the day"
        assert device.asked["/ISAPI/System/deviceInfo"] == 2  # the rest is still read every check
    # A restart within the day: still not asked (the capability is on disk).
    async with IsapiProber(policy=POLICY, memory=DeviceMemory(tmp_path)) as prober:
        clock.now += 300
        third = await prober.check("127.0.0.1", port, "admin", PASSWORD, kind, now=clock.now)  # type: ignore[arg-type]
        assert third.ok and check in third.unsupported and device.asked[path] == asked
        # A day later it is asked again, and an endpoint that answers now is used again.
        device.lacks.clear()
        clock.now += CAPABILITY_SECONDS
        fourth = await prober.check("127.0.0.1", port, "admin", PASSWORD, kind, now=clock.now)  # type: ignore[arg-type]
        assert device.asked[path] > asked and check not in fourth.unsupported


async def test_a_firmware_upgrade_relearns_capabilities(sim: HikvisionSim, clock: Clock) -> None:
    """What a device lacked under one firmware is asked again as soon as deviceInfo shows another."""
    device, port = await add_device(sim, "ipc-v5", lacks={"/ISAPI/System/time"})
    async with IsapiProber(policy=POLICY) as prober:
        await prober.check("127.0.0.1", port, "admin", PASSWORD, "camera", now=clock.now)
        assert device.asked["/ISAPI/System/time"] == 1
        device.firmware_version = "V5.8.0"
        device.lacks.clear()
        clock.now += 300
        upgraded = await prober.check("127.0.0.1", port, "admin", PASSWORD, "camera", now=clock.now)
    assert device.asked["/ISAPI/System/time"] == 2
    assert upgraded.time is not None and "time" not in upgraded.unsupported


async def test_a_failing_endpoint_is_a_fault_not_a_capability(sim: HikvisionSim, clock: Clock) -> None:
    """An HTTP 500 is the device failing: a problem, asked again next check (not learnt as missing)."""
    device, port = await add_device(sim, "ipc-v5", status_overrides={"/ISAPI/System/time": 500})
    async with IsapiProber(policy=POLICY) as prober:
        for _ in range(2):
            found = await prober.check("127.0.0.1", port, "admin", PASSWORD, "camera", now=clock.now)
            assert not found.ok and found.reason == "http_500" and not found.unsupported
    assert device.asked["/ISAPI/System/time"] == 2


async def test_dvr_analog_input_without_video_is_video_loss(sim: HikvisionSim, clock: Clock) -> None:
    """A DVR's NO VIDEO input is a `video_loss` finding; inputs with a signal are searched for recordings."""
    device, port = await add_device(sim, "nvr-v4", channels=0, analog_inputs=4, no_video_inputs={2})
    async with IsapiProber(policy=POLICY) as prober:
        found = await prober.check("127.0.0.1", port, "admin", PASSWORD, "nvr", now=clock.now)
    assert not found.ok and found.reason == "video_loss"
    assert "no video on analog input(s) 2 (Camera 02)" in found.detail
    assert [(i.id, i.has_video) for i in found.inputs] == [(1, True), (2, False), (3, True), (4, True)]
    assert found.recording == ((1, True), (3, True), (4, True))
    assert device.failed_logins == 0


async def test_a_rejected_credential_stays_rejected_across_a_restart(
    sim: HikvisionSim, clock: Clock, tmp_path: Path
) -> None:
    """The rejection is on disk (no password in it, mode 0600): a new prober sends nothing authenticated."""
    device, port = await add_device(sim, "ipc-v5")
    async with IsapiProber(policy=POLICY, memory=DeviceMemory(tmp_path)) as prober:
        first = await prober.check("127.0.0.1", port, "admin", WRONG, "camera", now=clock.now)
    assert first.reason == "auth_failed" and device.failed_logins == 1
    files = {p.name: p for p in tmp_path.iterdir()}  # noqa: ASYNC240 - a test's own temporary directory
    assert {"isapi-key", "isapi-logins.json"} <= files.keys()
    for path in files.values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        data = path.read_bytes()
        assert WRONG.encode() not in data and b"admin" not in data
    for _ in range(3):  # three restarts
        async with IsapiProber(policy=POLICY, memory=DeviceMemory(tmp_path)) as prober:
            again = await prober.check("127.0.0.1", port, "admin", WRONG, "camera", now=clock.now)
            assert again.reason == "auth_failed" and again.auth is AuthState.AUTH_FAILED and again.requests == 0
    assert device.failed_logins == 1
    # The operator fixes the password: one attempt, it works, and the rejection is gone from disk.
    async with IsapiProber(policy=POLICY, memory=DeviceMemory(tmp_path)) as prober:
        fixed = await prober.check("127.0.0.1", port, "admin", PASSWORD, "camera", now=clock.now)
    assert fixed.ok and device.failed_logins == 1
    assert json.loads((tmp_path / "isapi-logins.json").read_text()) == {}


async def test_a_lock_is_kept_across_a_restart(sim: HikvisionSim, clock: Clock, tmp_path: Path) -> None:
    """A device that said it locked us out is left alone by the next process too, until the lock lifts."""
    device, port = await add_device(sim, "ipc-v5", max_failures=1, lock_seconds=600)
    async with IsapiProber(policy=POLICY, memory=DeviceMemory(tmp_path)) as prober:
        first = await prober.check("127.0.0.1", port, "admin", WRONG, "camera", now=clock.now)
    assert first.reason == "locked" and first.locked_until is not None
    requests = device.requests
    async with IsapiProber(policy=POLICY, memory=DeviceMemory(tmp_path)) as prober:
        # A changed credential earns an attempt, but not while the address is locked.
        locked = await prober.check("127.0.0.1", port, "admin", PASSWORD, "camera", now=clock.now + 60)
        assert locked.reason == "locked" and device.requests == requests
        clock.now += 601
        after = await prober.check("127.0.0.1", port, "admin", PASSWORD, "camera", now=clock.now)
    assert after.ok and device.failed_logins == 1


def test_fingerprints_differ_between_state_directories(tmp_path: Path) -> None:
    """The key is per state directory: equal there, unrelated elsewhere, and never the plain credential."""
    here, there = DeviceMemory(tmp_path / "a"), DeviceMemory(tmp_path / "b")
    assert here.fingerprint("admin", PASSWORD) == DeviceMemory(tmp_path / "a").fingerprint("admin", PASSWORD)
    assert here.fingerprint("admin", PASSWORD) != there.fingerprint("admin", PASSWORD)
    assert here.fingerprint("admin", PASSWORD) != here.fingerprint("admin", WRONG)


def test_a_corrupt_memory_file_is_set_aside_and_reported(tmp_path: Path) -> None:
    """Garbage in the logins file is moved to .corrupt (kept for a person to read) and logged, not overwritten."""
    tmp_path.joinpath("isapi-logins.json").write_bytes(b"\x00{not json")
    with capture_logs() as logs:
        memory = DeviceMemory(tmp_path)
    assert memory.login("127.0.0.1:80").rejected is None
    assert tmp_path.joinpath("isapi-logins.json.corrupt").read_bytes() == b"\x00{not json"
    assert [entry["file"] for entry in logs if entry["event"] == "isapi_memory_unreadable"] == [
        str(tmp_path / "isapi-logins.json")
    ]


def test_capabilities_are_written_at_most_once_a_minute(tmp_path: Path) -> None:
    """Thousands of devices learnt at start-up make one write a minute, and close writes the rest."""
    now = [1000.0]
    memory = DeviceMemory(tmp_path, clock=lambda: now[0])
    path = tmp_path / "isapi-capabilities.json"
    for index in range(500):
        memory.remember_lack(f"10.0.{index // 250}.{index % 250}:80", "V5.7.14", "time", now[0])
    assert not path.exists()
    now[0] += 61
    memory.remember_lack("10.9.9.9:80", "V5.7.14", "status", now[0])
    assert len(json.loads(path.read_text())) == 501
    memory.remember_lack("10.9.9.10:80", "V5.7.14", "status", now[0])
    assert len(json.loads(path.read_text())) == 501  # the next write waits a minute
    memory.flush(force=True)
    assert len(json.loads(path.read_text())) == 502
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
