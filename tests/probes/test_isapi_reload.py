"""The ISAPI prober across a reload: removed devices forgotten, kept ones keep their login state; AX PRO timeout."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from telemetryd.config.settings import Settings
from telemetryd.model import Contract, Device, DeviceKind, Inventory, ProbeSpec, School
from telemetryd.probes.base import ProbeContext
from telemetryd.probes.isapi import IsapiProber, isapi_endpoints, policy_from, probe_axpro
from telemetryd.secrets import Secrets
from telemetryd.sim.hikvision import FIRMWARE, HikvisionSim, SimDevice

PASSWORD = "Correct-Horse-7"
WRONG = "Wrong-Battery-9"


@pytest.fixture
async def sim() -> AsyncIterator[HikvisionSim]:
    """A simulator on 127.0.0.1 ephemeral ports."""
    simulator = HikvisionSim()
    yield simulator
    await simulator.close()


def _inventory(*ports: int, protocol: str = "isapi") -> Inventory:
    devices = tuple(
        Device(
            id=f"cam-{port}",
            school_id="s1",
            kind=DeviceKind.CAMERA,
            host="127.0.0.1",
            probes=(ProbeSpec(protocol, port),),
        )
        for port in ports
    )
    return Inventory.build([School("s1", "School 1", "Abay", Contract(), devices)])


def test_isapi_endpoints_are_the_isapi_and_axpro_probes() -> None:
    """Every isapi and axpro probe's (host, port, tls) is an endpoint, default ports 80/443 filled in; icmp is not."""
    device = Device(
        id="nvr",
        school_id="s1",
        kind=DeviceKind.NVR,
        host="10.0.0.5",
        probes=(ProbeSpec("icmp"), ProbeSpec("isapi"), ProbeSpec("axpro", 8080), ProbeSpec("isapi", tls=True)),
    )
    inventory = Inventory.build([School("s1", "School 1", "Abay", Contract(), (device,))])
    assert isapi_endpoints(inventory) == {("10.0.0.5", 80, False), ("10.0.0.5", 8080, False), ("10.0.0.5", 443, True)}


async def test_reload_forgets_removed_devices_and_keeps_a_rejected_credential_rejected(sim: HikvisionSim) -> None:
    """After a reload a removed device's state is gone, and a kept device's rejected password is still not retried."""
    kept = SimDevice(kind="camera", firmware=FIRMWARE["ipc-v5"], password=PASSWORD)
    removed = SimDevice(kind="camera", firmware=FIRMWARE["ipc-v5"], password=PASSWORD)
    _, kept_port = await sim.add(kept)
    _, removed_port = await sim.add(removed)
    async with IsapiProber() as prober:
        now = time.time()
        assert (await prober.check("127.0.0.1", kept_port, "admin", WRONG, "camera", now=now)).reason == "auth_failed"
        assert (await prober.check("127.0.0.1", removed_port, "admin", PASSWORD, "camera", now=now)).ok
        assert prober.devices == 2

        prober.reconfigure(Settings.model_validate({"probes": {"isapi": {"timeout": "12s"}}}), _inventory(kept_port))

        assert prober.devices == 1
        assert prober.policy.check_timeout == 12.0
        assert prober.client("127.0.0.1", kept_port).policy.check_timeout == 12.0
        again = await prober.check("127.0.0.1", kept_port, "admin", WRONG, "camera", now=now + 60)
        assert (again.reason, again.requests) == ("auth_failed", 0)
        assert kept.failed_logins == 1


async def test_axpro_read_is_bounded_by_probes_axpro_timeout(sim: HikvisionSim, tmp_path: Path) -> None:
    """A panel slower than `probes.axpro.timeout` ends as timeout after that timeout, not the ISAPI check timeout."""
    panel = SimDevice(kind="axpro", firmware=FIRMWARE["ipc-v5"], password=PASSWORD, delay=2.0)
    _, port = await sim.add(panel)
    (tmp_path / "hik").write_text(f"admin:{PASSWORD}\n")
    settings = Settings.model_validate({"probes": {"axpro": {"timeout": "500ms"}, "isapi": {"timeout": "30s"}}})
    device = Device(
        id="panel",
        school_id="s1",
        kind=DeviceKind.ALARM_PANEL,
        host="127.0.0.1",
        credentials="hik",
        probes=(ProbeSpec("axpro", port),),
    )
    ctx = ProbeContext(settings, Secrets(tmp_path))
    async with IsapiProber(policy=policy_from(settings)) as prober:
        ctx.provide(prober)
        started = time.monotonic()
        result = await probe_axpro(device, device.probes[0], ctx)
    assert (result.ok, result.reason) == (False, "timeout")
    assert "0.5s" in result.detail
    assert time.monotonic() - started < 1.5
