"""One long-lived event stream per camera and NVR: faults in seconds, not at the next poll.

`EventStreams` keeps at most one `/ISAPI/Event/notification/alertStream` open per device
that has an ``isapi`` probe, through the device's own `IsapiClient` (so the same login
state, one attempt per credential and lock apply: a credential the device rejected on a
check or on the stream is not sent again by either). Each stream:

* is read under a heartbeat deadline: firmware writes at least every ~10 s (its heartbeat),
  so `heartbeat_timeout` (30 s) of silence ends it; any end is followed by a reconnect after
  a backoff of 5 s doubling to 5 min, with ±20 % jitter (300 schools' cameras must not
  reconnect in step after a NOC link blip);
* costs bounded memory (`alerts.MultipartReader`: at most 64 KiB of one part, images skipped);
* is not asked again for a day on a device that does not offer it (404/403/notSupport);
* waits for a changed credential (a reload or a new secret) after a rejection or a lock,
  sending nothing meanwhile.

What the events mean is `alerts.EventBook`'s (pure); this module only reads and supervises.
Changes go to `on_change` (the daemon logs them and writes them to the history).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import structlog

from telemetryd.model import Device, DeviceKind, Inventory, ProbeSpec
from telemetryd.probes.isapi import alerts, xml
from telemetryd.probes.isapi.client import IsapiProber, StreamRefused, credential_pair
from telemetryd.secrets import SecretMissing, Secrets

__all__ = ["PATH", "EventStreams", "StreamState", "stream_targets"]

PATH = "/ISAPI/Event/notification/alertStream"
UNSUPPORTED_RETRY = 86400.0
CREDENTIAL_RECHECK = 60.0
"""How often a stream waiting for a changed credential looks again (nothing is sent while it is unchanged)."""
_LACKING = ("not_supported", "http_403", "http_404", "http_405", "http_501")
_REFUSED = ("auth_failed", "locked", "credentials", "bad_challenge", "certificate_changed", "pins_unreadable")
STATES = ("connecting", "open", "backoff", "unsupported", "auth_failed")
OPENING = 64
"""Streams being opened at once: 10,000 opening together at start-up time out on the devices' side
and all back off; queued, they open in seconds."""


@dataclass(slots=True)
class StreamState:
    """One device's stream: where it stands, its event book, and why it last ended."""

    device: Device
    spec: ProbeSpec
    book: alerts.EventBook
    state: str = "connecting"
    reason: str = ""
    detail: str = ""
    opened: int = 0
    task: asyncio.Task[None] | None = field(default=None, repr=False)


def stream_targets(inventory: Inventory) -> dict[str, tuple[Device, ProbeSpec]]:
    """device id → (device, its first isapi probe) for every camera and NVR checked over ISAPI."""
    targets = {}
    for device in inventory.devices_by_id.values():
        if device.kind not in (DeviceKind.CAMERA, DeviceKind.NVR) or not device.credentials:
            continue
        spec = next((s for s in device.probes if s.protocol == "isapi"), None)
        if spec is not None:
            targets[device.id] = (device, spec)
    return targets


class EventStreams:
    """The event streams of every ISAPI device of the inventory, following reloads."""

    def __init__(
        self,
        prober: IsapiProber,
        secrets: Secrets,
        *,
        on_change: Callable[[Device, alerts.Change], None] | None = None,
        heartbeat_timeout: float = 30.0,
        hold: float = 60.0,
        backoff: tuple[float, float] = (5.0, 300.0),
        log: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self.prober = prober
        self.secrets = secrets
        self.on_change = on_change
        self.heartbeat_timeout = heartbeat_timeout
        self.hold = hold
        self.backoff = backoff
        self.streams: dict[str, StreamState] = {}
        self.events_total: Counter[str] = Counter()
        """Tracked events that became active, by event."""
        self.reconnects = 0
        self.parts = 0
        """Event parts read (heartbeats included): the streams' work."""
        self._log = log or structlog.get_logger("telemetryd.probe.isapi")
        self._sweeper: asyncio.Task[None] | None = None
        self._opening = asyncio.Semaphore(OPENING)

    def sync(self, inventory: Inventory) -> None:
        """Open streams for new devices, close those of removed ones (their active events end)."""
        targets = stream_targets(inventory)
        for device_id in list(self.streams):
            target = targets.get(device_id)
            held = self.streams[device_id]
            if target is None or target[1] != held.spec or target[0].host != held.device.host:
                self._stop(device_id)
            else:
                held.device = target[0]  # credentials or school may have changed: read at the next connect
        for device_id, (device, spec) in targets.items():
            if device_id not in self.streams:
                stream = self.streams[device_id] = StreamState(device, spec, alerts.EventBook(self.hold))
                stream.task = asyncio.get_running_loop().create_task(self._run(stream), name=f"events-{device_id}")
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="event-expiry")

    def states(self) -> Counter[str]:
        """Streams per state (every state present, 0 included)."""
        counts = Counter(dict.fromkeys(STATES, 0))
        counts.update(stream.state for stream in list(self.streams.values()))  # a copy: scrapes read from a thread
        return counts

    async def close(self) -> None:
        """Stop every stream and the expiry sweep (a shutdown ends no event: nothing is emitted)."""
        tasks = [s.task for s in self.streams.values() if s.task is not None]
        for device_id in list(self.streams):
            self._stop(device_id, ended=False)
        if self._sweeper is not None:
            self._sweeper.cancel()
            tasks.append(self._sweeper)
        await asyncio.gather(*tasks, return_exceptions=True)

    def _stop(self, device_id: str, *, ended: bool = True) -> None:
        stream = self.streams.pop(device_id)
        if stream.task is not None:
            stream.task.cancel()
        changes = stream.book.clear(time.time())
        if ended:
            self._emit(stream, changes)

    def _emit(self, stream: StreamState, changes: list[alerts.Change]) -> None:
        for change in changes:
            if change.active:
                self.events_total[change.event] += 1
            self._log.warning(
                "camera_event",
                school=stream.device.school_id,
                device=stream.device.id,
                alert=change.event,
                channel=change.channel,
                active=change.active,
            )
            if self.on_change is not None:
                self.on_change(stream.device, change)

    async def _sweep(self) -> None:
        """End events whose repeats stopped, also on streams that went silent."""
        while True:
            await asyncio.sleep(1.0)
            now = time.time()
            for stream in list(self.streams.values()):
                if stream.book.active:
                    self._emit(stream, stream.book.expire(now))

    # --- one device ------------------------------------------------------------------------

    async def _run(self, stream: StreamState) -> None:
        failures = 0
        while True:
            opened = stream.opened
            wait = await self._once(stream)
            if wait is None:  # ended or failed to connect: back off, from the start if it had been open
                failures = 0 if stream.opened > opened else failures + 1
                wait = min(self.backoff[0] * 2 ** max(0, failures - 1), self.backoff[1])
            await asyncio.sleep(wait * random.uniform(0.8, 1.2))  # jitter: 300 schools must not reconnect in step
            self.reconnects += 1

    async def _once(self, stream: StreamState) -> float | None:
        """Connect and read until the stream ends; the pause before the next try (None: back off)."""
        device, spec = stream.device, stream.spec
        stream.state = "connecting"
        try:
            username, password = credential_pair(self.secrets.get(device.credentials or ""))
        except (SecretMissing, ValueError):
            stream.state, stream.reason = "auth_failed", "credentials"
            return CREDENTIAL_RECHECK
        client = self.prober.client(device.host, spec.port or (443 if spec.tls else 80), tls=spec.tls)
        try:
            async with self._opening:
                response = await client.open_stream(username, password, PATH, now=time.time())
        except StreamRefused as refused:
            stream.reason, stream.detail = refused.reason, refused.detail
            if refused.reason in _LACKING:
                stream.state = "unsupported"
                return UNSUPPORTED_RETRY
            if refused.reason in _REFUSED:
                stream.state = "auth_failed"  # nothing is sent until the credential (or the lock) changes
                return CREDENTIAL_RECHECK
            stream.state = "backoff"
            return None
        stream.state, stream.reason = "open", ""
        stream.opened += 1
        try:
            await self._read(stream, response)
        finally:
            response.close()
        stream.state = "backoff"
        return None

    async def _read(self, stream: StreamState, response: aiohttp.ClientResponse) -> None:
        boundary = alerts.boundary_of(response.headers.get("Content-Type", ""))
        if boundary is None:
            stream.reason = "not_multipart"
            return
        reader = alerts.MultipartReader(boundary)
        while True:
            try:
                async with asyncio.timeout(self.heartbeat_timeout):
                    chunk = await response.content.readany()
            except TimeoutError:
                stream.reason = "silent"
                return
            except (aiohttp.ClientError, OSError):
                stream.reason = "dropped"
                return
            if not chunk:
                stream.reason = "closed"
                return
            now = time.time()
            for part in reader.feed(chunk):
                self.parts += 1
                try:
                    alert = xml.parse_event_alert(part.body)
                except xml.IsapiParseError:
                    continue  # a part we cannot read is skipped, the stream goes on
                change = stream.book.apply(alert, now)
                if change is not None:
                    self._emit(stream, [change])
