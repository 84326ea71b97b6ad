"""TCP connect probe: is the port (RTSP 554, HTTP 80, an alarm panel's port) accepting?

A bare asyncio Protocol keeps the cost near the syscalls (no StreamReader/Writer pair
per probe), which matters at 10,000 devices. Refused and timed out are reported apart:
refused means the host is up but the service is not; timeout means nothing answered.
"""

from __future__ import annotations

import asyncio
import errno
import time

from telemetryd.model import Device, ProbeResult, ProbeSpec
from telemetryd.probes.base import ProbeContext

_UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN}


class _Connected(asyncio.Protocol):
    """Closes as soon as the handshake completes; we only need to know it completed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


async def connect(host: str, port: int, timeout: float) -> ProbeResult:
    """Open and close one TCP connection; the result says how it went and how long it took."""
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            await loop.create_connection(_Connected, host, port)
    except TimeoutError:
        return ProbeResult(False, time.monotonic() - started, "timeout", f"no answer on port {port} in {timeout:g}s")
    except ConnectionRefusedError:
        return ProbeResult(False, time.monotonic() - started, "refused", f"port {port} refused the connection")
    except OSError as exc:
        reason = "unreachable" if exc.errno in _UNREACHABLE else "error"
        name = errno.errorcode.get(exc.errno or 0, "error")
        return ProbeResult(False, time.monotonic() - started, reason, f"port {port}: {name} ({exc.strerror})")
    duration = time.monotonic() - started
    return ProbeResult(True, duration, rtt=duration)


async def probe(device: Device, spec: ProbeSpec, ctx: ProbeContext) -> ProbeResult:
    """Connect to the device's port from the probe spec."""
    if spec.port is None:
        raise ValueError(f"tcp probe of {device.id} without a port")  # the config loader forbids this
    return await connect(device.host, spec.port, ctx.settings.timeout_for("tcp"))
