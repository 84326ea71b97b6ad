"""RTSP OPTIONS probe: does the camera's stream server answer as an RTSP server?

A TCP connect to 554 only says a socket listens; a camera whose streaming process has
hung often still accepts. OPTIONS (RFC 2326 §10.1, RFC 7826 §13.1) needs no session and,
on every camera we have seen, no authentication, so it is the cheapest request that proves
the RTSP stack itself is alive. A 401 also proves that, so it counts as up, with the
detail saying so.

Like the TCP probe this uses a bare asyncio Protocol: one future per probe, no
StreamReader/Writer pair, and the response is read only up to the end of its headers.
"""

from __future__ import annotations

import asyncio
import errno
import re
import time
from dataclasses import dataclass
from typing import cast

from telemetryd.model import Device, ProbeResult, ProbeSpec
from telemetryd.probes.base import ProbeContext

DEFAULT_PORT = 554
MAX_HEADER_BYTES = 8192
"""A reply's status line and headers must fit here; cameras send a few hundred bytes."""
USER_AGENT = "telemetryd"

_UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN}
_STATUS_LINE = re.compile(r"RTSP/(?P<version>\d\.\d) (?P<code>\d{3})(?: (?P<phrase>.*))?")
_MAGIC = b"RTSP/"


class NotRtspError(ValueError):
    """The bytes that came back are not an RTSP response (an HTTP server, a banner, noise)."""


@dataclass(frozen=True, slots=True)
class RtspReply:
    """The parts of an OPTIONS response the probe looks at."""

    version: str
    status: int
    phrase: str
    headers: dict[str, str]
    """Header names lower-cased; a repeated header keeps its values joined by ``, ``."""

    @property
    def public(self) -> tuple[str, ...]:
        """Methods from the ``Public:`` header, upper-cased, in the server's order."""
        raw = self.headers.get("public", "")
        return tuple(m.strip().upper() for m in raw.split(",") if m.strip())

    @property
    def cseq(self) -> int | None:
        """The echoed ``CSeq``, or None when missing or not a number."""
        try:
            return int(self.headers.get("cseq", ""))
        except ValueError:
            return None


def request(host: str, port: int, path: str = "/", *, cseq: int = 1) -> bytes:
    """The OPTIONS request for ``rtsp://host:port/path``."""
    authority = f"[{host}]" if ":" in host else host  # an IPv6 literal needs brackets in a URL
    if not path.startswith("/"):
        path = "/" + path
    return (
        f"OPTIONS rtsp://{authority}:{port}{path} RTSP/1.0\r\nCSeq: {cseq}\r\nUser-Agent: {USER_AGENT}\r\n\r\n"
    ).encode("ascii")


def header_end(buffer: bytes | bytearray) -> int:
    """Index just past the blank line ending the headers, or -1 if it has not arrived yet."""
    crlf = buffer.find(b"\r\n\r\n")
    lf = buffer.find(b"\n\n")  # tolerated: some embedded servers end lines with a bare LF
    ends = [i + 4 for i in (crlf,) if i >= 0] + [i + 2 for i in (lf,) if i >= 0]
    return min(ends) if ends else -1


def parse_reply(raw: bytes) -> RtspReply:
    """Parse an RTSP response's status line and headers (the body, if any, is ignored).

    Raises NotRtspError when the status line is not ``RTSP/x.y NNN ...``.
    """
    if not raw.startswith(_MAGIC):
        first = raw[:40].decode("latin-1").splitlines()[0] if raw.strip() else ""
        raise NotRtspError(f"reply does not start with RTSP/: {first!r}")
    end = header_end(raw)
    head = raw[:end] if end >= 0 else raw
    lines = head.decode("latin-1").replace("\r\n", "\n").split("\n")
    match = _STATUS_LINE.fullmatch(lines[0].rstrip())
    if match is None:
        raise NotRtspError(f"malformed status line: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line.strip():
            break
        name, sep, value = line.partition(":")
        if not sep:
            raise NotRtspError(f"malformed header line: {line[:80]!r}")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return RtspReply(match["version"], int(match["code"]), (match["phrase"] or "").strip(), headers)


def judge(reply: RtspReply, duration: float, rtt: float | None) -> ProbeResult:
    """Turn a parsed OPTIONS reply into the probe's result."""
    methods = ",".join(reply.public) or "no Public header"
    if reply.status == 200:
        return ProbeResult(True, duration, detail=f"RTSP/{reply.version} 200, methods {methods}", rtt=rtt)
    if reply.status == 401:
        # The stream server runs and parses requests; it just wants credentials for OPTIONS too.
        return ProbeResult(True, duration, detail=f"RTSP/{reply.version} 401: server answers, asks for auth", rtt=rtt)
    phrase = f" {reply.phrase}" if reply.phrase else ""
    return ProbeResult(False, duration, "status", f"RTSP/{reply.version} {reply.status}{phrase}", rtt=rtt)


class _OptionsExchange(asyncio.Protocol):
    """Sends OPTIONS once connected and resolves with the bytes up to the end of the headers."""

    def __init__(self, payload: bytes, done: asyncio.Future[bytes]) -> None:
        self._payload = payload
        self._done = done
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self.connected_at: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.connected_at = time.monotonic()
        # cast, not isinstance: uvloop's TCPTransport (the daemon's loop) does not subclass asyncio.Transport.
        self._transport = cast(asyncio.Transport, transport)
        self._transport.write(self._payload)

    def data_received(self, data: bytes) -> None:
        if self._done.done():
            return
        self._buffer += data
        prefix = bytes(self._buffer[: len(_MAGIC)])
        if not _MAGIC.startswith(prefix):
            self._finish(_Failure("not_rtsp", bytes(self._buffer)))
        elif header_end(self._buffer) >= 0:
            self._finish(bytes(self._buffer))
        elif len(self._buffer) > MAX_HEADER_BYTES:
            self._finish(_Failure("too_large", b""))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done.done():
            partial = bytes(self._buffer)
            reason = "not_rtsp" if partial and not _MAGIC.startswith(partial[: len(_MAGIC)]) else "closed"
            self._done.set_exception(_Failure(reason, partial))

    def _finish(self, outcome: bytes | _Failure) -> None:
        if isinstance(outcome, _Failure):
            self._done.set_exception(outcome)
        else:
            self._done.set_result(outcome)
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Drop the connection (used when the deadline passes)."""
        if self._transport is not None:
            self._transport.abort()


class _Failure(Exception):
    """How an exchange ended without a complete reply; carries the reason word."""

    def __init__(self, reason: str, partial: bytes) -> None:
        super().__init__(reason)
        self.reason = reason
        self.partial = partial


async def options(host: str, port: int, *, timeout: float, path: str = "/") -> ProbeResult:
    """Send one OPTIONS to ``rtsp://host:port/path`` and report whether an RTSP server answered.

    `rtt` is the TCP connect time; `duration` runs until the reply's headers are in.
    Failure reasons: ``refused``, ``timeout``, ``unreachable``, ``error``, ``closed``
    (connection ended before a full reply), ``not_rtsp``, ``too_large``, ``status``.
    """
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    done: asyncio.Future[bytes] = loop.create_future()
    exchange = _OptionsExchange(request(host, port, path), done)
    phase = "connect"
    try:
        async with asyncio.timeout(timeout):
            await loop.create_connection(lambda: exchange, host, port)
            phase = "reply"
            raw = await done
    except TimeoutError:
        exchange.abort()
        return ProbeResult(False, time.monotonic() - started, "timeout", f"no {phase} on port {port} in {timeout:g}s")
    except ConnectionRefusedError:
        return ProbeResult(False, time.monotonic() - started, "refused", f"port {port} refused the connection")
    except _Failure as failure:
        return _failed(failure, port, time.monotonic() - started, _rtt(exchange, started))
    except OSError as exc:
        exchange.abort()
        reason = "unreachable" if exc.errno in _UNREACHABLE else "error"
        name = errno.errorcode.get(exc.errno or 0, "error")
        return ProbeResult(False, time.monotonic() - started, reason, f"port {port}: {name} ({exc.strerror})")
    duration = time.monotonic() - started
    try:
        reply = parse_reply(raw)
    except NotRtspError as exc:
        return ProbeResult(False, duration, "not_rtsp", str(exc), rtt=_rtt(exchange, started))
    return judge(reply, duration, _rtt(exchange, started))


def _rtt(exchange: _OptionsExchange, started: float) -> float | None:
    return None if exchange.connected_at is None else exchange.connected_at - started


def _failed(failure: _Failure, port: int, duration: float, rtt: float | None) -> ProbeResult:
    if failure.reason == "too_large":
        detail = f"reply headers on port {port} exceed {MAX_HEADER_BYTES} bytes"
    elif failure.reason == "not_rtsp":
        first = failure.partial[:40].decode("latin-1").splitlines()[0] if failure.partial.strip() else ""
        detail = f"port {port} answered, but not with RTSP: {first!r}"
    elif failure.partial:
        detail = f"port {port} closed the connection after {len(failure.partial)} bytes of a reply"
    else:
        detail = f"port {port} closed the connection without replying"
    return ProbeResult(False, duration, failure.reason, detail, rtt=rtt)


def _timeout(ctx: ProbeContext) -> float:
    return ctx.settings.timeout_for("rtsp")


async def probe(device: Device, spec: ProbeSpec, ctx: ProbeContext) -> ProbeResult:
    """OPTIONS on the device's RTSP port (``ProbeSpec("rtsp", 554)``; no port means 554)."""
    return await options(device.host, spec.port or DEFAULT_PORT, timeout=_timeout(ctx))
