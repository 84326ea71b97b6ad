"""The one contract every prober follows, and what probers share."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from telemetryd.config.settings import Settings
from telemetryd.model import Device, ProbeResult, ProbeSpec

if TYPE_CHECKING:
    from telemetryd.probes.icmp import Pinger
    from telemetryd.probes.isapi import IsapiProber
    from telemetryd.secrets import Secrets


@dataclass(slots=True)
class ProbeContext:
    """Long-lived resources handed to every probe: settings and shared sockets.

    Built once by the daemon inside the running loop; probers never create their own
    sockets per probe where a shared one exists (ICMP).
    """

    settings: Settings
    pinger: Pinger | None = None
    isapi: IsapiProber | None = None
    secrets: Secrets | None = None
    details: dict[tuple[str, str], object] = field(default_factory=dict)
    """(device id, probe name) → the prober's full finding (e.g. IsapiHealth), for the exporter."""
    log: structlog.typing.FilteringBoundLogger = field(default_factory=lambda: structlog.get_logger("telemetryd.probe"))


Prober = Callable[[Device, ProbeSpec, ProbeContext], Awaitable[ProbeResult]]
"""`async def probe(device, spec, ctx) -> ProbeResult`; raises only on programmer error."""
