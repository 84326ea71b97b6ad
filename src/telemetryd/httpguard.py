"""Connection guard for telemetryd's HTTP listeners (the exporter on :9817, the school responder).

aiohttp keeps a connection that never sends a request for an hour and has no cap on how many
it holds: a few thousand idle sockets exhaust the process's file descriptors, and then the
probes fail with ``EMFILE``. `ConnectionGuard` sits between the listening socket and aiohttp:

- at most `cap` connections at once, the cap being ``RLIMIT_NOFILE - fd_reserve`` when that
  is below `max_connections`, so the descriptors of the reserve are always left to the rest
  of the process;
- when the cap is reached a new connection evicts the connection idle longest (one that has
  sent nothing first, then one stuck in a half-sent request head); a connection that is being
  answered is never evicted, and a newcomer is refused only when every slot is busy;
- `head_timeout`: a request head must be complete this long after its first byte;
- `idle_timeout`: a connection with no request (fresh, or kept alive after a response) is
  closed after this long; a response that stops draining for as long is cut;
- TLS, when `tls()` gives a context, is done by the guard on the counted TCP connection
  (`ssl.MemoryBIO`), so a peer that never finishes its handshake holds a slot it can lose, under
  the head timeout, not an uncounted descriptor;
- `server_log`: the logger aiohttp's request handler is given, so a malformed request becomes
  one structured line (rate-limited per peer, see `Tally`) instead of a plain-text traceback.

A request is "being answered" from the moment aiohttp hands it to the application (the guard's
`middleware`, first in the chain) until the handler returns and the write buffer has drained.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import ssl
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

SWEEP_SECONDS = 0.5
"""How often timeouts are checked (a timeout is late by at most this)."""
SUMMARY_SECONDS = 60.0
"""A `Tally` logs at most once per this many seconds."""
SUMMARY_PEERS = 5
"""Peers named in one summary line (the busiest); the rest are only counted."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Limits:
    """What one listener allows."""

    max_connections: int
    fd_reserve: int
    head_timeout: float
    idle_timeout: float


def nofile_limit() -> int:
    """The process's soft RLIMIT_NOFILE (descriptors it may hold at once)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


MIN_CAP = 8
"""Even a badly sized process answers a few HTTP clients (a warning says the reserve is short)."""


def connection_cap(max_connections: int, fd_reserve: int, nofile: int) -> int:
    """Connections the listener may hold: `max_connections`, less when the descriptor limit leaves no reserve."""
    return max(MIN_CAP, min(max_connections, nofile - fd_reserve))


class Tally:
    """A rate-limited summary: the first occurrence is logged at once, later ones once per window with counts.

    One hostile peer sending 20,000 bad requests costs two log lines a minute, not 20,000
    (journald would otherwise start dropping every line of the process, alarms included).
    """

    def __init__(self, event: str, *, log: Any, window: float = SUMMARY_SECONDS, clock: Clock = time.monotonic):
        self.event = event
        self.log = log
        self.window = window
        self.clock = clock
        self.total = 0
        self._peers: Counter[str] = Counter()
        self._reasons: Counter[str] = Counter()
        self._last: float | None = None

    def note(self, peer: str | None, reason: str = "") -> None:
        """Count one occurrence; log now if the window since the last line has passed."""
        self.total += 1
        self._peers[peer or "unknown"] += 1
        if reason:
            self._reasons[reason] += 1
        self.flush()

    def flush(self, *, force: bool = False) -> None:
        """Log what was counted since the last line, if the window has passed (or `force`)."""
        if not self._peers:
            return
        now = self.clock()
        if not force and self._last is not None and now - self._last < self.window:
            return
        count = sum(self._peers.values())
        fields: dict[str, Any] = {
            "count": count,
            "peers": dict(self._peers.most_common(SUMMARY_PEERS)),
            "distinct_peers": len(self._peers),
        }
        if self._reasons:
            fields["reasons"] = dict(self._reasons)
        if self._last is not None:
            fields["window_seconds"] = round(now - self._last, 1)
        self.log.warning(self.event, **fields)
        self._last = now
        self._peers.clear()
        self._reasons.clear()


class ServerLog(logging.Logger):
    """The logger handed to aiohttp's request handler: its errors become structured lines.

    aiohttp logs "Error handling request" with a traceback through the stdlib logger, which in a
    JSON log stream is a dozen plain-text lines per bad request. Here a malformed request (an
    `HttpProcessingError`: bad method, bad header, line too long…) counts in `bad_requests`; any
    other error is one ``http_handler_failed`` line with the exception's type and message.
    The message of a parse error is never logged: it quotes the peer's bytes, which may hold a
    credential.
    """

    def __init__(self, bad_requests: Tally, *, log: Any) -> None:
        super().__init__("telemetryd.http", logging.DEBUG)
        self.bad_requests = bad_requests
        self.structured = log

    def _report(self, msg: object, args: tuple[Any, ...], exc_info: Any) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else None
        if isinstance(exc, HttpProcessingError):
            peer = args[0] if args and isinstance(args[0], str) else None
            self.bad_requests.note(peer, type(exc).__name__)
        elif exc is not None:
            self.structured.error("http_handler_failed", error=type(exc).__name__, message=str(exc)[:200])
        else:
            self.structured.error("http_server_error", message=str(msg)[:200])

    def exception(self, msg: object, *args: object, exc_info: Any = True, **_: Any) -> None:
        """aiohttp's `log_exception`."""
        self._report(msg, args, exc_info)

    def error(self, msg: object, *args: object, exc_info: Any = None, **_: Any) -> None:
        """Errors logged without `exception` (none today; kept structured all the same)."""
        self._report(msg, args, exc_info)

    def debug(self, msg: object, *args: object, exc_info: Any = None, **_: Any) -> None:
        """aiohttp logs a bad method on a connection's first request at debug: still a bad request."""
        if isinstance(exc_info, HttpProcessingError):
            self._report(msg, args, exc_info)


class _Slot(asyncio.Protocol):
    """One accepted TCP connection: counted by the guard, its bytes passed on to aiohttp's handler."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.raw: asyncio.Transport | None = None
        self.transport: asyncio.Transport | None = None
        """What aiohttp writes to: the TCP transport, or the TLS one on top of it."""
        self.idle_since = guard.clock()
        self.head_since: float | None = None
        self.busy = 0
        self.tls_context: ssl.SSLContext | None = None
        self.tls: _TlsLayer | None = None
        self.drained_at = 0
        """Write-buffer size when a stalled response was last looked at."""
        self.closed = False

    # ---------------------------------------------------------------- transport → guard → aiohttp

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.raw = cast(asyncio.Transport, transport)
        if not self.guard._admit(self):
            return
        self.tls_context = self.guard.tls()
        if self.tls_context is None:
            self._attach(self.raw)

    def _attach(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.guard._by_handler[self.inner] = self
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.busy == 0 and self.head_since is None:
            self.head_since = self.guard.clock()  # a ClientHello counts: a handshake is a head
            self.guard._began_head(self)
        if self.tls_context is None:
            self.inner.data_received(data)
            return
        if self.tls is None:  # made at the first byte: a flood of silent sockets costs no TLS state
            self.tls = _TlsLayer(self, self.tls_context)
        self.tls.received(data)

    def eof_received(self) -> bool | None:
        if self.transport is None or self.tls_context is not None:
            return None  # close: a TLS peer ends with close_notify, a plain EOF mid-TLS is the end
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        # Lost before TLS was up: the handshake failed or timed out (the guard's own drops are counted already).
        self.guard._release(self, None if self.transport is not None else "tls_failed")
        if self.transport is not None:
            self.guard._by_handler.pop(self.inner, None)
            self.inner.connection_lost(exc)

    # ---------------------------------------------------------------- guard's side

    def abort(self) -> None:
        """Drop the connection now (its descriptor is freed at once)."""
        self.closed = True
        if self.raw is not None:
            self.raw.abort()

    def pending_bytes(self) -> int:
        """Response bytes not yet taken by the kernel."""
        raw = self.raw
        return raw.get_write_buffer_size() if raw is not None and not raw.is_closing() else 0

    def peer(self) -> str | None:
        """The peer's address (for the log summaries)."""
        peer = self.raw.get_extra_info("peername") if self.raw is not None else None
        return str(peer[0]) if isinstance(peer, tuple) and peer else None


MAX_TLS_READ = 256 * 1024
"""Plain bytes taken from the TLS layer per read call."""


class _TlsLayer:
    """TLS over the counted TCP connection with `ssl.MemoryBIO`, as asyncio's own sslproto does.

    Doing it here rather than with ``create_server(ssl=...)`` or ``loop.start_tls`` keeps a peer
    in its handshake inside the guard: counted, evictable, under the head timeout (the loop's
    TLS servers hide such connections until the handshake is done, and uvloop delivers the
    ClientHello before ``start_tls`` could take the socket over).
    """

    def __init__(self, slot: _Slot, context: ssl.SSLContext) -> None:
        self.slot = slot
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.sslobj = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.context = context
        self.established = False

    def received(self, data: bytes) -> None:
        """Ciphertext from the peer: the handshake, or plain bytes on to aiohttp."""
        self.incoming.write(data)
        try:
            if not self.established:
                self.sslobj.do_handshake()
                self.established = True
                self.flush()
                assert self.slot.raw is not None
                self.slot._attach(_TlsTransport(self, self.slot.raw))
            self._read()
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:  # close_notify: the peer is done
            self.flush()
            self.slot.abort()
            return
        except ssl.SSLError as exc:
            if not self.established:
                self.slot.guard.handshake_failures.note(self.slot.peer(), exc.reason or type(exc).__name__)
                self.slot.guard._release(self.slot, "tls_failed")
            self.slot.abort()
            return
        self.flush()

    def _read(self) -> None:
        while not self.slot.closed:
            plain = self.sslobj.read(MAX_TLS_READ)
            if not plain:
                return
            self.slot.inner.data_received(plain)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Plain bytes from aiohttp, encrypted onto the TCP connection."""
        view = memoryview(data)
        try:
            while view:
                written = self.sslobj.write(view)
                view = view[written:]
        except ssl.SSLError:  # the TLS session broke under us (no renegotiation is offered): drop it
            self.slot.abort()
            return
        self.flush()

    def flush(self) -> None:
        """Ciphertext waiting in the TLS layer onto the TCP connection."""
        pending = self.outgoing.read()
        raw = self.slot.raw
        if pending and raw is not None and not raw.is_closing():
            raw.write(pending)

    def close(self) -> None:
        """Send close_notify (best effort; the TCP close follows)."""
        with contextlib.suppress(ssl.SSLError):
            self.sslobj.unwrap()
        self.flush()


class _TlsTransport(asyncio.Transport):
    """What aiohttp writes to on a TLS connection: the TLS layer over the raw TCP transport."""

    def __init__(self, layer: _TlsLayer, raw: asyncio.Transport) -> None:
        super().__init__()
        self.layer = layer
        self.raw = raw
        self._closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """TLS facts from the TLS layer, the rest (peername, socket) from the TCP transport."""
        facts: dict[str, Callable[[], Any]] = {
            "sslcontext": lambda: self.layer.context,
            "ssl_object": lambda: self.layer.sslobj,
            "peercert": self.layer.sslobj.getpeercert,
            "cipher": self.layer.sslobj.cipher,
        }
        fact = facts.get(name)
        return fact() if fact is not None else self.raw.get_extra_info(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt and send."""
        if not self._closing:
            self.layer.write(data)

    def writelines(self, list_of_data: Any) -> None:
        """Encrypt and send, joined."""
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        """TLS has close_notify, not a half close."""
        return False

    def is_closing(self) -> bool:
        """Closing or closed, here or underneath."""
        return self._closing or self.raw.is_closing()

    def close(self) -> None:
        """close_notify, then the TCP close after what is buffered has gone."""
        if not self._closing:
            self._closing = True
            self.layer.close()
            self.raw.close()

    def abort(self) -> None:
        """Drop the TCP connection now."""
        self._closing = True
        self.raw.abort()

    def is_reading(self) -> bool:
        """As the TCP transport."""
        return self.raw.is_reading()

    def pause_reading(self) -> None:
        """As the TCP transport."""
        self.raw.pause_reading()

    def resume_reading(self) -> None:
        """As the TCP transport."""
        self.raw.resume_reading()

    def get_write_buffer_size(self) -> int:
        """Ciphertext not yet taken by the kernel (the TLS layer keeps none back)."""
        return self.raw.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        """As the TCP transport."""
        return self.raw.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """As the TCP transport."""
        self.raw.set_write_buffer_limits(high, low)

    def get_protocol(self) -> asyncio.BaseProtocol:
        """aiohttp's handler."""
        return self.layer.slot.inner


class ConnectionGuard:
    """Caps, times out and evicts the connections of one HTTP listener (see the module docstring).

    name: a word for the log lines (``exporter``, ``responder``).
    tls: the TLS context to use for the next connection, or None for plain HTTP; called per
    connection, so a changed certificate is used from the next connection on.
    """

    def __init__(
        self,
        limits: Limits,
        *,
        name: str,
        log: Any = None,
        tls: Callable[[], ssl.SSLContext | None] = lambda: None,
        nofile: int | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.limits = limits
        self.name = name
        self.log = log or structlog.get_logger("telemetryd.httpguard")
        self.tls = tls
        self.clock = clock
        self.nofile = nofile if nofile is not None else nofile_limit()
        self.cap = connection_cap(limits.max_connections, limits.fd_reserve, self.nofile)
        self.bad_requests = Tally("http_bad_requests", log=self.log.bind(listener=name))
        self.handshake_failures = Tally("http_tls_handshake_failed", log=self.log.bind(listener=name))
        self.server_log = ServerLog(self.bad_requests, log=self.log.bind(listener=name))
        self.tallies: list[Tally] = [self.bad_requests, self.handshake_failures]
        self.closed: Counter[str] = Counter()
        """Closed by the guard, by reason: evicted, refused, head_timeout, idle_timeout, stalled, tls_failed."""
        self.accepted = 0
        self._slots: set[_Slot] = set()
        self._silent: OrderedDict[_Slot, None] = OrderedDict()
        """Idle, nothing received since: evicted first, oldest first; also the idle-timeout queue."""
        self._heads: OrderedDict[_Slot, None] = OrderedDict()
        """Idle with a request head under way: evicted next; also the head-timeout queue."""
        self._by_handler: dict[asyncio.Protocol, _Slot] = {}
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def open_connections(self) -> int:
        """Connections held now (TLS handshakes under way included)."""
        return len(self._slots)

    # ---------------------------------------------------------------- serving

    async def serve(self, runner: web.BaseRunner, host: str, port: int, *, backlog: int = 128) -> tuple[str, int]:
        """Listen on host:port for `runner` (set up) behind the guard; returns the address bound."""
        handlers = runner.server
        assert handlers is not None, "runner.setup() first"
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Slot(self, handlers()), host, port, backlog=backlog, reuse_address=True
        )
        self._sweeper = loop.create_task(self._sweep(), name=f"{self.name}-connection-guard")
        if self.nofile - self.limits.fd_reserve < self.limits.max_connections:
            self.log.warning(
                "http_connection_cap_lowered",
                listener=self.name,
                cap=self.cap,
                max_connections=self.limits.max_connections,
                nofile=self.nofile,
                fd_reserve=self.limits.fd_reserve,
            )
        sockets = getattr(self._server, "sockets", None) or ()  # uvloop's Server is no asyncio.Server
        bound = sockets[0].getsockname() if sockets else (host, port)
        return str(bound[0]), int(bound[1])

    async def close(self) -> None:
        """Stop listening and drop every connection still held."""
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for slot in list(self._slots):
            slot.abort()
        for tally in self.tallies:
            tally.flush(force=True)
        if self._server is not None:
            await self._server.wait_closed()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """First in the chain: the connection is being answered, so it is neither idle nor evictable."""
        slot = self._by_handler.get(cast(asyncio.Protocol, request.protocol))
        if slot is None:
            return await handler(request)
        self._silent.pop(slot, None)
        self._heads.pop(slot, None)
        slot.busy += 1
        try:
            return await handler(request)
        finally:
            slot.busy -= 1
            if slot.busy == 0 and not slot.closed:
                slot.head_since = None
                slot.idle_since = self.clock()
                slot.drained_at = 0
                self._silent[slot] = None

    # ---------------------------------------------------------------- slots

    def _admit(self, slot: _Slot) -> bool:
        """Count a new connection; at the cap, evict the longest idle one, or refuse this one."""
        self.accepted += 1
        if len(self._slots) >= self.cap and not self._evict_one():
            self.closed["refused"] += 1
            slot.abort()
            return False
        self._slots.add(slot)
        self._silent[slot] = None
        return True

    def _evict_one(self) -> bool:
        for queue in (self._silent, self._heads):
            for slot in queue:
                if slot.pending_bytes():
                    continue  # a response still draining: not idle after all
                self._drop(slot, "evicted")
                return True
        return False

    def _began_head(self, slot: _Slot) -> None:
        if slot in self._silent:
            del self._silent[slot]
            self._heads[slot] = None

    def _drop(self, slot: _Slot, reason: str) -> None:
        self._release(slot, reason)
        slot.abort()

    def _release(self, slot: _Slot, reason: str | None) -> None:
        if slot in self._slots:
            self._slots.discard(slot)
            if reason is not None:
                self.closed[reason] += 1
        self._silent.pop(slot, None)
        self._heads.pop(slot, None)
        slot.closed = True

    # ---------------------------------------------------------------- timeouts

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            self.expire(self.clock())
            for tally in self.tallies:
                tally.flush()

    def expire(self, now: float) -> None:
        """Close what has waited too long: idle connections, unfinished heads, stalled responses."""
        idle, head = self.limits.idle_timeout, self.limits.head_timeout
        while self._heads:
            slot = next(iter(self._heads))
            if slot.head_since is not None and now - slot.head_since < head:
                break
            self._drop(slot, "head_timeout")
        # _silent is in idle order except for slots re-queued by a draining response: a full pass
        # only happens when something expires, which is bounded by the cap.
        while self._silent:
            slot = next(iter(self._silent))
            if now - slot.idle_since < idle:
                break
            pending = slot.pending_bytes()
            if pending and pending != slot.drained_at:
                slot.drained_at = pending  # still moving: look again after another idle period
                slot.idle_since = now
                self._silent.move_to_end(slot)
                continue
            self._drop(slot, "stalled" if pending else "idle_timeout")


__all__ = [
    "ConnectionGuard",
    "Limits",
    "ServerLog",
    "Tally",
    "connection_cap",
    "nofile_limit",
]
