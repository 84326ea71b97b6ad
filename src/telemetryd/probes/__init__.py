"""Probers: one module per protocol, one async contract, picked from a registry by name.

Adding a protocol is one module plus one entry in `PROBERS`. A prober that can serve
many devices in one sweep (ICMP over its shared socket) also registers in
`BATCH_PROBERS`; the scheduler then hands it every job due in the same tick.
"""

from collections.abc import Awaitable, Callable, Sequence

from telemetryd.model import Device, ProbeResult
from telemetryd.probes import icmp, isapi, rtsp, tcp
from telemetryd.probes.base import ProbeContext, Prober

BatchProber = Callable[[Sequence[Device], ProbeContext], Awaitable[list[ProbeResult]]]

PROBERS: dict[str, Prober] = {
    "icmp": icmp.probe,
    "tcp": tcp.probe,
    "rtsp": rtsp.probe,
    "isapi": isapi.probe,
    "axpro": isapi.probe_axpro,
}

BATCH_PROBERS: dict[str, BatchProber] = {
    "icmp": icmp.probe_many,
}

__all__ = ["BATCH_PROBERS", "PROBERS", "BatchProber", "ProbeContext", "Prober"]
