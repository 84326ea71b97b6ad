"""Probers: one module per protocol, one async contract, picked from a registry by name.

Adding a protocol is one module plus one entry in `PROBERS`. A prober that can serve
many devices in one sweep (ICMP over its shared socket, TCP as non-blocking connects
under one timer) also registers in
`BATCH_PROBERS`; the scheduler then hands it every job due in the same tick. A prober
that holds something for its life (a socket, an HTTP session) registers its opener in
`RESOURCES`: the daemon and `telemetryd probe` open them the same way, through
`open_resources`. A protocol whose worst case is more than its `timeout` says how much
in `BUDGETS`, which the scheduler's deadline rests on.
"""

from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AsyncExitStack

from telemetryd.model import Device, ProbeResult, ProbeSpec
from telemetryd.probes import icmp, isapi, rtsp, tcp
from telemetryd.probes.base import Budget, ProbeContext, Prober, Reconfigurable, ResourceOpener, ResourceUnavailable

BatchProber = Callable[[Sequence[tuple[Device, ProbeSpec]], ProbeContext], Awaitable[list[ProbeResult]]]
"""Many (device, probe) jobs due together in, one result per job in their order out."""

PROBERS: dict[str, Prober] = {
    "icmp": icmp.probe,
    "tcp": tcp.probe,
    "rtsp": rtsp.probe,
    "isapi": isapi.probe,
    "axpro": isapi.probe_axpro,
}

BATCH_PROBERS: dict[str, BatchProber] = {
    "icmp": icmp.probe_many,
    "tcp": tcp.probe_many,
}

BUDGETS: dict[str, Budget] = {
    "icmp": icmp.sweep_budget,
}
"""protocol → its worst case when it is more than `timeout` (the scheduler's deadline rests on it)."""

RESOURCES: dict[str, ResourceOpener] = {
    "icmp": icmp.open_pinger,
    "isapi": isapi.open_prober,
    "axpro": isapi.open_prober,
}
"""protocol → opener of what its prober holds; protocols sharing an opener share one resource."""


async def open_resources(
    stack: AsyncExitStack, ctx: ProbeContext, protocols: Iterable[str]
) -> dict[str, ResourceUnavailable]:
    """Open, once each, what the probers of `protocols` hold, into `ctx`; `stack` closes them.

    Returns protocol → why its resource is unavailable; those probes then answer with a reason.
    """
    opened: dict[ResourceOpener, ResourceUnavailable | None] = {}
    unavailable: dict[str, ResourceUnavailable] = {}
    for protocol in protocols:
        opener = RESOURCES.get(protocol)
        if opener is None:
            continue
        if opener not in opened:
            try:
                ctx.provide(await stack.enter_async_context(opener(ctx.settings)))
                opened[opener] = None
            except ResourceUnavailable as exc:
                opened[opener] = exc
        problem = opened[opener]
        if problem is not None:
            unavailable[protocol] = problem
    return unavailable


__all__ = [
    "BATCH_PROBERS",
    "BUDGETS",
    "PROBERS",
    "RESOURCES",
    "BatchProber",
    "Budget",
    "ProbeContext",
    "Prober",
    "Reconfigurable",
    "ResourceUnavailable",
    "open_resources",
]
