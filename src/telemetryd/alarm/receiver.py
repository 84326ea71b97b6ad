"""The alarm receiver: SIA DC-09 over TCP and UDP, feeding supervision (`alarm.supervision`).

A school's alarm panel reports to the Emergency Management Center over IP; losing that
path is itself an alarm condition, so panels send NULL heartbeats and the receiver raises
"supervision lost" when one is overdue. `SiaReceiver` does the sockets (both transports
on one port, answers ACK/NAK/DUH as `dc09.answer` decides); `Supervision` is the pure
bookkeeping of who was heard when, driven by whatever clock the caller passes in.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import cast

import structlog

from telemetryd.alarm import dc09
from telemetryd.alarm.dc09 import AccountKey, Frame, PanelEvent, Verdict
from telemetryd.alarm.peers import ConnectionTable, RateLimitedSummary, Standing, Summary, source_of
from telemetryd.alarm.supervision import MAX_STRANGERS, Supervision

DEFAULT_IDLE_TIMEOUT = 120.0
"""A TCP connection with no frame for this long is closed. Panels reconnect for each message (or
keep one connection and send a heartbeat at their supervision interval, typically 60-90 s), so
two minutes never cuts a working panel, while sockets of panels that lost power and idle ones
opened to take up slots go within minutes (it was 15 minutes; the cap filled meanwhile)."""
DEFAULT_MAX_CONNECTIONS = 4096
DEFAULT_MAX_PER_SOURCE = 64
"""Open connections from one source address. A school's panels (one or two, behind the school
router's NAT) hold a few at a time; 64 leaves room for a NAT gateway in front of several schools."""
DEFAULT_FRAME_BUDGET = 16
"""Frames answered from one connection before the loop serves everything else once (a frame costs
~50 µs: one peer holds the loop at most about a millisecond at a time)."""
DEFAULT_WRITE_BUFFER = 64 * 1024
"""Bytes of answers queued for a peer before we stop reading from it (~1,400 ACKs): a peer that
does not read its ACKs is paused, not buffered."""
LISTEN_BACKLOG = 1024
"""Connections the kernel completes before we accept them (asyncio's default is 100): when a flood of
connects overflows it, the kernel drops SYNs, a panel's among them, and the panel retries only a
second or more later."""
SOCKET_BUFFER = 64 * 1024
"""Kernel send and receive buffer of each panel connection (Linux doubles it). Panels exchange a few
hundred bytes per message; without it the kernel autotunes each socket up to megabytes, which a
peer that floods us, or reads nothing, would fill on every one of thousands of connections."""
SUMMARY_PERIOD = 5.0
"""How often pending log summaries are checked (they come out once their minute has passed)."""
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


@dataclass(frozen=True, slots=True)
class ReceiverLimits:
    """What one peer may cost the receiver (`sia` settings); see the constants for the defaults' reasons."""

    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT
    """Close a TCP connection this long after its last frame (or its opening); None: never."""
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    """Open TCP connections in all; a new one displaces the connection idle longest."""
    max_per_source: int = DEFAULT_MAX_PER_SOURCE
    """Open TCP connections from one source address; a new one displaces that source's idlest."""
    frame_budget: int = DEFAULT_FRAME_BUDGET
    """Frames handled from one TCP connection per loop turn (or from one UDP datagram, the rest dropped)."""
    write_buffer: int = DEFAULT_WRITE_BUFFER
    """Answer bytes queued for one peer before reading from it pauses until they drain."""
    max_buffer: int = dc09.MAX_FRAME
    """Bytes without a CR before a connection (or a datagram) is dropped as ``oversize``."""


@dataclass(slots=True)
class ReceiverCounts:
    """Running totals for metrics; label values are low-cardinality words."""

    frames: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    """(transport, verdict, reason) → frames."""
    dropped: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(transport, why) → connections or datagrams dropped unanswered: ``oversize``, ``idle``,
    ``evicted`` (displaced by a new connection at a cap), ``budget`` (a datagram's frames beyond the budget)."""
    paused: Counter[str] = field(default_factory=Counter)
    """Why reading from a TCP peer was paused → times: ``write`` (it does not read its answers),
    ``budget`` (its frames beyond the budget wait for the next loop turn)."""
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
    No peer can cost the others more than its share (`ReceiverLimits`): reading from a
    peer pauses while its answers are not being read or its frames wait their turn, the
    connection caps displace the idlest connection, and rejected frames and dropped
    connections are logged as one summary line per source address per minute.

    limits: every per-peer limit; without it, `idle_timeout`, `max_connections` and `max_buffer`
    override the defaults (the shorthands tests use).
    """

    def __init__(
        self,
        supervision: Supervision,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = _utc_now,
        limits: ReceiverLimits | None = None,
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
        self.limits = limits or ReceiverLimits(
            idle_timeout=idle_timeout, max_connections=max_connections, max_buffer=max_buffer
        )
        self._on_reception = on_reception
        self._log = log or structlog.get_logger("telemetryd.sia")
        self._server: asyncio.Server | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._table: ConnectionTable[_PanelConnection] = ConnectionTable(
            self.limits.max_connections, self.limits.max_per_source
        )
        self._port: int | None = None
        self._warned: set[AccountKey] = set()
        self._recent = _RecentFrames()
        self._rejections = RateLimitedSummary()
        self._drops = RateLimitedSummary()
        self._side_events = RateLimitedSummary()
        """Event lines that are not a supervised panel's new event: resends and unknown accounts."""
        self._summaries: asyncio.TimerHandle | None = None

    @property
    def port(self) -> int:
        """The port both transports listen on (useful after `start(host, 0)`)."""
        if self._port is None:
            raise RuntimeError("receiver not started")
        return self._port

    @property
    def connections(self) -> int:
        """Open TCP connections from panels."""
        return len(self._table)

    def configure(self, limits: ReceiverLimits) -> None:
        """New limits (a reload): caps apply to the next connection, the rest to the next frame or timer."""
        self.limits = limits
        self._table.max_connections = limits.max_connections
        self._table.max_per_source = limits.max_per_source

    async def start(self, host: str, port: int) -> None:
        """Listen for TCP and UDP on `host`:`port`; port 0 picks one free for both."""
        loop = asyncio.get_running_loop()
        for _attempt in range(20 if port == 0 else 1):
            server = await loop.create_server(
                lambda: _PanelConnection(self), host, port, reuse_address=True, backlog=LISTEN_BACKLOG
            )
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
            self._summaries = loop.call_later(SUMMARY_PERIOD, self._log_due_summaries)
            self._log.info("sia_receiver_listening", host=host, port=bound)
            return
        raise OSError(errno.EADDRINUSE, "no port free for both TCP and UDP")

    async def stop(self) -> None:
        """Stop listening and drop every panel connection; log the summaries still pending."""
        if self._server is not None:
            self._server.close()
        for connection in self._table:
            connection.close()
        if self._udp is not None:
            self._udp.close()
        if self._server is not None:
            await self._server.wait_closed()
        if self._summaries is not None:
            self._summaries.cancel()
            self._summaries = None
        now = self._clock()
        self._log_summaries(self._rejections.flush(now), self._drops.flush(now), self._side_events.flush(now))
        self._server = self._udp = None

    async def __aenter__(self) -> SiaReceiver:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    def handle(self, raw: bytes, transport: str, peer: str) -> bytes:
        """Answer one frame and update supervision; returns the reply bytes (``b""`` for none)."""
        return self._answer(raw, transport, peer)[0]

    def _answer(self, raw: bytes, transport: str, peer: str) -> tuple[bytes, Standing]:
        """The reply to one frame, and what the frame proves about the connection it came on."""
        now = self._wall_clock()
        result = dc09.answer(raw, now)
        frame = result.frame
        key = frame.key if frame is not None else None
        supervised = False
        found: tuple[PanelEvent, ...] = ()
        repeat_of: datetime | None = None
        standing = Standing.SILENT
        if result.verdict is Verdict.ACK and frame is not None and key is not None:
            at = self._clock()
            supervised = self.supervision.observe(key, at)
            standing = Standing.SUPERVISED if supervised else Standing.STRANGER
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
        self._log_reception(transport, peer, result, key, found, repeat=repeat_of is not None, supervised=supervised)
        if self._on_reception is not None:
            self._on_reception(Reception(transport, peer, result, key, supervised, found, now, repeat_of))
        return result.reply, standing

    def _log_reception(
        self,
        transport: str,
        peer: str,
        result: dc09.Answer,
        key: AccountKey | None,
        found: tuple[PanelEvent, ...],
        *,
        repeat: bool,
        supervised: bool,
    ) -> None:
        account = str(key) if key is not None else None
        if result.verdict in (Verdict.NAK, Verdict.DUH):
            # One line per source per minute, however many frames: a flood must not push the alarm
            # lines past journald's rate limit.
            line = self._rejections.note(source_of(peer), result.reason, self._clock())
            if line is not None:
                self._log_summary(
                    "sia_frame_rejected",
                    line,
                    verdict=result.verdict.value,
                    reason=result.reason,
                    detail=result.detail,
                    account=account,
                    peer=peer,
                    transport=transport,
                )
        if found and (repeat or not supervised):
            # A supervised panel's new event is always one line of its own. Resends and events of
            # accounts nobody supervises (still ACKed, counted and stored) are summarised per source:
            # anyone can send well-formed frames, and a flood of them must not crowd out the alarms.
            why = "repeat" if repeat else "unknown_account"
            if self._side_events.note(source_of(peer), why, self._clock()) is None:
                return  # counted (in frames) for the source's next summary line
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
        line = self._drops.note(source_of(peer), why, self._clock())
        if line is not None:
            self._log_drops(line, transport=transport, why=why, peer=peer)

    def _log_drops(self, line: Summary, **first: str) -> None:
        self._log_summary("sia_connection_dropped", line, **first)

    def _log_summary(self, event: str, line: Summary, **first: str | None) -> None:
        """One rate-limited line: `first` holds the first occurrence's detail, when this line reports it."""
        self._log.info(event, **first, source=line.peer, count=line.count, reasons=line.reasons, seconds=line.seconds)

    def _log_due_summaries(self) -> None:
        now = self._clock()
        self._log_summaries(self._rejections.due(now), self._drops.due(now), self._side_events.due(now))
        self._summaries = asyncio.get_running_loop().call_later(SUMMARY_PERIOD, self._log_due_summaries)

    def _log_summaries(self, rejections: list[Summary], drops: list[Summary], side_events: list[Summary]) -> None:
        for line in rejections:
            self._log_summary("sia_frame_rejected", line)
        for line in drops:
            self._log_drops(line)
        for line in side_events:
            self._log_summary("sia_panel_events_summarised", line)


def _peer_name(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)


class _PanelConnection(asyncio.Protocol):
    """One panel's TCP connection: splits frames on CR, answers each, holds to the peer's share.

    Reading pauses while the answers are not being read (`pause_writing`, at the write buffer's
    high-water mark) and while frames already received wait for their turn: at most
    `frame_budget` frames per loop turn, the rest continued with `call_soon`. So the buffer
    holds at most one read beyond the longest frame, and the write buffer at most the
    high-water mark plus one budget of answers.
    """

    def __init__(self, receiver: SiaReceiver) -> None:
        self._receiver = receiver
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._last_frame = 0.0
        self._peer = "?"
        self._writes_paused = False
        """The peer is not reading its answers (between `pause_writing` and `resume_writing`)."""
        self._backlog = False
        """Frames received wait for the next turn (`_continue` is scheduled)."""
        self._reading = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's TCPTransport does not subclass it
        self._peer = _peer_name(transport.get_extra_info("peername"))
        receiver = self._receiver
        limits = receiver.limits
        self._transport.set_write_buffer_limits(high=limits.write_buffer)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        for displaced in receiver._table.admit(self, source_of(self._peer)):
            receiver._dropped("tcp", "evicted", displaced._peer)
            displaced.close()
        self._last_frame = receiver._clock()
        self._arm_idle(limits.idle_timeout)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._backlog:
            self._answer_frames()

    def _continue(self) -> None:
        self._backlog = False
        self._answer_frames()

    def _answer_frames(self) -> None:
        receiver, transport = self._receiver, self._transport
        if transport is None or transport.is_closing():
            return
        budget = receiver.limits.frame_budget
        while not self._writes_paused and (end := self._buffer.find(dc09.CR)) >= 0:
            if budget == 0:
                # The rest after everyone else has had a turn; read nothing more meanwhile.
                receiver.counts.paused["budget"] += 1
                self._backlog = True
                asyncio.get_running_loop().call_soon(self._continue)
                break
            raw = bytes(self._buffer[: end + 1])
            del self._buffer[: end + 1]
            if not raw.strip():
                continue  # a stray line ending between frames
            budget -= 1
            reply, standing = receiver._answer(raw, "tcp", self._peer)
            receiver._table.heard(self, standing)
            self._last_frame = receiver._clock()
            if reply:
                transport.write(reply)  # may call pause_writing at once
        if len(self._buffer) > receiver.limits.max_buffer and dc09.CR not in self._buffer:
            # No CR within the longest legal frame: not DC-09, or an attempt to eat our memory.
            receiver._dropped("tcp", "oversize", self._peer)
            self.close()
            return
        self._set_reading(not (self._writes_paused or self._backlog))

    def _set_reading(self, reading: bool) -> None:
        if reading == self._reading or self._transport is None or self._transport.is_closing():
            return
        self._reading = reading
        if reading:
            self._transport.resume_reading()
        else:
            self._transport.pause_reading()

    def pause_writing(self) -> None:
        self._writes_paused = True
        self._receiver.counts.paused["write"] += 1
        self._set_reading(False)

    def resume_writing(self) -> None:
        self._writes_paused = False
        if not self._backlog:
            self._backlog = True  # answer what waited, on its own turn
            asyncio.get_running_loop().call_soon(self._continue)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._receiver._table.remove(self)
        self._buffer.clear()

    def close(self) -> None:
        """Drop the connection now."""
        if self._transport is not None:
            self._transport.abort()

    def _arm_idle(self, delay: float | None) -> None:
        if delay is not None:
            self._idle = asyncio.get_running_loop().call_later(delay, self._on_idle)

    def _on_idle(self) -> None:
        # One timer per connection, re-armed for the rest of the timeout: cheaper than one per frame.
        timeout = self._receiver.limits.idle_timeout
        if timeout is None:
            return
        left = self._last_frame + timeout - self._receiver._clock()
        if left > 0:
            self._arm_idle(left)
            return
        self._receiver._dropped("tcp", "idle", self._peer)
        self.close()


class _PanelDatagrams(asyncio.DatagramProtocol):
    """UDP: each datagram carries one frame (up to a budget of CR-terminated ones taken); answers go to the sender."""

    def __init__(self, receiver: SiaReceiver) -> None:
        self._receiver = receiver
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)  # 3.11's selector class does not subclass it

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        peer = _peer_name(addr)
        limits = self._receiver.limits
        if len(data) > limits.max_buffer:
            self._receiver._dropped("udp", "oversize", peer)
            return
        frames = [raw for raw in data.split(dc09.CR) if raw.strip()]
        if len(frames) > limits.frame_budget:
            self._receiver._dropped("udp", "budget", peer)  # a panel sends one; hundreds are a flood
            frames = frames[: limits.frame_budget]
        for raw in frames:
            reply = self._receiver.handle(raw + dc09.CR, "udp", peer)
            if reply and self._transport is not None:
                self._transport.sendto(reply, addr)
