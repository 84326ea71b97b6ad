"""The alarm receiver: SIA DC-09 over TCP and UDP, feeding supervision (`alarm.supervision`).

A school's alarm panel reports to the Emergency Management Center over IP; losing that
path is itself an alarm condition, so panels send NULL heartbeats and the receiver raises
"supervision lost" when one is overdue. `SiaReceiver` does the sockets (both transports
on one port, answers ACK/NAK/DUH as `dc09.answer` decides); `Supervision` is the pure
bookkeeping of who was heard when, driven by whatever clock the caller passes in.
"""

from __future__ import annotations

import asyncio
import errno
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import cast

import structlog

from telemetryd.alarm import dc09
from telemetryd.alarm.dc09 import AccountKey, Frame, PanelEvent, Verdict
from telemetryd.alarm.supervision import MAX_STRANGERS, Supervision

DEFAULT_IDLE_TIMEOUT = 900.0
"""A TCP connection silent this long is closed; panels reconnect for their next message, and
half-open sockets from panels that lost power would otherwise pile up."""
DEFAULT_MAX_CONNECTIONS = 4096
REPEAT_WINDOW = 600.0
"""Seconds during which a frame with the same account, type, sequence and body as an earlier one is a
retransmission (the panel missed our ACK and sent it again, perhaps re-stamped), not a new event."""
MAX_REMEMBERED_FRAMES = 4096
"""Event frames remembered for spotting retransmissions (oldest forgotten first)."""


# ---- the receiver (I/O) ----------------------------------------------------------------------


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Reception:
    """One frame the receiver handled, for the caller's logs, metrics and history."""

    transport: str
    """``tcp`` or ``udp``."""
    peer: str
    answer: dc09.Answer
    """The verdict and reply; `answer.frame` is the parsed frame (token, sequence, panel timestamp)."""
    key: AccountKey | None
    supervised: bool
    events: tuple[PanelEvent, ...] = ()
    received_at: datetime = field(default_factory=_utc_now)
    """Wall-clock time (UTC) the receiver got this frame."""
    repeat_of: datetime | None = None
    """For a retransmission of an event frame (same account, type, sequence and body within
    `REPEAT_WINDOW`): when its first copy arrived. None for a first copy."""

    @property
    def first_received_at(self) -> datetime:
        """When the event was first received: `repeat_of` for a retransmission, else `received_at`."""
        return self.repeat_of if self.repeat_of is not None else self.received_at

    @property
    def frame(self) -> Frame | None:
        """The parsed frame, when it parsed."""
        return self.answer.frame


@dataclass(slots=True)
class _Limits:
    max_buffer: int
    idle_timeout: float | None
    max_connections: int


@dataclass(slots=True)
class ReceiverCounts:
    """Running totals for metrics; label values are low-cardinality words."""

    frames: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    """(transport, verdict, reason) → frames."""
    dropped: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(transport, why) → connections or datagrams dropped unanswered: ``oversize``, ``too_many``, ``idle``."""
    events: Counter[str] = field(default_factory=Counter)
    """Event class (``alarm``, ``trouble``, ``restoral``, ``test``, ``other``) → events received in
    ACKed frames; a retransmission of a frame already counted is not counted again."""
    repeats: Counter[str] = field(default_factory=Counter)
    """Event class → events in retransmitted frames (ACKed again, not counted in `events`)."""


@dataclass(slots=True)
class _RecentFrames:
    """Event frames seen lately, by identity, so a retransmission is recognised (bounded, pure)."""

    window: float = REPEAT_WINDOW
    limit: int = MAX_REMEMBERED_FRAMES
    _seen: OrderedDict[tuple[object, ...], tuple[float, datetime]] = field(default_factory=OrderedDict)

    def first_copy(self, key: AccountKey, frame: Frame, at: float, wall: datetime) -> datetime | None:
        """When the first copy of this frame arrived if it is a retransmission, else None (and remember it)."""
        identity = (key, frame.message_type, frame.sequence, frame.data, frame.extended)
        while self._seen:
            oldest = next(iter(self._seen.values()))[0]
            if at - oldest <= self.window and len(self._seen) < self.limit:
                break
            self._seen.popitem(last=False)
        earlier = self._seen.get(identity)
        if earlier is not None and 0 <= at - earlier[0] <= self.window:
            return earlier[1]
        self._seen[identity] = (at, wall)
        self._seen.move_to_end(identity)
        return None


class SiaReceiver:
    """DC-09 receiver on one TCP and one UDP socket sharing a port.

    Frames are split on CR. A valid frame is ACKed and marks its account alive in
    `supervision`; a damaged one is NAKed; one we cannot process is answered DUH.
    """

    def __init__(
        self,
        supervision: Supervision,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = _utc_now,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_buffer: int = dc09.MAX_FRAME,
        on_reception: Callable[[Reception], None] | None = None,
        log: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self.supervision = supervision
        self.counts = ReceiverCounts()
        self._clock = clock
        self._wall_clock = wall_clock
        self._limits = _Limits(max_buffer, idle_timeout, max_connections)
        self._on_reception = on_reception
        self._log = log or structlog.get_logger("telemetryd.sia")
        self._server: asyncio.Server | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._connections: set[_PanelConnection] = set()
        self._port: int | None = None
        self._warned: set[AccountKey] = set()
        self._recent = _RecentFrames()

    @property
    def port(self) -> int:
        """The port both transports listen on (useful after `start(host, 0)`)."""
        if self._port is None:
            raise RuntimeError("receiver not started")
        return self._port

    @property
    def connections(self) -> int:
        """Open TCP connections from panels."""
        return len(self._connections)

    async def start(self, host: str, port: int) -> None:
        """Listen for TCP and UDP on `host`:`port`; port 0 picks one free for both."""
        loop = asyncio.get_running_loop()
        for _attempt in range(20 if port == 0 else 1):
            server = await loop.create_server(lambda: _PanelConnection(self), host, port, reuse_address=True)
            bound = server.sockets[0].getsockname()[1]
            try:
                udp, _ = await loop.create_datagram_endpoint(lambda: _PanelDatagrams(self), local_addr=(host, bound))
            except OSError as exc:
                server.close()
                await server.wait_closed()
                if exc.errno == errno.EADDRINUSE and port == 0:
                    continue  # the TCP port's UDP twin is taken: try another free port
                raise
            self._server, self._udp, self._port = server, udp, bound
            self._log.info("sia_receiver_listening", host=host, port=bound)
            return
        raise OSError(errno.EADDRINUSE, "no port free for both TCP and UDP")

    async def stop(self) -> None:
        """Stop listening and drop every panel connection."""
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            connection.close()
        if self._udp is not None:
            self._udp.close()
        if self._server is not None:
            await self._server.wait_closed()
        self._server = self._udp = None

    async def __aenter__(self) -> SiaReceiver:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    def handle(self, raw: bytes, transport: str, peer: str) -> bytes:
        """Answer one frame and update supervision; returns the reply bytes (``b""`` for none)."""
        now = self._wall_clock()
        result = dc09.answer(raw, now)
        frame = result.frame
        key = frame.key if frame is not None else None
        supervised = False
        found: tuple[PanelEvent, ...] = ()
        repeat_of: datetime | None = None
        if result.verdict is Verdict.ACK and frame is not None and key is not None:
            at = self._clock()
            supervised = self.supervision.observe(key, at)
            found = dc09.events(frame)
            if found:
                repeat_of = self._recent.first_copy(key, frame, at, now)
            counted = self.counts.repeats if repeat_of is not None else self.counts.events
            for event in found:
                counted[event.event_class.value] += 1
                if repeat_of is None:  # a retransmission is the same event, already recorded
                    self.supervision.record_event(key, event, at)
            if not supervised and key not in self._warned and len(self._warned) < MAX_STRANGERS:
                self._warned.add(key)  # once per account: a misconfigured panel would otherwise log every heartbeat
                self._log.warning("sia_unknown_account", account=str(key), peer=peer, transport=transport)
        self.counts.frames[(transport, result.verdict.value, result.reason)] += 1
        self._log_reception(transport, peer, result, key, found, repeat=repeat_of is not None)
        if self._on_reception is not None:
            self._on_reception(Reception(transport, peer, result, key, supervised, found, now, repeat_of))
        return result.reply

    def _log_reception(
        self,
        transport: str,
        peer: str,
        result: dc09.Answer,
        key: AccountKey | None,
        found: tuple[PanelEvent, ...],
        *,
        repeat: bool,
    ) -> None:
        account = str(key) if key is not None else None
        if result.verdict in (Verdict.NAK, Verdict.DUH):
            self._log.info(
                "sia_frame_rejected",
                verdict=result.verdict.value,
                reason=result.reason,
                detail=result.detail,
                account=account,
                peer=peer,
                transport=transport,
            )
        for event in found:
            (self._log.info if repeat else self._log.warning)(
                "sia_panel_event_repeated" if repeat else "sia_panel_event",
                account=account,
                code=event.code,
                event_class=event.event_class.value,
                description=event.description,
                zone=event.zone,
                transport=transport,
            )

    def _dropped(self, transport: str, why: str, peer: str) -> None:
        self.counts.dropped[(transport, why)] += 1
        self._log.info("sia_connection_dropped", transport=transport, why=why, peer=peer)


def _peer_name(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)


class _PanelConnection(asyncio.Protocol):
    """One panel's TCP connection: splits frames on CR, answers each, enforces the limits."""

    def __init__(self, receiver: SiaReceiver) -> None:
        self._receiver = receiver
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._peer = "?"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's TCPTransport does not subclass it
        self._peer = _peer_name(transport.get_extra_info("peername"))
        receiver = self._receiver
        if len(receiver._connections) >= receiver._limits.max_connections:
            receiver._dropped("tcp", "too_many", self._peer)
            self._transport.abort()
            return
        receiver._connections.add(self)
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (end := self._buffer.find(dc09.CR)) >= 0:
            raw = bytes(self._buffer[: end + 1])
            del self._buffer[: end + 1]
            if not raw.strip():
                continue  # a stray line ending between frames
            reply = self._receiver.handle(raw, "tcp", self._peer)
            if reply and self._transport is not None:
                self._transport.write(reply)
        if len(self._buffer) > self._receiver._limits.max_buffer:
            # No CR within the longest legal frame: not DC-09, or an attempt to eat our memory.
            self._receiver._dropped("tcp", "oversize", self._peer)
            self.close()
            return
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._receiver._connections.discard(self)

    def close(self) -> None:
        """Drop the connection now."""
        if self._transport is not None:
            self._transport.abort()

    def _arm_idle(self) -> None:
        timeout = self._receiver._limits.idle_timeout
        if timeout is None:
            return
        if self._idle is not None:
            self._idle.cancel()
        self._idle = asyncio.get_running_loop().call_later(timeout, self._on_idle)

    def _on_idle(self) -> None:
        self._receiver._dropped("tcp", "idle", self._peer)
        self.close()


class _PanelDatagrams(asyncio.DatagramProtocol):
    """UDP: each datagram carries one frame (tolerating several CR-terminated ones); answers go to the sender."""

    def __init__(self, receiver: SiaReceiver) -> None:
        self._receiver = receiver
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)  # 3.11's selector class does not subclass it

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        peer = _peer_name(addr)
        if len(data) > self._receiver._limits.max_buffer:
            self._receiver._dropped("udp", "oversize", peer)
            return
        for raw in data.split(dc09.CR):
            if not raw.strip():
                continue
            reply = self._receiver.handle(raw + dc09.CR, "udp", peer)
            if reply and self._transport is not None:
                self._transport.sendto(reply, addr)
