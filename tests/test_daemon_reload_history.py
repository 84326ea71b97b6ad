"""A reload that removes a device or changes its address closes its history state (to unknown)."""

from __future__ import annotations

from pathlib import Path

from telemetryd.config import load_config
from telemetryd.model import Health, ProbeResult
from telemetryd.reachability.state import State

from .helpers import school, write_config


def _cameras(*hosts: str) -> list[dict[str, object]]:
    return [{"id": f"cam{n}", "kind": "camera", "host": host, "probes": ["tcp:554"]} for n, host in enumerate(hosts)]


def test_removed_and_readdressed_devices_go_unknown_others_keep_their_state(tmp_path: Path) -> None:
    """On reload a readdressed DOWN and a removed UP camera close to unknown; unchanged or unprobed ones don't."""
    old = load_config(write_config(tmp_path, [school("s1", _cameras("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"))]))
    state = State(down_after=1, up_after=1)
    state.sync(old.inventory)
    for device, ok in (("cam0", True), ("cam1", False), ("cam2", True)):
        state.apply(device, "tcp:554", ProbeResult(ok, 0.01, "" if ok else "timeout"), 100.0)
    # The new inventory: cam0 as it was, cam1 at a new address, cam2 and cam3 gone.
    new = load_config(write_config(tmp_path, [school("s1", _cameras("10.0.0.1", "10.0.0.9"))]))
    changes = state.sync(new.inventory, 200.0)
    by_device = {c.device_id: c for c in changes}
    # cam1 changed address (10.0.0.2 -> 10.0.0.9): reset; cam2 removed; cam3 was unknown: nothing to close.
    assert set(by_device) == {"cam1", "cam2"}
    assert (by_device["cam1"].old, by_device["cam1"].new, by_device["cam1"].reason) == (
        Health.DOWN,
        Health.UNKNOWN,
        "address changed",
    )
    assert (by_device["cam2"].old, by_device["cam2"].reason) == (Health.UP, "removed from the inventory")
    assert all(c.probe is None and c.at == 200.0 and c.school_id == "s1" for c in changes)
