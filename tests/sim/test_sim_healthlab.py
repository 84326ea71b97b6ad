"""The demo's health lab: devices that answer as their listed fault says, in a valid inventory."""

from __future__ import annotations

import asyncio
from pathlib import Path

from telemetryd.config import load_inventory
from telemetryd.model import DeviceKind
from telemetryd.probes.rtsp import options
from telemetryd.sim.healthlab import FAULTS, SCHOOL, HealthLab


def test_lab_writes_a_loadable_inventory_and_its_devices_answer(tmp_path: Path) -> None:
    """Every listed device is in the inventory; live cameras answer RTSP, the dead one is refused; stop cleans up."""
    lab = HealthLab(tmp_path / "inventory", tmp_path / "credentials").start(sia_port=9)
    try:
        inventory = load_inventory(tmp_path / "inventory")
        devices = inventory.schools_by_id[SCHOOL].devices
        assert {d.id for d in devices} == set(FAULTS)
        assert (tmp_path / "credentials" / "hik-demo").read_text().startswith("admin:")
        cameras = [d for d in devices if d.kind is DeviceKind.CAMERA]

        async def stream_checks() -> dict[str, str]:
            found = {}
            for camera in cameras:
                spec = next(p for p in camera.probes if p.protocol == "rtsp")
                assert spec.port is not None
                result = await options(camera.host, spec.port, timeout=2.0)
                found[camera.id] = "ok" if result.ok else result.reason
            return found

        found = asyncio.run(stream_checks())
        assert found.pop(f"{SCHOOL}-cam-dead") == "refused"
        assert set(found.values()) == {"ok"}
        assert [d.sia.account for d in devices if d.sia is not None] == ["7701", "7702"]
    finally:
        lab.stop()
    assert not (tmp_path / "inventory" / "health-lab.yaml").exists()
