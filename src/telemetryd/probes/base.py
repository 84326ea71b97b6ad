"""The one contract every prober follows, and what probers share."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

import structlog

from telemetryd.config.settings import Settings
from telemetryd.model import Device, Inventory, ProbeResult, ProbeSpec
from telemetryd.secrets import Secrets

R = TypeVar("R")


@runtime_checkable
class Reconfigurable(Protocol):
    """A prober resource that follows a reload (new rates, removed devices) instead of being reopened."""

    def reconfigure(self, settings: Settings, inventory: Inventory) -> None:
        """Take the new settings; forget what the new inventory no longer has."""


class ResourceUnavailable(Exception):
    """A prober's resource could not be opened (e.g. no ICMP socket without CAP_NET_RAW); probes of it fail."""

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


@dataclass(slots=True)
class ProbeContext:
    """What every probe is handed: settings, secrets and the long-lived resources probers hold.

    Resources (the shared ICMP socket, the ISAPI session) are opened by their own prober
    module (`probes.open_resources`) and looked up by type, so this class names no prober.
    """

    settings: Settings
    secrets: Secrets | None = None
    log: structlog.typing.FilteringBoundLogger = field(default_factory=lambda: structlog.get_logger("telemetryd.probe"))
    _resources: dict[type[Any], Any] = field(default_factory=dict)

    def provide(self, resource: object) -> None:
        """Hand probes a resource (one per type)."""
        self._resources[type(resource)] = resource

    def resource(self, kind: type[R]) -> R | None:
        """The resource of this type, or None when it was not opened."""
        found = self._resources.get(kind)
        return found if isinstance(found, kind) else None

    def reconfigure(self, settings: Settings, inventory: Inventory) -> None:
        """A reload: new settings for probes, and every resource follows them."""
        self.settings = settings
        self.secrets = Secrets(settings.credentials_directory)
        for resource in self._resources.values():
            if isinstance(resource, Reconfigurable):
                resource.reconfigure(settings, inventory)


Prober = Callable[[Device, ProbeSpec, ProbeContext], Awaitable[ProbeResult]]
"""`async def probe(device, spec, ctx) -> ProbeResult`; raises only on programmer error."""

Budget = Callable[[ProbeContext, int], float]
"""Seconds one run of a protocol (a sweep of that many devices) takes at worst when nothing hangs."""

ResourceOpener = Callable[[Settings], AbstractAsyncContextManager[object]]
"""Opens what a prober module holds for its life (a socket, a session); closing is the context's exit."""
