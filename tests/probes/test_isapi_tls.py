"""ISAPI over HTTPS against the simulator on 127.0.0.1: first-use pins, changed certificates, CA bundles, TLS faults."""

from __future__ import annotations

import asyncio
import json
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from telemetryd.probes.isapi import IsapiPolicy, IsapiProber
from telemetryd.probes.isapi.pins import PIN_FILE, PinFileError, PinStore, endpoint, short
from telemetryd.sim.certs import certificate_authority, der_sha256, issued_by
from telemetryd.sim.hikvision import FIRMWARE, HikvisionSim, SimDevice

PASSWORD = "Correct-Horse-7"
POLICY = IsapiPolicy(request_timeout=1.0, check_timeout=4.0)


@pytest.fixture
async def sim() -> AsyncIterator[HikvisionSim]:
    """A simulator on 127.0.0.1 ephemeral ports."""
    simulator = HikvisionSim()
    yield simulator
    await simulator.close()


def _prober(state: Path | None, *, ca_file: str | None = None) -> IsapiProber:
    return IsapiProber(policy=POLICY, pins=PinStore.in_state(state), ca_file=ca_file)


async def _https_camera(sim: HikvisionSim, **options: object) -> tuple[SimDevice, tuple[str, int]]:
    device = SimDevice(firmware=FIRMWARE["ipc-v5"], password=PASSWORD, tls=True, **options)  # type: ignore[arg-type]
    return device, await sim.add(device)


async def _written(pin_file: Path) -> None:
    """New pins reach the file within a second (writes are gathered, not one per device)."""
    for _ in range(30):
        if pin_file.exists():  # noqa: ASYNC240 - one stat in tmp_path
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{pin_file} not written")


async def _check(prober: IsapiProber, port: int) -> object:
    return await prober.check("127.0.0.1", port, "admin", PASSWORD, "camera", now=time.time(), tls=True)


async def test_https_check_pins_on_first_use_and_the_pin_survives_a_restart(sim: HikvisionSim, tmp_path: Path) -> None:
    """The first HTTPS check pins the leaf's SHA-256 in a 0600 file, no secrets; a new prober on it requires it."""
    device, (host, port) = await _https_camera(sim)
    async with _prober(tmp_path) as prober:
        health = await _check(prober, port)
        assert health.ok, health.detail  # type: ignore[attr-defined]
        assert health.certificate == short(der_sha256(device.certificate))  # type: ignore[attr-defined,arg-type]
    pin_file = tmp_path / PIN_FILE
    assert stat.S_IMODE(pin_file.stat().st_mode) == 0o600
    text = pin_file.read_text()
    assert PASSWORD not in text and "admin" not in text and "Digest" not in text
    assert json.loads(text)["pins"][endpoint(host, port)]["sha256"] == der_sha256(device.certificate).hex()  # type: ignore[arg-type]

    await sim.swap_certificate((host, port))
    before = device.requests
    async with _prober(tmp_path) as restarted:  # a new process: only the file remembers the pin
        health = await _check(restarted, port)
    assert health.reason == "certificate_changed"  # type: ignore[attr-defined]
    assert device.requests == before


async def test_a_swapped_certificate_sends_nothing_until_re_trusted(sim: HikvisionSim, tmp_path: Path) -> None:
    """A swap is certificate_changed (both prefixes, logged once), nothing sent; forgetting the pin re-trusts."""
    device, (host, port) = await _https_camera(sim)
    old = der_sha256(device.certificate)  # type: ignore[arg-type]
    async with _prober(tmp_path) as prober:
        assert (await _check(prober, port)).ok  # type: ignore[attr-defined]
        await _written(tmp_path / PIN_FILE)
        new = der_sha256(await sim.swap_certificate((host, port)))
        await asyncio.sleep(0.1)  # the client sees its pooled connections closed, as with a new box
        seen = (device.requests, device.authenticated, device.failed_logins)
        with capture_logs() as logs:
            first = await _check(prober, port)
            second = await _check(prober, port)
        for health in (first, second):
            assert not health.ok and health.reason == "certificate_changed"  # type: ignore[attr-defined]
            assert health.certificate_changed  # type: ignore[attr-defined]
        assert short(old) in first.detail and short(new) in first.detail  # type: ignore[attr-defined]
        assert (device.requests, device.authenticated, device.failed_logins) == seen
        changed = [e for e in logs if e["event"] == "isapi_certificate_changed"]
        assert len(changed) == 1 and changed[0]["shown"] == short(new)

        assert PinStore.in_state(tmp_path).forget(endpoint(host, port))  # what `telemetryd pins forget` does
        health = await _check(prober, port)
        assert health.ok and not health.certificate_changed, health.detail  # type: ignore[attr-defined]
        assert health.certificate == short(new)  # type: ignore[attr-defined]
    assert PinStore.in_state(tmp_path).get(endpoint(host, port)) == new


async def test_ca_bundle_accepts_its_certificates_and_rejects_self_signed(sim: HikvisionSim, tmp_path: Path) -> None:
    """With a CA bundle a certificate it signed for the device's IP passes; a self-signed one is tls_error."""
    ca = certificate_authority(tmp_path)
    signed, (_host, signed_port) = await _https_camera(sim, certificate=issued_by(ca, tmp_path, "127.0.0.1"))
    stranger, (_host, stranger_port) = await _https_camera(sim)
    async with _prober(tmp_path, ca_file=str(ca.cert)) as prober:
        good = await _check(prober, signed_port)
        bad = await _check(prober, stranger_port)
    assert good.ok, good.detail  # type: ignore[attr-defined]
    assert bad.reason == "tls_error" and "not trusted" in bad.detail  # type: ignore[attr-defined]
    assert stranger.requests == 0 and signed.authenticated > 0
    assert not (tmp_path / PIN_FILE).exists()  # a CA bundle replaces pinning


async def test_a_certificate_for_another_address_is_rejected_with_a_ca_bundle(
    sim: HikvisionSim, tmp_path: Path
) -> None:
    """The IP SAN is checked: a CA-signed certificate for another address is tls_error."""
    ca = certificate_authority(tmp_path)
    device, (_host, port) = await _https_camera(sim, certificate=issued_by(ca, tmp_path, "10.9.9.9"))
    async with _prober(None, ca_file=str(ca.cert)) as prober:
        health = await _check(prober, port)
    assert health.reason == "tls_error" and device.requests == 0  # type: ignore[attr-defined]


async def test_an_expired_certificate_is_rejected_with_a_ca_bundle(sim: HikvisionSim, tmp_path: Path) -> None:
    """A CA-signed certificate past its notAfter is tls_error naming the expiry; nothing is sent."""
    ca = certificate_authority(tmp_path)
    device, (_host, port) = await _https_camera(sim, certificate=issued_by(ca, tmp_path, "127.0.0.1", days=0))
    await asyncio.sleep(1.1)  # notAfter is the second it was made
    async with _prober(None, ca_file=str(ca.cert)) as prober:
        health = await _check(prober, port)
    assert health.reason == "tls_error" and "expired" in health.detail, health.detail  # type: ignore[attr-defined]
    assert device.requests == 0


async def test_plain_http_on_the_tls_port_is_a_tls_error(sim: HikvisionSim) -> None:
    """A device answering plain HTTP where TLS was configured is tls_error, quickly, and got no credential."""
    device = SimDevice(firmware=FIRMWARE["ipc-v5"], password=PASSWORD)
    _host, port = await sim.add(device)
    async with _prober(None) as prober:
        started = time.monotonic()
        health = await _check(prober, port)
    assert health.reason == "tls_error", health.detail  # type: ignore[attr-defined]
    assert time.monotonic() - started < 2 and device.authenticated == 0 and device.failed_logins == 0


@pytest.mark.parametrize("reply", [b"\x16\x03\x01\x00\x05garbage-handshake" * 4, b""])
async def test_garbage_or_a_hang_up_in_the_handshake_is_a_tls_error(reply: bytes) -> None:
    """A peer that answers the ClientHello with garbage, or hangs up, is tls_error, never a crash."""

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(reply)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(peer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with _prober(None) as prober:
            started = time.monotonic()
            health = await _check(prober, port)
    finally:
        server.close()
        await server.wait_closed()
    assert health.reason == "tls_error", health.detail  # type: ignore[attr-defined]
    assert time.monotonic() - started < 2


async def test_a_silent_handshake_is_a_timeout() -> None:
    """A peer that accepts and never answers the ClientHello is timeout within the request timeout."""
    held: list[asyncio.StreamWriter] = []

    async def peer(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(peer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with _prober(None) as prober:
            health = await _check(prober, port)
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
    assert health.reason == "timeout" and "TLS handshake" in health.detail  # type: ignore[attr-defined]


async def test_https_forcing_firmware_redirect_is_not_followed(sim: HikvisionSim) -> None:
    """Firmware that forces HTTPS answers plain HTTP with a 302 to https: a redirect result, not followed."""
    tls_device, (_h, tls_port) = await _https_camera(sim)
    plain = SimDevice(firmware=FIRMWARE["ipc-v5"], password=PASSWORD, redirect_to=f"https://127.0.0.1:{tls_port}")
    _host, port = await sim.add(plain)
    async with _prober(None) as prober:
        health = await prober.check("127.0.0.1", port, "admin", PASSWORD, "camera", now=time.time())
    assert health.reason == "redirect" and f"https://127.0.0.1:{tls_port}" in health.detail
    assert tls_device.requests == 0


async def test_a_corrupt_pin_file_fails_https_closed_and_is_kept(sim: HikvisionSim, tmp_path: Path) -> None:
    """A corrupt pin file makes HTTPS checks pins_unreadable naming it, nothing sent, file kept; removing it resumes."""
    device, (_host, port) = await _https_camera(sim)
    pin_file = tmp_path / PIN_FILE
    pin_file.write_text('{"version": 1, "pins": {"127.0.0.1:1": ')
    with capture_logs() as logs:
        async with _prober(tmp_path) as prober:
            health = await _check(prober, port)
            assert health.reason == "pins_unreadable" and str(pin_file) in health.detail  # type: ignore[attr-defined]
            assert device.requests == 0
            assert any(e["event"] == "isapi_pin_file_unreadable" and e["path"] == str(pin_file) for e in logs)
            pin_file.unlink()  # the operator's fix: remove it (every HTTPS device is trusted anew)
            assert (await _check(prober, port)).ok  # type: ignore[attr-defined]
    assert PinStore.in_state(tmp_path).get(endpoint("127.0.0.1", port)) == der_sha256(device.certificate)  # type: ignore[arg-type]


def test_pin_store_merges_with_what_another_process_wrote(tmp_path: Path) -> None:
    """A write re-reads the file first: a pin another process forgot stays forgotten, a pin it added is kept."""
    daemon, operator = PinStore.in_state(tmp_path), PinStore.in_state(tmp_path)
    daemon.learn("10.0.0.1:443", b"\x01" * 32, now=0)
    daemon.save()
    operator.refresh()
    assert operator.forget("10.0.0.1:443")
    daemon.learn("10.0.0.2:443", b"\x02" * 32, now=0)
    daemon.save()
    assert [key for key, _ in PinStore.in_state(tmp_path).items()] == ["10.0.0.2:443"]
    assert daemon.get("10.0.0.1:443") is None


def test_a_corrupt_pin_file_is_never_overwritten(tmp_path: Path) -> None:
    """A pin learned while the file is corrupt stays in memory; the file keeps its bytes; forget refuses, naming it."""
    store = PinStore.in_state(tmp_path)
    store.learn("10.0.0.1:443", b"\x01" * 32, now=0)
    corrupt = b'{"version": 1, "pins": {"10.0.0.9:443": {"sha256": "zz"}}}'
    (tmp_path / PIN_FILE).write_bytes(corrupt)
    store.save()
    assert store.problem is not None and str(tmp_path / PIN_FILE) in str(store.problem)
    assert (tmp_path / PIN_FILE).read_bytes() == corrupt
    assert store.get("10.0.0.1:443") == b"\x01" * 32 and store.dirty
    with pytest.raises(PinFileError, match=PIN_FILE):
        store.forget("10.0.0.9:443")
    assert (tmp_path / PIN_FILE).read_bytes() == corrupt
