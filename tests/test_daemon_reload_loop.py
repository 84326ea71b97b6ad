"""The reload loop in-process: an exception no configuration should cause still leaves it serving SIGHUPs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import structlog

from telemetryd.config import load_config
from telemetryd.daemon import Daemon
from telemetryd.reachability.state import State

from .helpers import school, write_config


async def test_a_bug_in_planning_fails_the_reload_and_the_next_reload_applies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload whose planning raises is logged as reload_failed with the reason, the reload gauge reads 0,
    and the next SIGHUP (with the bug gone) applies the new inventory: the loop did not die."""
    router = {"id": "s1-router", "kind": "router", "host": "10.0.0.1"}
    path = write_config(tmp_path, [school("s1", [router])])
    daemon = Daemon(load_config(path))
    planning = State.planning

    def broken(self: State, inventory: object) -> object:
        raise RuntimeError("a bug met by this inventory\nsecond line")

    monkeypatch.setattr(State, "planning", broken)
    task = asyncio.create_task(daemon._reload_loop())
    try:
        with structlog.testing.capture_logs() as logs:
            daemon._reload_requested.set()
            for _ in range(100):
                await asyncio.sleep(0.01)
                if logs:
                    break
        [failed] = [entry for entry in logs if entry["event"] == "reload_failed"]
        assert failed["reason"] == "RuntimeError: a bug met by this inventory"
        assert daemon.instance.last_reload_ok is False
        assert not task.done()

        monkeypatch.setattr(State, "planning", planning)
        other = {**router, "id": "s2-router", "host": "10.0.0.2"}
        write_config(tmp_path, [school("s1", [router]), school("s2", [other])])
        daemon._reload_requested.set()
        for _ in range(200):
            await asyncio.sleep(0.01)
            if daemon.config.inventory.device_count == 2:
                break
        assert daemon.config.inventory.device_count == 2
        assert daemon.instance.last_reload_ok is True
    finally:
        task.cancel()
