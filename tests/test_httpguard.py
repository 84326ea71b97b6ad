"""The HTTP connection guard: caps, eviction order, head and idle timeouts, TLS handshakes, structured errors."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage

from telemetryd.httpguard import MIN_CAP, ConnectionGuard, Limits, ServerLog, Tally, connection_cap
from telemetryd.sim.certs import certificate_authority, issued_by


@dataclass
class FakeLog:
    """A structlog-like logger that keeps (level, event, fields)."""

    lines: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append(("warning", event, fields))

    def error(self, event: str, **fields: Any) -> None:
        self.lines.append(("error", event, fields))

    def info(self, event: str, **fields: Any) -> None:
        self.lines.append(("info", event, fields))

    def bind(self, **_: Any) -> FakeLog:
        return self


def test_cap_is_lowered_to_leave_the_descriptor_reserve() -> None:
    """max_connections unless RLIMIT_NOFILE minus the reserve is lower; never below a handful."""
    assert connection_cap(256, 512, 65536) == 256
    assert connection_cap(256, 512, 700) == 188
    assert connection_cap(256, 1024, 1024) == MIN_CAP


def test_tally_logs_the_first_at_once_then_one_summary_per_window() -> None:
    """20,000 bad requests in a minute are two lines: the first, and a summary with the counts."""
    now = [0.0]
    log = FakeLog()
    tally = Tally("http_bad_requests", log=log, window=60, clock=lambda: now[0])
    tally.note("10.0.0.1", "BadHttpMessage")
    for i in range(19_999):
        now[0] = i * 0.003
        tally.note(f"10.0.0.{i % 7}", "BadHttpMessage")
    assert len(log.lines) == 1 and log.lines[0][2]["count"] == 1
    now[0] = 61.0
    tally.flush()
    assert len(log.lines) == 2
    summary = log.lines[1][2]
    assert summary["count"] == 19_999 and summary["distinct_peers"] == 7 and len(summary["peers"]) == 5
    assert summary["reasons"] == {"BadHttpMessage": 19_999}
    assert tally.total == 20_000
    tally.flush(force=True)  # nothing new: no line
    assert len(log.lines) == 2


def test_server_log_turns_parse_errors_into_the_tally_without_their_text() -> None:
    """aiohttp's "Error handling request" becomes a count; the peer's bytes quoted in the error never reach the log."""
    log = FakeLog()
    tally = Tally("http_bad_requests", log=log)
    server_log = ServerLog(tally, log=log)
    error = BadHttpMessage("Invalid header: Authorization: Basic c2VjcmV0")
    server_log.exception("Error handling request from %s", "10.1.2.3", exc_info=error)
    server_log.debug("Error handling request from %s", "10.1.2.3", exc_info=error)
    server_log.exception("Unhandled exception", exc_info=RuntimeError("boom"))
    assert tally.total == 2
    assert [line[1] for line in log.lines] == ["http_bad_requests", "http_handler_failed"]
    assert "c2VjcmV0" not in repr(log.lines)
    assert log.lines[0][2]["reasons"] == {"BadHttpMessage": 1}


BIG = 64 * 1024 * 1024
"""More than loopback's socket buffers hold: a reader that never reads leaves it in the write buffer."""
LIMITS = Limits(max_connections=MIN_CAP, fd_reserve=0, head_timeout=0.4, idle_timeout=0.8)


@dataclass
class Listener:
    """A guarded aiohttp app on 127.0.0.1; `release` lets the /slow handler answer."""

    guard: ConnectionGuard
    port: int
    release: asyncio.Event


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    """The guard with a cap of MIN_CAP and short timeouts, over /fast and /slow."""
    release = asyncio.Event()
    guard = ConnectionGuard(LIMITS, name="test", log=FakeLog(), nofile=1 << 16)

    async def fast(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def slow(_: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="late")

    async def big(_: web.Request) -> web.Response:
        return web.Response(body=b"x" * BIG)

    app = web.Application(middlewares=[guard.middleware])
    app.router.add_get("/fast", fast)
    app.router.add_get("/slow", slow)
    app.router.add_get("/big", big)
    runner = web.AppRunner(app, access_log=None, logger=guard.server_log)
    await runner.setup()
    _host, port = await guard.serve(runner, "127.0.0.1", 0)
    try:
        yield Listener(guard, port, release)
    finally:
        release.set()
        await guard.close()
        await runner.cleanup()


async def _idle(port: int, count: int) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    pairs = [await asyncio.open_connection("127.0.0.1", port) for _ in range(count)]
    await asyncio.sleep(0.05)
    return pairs


async def _closed(reader: asyncio.StreamReader, timeout: float = 2.0) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), timeout) == b""
    except (ConnectionError, TimeoutError):
        return True


async def _get(port: int, path: str, session: aiohttp.ClientSession | None = None) -> str:
    own = session is None
    session = session or aiohttp.ClientSession()
    try:
        async with session.get(f"http://127.0.0.1:{port}{path}", timeout=aiohttp.ClientTimeout(total=3)) as r:
            return await r.text()
    finally:
        if own:
            await session.close()


async def test_at_the_cap_the_longest_idle_connection_makes_room(listener: Listener) -> None:
    """A full listener still answers: the oldest silent connection is evicted for the newcomer."""
    pairs = await _idle(listener.port, MIN_CAP)
    assert listener.guard.open_connections == MIN_CAP
    assert await _get(listener.port, "/fast") == "ok"
    assert await _closed(pairs[0][0])
    assert listener.guard.closed["evicted"] == 1
    assert listener.guard.open_connections <= MIN_CAP


async def test_a_connection_being_answered_is_never_evicted(listener: Listener) -> None:
    """Idle ones go; a request in progress survives a flood; a newcomer is refused when all are busy."""
    slow = [asyncio.create_task(_get(listener.port, "/slow")) for _ in range(MIN_CAP)]
    await asyncio.sleep(0.2)
    reader, _writer = await asyncio.open_connection("127.0.0.1", listener.port)
    assert await _closed(reader)  # nothing idle to evict: refused
    assert listener.guard.closed["refused"] >= 1
    listener.release.set()
    assert await asyncio.gather(*slow) == ["late"] * MIN_CAP


async def test_a_half_sent_head_is_cut_at_the_head_timeout(listener: Listener) -> None:
    """A request line without its headers' end is closed after head_timeout, a silent one after idle_timeout."""
    (partial_reader, partial_writer), (silent_reader, _w) = await _idle(listener.port, 2)
    partial_writer.write(b"GET /fast HTTP/1.1\r\nHost: x\r\n")
    await partial_writer.drain()
    assert await _closed(partial_reader, timeout=LIMITS.head_timeout + 0.7)
    assert listener.guard.closed["head_timeout"] == 1
    assert not silent_reader.at_eof()
    assert await _closed(silent_reader, timeout=LIMITS.idle_timeout + 0.7)
    assert listener.guard.closed["idle_timeout"] == 1


async def test_a_kept_alive_connection_is_closed_when_idle(listener: Listener) -> None:
    """After a response the connection stays for the next request, then goes after idle_timeout."""
    async with aiohttp.ClientSession() as session:
        assert await _get(listener.port, "/fast", session) == "ok"
        assert await _get(listener.port, "/fast", session) == "ok"
        assert listener.guard.open_connections == 1
        await asyncio.sleep(LIMITS.idle_timeout + 0.7)
        assert listener.guard.open_connections == 0
        assert await _get(listener.port, "/fast", session) == "ok"  # the client opens a new one


async def test_a_response_nobody_reads_is_cut_as_stalled(listener: Listener) -> None:
    """A client that asks for a large body and never reads holds its slot for one idle period, not for ever."""
    _reader, writer = await asyncio.open_connection("127.0.0.1", listener.port, limit=1024)
    writer.transport.set_write_buffer_limits(0)
    writer.write(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.sleep(0.2)
    writer.transport.pause_reading()  # never take the body
    await asyncio.sleep(0.3)
    assert listener.guard.open_connections == 1
    await asyncio.sleep(2 * LIMITS.idle_timeout + 1.0)
    assert listener.guard.open_connections == 0
    assert listener.guard.closed["stalled"] == 1
    writer.close()


async def test_malformed_request_is_answered_400_and_counted(listener: Listener) -> None:
    """aiohttp's parse error reaches the guard's tally, not the stdlib logger."""
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(b"GET /fast HTTP/1.1\r\nBad Header\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 2)
    assert answer.split(b" ", 2)[1] == b"400"
    assert listener.guard.bad_requests.total == 1


async def test_tls_handshakes_are_counted_and_timed_out(tmp_path: Path) -> None:
    """HTTPS through the guard; a peer that opens TCP and never says hello is closed at the head timeout."""
    ca = certificate_authority(tmp_path)
    pair = issued_by(ca, tmp_path, "127.0.0.1")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pair.cert, pair.key)
    guard = ConnectionGuard(LIMITS, name="test", log=FakeLog(), tls=lambda: context, nofile=1 << 16)

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"secure={request.secure}")

    app = web.Application(middlewares=[guard.middleware])
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None, logger=guard.server_log)
    await runner.setup()
    _host, port = await guard.serve(runner, "127.0.0.1", 0)
    try:
        client = ssl.create_default_context(cafile=str(ca.cert))
        async with aiohttp.ClientSession() as session, session.get(f"https://127.0.0.1:{port}/", ssl=client) as r:
            assert await r.text() == "secure=True"
        mute = socket.create_connection(("127.0.0.1", port))
        plain_reader, plain_writer = await asyncio.open_connection("127.0.0.1", port)
        plain_writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # plain HTTP to the TLS port
        await asyncio.sleep(0.1)
        assert guard.handshake_failures.total == 1
        assert await _closed(plain_reader)
        await asyncio.sleep(LIMITS.idle_timeout + 0.7)
        assert guard.open_connections == 0
        assert guard.closed["idle_timeout"] + guard.closed["head_timeout"] >= 1
        mute.close()
    finally:
        await guard.close()
        await runner.cleanup()
