"""The speed-test client against loopback responders, good and broken: every failure is a bounded result."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from telemetryd.model import Direction
from telemetryd.probes.speedtest import (
    TcpCounters,
    _SocketLedger,
    _Stream,
    measure,
    parse_arrived,
    parse_tcp_info,
    run_test,
)
from telemetryd.school_responder import make_app

TOKEN = "s3cret-token-for-tests"
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Responder:
    """A real responder app on 127.0.0.1 that counts the requests (responses) it answered."""

    def __init__(self, runner: web.AppRunner, url: str) -> None:
        self.runner = runner
        self.url = url
        self.requests: list[tuple[str, int]] = []


@pytest.fixture
async def responder() -> AsyncIterator[Responder]:
    """The real responder app (cap 64 MiB) on a free loopback port."""
    app = make_app(TOKEN, max_bytes_per_request=64 * 1024 * 1024)
    seen: list[tuple[str, int]] = []

    async def count(request: web.Request, response: web.StreamResponse) -> None:
        seen.append((request.path, response.status))

    app.on_response_prepare.append(count)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    server = Responder(runner, f"http://127.0.0.1:{runner.addresses[0][1]}")
    server.requests = seen
    try:
        yield server
    finally:
        await runner.cleanup()


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Start a raw TCP server with a given connection handler; yields a starter returning its URL."""
    servers: list[asyncio.Server] = []
    writers: list[asyncio.StreamWriter] = []

    async def start(handler: Handler) -> str:
        async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)
            await handler(reader, writer)

        server = await asyncio.start_server(tracked, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for writer in writers:
        writer.transport.abort()
    for server in servers:
        server.close()
        await server.wait_closed()


async def _read_request_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


@pytest.mark.parametrize("direction", list(Direction))
async def test_healthy_responder_gives_a_rate_within_budget(responder: Responder, direction: Direction) -> None:
    """Against a good responder both directions succeed with a positive rate and never exceed the byte budget."""
    budget = 40_000_000
    result = await measure(responder.url, TOKEN, direction, max_bytes=budget, max_seconds=5)
    assert result.ok, result.detail
    assert result.direction is direction
    assert result.mbps > 10
    assert 0 < result.bytes_used <= budget
    assert result.streams == 4
    assert result.duration < 6


async def test_streams_are_separate_requests(responder: Responder) -> None:
    """Each of the streams makes its own request (one connection each)."""
    result = await measure(responder.url, TOKEN, Direction.DOWNLOAD, streams=3, max_bytes=3_000_000, max_seconds=5)
    assert result.ok
    assert len(responder.requests) == 3


async def test_refused_connection() -> None:
    """A port nobody listens on gives reason ``refused`` at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    result = await measure(f"http://127.0.0.1:{port}", TOKEN, Direction.DOWNLOAD, max_bytes=10**6, max_seconds=5)
    assert (result.ok, result.reason) == (False, "refused")
    assert time.monotonic() - started < 2
    assert result.bytes_used == 0


async def test_silent_listener_times_out_in_bounded_time(raw_server: Callable[[Handler], Awaitable[str]]) -> None:
    """A listener that accepts and never answers gives ``timeout`` within the stall timeout, not a hang."""

    async def silent(reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
        await reader.read()

    url = await raw_server(silent)
    started = time.monotonic()
    result = await measure(url, TOKEN, Direction.DOWNLOAD, max_bytes=10**6, max_seconds=10, stall_timeout=1.0)
    assert (result.ok, result.reason) == (False, "timeout")
    assert "no bytes" in result.detail
    assert time.monotonic() - started < 2


async def test_max_seconds_bounds_a_silent_test(raw_server: Callable[[Handler], Awaitable[str]]) -> None:
    """With a stall timeout longer than the test, the time budget still ends it, as a timeout."""

    async def silent(reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
        await reader.read()

    url = await raw_server(silent)
    started = time.monotonic()
    result = await measure(url, TOKEN, Direction.UPLOAD, max_bytes=10**6, max_seconds=0.8, stall_timeout=30)
    assert (result.ok, result.reason) == (False, "timeout")
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize("direction", list(Direction))
async def test_unauthorized_is_not_retried(responder: Responder, direction: Direction) -> None:
    """A wrong token gives ``unauthorized`` after exactly one request per stream, and the detail has no token."""
    result = await measure(responder.url, "not-" + TOKEN, direction, streams=4, max_bytes=10**6, max_seconds=5)
    assert (result.ok, result.reason) == (False, "unauthorized")
    assert len(responder.requests) == 4
    assert {status for _path, status in responder.requests} == {401}
    assert TOKEN not in result.detail
    assert result.bytes_used == 0


async def test_run_test_skips_upload_after_unauthorized_download(responder: Responder) -> None:
    """run_test does not repeat a refused token for the upload: only the download's requests reach the server."""
    download, upload = await run_test(responder.url, "wrong", streams=2, max_bytes=10**6, max_seconds=5)
    assert download.reason == upload.reason == "unauthorized"
    assert upload.direction is Direction.UPLOAD
    assert [path for path, _status in responder.requests] == ["/download", "/download"]


async def test_run_test_measures_both_directions(responder: Responder) -> None:
    """run_test returns a download result then an upload result, both ok."""
    download, upload = await run_test(responder.url, TOKEN, max_bytes=20_000_000, max_seconds=5)
    assert (download.direction, upload.direction) == (Direction.DOWNLOAD, Direction.UPLOAD)
    assert download.ok and upload.ok


async def test_budget_above_the_responder_cap_is_http_413() -> None:
    """Asking for more per stream than the responder allows gives reason ``http`` naming 413."""
    runner = web.AppRunner(make_app(TOKEN, max_bytes_per_request=1000), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        for direction in Direction:
            result = await measure(url, TOKEN, direction, streams=2, max_bytes=10_000, max_seconds=5)
            assert (result.ok, result.reason) == (False, "http"), direction
            assert "413" in result.detail
    finally:
        await runner.cleanup()


async def test_garbage_server_is_an_error(raw_server: Callable[[Handler], Awaitable[str]]) -> None:
    """A peer that answers with something that is not HTTP gives reason ``error`` quickly."""

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request_head(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\x00\x01\x02 not http at all\r\n\r\n")
        await writer.drain()
        writer.close()

    url = await raw_server(garbage)
    started = time.monotonic()
    result = await measure(url, TOKEN, Direction.DOWNLOAD, max_bytes=10**6, max_seconds=5)
    assert (result.ok, result.reason) == (False, "error")
    assert time.monotonic() - started < 2


async def test_short_body_is_an_error(raw_server: Callable[[Handler], Awaitable[str]]) -> None:
    """A 200 that promises a million bytes and closes after a thousand is ``error``, with the count in the detail."""

    async def short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 250000\r\n\r\n" + b"a" * 1000)
        await writer.drain()
        writer.close()

    url = await raw_server(short)
    result = await measure(url, TOKEN, Direction.DOWNLOAD, max_bytes=10**6, max_seconds=5)
    assert (result.ok, result.reason) == (False, "error")
    assert "cut short" in result.detail


async def test_responder_dying_mid_stream_is_an_error(raw_server: Callable[[Handler], Awaitable[str]]) -> None:
    """A responder that streams for a while and then resets the connection gives ``error`` with the bytes counted."""

    async def dies(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n")
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            writer.write(b"b" * 65536)
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.transport.abort()

    url = await raw_server(dies)
    started = time.monotonic()
    result = await measure(url, TOKEN, Direction.DOWNLOAD, streams=2, max_bytes=200_000_000, max_seconds=5)
    assert (result.ok, result.reason) == (False, "error")
    assert result.bytes_used > 0
    assert time.monotonic() - started < 2


async def test_upload_answer_that_is_not_json_is_an_error(raw_server: Callable[[Handler], Awaitable[str]]) -> None:
    """An upload whose answer is not the responder's JSON count gives ``error``."""

    async def wrong_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await _read_request_head(reader)
        if b"100-continue" in head.lower():
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))[15:])
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        await writer.drain()
        writer.close()

    url = await raw_server(wrong_answer)
    result = await measure(url, TOKEN, Direction.UPLOAD, streams=1, max_bytes=100_000, max_seconds=5)
    assert (result.ok, result.reason) == (False, "error")
    assert "JSON" in result.detail


async def test_stall_after_some_bytes_is_a_timeout(raw_server: Callable[[Handler], Awaitable[str]]) -> None:
    """A responder that sends some bytes and then goes quiet (no close) is ``timeout`` after the stall timeout."""

    async def stalls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n" + b"c" * 100_000)
        await writer.drain()
        await reader.read()

    url = await raw_server(stalls)
    started = time.monotonic()
    result = await measure(url, TOKEN, Direction.DOWNLOAD, max_bytes=10**8, max_seconds=10, stall_timeout=0.7)
    assert (result.ok, result.reason) == (False, "timeout")
    assert "stalled" in result.detail
    assert result.bytes_used == 400_000
    assert time.monotonic() - started < 1.5


async def test_progress_reports_growing_time_and_bytes(responder: Responder) -> None:
    """The progress callback sees non-decreasing elapsed time and bytes, ending at the bytes used."""
    seen: list[tuple[float, int]] = []
    result = await measure(
        responder.url,
        TOKEN,
        Direction.DOWNLOAD,
        max_bytes=20_000_000,
        max_seconds=5,
        progress=lambda t, b: seen.append((t, b)),
    )
    assert seen
    assert [t for t, _ in seen] == sorted(t for t, _ in seen)
    assert [b for _, b in seen] == sorted(b for _, b in seen)
    assert seen[-1][1] <= result.bytes_used


async def test_nonsense_arguments_are_programmer_errors() -> None:
    """Zero streams, a budget smaller than the streams or no time are ValueErrors, not results."""
    with pytest.raises(ValueError, match="streams"):
        await measure("http://127.0.0.1:1", TOKEN, Direction.DOWNLOAD, streams=0, max_bytes=10, max_seconds=1)
    with pytest.raises(ValueError, match="max_seconds"):
        await measure("http://127.0.0.1:1", TOKEN, Direction.DOWNLOAD, max_bytes=10, max_seconds=0)


def _tcp_info(length: int, *, mss: int, sacked: int, acked: int, sent: int) -> bytes:
    raw = bytearray(length)
    struct.pack_into("=I", raw, 16, mss)
    struct.pack_into("=I", raw, 28, sacked)
    if length >= 128:
        struct.pack_into("=Q", raw, 120, acked)
    if length >= 208:
        struct.pack_into("=Q", raw, 200, sent)
    return bytes(raw)


def test_parse_tcp_info_counts_sacked_segments_as_received() -> None:
    """Upload progress is bytes_acked plus SACKed segments × MSS; bytes_sent when the kernel has it, else None."""
    raw = _tcp_info(232, mss=1448, sacked=30, acked=5_000_000, sent=5_200_000)
    assert parse_tcp_info(raw) == TcpCounters(received=5_000_000 + 30 * 1448, sent=5_200_000)
    older = _tcp_info(160, mss=1448, sacked=0, acked=7_000, sent=0)
    assert parse_tcp_info(older) == TcpCounters(received=7_000, sent=None)
    assert parse_tcp_info(bytes(104)) is None


def test_parse_tcp_info_of_a_real_socket() -> None:
    """The offsets fit this kernel: a loopback socket that sent and got acked some bytes reads back sane counters."""
    if not hasattr(socket, "TCP_INFO"):
        pytest.skip("no TCP_INFO on this platform")
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        peer, _ = server.accept()
        with client, peer:
            client.sendall(b"x" * 100_000)
            got = 0
            while got < 100_000:
                got += len(peer.recv(65536))
            deadline = time.monotonic() + 2
            counters = parse_tcp_info(client.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232))
            while counters is not None and counters.received < 100_000 and time.monotonic() < deadline:
                time.sleep(0.01)
                counters = parse_tcp_info(client.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232))
    assert counters is not None
    assert counters.received in (100_000, 100_001)  # Linux counts the SYN in tcpi_bytes_acked
    assert counters.sent == 100_000


def test_parse_arrived_counts_data_segments_beyond_the_in_order_bytes() -> None:
    """Download arrivals are data segments in × receive MSS, at least tcpi_bytes_received; None before Linux 4.6."""
    raw = bytearray(232)
    struct.pack_into("=I", raw, 20, 1448)  # tcpi_rcv_mss
    struct.pack_into("=Q", raw, 128, 1_000_000)  # tcpi_bytes_received
    struct.pack_into("=I", raw, 152, 800)  # tcpi_data_segs_in
    assert parse_arrived(bytes(raw)) == 800 * 1448
    struct.pack_into("=I", raw, 152, 0)
    assert parse_arrived(bytes(raw)) == 1_000_000
    assert parse_arrived(bytes(152)) is None


def test_download_bytes_count_when_they_arrive_not_when_read() -> None:
    """A download stream's delivered bytes are what the kernel received, read or not, capped at the stream's share.

    Under CPU load the reads run late; the rate must follow the link, not the reader.
    """
    if not hasattr(socket, "TCP_INFO"):
        pytest.skip("no TCP_INFO on this platform")
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        peer, _ = server.accept()
        with client, peer:
            ledger = _SocketLedger(sockets=[client])
            unread = _Stream(Direction.DOWNLOAD, share=10_000_000, ledger=ledger)
            peer.sendall(b"x" * 100_000)
            deadline = time.monotonic() + 2
            while unread.delivered() < 100_000 and time.monotonic() < deadline:
                time.sleep(0.01)
            raw = client.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232)
            (in_order,) = struct.unpack_from("=Q", raw, 128)
            assert in_order == 100_000  # the offset fits this kernel: every byte in order, none read
            assert unread.moved == 0
            assert 100_000 <= unread.delivered() < 200_000
            assert unread.used() == 0  # the budget counts bytes read
            small = _Stream(Direction.DOWNLOAD, share=60_000, ledger=ledger)
            assert small.delivered() == 60_000
            assert _Stream(Direction.DOWNLOAD, share=60_000, ledger=None, moved=5).delivered() == 5


async def test_upload_left_in_the_socket_buffers_is_reset_not_sent(
    raw_server: Callable[[Handler], Awaitable[str]],
) -> None:
    """When the test stops, unsent upload bytes are dropped (RST), not trickled out after the result.

    The peer takes the request, says 100 Continue and then reads nothing, so the client's
    socket buffers fill and the test stops on the stall timeout. Before the fix the connection
    stayed open until the buffers drained (over a 10 Mbit link, ~1.2 MB for a second after
    every upload); now the peer sees a reset as soon as `measure` has returned.
    """
    outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    may_read = asyncio.Event()

    async def never_reads(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request_head(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
        await may_read.wait()
        try:
            while await reader.read(1 << 20):
                pass
            outcome.set_result("eof")
        except ConnectionResetError:
            outcome.set_result("reset")

    url = await raw_server(never_reads)
    result = await measure(url, TOKEN, Direction.UPLOAD, streams=1, max_bytes=10**9, max_seconds=10, stall_timeout=0.5)
    assert (result.ok, result.reason) == (False, "timeout")
    may_read.set()
    assert await asyncio.wait_for(outcome, timeout=5) == "reset"
