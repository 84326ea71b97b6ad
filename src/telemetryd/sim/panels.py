"""Simulated school alarm panels reporting to a SIA DC-09 receiver: many in one asyncio process.

Each panel sends NULL heartbeats every `interval` seconds to every receiver path it has
(two paths is dual reporting: e.g. TCP and UDP, or the EMC and a backup receiver), waits
for the ACK and retransmits as DC-09 transmitters do: the same sequence number on every
retry, a fresh timestamp each time, the clock corrected from a NAK's timestamp, and no
retry after DUH. A test or the demo can make a panel go silent, corrupt its next frame,
or report an alarm (SIA-DCS ``BA`` burglary, ``FA`` fire, ...).

    python -m telemetryd.sim.panels --receiver 127.0.0.1:PORT --count 20 --interval 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

from telemetryd.alarm import dc09
from telemetryd.alarm.dc09 import AccountKey, FrameError, MessageType, PanelEvent

Transport = Literal["tcp", "udp"]

DEFAULT_ACK_TIMEOUT = 5.0
"""DC-09 leaves the ACK wait to the installation; a few seconds covers a city network and keeps tests short."""
DEFAULT_ATTEMPTS = 3
"""One send plus two retransmissions before the panel gives up on a path for this message."""


@dataclass(frozen=True, slots=True)
class ReceiverPath:
    """Where a panel reports to, and over which transport."""

    host: str
    port: int
    transport: Transport = "tcp"

    def __str__(self) -> str:
        return f"{self.transport}://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class PanelSpec:
    """One simulated alarm panel: its DC-09 identity, paths and timing."""

    account: str
    paths: tuple[ReceiverPath, ...]
    prefix: str = "0"
    receiver: str | None = None
    interval: float = 60.0
    """Seconds between NULL heartbeats."""
    ack_timeout: float = DEFAULT_ACK_TIMEOUT
    attempts: int = DEFAULT_ATTEMPTS
    clock_offset: float = 0.0
    """Seconds the panel's clock is off UTC at start (a NAK with a timestamp corrects it)."""
    timestamps: bool = True
    """Stamp messages; optional for unencrypted DC-09, but what current panels do."""
    reconnect: bool = False
    """Close the TCP connection after each message and open a new one for the next, as many panels do
    (the default keeps one connection open between messages)."""

    @property
    def key(self) -> AccountKey:
        """The (receiver, prefix, account) the receiver supervises this panel by."""
        return AccountKey(self.receiver or "", self.prefix.upper(), self.account.upper())


class Outcome(enum.StrEnum):
    """How one message ended on one path, after any retries."""

    ACK = "ack"
    NAK = "nak"
    """NAKed on every attempt."""
    DUH = "duh"
    TIMEOUT = "timeout"
    ERROR = "error"
    """Connection refused or reset on every attempt."""
    SILENT = "silent"
    """Not sent: the panel has been told to go silent."""


@dataclass(slots=True)
class PathStats:
    """What happened on one path, counted per frame sent and per answer received."""

    sent: int = 0
    acks: int = 0
    naks: int = 0
    duhs: int = 0
    timeouts: int = 0
    errors: int = 0
    outcomes: list[Outcome] = field(default_factory=list)
    """Final outcome of each message, oldest first (bounded by the test's length, not trimmed)."""


class _Link(Protocol):
    async def send(self, frame: bytes) -> None: ...
    async def receive(self) -> bytes: ...
    async def reset(self) -> None: ...


class _TcpLink:
    """A kept-open TCP connection, reopened after any failure."""

    def __init__(self, path: ReceiverPath) -> None:
        self._path = path
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def send(self, frame: bytes) -> None:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self._path.host, self._path.port)
        self._writer.write(frame)
        await self._writer.drain()

    async def receive(self) -> bytes:
        if self._reader is None:
            raise ConnectionResetError("not connected")
        try:
            return await self._reader.readuntil(dc09.CR)
        except asyncio.IncompleteReadError as exc:
            raise ConnectionResetError("receiver closed the connection") from exc

    async def reset(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class _Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | OSError] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable surfaces here as ConnectionRefusedError.
        self.queue.put_nowait(exc if isinstance(exc, OSError) else OSError(str(exc)))


class _UdpLink:
    """A connected UDP socket; answers arrive as datagrams in an inbox."""

    def __init__(self, path: ReceiverPath) -> None:
        self._path = path
        self._transport: asyncio.DatagramTransport | None = None
        self._inbox: _Inbox | None = None

    async def send(self, frame: bytes) -> None:
        if self._transport is None:
            loop = asyncio.get_running_loop()
            self._transport, self._inbox = await loop.create_datagram_endpoint(
                _Inbox, remote_addr=(self._path.host, self._path.port)
            )
        self._transport.sendto(frame)

    async def receive(self) -> bytes:
        if self._inbox is None:
            raise ConnectionResetError("not connected")
        item = await self._inbox.queue.get()
        if isinstance(item, OSError):
            raise item
        return item

    async def reset(self) -> None:
        transport, self._transport, self._inbox = self._transport, None, None
        if transport is not None:
            transport.close()


def _corrupt(frame: bytes) -> bytes:
    """The same frame with its CRC off by one, so a receiver must NAK it."""
    crc = int(frame[1:5], 16) ^ 0x0001
    return frame[:1] + f"{crc:04X}".encode("ascii") + frame[5:]


class SimPanel:
    """One alarm panel: heartbeats on a schedule, events on request, every path served in turn."""

    def __init__(self, spec: PanelSpec) -> None:
        self.spec = spec
        self.stats: dict[ReceiverPath, PathStats] = {path: PathStats() for path in spec.paths}
        self.silent = False
        self._clock_offset = timedelta(seconds=spec.clock_offset)
        self._sequence = 0
        self._corrupt_next = 0
        self._links: dict[ReceiverPath, _Link] = {
            path: _TcpLink(path) if path.transport == "tcp" else _UdpLink(path) for path in spec.paths
        }
        self._locks = {path: asyncio.Lock() for path in spec.paths}
        self._heartbeats: asyncio.Task[None] | None = None

    @property
    def clock_offset(self) -> float:
        """Seconds the panel's clock is currently off UTC."""
        return self._clock_offset.total_seconds()

    def now(self) -> datetime:
        """The panel's idea of the time (UTC plus its clock error)."""
        return datetime.now(UTC) + self._clock_offset

    def start(self, *, phase: float = 0.0) -> None:
        """Begin heartbeats, the first after `phase` seconds (spreads a fleet over the interval)."""
        if self._heartbeats is None:
            self._heartbeats = asyncio.get_running_loop().create_task(self._heartbeat_loop(phase))

    async def stop(self) -> None:
        """Stop heartbeats and close every connection."""
        if self._heartbeats is not None:
            self._heartbeats.cancel()
            await asyncio.wait([self._heartbeats])
            self._heartbeats = None
        for link in self._links.values():
            await link.reset()

    def go_silent(self) -> None:
        """Stop sending anything (power cut, cable cut) until `resume`."""
        self.silent = True

    def resume(self) -> None:
        """Send again after `go_silent`."""
        self.silent = False

    def corrupt_next(self, frames: int = 1) -> None:
        """Give the next `frames` frames sent, on any path, a wrong CRC."""
        self._corrupt_next += frames

    async def heartbeat(self) -> dict[ReceiverPath, Outcome]:
        """Send one NULL supervision message to every path now."""
        spec = self.spec

        def build(seq: int, at: datetime | None) -> bytes:
            return dc09.build_null(seq, prefix=spec.prefix, account=spec.account, receiver=spec.receiver, at=at)

        return await self._report(build)

    async def send_event(
        self, code: str, *, zone: str = "", partition: str = "", text: str = ""
    ) -> dict[ReceiverPath, Outcome]:
        """Report one SIA-DCS event (``BA`` burglary, ``FA`` fire, ``PA`` panic, ...) to every path."""
        spec = self.spec
        event = PanelEvent(code, zone=zone, partition=partition, text=text)

        def build(seq: int, at: datetime | None) -> bytes:
            return dc09.build_sia_event(
                seq, event, prefix=spec.prefix, account=spec.account, receiver=spec.receiver, at=at
            )

        return await self._report(build)

    async def _heartbeat_loop(self, phase: float) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time() + phase
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at += self.spec.interval  # a fixed grid: slow answers do not stretch the interval
            if not self.silent:
                await self.heartbeat()

    async def _report(self, build: Callable[[int, datetime | None], bytes]) -> dict[ReceiverPath, Outcome]:
        if self.silent:
            return dict.fromkeys(self.spec.paths, Outcome.SILENT)
        self._sequence = self._sequence % 9999 + 1  # 0001..9999, then round again
        sequence = self._sequence
        outcomes = await asyncio.gather(*(self._deliver(path, sequence, build) for path in self.spec.paths))
        return dict(zip(self.spec.paths, outcomes, strict=True))

    async def _deliver(
        self, path: ReceiverPath, sequence: int, build: Callable[[int, datetime | None], bytes]
    ) -> Outcome:
        stats, link = self.stats[path], self._links[path]
        outcome = Outcome.TIMEOUT
        async with self._locks[path]:
            for _attempt in range(self.spec.attempts):
                frame = build(sequence, self.now() if self.spec.timestamps else None)
                if self._corrupt_next > 0:
                    self._corrupt_next -= 1
                    frame = _corrupt(frame)
                stats.sent += 1
                try:
                    async with asyncio.timeout(self.spec.ack_timeout):
                        await link.send(frame)
                        outcome = await self._await_answer(link, sequence)
                except TimeoutError:
                    stats.timeouts += 1
                    outcome = Outcome.TIMEOUT
                    await link.reset()  # a late answer on this connection would confuse the next message
                    continue
                except OSError:
                    stats.errors += 1
                    outcome = Outcome.ERROR
                    await link.reset()
                    await asyncio.sleep(min(1.0, self.spec.ack_timeout))  # do not spin on a refusing receiver
                    continue
                if outcome is Outcome.ACK:
                    stats.acks += 1
                    break
                if outcome is Outcome.DUH:
                    stats.duhs += 1
                    break  # DUH: the receiver will never take this message, retrying cannot help
                stats.naks += 1
            if self.spec.reconnect:
                await link.reset()
        stats.outcomes.append(outcome)
        return outcome

    async def _await_answer(self, link: _Link, sequence: int) -> Outcome:
        """Read answers until one is for this message (stale ones from earlier retries are skipped)."""
        while True:
            raw = await link.receive()
            try:
                answer = dc09.parse_frame(raw)
            except FrameError:
                continue  # a damaged answer is as good as none; the timeout decides
            if answer.message_type == MessageType.NAK:
                if answer.timestamp is not None:
                    # DC-09: the NAK carries the receiver's time so the panel can fix its clock.
                    self._clock_offset = answer.timestamp - datetime.now(UTC)
                return Outcome.NAK
            if int(answer.sequence) != sequence:
                continue
            if answer.message_type == MessageType.ACK:
                return Outcome.ACK
            if answer.message_type == MessageType.DUH:
                return Outcome.DUH


def fleet_specs(
    count: int,
    paths: Sequence[ReceiverPath],
    *,
    interval: float = 60.0,
    first_account: int = 0x1000,
    prefix: str = "0",
    ack_timeout: float = DEFAULT_ACK_TIMEOUT,
) -> list[PanelSpec]:
    """`count` panels with consecutive hex accounts, all reporting over the same paths."""
    return [
        PanelSpec(f"{first_account + i:04X}", tuple(paths), prefix=prefix, interval=interval, ack_timeout=ack_timeout)
        for i in range(count)
    ]


class PanelFleet:
    """Many simulated panels in one event loop, heartbeats spread evenly over the interval."""

    def __init__(self, specs: Iterable[PanelSpec]) -> None:
        self.panels: dict[str, SimPanel] = {}
        for spec in specs:
            if spec.account.upper() in self.panels:
                raise ValueError(f"two panels with account {spec.account}")
            self.panels[spec.account.upper()] = SimPanel(spec)

    def __getitem__(self, account: str) -> SimPanel:
        return self.panels[account.upper()]

    def __len__(self) -> int:
        return len(self.panels)

    def start(self) -> None:
        """Start every panel's heartbeats, staggered so they do not all arrive in the same instant."""
        count = len(self.panels)
        for index, panel in enumerate(self.panels.values()):
            panel.start(phase=panel.spec.interval * index / count)

    async def stop(self) -> None:
        """Stop every panel."""
        await asyncio.gather(*(panel.stop() for panel in self.panels.values()))

    async def __aenter__(self) -> PanelFleet:
        self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()


def _path(text: str, transport: Transport) -> ReceiverPath:
    host, _, port = text.rpartition(":")
    return ReceiverPath(host.strip("[]"), int(port), transport)


async def _run(args: argparse.Namespace) -> None:
    paths = [_path(text, args.transport) for text in args.receiver]
    fleet = PanelFleet(fleet_specs(args.count, paths, interval=args.interval, first_account=args.first_account))
    async with fleet:
        try:
            await asyncio.Event().wait()
        finally:
            for account, panel in fleet.panels.items():
                for path, stats in panel.stats.items():
                    print(
                        f"{account} {path} sent={stats.sent} acks={stats.acks} naks={stats.naks} "
                        f"timeouts={stats.timeouts} errors={stats.errors}"
                    )


def main(argv: Sequence[str] | None = None) -> None:
    """Run a fleet of simulated panels until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m telemetryd.sim.panels", description=__doc__.splitlines()[0])
    parser.add_argument("--receiver", action="append", required=True, help="HOST:PORT; repeat to dual-report")
    parser.add_argument("--transport", choices=("tcp", "udp"), default="tcp")
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between heartbeats")
    parser.add_argument("--first-account", type=lambda s: int(s, 16), default=0x1000, help="hex")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(args))


if __name__ == "__main__":
    main()
