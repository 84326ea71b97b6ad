"""Shared set-up of the ISAPI tests: a hand-moved clock and the Hikvision simulator on 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from telemetryd.probes.isapi import IsapiPolicy
from telemetryd.sim.hikvision import FIRMWARE, HikvisionSim, SimDevice

PASSWORD = "Correct-Horse-7"
WRONG = "Wrong-Battery-9"
POLICY = IsapiPolicy(request_timeout=1.0, check_timeout=5.0, max_body_bytes=256 * 1024)


@dataclass
class Clock:
    """A wall clock the test moves by hand, shared by the simulator and the checks."""

    now: float

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    """Sim and client time, starting at the real time."""
    return Clock(time.time())


@pytest.fixture
async def sim(clock: Clock) -> AsyncIterator[HikvisionSim]:
    """A simulator on 127.0.0.1 ephemeral ports."""
    simulator = HikvisionSim(clock=clock)
    yield simulator
    await simulator.close()


async def add_device(sim: HikvisionSim, firmware: str = "ipc-v5", **faults: object) -> tuple[SimDevice, int]:
    """A device of `firmware` (an NVR when its name says so) with `faults` set, serving on an ephemeral port."""
    kind = "nvr" if firmware.startswith("nvr") else "camera"
    device = SimDevice(kind=kind, firmware=FIRMWARE[firmware], password=PASSWORD, **faults)  # type: ignore[arg-type]
    _host, port = await sim.add(device)
    return device, port
