"""ISAPI client against the simulated Hikvision devices on 127.0.0.1: checks, faults, lockout safety, secrets."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from telemetryd.config.settings import Settings
from telemetryd.model import Device, DeviceKind, ProbeSpec
from telemetryd.probes import isapi
from telemetryd.probes.base import ProbeContext
from telemetryd.probes.isapi import AuthState, IsapiProber, client
from telemetryd.secrets import Secrets
from telemetryd.sim.hikvision import FIRMWARE, HikvisionSim, SimDevice
from tests.probes.isapi_sim import PASSWORD, POLICY, WRONG, Clock, add_device


@pytest.fixture
async def prober() -> AsyncIterator[IsapiProber]:
    """A prober with short timeouts and a 256 KiB body cap."""
    async with IsapiProber(policy=POLICY) as isapi:
        yield isapi


@pytest.mark.parametrize("firmware", ["ipc-v5", "ipc-old", "ipc-sha256", "ipc-strict-nonce"])
async def test_healthy_camera_every_firmware(
    sim: HikvisionSim, prober: IsapiProber, clock: Clock, firmware: str
) -> None:
    """A healthy camera of each firmware line checks ok with identity, uptime and a clock within tolerance."""
    device, port = await add_device(sim, firmware)
    for _ in range(3):  # repeated checks reuse nonces and connections without tripping anything
        health = await prober.check("127.0.0.1", port, "admin", PASSWORD, "camera", now=clock.now)
        assert health.ok, health.detail
    assert health.identity is not None and health.identity.model == device.model
    assert health.identity.device_type == "IPCamera"
    assert health.status is not None and health.status.uptime == 173358
    assert health.clock_drift is not None and abs(health.clock_drift) < 2
    assert health.auth is AuthState.OK
    assert device.failed_logins == 0


@pytest.mark.parametrize("firmware", ["nvr-isapi", "nvr-v4"])
async def test_healthy_nvr_reports_channels_disks_and_recording(
    sim: HikvisionSim, prober: IsapiProber, clock: Clock, firmware: str
) -> None:
    """A healthy NVR has every channel online, its disk ok and recent recording on each channel."""
    _, port = await add_device(sim, firmware, channels=4)
    health = await prober.check("127.0.0.1", port, "admin", PASSWORD, "nvr", now=clock.now)
    assert health.ok, health.detail
    assert [c.online for c in health.channels] == [True] * 4
    assert [d.status for d in health.disks] == ["ok"]
    assert health.recording == ((1, True), (2, True), (3, True), (4, True))


@pytest.mark.parametrize("firmware", ["nvr-isapi", "nvr-v4"])
async def test_offline_channel_reported_with_reason(
    sim: HikvisionSim, prober: IsapiProber, clock: Clock, firmware: str
) -> None:
    """An offline NVR channel fails the check as channel_offline, naming the channel and chanDetectResult."""
    _, port = await add_device(sim, firmware, offline_channels={2: "netUnreachable"})
    health = await prober.check("127.0.0.1", port, "admin", PASSWORD, "nvr", now=clock.now)
    assert (health.ok, health.reason) == (False, "channel_offline")
    assert "2 (netUnreachable)" in health.detail
    assert [c.id for c in health.channels if not c.online] == [2]
    assert 2 not in dict(health.recording)  # an offline channel is not also blamed for not recording


@pytest.mark.parametrize(
    ("status", "reason"), [("error", "disk_fault"), ("unformatted", "disk_fault"), ("notexist", "no_disk")]
)
async def test_disk_faults(sim: HikvisionSim, prober: IsapiProber, clock: Clock, status: str, reason: str) -> None:
    """A disk in error or unformatted is disk_fault; an NVR with only empty bays is no_disk."""
    _, port = await add_device(sim, "nvr-v4", disk_status=status)
    health = await prober.check("127.0.0.1", port, "admin", PASSWORD, "nvr", now=clock.now)
    assert reason in [p.reason for p in health.problems]
    assert not health.ok


async def test_clock_drift(sim: HikvisionSim, prober: IsapiProber, clock: Clock) -> None:
    """A device clock 5 minutes fast is clock_drift with the drift measured to the second."""
    _, port = await add_device(sim, "ipc-old", clock_offset=300.0, time_mode="manual")
    health = await prober.check("127.0.0.1", port, "admin", PASSWORD, "camera", now=clock.now)
    assert (health.ok, health.reason) == (False, "clock_drift")
    assert health.clock_drift == pytest.approx(300, abs=2)
    assert health.time is not None and not health.time.ntp


@pytest.mark.parametrize("firmware", ["nvr-isapi", "nvr-v4"])
async def test_no_recent_recording(sim: HikvisionSim, prober: IsapiProber, clock: Clock, firmware: str) -> None:
    """A channel without recordings in the window is not_recording, by working status or by search."""
    _, port = await add_device(sim, firmware, idle_channels={3})
    health = await prober.check("127.0.0.1", port, "admin", PASSWORD, "nvr", now=clock.now)
    assert (health.ok, health.reason) == (False, "not_recording")
    assert dict(health.recording) == {1: True, 2: True, 3: False, 4: True}


async def test_a_match_that_ended_weeks_ago_is_no_recording(
    sim: HikvisionSim, prober: IsapiProber, clock: Clock
) -> None:
    """A search of the last hour answered with one segment that ended three weeks ago is not_recording."""
    _, port = await add_device(sim, "nvr-v4", stale_channels={2})
    health = await prober.check("127.0.0.1", port, "admin", PASSWORD, "nvr", now=clock.now)
    assert (health.ok, health.reason) == (False, "not_recording")
    assert dict(health.recording) == {1: True, 2: False, 3: True, 4: True}


async def test_video_loss(sim: HikvisionSim, prober: IsapiProber, clock: Clock) -> None:
    """Signal loss in the working status is reported as video_loss on that channel."""
    _, port = await add_device(sim, "nvr-isapi", video_loss={1})
    health = await prober.check("127.0.0.1", port, "admin", PASSWORD, "nvr", now=clock.now)
    assert "video_loss" in [p.reason for p in health.problems]
    assert health.video_loss == (1,)


async def test_camera_checked_as_nvr_lacks_the_nvr_checks(sim: HikvisionSim, prober: IsapiProber, clock: Clock) -> None:
    """A camera asked for NVR channel status answers notSupport: a capability it lacks, not a fault (nor bad_xml)."""
    _, port = await add_device(sim, "ipc-v5")
    health = await prober.check("127.0.0.1", port, "admin", PASSWORD, "nvr", now=clock.now)
    assert "channels" in health.unsupported and "working_status" in health.unsupported
    assert not [p for p in health.problems if p.step == "channels"]


async def test_device_error_on_one_step_keeps_the_others(sim: HikvisionSim, prober: IsapiProber, clock: Clock) -> None:
    """An HTTP 500 on System/status is http_500 for that step; deviceInfo and time are still read."""
    _, port = await add_device(sim, "ipc-v5", status_overrides={"/ISAPI/System/status": 500})
    health = await prober.check("127.0.0.1", port, "admin", PASSWORD, "camera", now=clock.now)
    assert health.reason == "http_500" and "Device Error" in health.detail
    assert health.identity is not None and health.time is not None and health.status is None


async def test_reboot_detected(sim: HikvisionSim, prober: IsapiProber, clock: Clock) -> None:
    """Uptime that restarted between checks marks the second check rebooted, and only that one."""
    device, port = await add_device(sim, "ipc-v5")
    first = await prober.check("127.0.0.1", port, "admin", PASSWORD, "camera", now=clock.now)
    clock.now += 60
    device.reboot(clock.now - 10)
    second = await prober.check("127.0.0.1", port, "admin", PASSWORD, "camera", now=clock.now)
    clock.now += 60
    third = await prober.check("127.0.0.1", port, "admin", PASSWORD, "camera", now=clock.now)
    assert (first.rebooted, second.rebooted, third.rebooted) == (False, True, False)


# --- lockout safety ------------------------------------------------------------------------


@pytest.mark.parametrize("firmware", ["ipc-v5", "ipc-old", "ipc-sha256", "nvr-isapi"])
async def test_exactly_one_failed_login_per_credential(
    sim: HikvisionSim, prober: IsapiProber, clock: Clock, firmware: str
) -> None:
    """A wrong password costs one failed login; repeating it sends nothing; each new credential costs at most one."""
    device, port = await add_device(sim, firmware)
    kind = "nvr" if firmware.startswith("nvr") else "camera"
    first = await prober.check("127.0.0.1", port, "admin", WRONG, kind, now=clock.now)
    assert (first.ok, first.reason, first.auth) == (False, "auth_failed", AuthState.AUTH_FAILED)
    assert device.failed_logins == 1
    requests = device.requests
    for _ in range(10):
        clock.now += 60
        again = await prober.check("127.0.0.1", port, "admin", WRONG, kind, now=clock.now)
        assert again.reason == "auth_failed" and again.requests == 0
    assert (device.failed_logins, device.requests) == (1, requests)
    await prober.check("127.0.0.1", port, "admin", WRONG + "-2", kind, now=clock.now)
    assert device.failed_logins == 2
    fixed = await prober.check("127.0.0.1", port, "admin", PASSWORD, kind, now=clock.now)
    assert fixed.ok and fixed.auth is AuthState.OK and device.failed_logins == 2


async def test_concurrent_checks_still_one_failed_login(sim: HikvisionSim, prober: IsapiProber, clock: Clock) -> None:
    """Ten simultaneous checks with a wrong password are serialised into one failed login."""
    device, port = await add_device(sim, "ipc-v5")
    results = await asyncio.gather(
        *(prober.check("127.0.0.1", port, "admin", WRONG, "camera", now=clock.now) for _ in range(10))
    )
    assert {r.reason for r in results} == {"auth_failed"}
    assert device.failed_logins == 1


async def test_locked_device_untouched_until_unlock(sim: HikvisionSim, prober: IsapiProber, clock: Clock) -> None:
    """A lock reported in the 401 body stops all traffic to the device until its unlock time, then one try."""
    device, port = await add_device(sim, "ipc-v5", max_failures=1, lock_seconds=600)
    locked = await prober.check("127.0.0.1", port, "admin", WRONG, "camera", now=clock.now)
    assert (locked.reason, locked.auth) == ("locked", AuthState.LOCKED)
    assert locked.locked_until == pytest.approx(clock.now + 600, abs=1)
    requests = device.requests
    for step in (1, 300, 598):  # even the right password must not be tried during the lock
        waiting = await prober.check("127.0.0.1", port, "admin", PASSWORD, "camera", now=clock.now + step)
        assert waiting.reason == "locked" and waiting.requests == 0
    assert device.requests == requests and device.locked_rejections == 0
    assert device.locked_until() == pytest.approx(clock.now + 600, abs=1)  # never restarted by us
    clock.now += 601
    after = await prober.check("127.0.0.1", port, "admin", PASSWORD, "camera", now=clock.now)
    assert after.ok and device.failed_logins == 1


async def test_lock_by_someone_else_is_learned_without_an_attempt(
    sim: HikvisionSim, prober: IsapiProber, clock: Clock
) -> None:
    """A device locked by others (same NAT) is seen on the unauthenticated challenge: no digest is ever sent."""
    device, port = await add_device(sim, "ipc-v5")
    device._locked_until["127.0.0.1"] = clock.now + 900
    health = await prober.check("127.0.0.1", port, "admin", PASSWORD, "camera", now=clock.now)
    assert health.reason == "locked" and health.requests == 1
    assert (device.locked_rejections, device.failed_logins, device.authenticated) == (0, 0, 0)


async def test_after_lock_unchanged_bad_credential_is_still_not_retried(
    sim: HikvisionSim, prober: IsapiProber, clock: Clock
) -> None:
    """Once a lock lifts, the credential that was rejected is still not sent again."""
    device, port = await add_device(sim, "ipc-v5", max_failures=1, lock_seconds=60)
    await prober.check("127.0.0.1", port, "admin", WRONG, "camera", now=clock.now)
    clock.now += 61
    health = await prober.check("127.0.0.1", port, "admin", WRONG, "camera", now=clock.now)
    assert health.reason == "auth_failed" and health.requests == 0
    assert device.failed_logins == 1


async def test_stale_nonce_is_not_a_failed_login(sim: HikvisionSim, prober: IsapiProber, clock: Clock) -> None:
    """An expired nonce answered stale=TRUE is retried once with the new nonce and the check stays ok."""
    device, port = await add_device(sim, "ipc-sha256", nonce_lifetime=30)
    assert (await prober.check("127.0.0.1", port, "admin", PASSWORD, "camera", now=clock.now)).ok
    clock.now += 120
    later = await prober.check("127.0.0.1", port, "admin", PASSWORD, "camera", now=clock.now)
    assert later.ok, later.detail
    assert device.failed_logins == 0


async def test_basic_only_device_gets_no_password(sim: HikvisionSim, prober: IsapiProber, clock: Clock) -> None:
    """A device that offers no digest we can answer is auth_failed without any credential sent."""
    device, port = await add_device(sim, "ipc-v5")
    object.__setattr__(device, "firmware", FIRMWARE["ipc-v5"].__class__("basic", None, algorithms=("SHA-512",)))
    health = await prober.check("127.0.0.1", port, "admin", PASSWORD, "camera", now=clock.now)
    assert health.reason == "auth_failed" and health.requests == 1
    assert device.failed_logins == 0


# --- hostile bodies, slow and dead devices --------------------------------------------------


@pytest.mark.parametrize("fault", ["garbage", "truncated", "billion_laughs"])
async def test_bad_xml(sim: HikvisionSim, prober: IsapiProber, clock: Clock, fault: str) -> None:
    """Garbage, truncated and entity-bomb deviceInfo bodies are bad_xml; the rest of the check still runs."""
    _, port = await add_device(sim, "ipc-v5", body_faults={"/ISAPI/System/deviceInfo": fault})
    health = await prober.check("127.0.0.1", port, "admin", PASSWORD, "camera", now=clock.now)
    assert health.reason == "bad_xml" and health.identity is None
    assert health.status is not None


@pytest.mark.parametrize("fault", ["huge", "huge_unsized", "endless"])
async def test_huge_and_endless_bodies_are_cut_at_the_cap(
    sim: HikvisionSim, prober: IsapiProber, clock: Clock, fault: str
) -> None:
    """A 1 GB body (with or without length) or an endless stream is too_large, well within the timeout."""
    _, port = await add_device(sim, "ipc-v5", body_faults={"/ISAPI/System/deviceInfo": fault})
    started = time.monotonic()
    health = await prober.check("127.0.0.1", port, "admin", PASSWORD, "camera", now=clock.now)
    assert health.reason == "too_large"
    assert time.monotonic() - started < POLICY.request_timeout
    assert health.status is not None  # the connection was dropped, the next request got a fresh one


async def test_trickling_body_times_out(sim: HikvisionSim, prober: IsapiProber, clock: Clock) -> None:
    """A body that trickles forever under the cap ends as timeout at the request deadline, not later."""
    _, port = await add_device(sim, "ipc-v5", body_faults={"/ISAPI/System/deviceInfo": "trickle"})
    health = await prober.check("127.0.0.1", port, "admin", PASSWORD, "camera", now=clock.now)
    assert health.reason == "timeout"
    assert POLICY.request_timeout <= health.duration < POLICY.request_timeout + 1


async def test_slow_device_times_out(sim: HikvisionSim, prober: IsapiProber, clock: Clock) -> None:
    """Replies slower than the request timeout end the check as timeout within its deadline."""
    _, port = await add_device(sim, "ipc-v5", delay=3.0)
    health = await prober.check("127.0.0.1", port, "admin", PASSWORD, "camera", now=clock.now)
    assert health.reason == "timeout" and health.duration < POLICY.request_timeout + 1


async def test_closed_port_is_refused(prober: IsapiProber, clock: Clock) -> None:
    """Nothing listening is refused, quickly."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    health = await prober.check("127.0.0.1", port, "admin", PASSWORD, "camera", now=clock.now)
    assert health.reason == "refused" and health.duration < 1


# --- secrets -------------------------------------------------------------------------------------


async def test_secrets_never_in_results_or_logs(sim: HikvisionSim, prober: IsapiProber, clock: Clock) -> None:
    """Neither password nor any digest header appears in results, their repr, or log events."""
    _, port = await add_device(sim, "ipc-v5", max_failures=2, lock_seconds=600)
    with capture_logs() as logs:
        results = [await prober.check("127.0.0.1", port, "admin", PASSWORD, "camera", now=clock.now)]
        results.append(await prober.check("127.0.0.1", port, "admin", WRONG, "camera", now=clock.now))
        results.append(await prober.check("127.0.0.1", port, "admin", WRONG + "x", "camera", now=clock.now))
    assert [r.reason for r in results] == ["", "auth_failed", "locked"]
    assert {e["event"] for e in logs} == {"isapi_auth_failed", "isapi_device_locked"}
    text = repr(results) + repr(logs) + repr([r.probe_result() for r in results])
    for secret in (PASSWORD, WRONG, "Digest ", "response="):
        assert secret not in text


# --- AX PRO ----------------------------------------------------------------------------------------


async def _panel(sim: HikvisionSim, **faults: object) -> tuple[SimDevice, int]:
    device = SimDevice(kind="axpro", firmware=FIRMWARE["ipc-v5"], password=PASSWORD, **faults)  # type: ignore[arg-type]
    _host, port = await sim.add(device)
    return device, port


async def test_axpro_status_reuses_its_session(sim: HikvisionSim, prober: IsapiProber, clock: Clock) -> None:
    """A healthy panel reports areas and zones; the second read reuses the session cookie without a new login."""
    device, port = await _panel(sim)
    first = await prober.axpro_status("127.0.0.1", port, "admin", PASSWORD, now=clock.now)
    second = await prober.axpro_status("127.0.0.1", port, "admin", PASSWORD, now=clock.now)
    assert first.ok and second.ok, first.detail
    assert [z.status for z in second.zones] == ["online"] * 4 and second.subsystems[0].arming == "away"
    assert (device.authenticated, second.requests) == (1, 2)


async def test_axpro_zone_faults_and_tamper(sim: HikvisionSim, prober: IsapiProber, clock: Clock) -> None:
    """An offline zone is zone_fault and a tampered one is tamper."""
    _, port = await _panel(sim, zone_status={2: "offline"}, tampered_zones={3})
    status = await prober.axpro_status("127.0.0.1", port, "admin", PASSWORD, now=clock.now)
    assert [p.reason for p in status.problems] == ["zone_fault", "tamper"]
    assert "2 Zone 2 (offline)" in status.detail


async def test_axpro_wrong_password_one_failed_login(sim: HikvisionSim, prober: IsapiProber, clock: Clock) -> None:
    """A rejected session login is tried once per credential; repeats send nothing."""
    device, port = await _panel(sim)
    for _ in range(5):
        status = await prober.axpro_status("127.0.0.1", port, "admin", WRONG, now=clock.now)
        assert status.reason == "auth_failed"
    assert device.failed_logins == 1
    assert (await prober.axpro_status("127.0.0.1", port, "admin", PASSWORD, now=clock.now)).ok


async def test_swapped_camera_is_logged(tmp_path: Path) -> None:
    """Between two checks through the daemon's prober a new serial logs device_replaced, once."""
    (tmp_path / "hik").write_text("admin:pw-1\n")
    async with HikvisionSim() as sim, IsapiProber() as prober:
        camera = SimDevice(kind="camera", password="pw-1", serial="SERIAL-A")
        host, port = await sim.add(camera)
        device = Device("cam", "s1", DeviceKind.CAMERA, host, (ProbeSpec("isapi", port),), credentials="hik")
        ctx = ProbeContext(Settings(), secrets=Secrets(tmp_path))
        ctx.provide(prober)
        with capture_logs() as logs:
            assert (await isapi.probe(device, device.probes[0], ctx)).ok
            camera.serial = "SERIAL-B"
            assert (await isapi.probe(device, device.probes[0], ctx)).ok
            assert (await isapi.probe(device, device.probes[0], ctx)).ok
    replaced = [entry for entry in logs if entry["event"] == "device_replaced"]
    assert [(e["old_serial"], e["new_serial"]) for e in replaced] == [("SERIAL-A", "SERIAL-B")]


# --- redirects and broken challenges (issue 12) --------------------------------------------------


async def test_a_redirect_is_reported_never_followed(sim: HikvisionSim, prober: IsapiProber, clock: Clock) -> None:
    """A 302 to another device is a `redirect` result naming the target; the other device is never asked."""
    other, other_port = await add_device(sim, "ipc-v5", serial="OTHER-SERIAL")
    device, port = await add_device(sim, "ipc-v5", redirect_to=f"http://127.0.0.1:{other_port}")
    health = await prober.check("127.0.0.1", port, "admin", PASSWORD, "camera", now=clock.now)
    assert health.reason == "redirect" and not health.ok
    assert f"127.0.0.1:{other_port}/ISAPI/System/deviceInfo" in health.detail
    assert health.identity is None  # the other host's model and serial never became this camera's
    assert other.requests == 0 and device.requests == 1


async def _raw_device(reply: bytes) -> tuple[asyncio.Server, int]:
    """A device that answers every request with exactly `reply` (bytes no HTTP library would write)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(reply)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize(
    "challenge",
    [
        b'Digest realm="\xff\xfe\xfd", nonce="abc", qop="auth"',  # realm not UTF-8
        b'Digest realm="cam", nonce="a\x01b", qop="auth"',  # a control character in the nonce
    ],
    ids=["invalid-utf8-realm", "control-in-nonce"],
)
async def test_a_malformed_challenge_is_a_result_not_a_crash(
    prober: IsapiProber, clock: Clock, challenge: bytes
) -> None:
    """A digest challenge we cannot answer safely is `bad_challenge`, with no credential sent."""
    reply = b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: " + challenge + b"\r\nContent-Length: 0\r\n\r\n"
    server, port = await _raw_device(reply)
    async with server:
        health = await prober.check("127.0.0.1", port, "admin", PASSWORD, "camera", now=clock.now)
    assert health.reason == "bad_challenge" and health.requests == 1
    assert PASSWORD not in repr(health)


def test_every_isapi_reason_is_in_the_readme() -> None:
    """Every reason the client's docstring lists (`probes_total{result}` values) is in the README's table."""
    listed = set(re.findall(r"``([a-z_<>]+)``", (client.__doc__ or "").split("Reasons:", 1)[1]))
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Probe results", 1)[1].split("###", 1)[0]
    assert {"auth_failed", "bad_challenge", "redirect", "locked"} <= listed
    assert sorted(r for r in listed if f"`{r}`" not in section) == []
