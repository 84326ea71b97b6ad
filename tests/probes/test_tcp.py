"""TCP connect probe against real listeners on 127.0.0.1."""

from __future__ import annotations

import socket
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
