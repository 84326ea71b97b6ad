"""The alarm receiver: SIA DC-09 over TCP and UDP, and supervision of every alarm panel.

A school's alarm panel reports to the Emergency Management Center over IP; losing that
path is itself an alarm condition, so panels send NULL heartbeats and the receiver raises
"supervision lost" when one is overdue. `SiaReceiver` does the sockets (both transports
on one port, answers ACK/NAK/DUH as `dc09.answer` decides); `Supervision` is the pure
bookkeeping of who was heard when, driven by whatever clock the caller passes in.
"""

from __future__ import annotations

import asyncio
import enum
import errno
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import cast

import structlog

from telemetryd.alarm import dc09
from telemetryd.alarm.dc09 import AccountKey, PanelEvent, Verdict
from telemetryd.model import SiaAccount

DEFAULT_GRACE = 30.0
"""Seconds past the heartbeat interval before supervision is lost: room for a heartbeat that
needed retries or waited behind an event, without hiding a dead path for long."""
DEFAULT_IDLE_TIMEOUT = 900.0
"""A TCP connection silent this long is closed; panels reconnect for their next message, and
half-open sockets from panels that lost power would otherwise pile up."""
DEFAULT_MAX_CONNECTIONS = 4096
MAX_STRANGERS = 1024
"""Unknown accounts remembered (oldest forgotten first), so a flood of made-up ones costs bounded memory."""


# ---- supervision (pure) ----------------------------------------------------------------------


class SupervisionState(enum.StrEnum):
    """Where a panel's heartbeats stand."""

    OK = "ok"
    SUPERVISION_LOST = "supervision_lost"
    """Heard before, but nothing for longer than interval + grace."""
    NEVER_HEARD = "never_heard"
    """Nothing since supervision began; see `AccountStatus.overdue` for whether that is yet a fault."""


def account_key(sia: SiaAccount) -> AccountKey:
    """The receiver's key for a panel configured in the inventory (`sia:`)."""
    return AccountKey(sia.receiver, sia.prefix, sia.account)


@dataclass(frozen=True, slots=True)
class SupervisedPanel:
    """One panel the receiver expects to hear from, and how often (seconds)."""

    key: AccountKey
    interval: float
    grace: float = DEFAULT_GRACE

    def __post_init__(self) -> None:
        if self.interval <= 0 or self.grace < 0:
            raise ValueError(f"{self.key}: interval must be > 0 and grace >= 0")


@dataclass(frozen=True, slots=True)
class AccountStatus:
    """What supervision knows about one panel at one moment."""

    key: AccountKey
    state: SupervisionState
    interval: float
    grace: float
    since: float
    """When supervision of this account began (clock of the caller)."""
    last_heard: float | None
    """When the last accepted frame (heartbeat or event) arrived."""
    silent_for: float
    """Seconds since `last_heard`, or since `since` when never heard."""
    overdue: bool
    """True when `silent_for` exceeds interval + grace: lost, or never heard and late."""
    frames: int
    last_event: PanelEvent | None
    last_event_at: float | None
    events: int


@dataclass(slots=True)
class _Account:
    panel: SupervisedPanel
    since: float
    last_heard: float | None = None
    frames: int = 0
    last_event: PanelEvent | None = None
    last_event_at: float | None = None
    events: int = 0


class Supervision:
    """Per-account heartbeat supervision; every method takes the time, nothing reads a clock.

    Any accepted frame counts as a sign of life, not only NULL: an alarm proves the path
    as well as a heartbeat does.
    """

    def __init__(self, panels: Iterable[SupervisedPanel] = (), *, started_at: float) -> None:
        self._accounts: dict[AccountKey, _Account] = {}
        self._strangers: OrderedDict[AccountKey, float] = OrderedDict()
        self.configure(panels, now=started_at)

    def configure(self, panels: Iterable[SupervisedPanel], *, now: float) -> None:
        """Set the expected panels (config load or reload); accounts kept keep their history."""
        previous = self._accounts
        self._accounts = {}
        for panel in panels:
            old = previous.get(panel.key)
            if old is None:
                self._accounts[panel.key] = _Account(panel, since=now)
                self._strangers.pop(panel.key, None)
            else:
                old.panel = panel
                self._accounts[panel.key] = old

    @property
    def keys(self) -> tuple[AccountKey, ...]:
        """The supervised accounts."""
        return tuple(self._accounts)

    @property
    def strangers(self) -> dict[AccountKey, float]:
        """Accounts heard from but not configured, with when they were last heard."""
        return dict(self._strangers)

    def observe(self, key: AccountKey, at: float) -> bool:
        """Record a sign of life; False (and remembered as a stranger) when the account is not supervised."""
        account = self._accounts.get(key)
        if account is None:
            self._strangers[key] = at
            self._strangers.move_to_end(key)
            while len(self._strangers) > MAX_STRANGERS:
                self._strangers.popitem(last=False)
            return False
        if account.last_heard is None or at >= account.last_heard:
            account.last_heard = at
        account.frames += 1
        return True

    def record_event(self, key: AccountKey, event: PanelEvent, at: float) -> bool:
        """Remember an event (alarm, restore, test) as the panel's last; False when not supervised."""
        account = self._accounts.get(key)
        if account is None:
            return False
        account.last_event, account.last_event_at = event, at
        account.events += 1
        return True

    def status_of(self, key: AccountKey, now: float) -> AccountStatus:
        """The status of one supervised account (KeyError when not supervised)."""
        account = self._accounts[key]
        panel = account.panel
        silent_for = max(0.0, now - (account.last_heard if account.last_heard is not None else account.since))
        overdue = silent_for > panel.interval + panel.grace
        if account.last_heard is None:
            state = SupervisionState.NEVER_HEARD
        else:
            state = SupervisionState.SUPERVISION_LOST if overdue else SupervisionState.OK
        return AccountStatus(
            key=key,
            state=state,
            interval=panel.interval,
            grace=panel.grace,
            since=account.since,
            last_heard=account.last_heard,
            silent_for=silent_for,
            overdue=overdue,
            frames=account.frames,
            last_event=account.last_event,
            last_event_at=account.last_event_at,
            events=account.events,
        )

    def status(self, now: float) -> dict[AccountKey, AccountStatus]:
        """Every supervised account's status at `now`."""
        return {key: self.status_of(key, now) for key in self._accounts}


# ---- the receiver (I/O) ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reception:
    """One frame the receiver handled, for the caller's logs, metrics and history."""

    transport: str
    """``tcp`` or ``udp``."""
    peer: str
    answer: dc09.Answer
    key: AccountKey | None
    supervised: bool
    events: tuple[PanelEvent, ...] = ()


def _utc_now() -> datetime:
    return datetime.now(UTC)


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
        result = dc09.answer(raw, self._wall_clock())
        frame = result.frame
        key = frame.key if frame is not None else None
        supervised = False
        found: tuple[PanelEvent, ...] = ()
        if result.verdict is Verdict.ACK and frame is not None and key is not None:
            at = self._clock()
            supervised = self.supervision.observe(key, at)
            found = dc09.events(frame)
            for event in found:
                self.supervision.record_event(key, event, at)
            if not supervised and key not in self._warned and len(self._warned) < MAX_STRANGERS:
                self._warned.add(key)  # once per account: a misconfigured panel would otherwise log every heartbeat
                self._log.warning("sia_unknown_account", account=str(key), peer=peer, transport=transport)
        self.counts.frames[(transport, result.verdict.value, result.reason)] += 1
        self._log_reception(transport, peer, result, key, found)
        if self._on_reception is not None:
            self._on_reception(Reception(transport, peer, result, key, supervised, found))
        return result.reply

    def _log_reception(
        self, transport: str, peer: str, result: dc09.Answer, key: AccountKey | None, found: tuple[PanelEvent, ...]
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
            self._log.warning(
                "sia_panel_event",
                account=account,
                code=event.code,
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
