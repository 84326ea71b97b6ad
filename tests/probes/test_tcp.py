"""TCP connect probe against real listeners on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterator

import pytest

from telemetryd.config.settings import Settings
from telemetryd.model import Device, DeviceKind, ProbeSpec
from telemetryd.probes import ProbeContext, tcp


@pytest.fixture
def listener() -> Iterator[int]:
    """A listening socket on an ephemeral port of 127.0.0.1."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_open_port_is_ok_with_connect_time(listener: int) -> None:
    """A listening port gives ok and a connect time well under the timeout."""
    result = await tcp.connect("127.0.0.1", listener, timeout=2.0)
    assert result.ok
    assert result.rtt is not None and 0 < result.rtt < 0.5


async def test_closed_port_is_refused_not_timeout() -> None:
    """A host that answers with RST is reported as refused, quickly."""
    result = await tcp.connect("127.0.0.1", _free_port(), timeout=2.0)
    assert (result.ok, result.reason) == (False, "refused")
    assert result.duration < 0.5
    assert "refused" in result.detail


async def test_silent_port_is_timeout() -> None:
    """A listener whose accept queue is full drops SYNs: the probe ends as a timeout at its deadline."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(0)
    port = sock.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):  # fill the accept queue so further SYNs are dropped
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        result = await tcp.connect("127.0.0.1", port, timeout=0.5)
    finally:
        for filler in fillers:
            filler.close()
        sock.close()
    assert (result.ok, result.reason) == (False, "timeout")
    assert 0.45 <= result.duration < 1.5


async def test_probe_uses_device_port_and_settings_timeout(listener: int) -> None:
    """The registry entry connects to the port from the device's probe spec."""
    device = Device("cam", "s1", DeviceKind.CAMERA, "127.0.0.1", (ProbeSpec("tcp", listener),))
    result = await tcp.probe(device, ProbeSpec("tcp", listener), ProbeContext(Settings()))
    assert result.ok


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose accept queue is full, so further SYNs are dropped: connects to it time out."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(0)
    port = sock.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    try:
        yield port
    finally:
        for filler in fillers:
            filler.close()
        sock.close()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_a_sweep_settles_every_target_in_order_and_closes_every_socket(listener: int, silent_port: int) -> None:
    """Open, refused and silent ports in one sweep: one result each, in order, under one timeout, no fd left."""
    closed = _free_port()
    targets = [("127.0.0.1", listener), ("127.0.0.1", closed), ("127.0.0.1", silent_port)] * 10
    before = _open_fds()
    started = time.monotonic()
    results = await tcp.connect_many(targets, timeout=0.5)
    elapsed = time.monotonic() - started
    assert [(r.ok, r.reason) for r in results] == [(True, ""), (False, "refused"), (False, "timeout")] * 10
    assert all(f"port {silent_port}" in r.detail for r in results[2::3])
    assert 0.45 <= elapsed < 1.5  # the silent ones share one timer: 0.5 s for all ten, not 5 s
    assert _open_fds() == before


async def test_a_cancelled_sweep_leaves_no_socket_behind(silent_port: int) -> None:
    """A scheduler deadline or a shutdown cancelling the sweep unregisters and closes what was connecting."""
    before = _open_fds()
    task = asyncio.create_task(tcp.connect_many([("127.0.0.1", silent_port)] * 10, timeout=30.0))
    await asyncio.sleep(0.1)
    assert _open_fds() == before + 10
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _open_fds() == before


async def test_probe_many_connects_each_jobs_own_port(listener: int) -> None:
    """The scheduler's batch path: an NVR's two TCP jobs in one sweep each get their own port's answer."""
    closed = _free_port()
    nvr = Device("nvr", "s1", DeviceKind.NVR, "127.0.0.1", (ProbeSpec("tcp", listener), ProbeSpec("tcp", closed)))
    results = await tcp.probe_many([(nvr, spec) for spec in nvr.probes], ProbeContext(Settings()))
    assert [(r.ok, r.reason) for r in results] == [(True, ""), (False, "refused")]


async def test_a_bad_address_in_a_sweep_is_a_result_for_it_alone(listener: int) -> None:
    """A target that cannot be connected to at all (port 70000) fails by itself; the rest still connects."""
    results = await tcp.connect_many([("127.0.0.1", 70000), ("127.0.0.1", listener)], timeout=1.0)
    assert not results[0].ok and results[0].reason == "error"
    assert results[1].ok
