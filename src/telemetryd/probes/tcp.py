"""TCP connect probe: is the port (RTSP 554, HTTP 80, an alarm panel's port) accepting?

The scheduler's path is `probe_many`: every TCP job due in one tick becomes a non-blocking
socket whose completed (or refused) handshake the event loop reports, all under one timer.
At 100,000 devices (~3,000 connects a second) that leaves the syscalls as the cost: no Task,
timeout object, transport or protocol per probe. `probe` (one device, `telemetryd probe`)
goes the same way. Refused and timed out are reported apart: refused means the host is up
but the service is not; timeout means nothing answered.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import time
from collections.abc import Sequence

from telemetryd.model import Device, ProbeResult, ProbeSpec
from telemetryd.probes.base import ProbeContext

_UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN}
_NO_RESULT = ProbeResult(False, 0.0, "error", "internal error: no result")


class _Sweep:
    """One batch of connects in flight: results by index, a future done when the last one ends."""

    def __init__(self, loop: asyncio.AbstractEventLoop, targets: Sequence[tuple[str, int]], timeout: float) -> None:
        self.loop = loop
        self.targets = targets
        self.timeout = timeout
        self.results: list[ProbeResult | None] = [None] * len(targets)
        self.sockets: dict[int, socket.socket] = {}
        """index → socket still connecting (registered with the loop as a writer)."""
        self.started = time.monotonic()
        self.done = loop.create_future()

    def start(self) -> None:
        """Open every socket and begin its handshake; the ones that end at once are settled now."""
        for index, (host, port) in enumerate(self.targets):
            try:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
            except OSError as exc:  # out of file descriptors: a result, not a crash
                self.results[index] = _failed(port, exc.errno, time.monotonic() - self.started)
                continue
            try:
                code = sock.connect_ex((host, port))
            except (OSError, OverflowError, ValueError) as exc:  # no such address or port: a result, alone
                code = getattr(exc, "errno", None) or errno.EINVAL
            if code == errno.EINPROGRESS:
                self.sockets[index] = sock
                self.loop.add_writer(sock.fileno(), self._writable, index)
            else:
                sock.close()
                self.results[index] = _outcome(port, code, time.monotonic() - self.started)
        if not self.sockets:
            _settle(self.done)

    def _writable(self, index: int) -> None:
        sock = self.sockets.pop(index)
        self.loop.remove_writer(sock.fileno())
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        sock.close()  # a completed handshake is all we wanted: FIN, nothing sent
        self.results[index] = _outcome(self.targets[index][1], code, time.monotonic() - self.started)
        if not self.sockets:
            _settle(self.done)

    def expire(self) -> None:
        """The timeout passed: whatever is still connecting did not answer."""
        duration = time.monotonic() - self.started
        for index, sock in self.sockets.items():
            self.loop.remove_writer(sock.fileno())
            sock.close()
            port = self.targets[index][1]
            self.results[index] = ProbeResult(
                False, duration, "timeout", f"no answer on port {port} in {self.timeout:g}s"
            )
        self.sockets.clear()
        _settle(self.done)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _outcome(port: int, code: int, duration: float) -> ProbeResult:
    if code == 0:
        return ProbeResult(True, duration, rtt=duration)
    return _failed(port, code, duration)


def _failed(port: int, code: int | None, duration: float) -> ProbeResult:
    if code == errno.ECONNREFUSED:
        return ProbeResult(False, duration, "refused", f"port {port} refused the connection")
    reason = "unreachable" if code in _UNREACHABLE else "error"
    name = errno.errorcode.get(code or 0, "error")
    return ProbeResult(False, duration, reason, f"port {port}: {name} ({os.strerror(code or 0)})")


async def connect_many(targets: Sequence[tuple[str, int]], timeout: float) -> list[ProbeResult]:
    """Open and close one TCP connection to each (host, port) at once; results in the order of `targets`."""
    sweep = _Sweep(asyncio.get_running_loop(), targets, timeout)
    timer = sweep.loop.call_later(timeout, sweep.expire)
    try:
        sweep.start()
        await sweep.done
    finally:
        timer.cancel()
        if sweep.sockets:  # cancelled (a deadline, a shutdown): leave no socket registered
            sweep.expire()
    return [result or _NO_RESULT for result in sweep.results]  # every index was settled above


async def connect(host: str, port: int, timeout: float) -> ProbeResult:
    """Open and close one TCP connection; the result says how it went and how long it took."""
    return (await connect_many([(host, port)], timeout))[0]


async def probe(device: Device, spec: ProbeSpec, ctx: ProbeContext) -> ProbeResult:
    """Connect to the device's port from the probe spec."""
    return (await probe_many([(device, spec)], ctx))[0]


async def probe_many(targets: Sequence[tuple[Device, ProbeSpec]], ctx: ProbeContext) -> list[ProbeResult]:
    """Connect to every (device, port) due together, under one timer; the scheduler's path for TCP."""
    for device, spec in targets:
        if spec.port is None:
            raise ValueError(f"tcp probe of {device.id} without a port")  # the config loader forbids this
    pairs = [(device.host, spec.port) for device, spec in targets if spec.port is not None]
    return await connect_many(pairs, ctx.settings.timeout_for("tcp"))
