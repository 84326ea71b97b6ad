"""RTSP OPTIONS probe: the pure reply parser, and the prober against scripted servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import pytest

from telemetryd.config.settings import Settings
from telemetryd.model import Device, DeviceKind, ProbeSpec
from telemetryd.probes import ProbeContext, rtsp

CAMERA_OK = (
    b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nServer: Hikvision/1.0\r\n"
    b"Public: OPTIONS, DESCRIBE, PLAY, PAUSE, SETUP, TEARDOWN, SET_PARAMETER, GET_PARAMETER\r\n"
    b"Date:  Tue, Jul 30 2024 10:10:18 GMT\r\n\r\n"
)
CAMERA_401 = b'RTSP/1.0 401 Unauthorized\r\nCSeq: 1\r\nWWW-Authenticate: Digest realm="IP Camera"\r\n\r\n'

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RtspServer:
    """A scripted TCP server on 127.0.0.1:0 that records what each client sent first."""

    def __init__(self, script: Script | None = None, *, reply: bytes = b"") -> None:
        self.script = script or self._reply
        self.payload = reply
        self.requests: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> RtspServer:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await self.script(reader, writer)
            finally:
                writer.close()

        self._server = await asyncio.start_server(serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _reply(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read the request up to its blank line, record it, send the canned reply."""
        self.requests.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(self.payload)
        await writer.drain()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---- pure parsing ----------------------------------------------------------------------------


def test_request_is_the_exact_options_line() -> None:
    """The request is OPTIONS on rtsp://host:port/path with CSeq 1 and our user agent, nothing else."""
    assert rtsp.request("10.1.2.3", 554) == (
        b"OPTIONS rtsp://10.1.2.3:554/ RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: telemetryd\r\n\r\n"
    )
    assert rtsp.request("fd00::5", 8554, "Streaming/Channels/101").startswith(
        b"OPTIONS rtsp://[fd00::5]:8554/Streaming/Channels/101 RTSP/1.0\r\n"
    )


def test_parse_200_with_public_methods() -> None:
    """A camera's 200 yields status, CSeq and the Public methods in order."""
    reply = rtsp.parse_reply(CAMERA_OK)
    assert (reply.version, reply.status, reply.phrase, reply.cseq) == ("1.0", 200, "OK", 1)
    assert reply.public[:3] == ("OPTIONS", "DESCRIBE", "PLAY")
    assert len(reply.public) == 8


def test_parse_headers_case_insensitive_repeated_and_bare_lf() -> None:
    """Header names are case-folded, repeats joined, and bare-LF line ends tolerated."""
    reply = rtsp.parse_reply(b"RTSP/1.0 200 OK\nCSEQ: 1\npublic: OPTIONS, describe\nPublic: PLAY\n\nbody")
    assert reply.public == ("OPTIONS", "DESCRIBE", "PLAY")
    assert reply.cseq == 1


def test_parse_rtsp_2_and_missing_phrase() -> None:
    """An RTSP/2.0 status line without a reason phrase still parses."""
    reply = rtsp.parse_reply(b"RTSP/2.0 505\r\n\r\n")
    assert (reply.version, reply.status, reply.phrase, reply.public, reply.cseq) == ("2.0", 505, "", (), None)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", "does not start with RTSP/"),
        (b"SSH-2.0-OpenSSH_9.2\r\n", "does not start with RTSP/"),
        (b"", "does not start with RTSP/"),
        (b"RTSP/1.0 OK\r\n\r\n", "malformed status line"),
        (b"RTSP/1.0 200 OK\r\nno colon here\r\n\r\n", "malformed header line"),
    ],
)
def test_parse_rejects_what_is_not_rtsp(raw: bytes, fragment: str) -> None:
    """HTTP replies, banners, empty replies and broken status or header lines raise NotRtspError."""
    with pytest.raises(rtsp.NotRtspError, match=fragment):
        rtsp.parse_reply(raw)


def test_judge_200_is_ok_and_lists_methods() -> None:
    """200 is up; the detail lists the methods the server offers."""
    result = rtsp.judge(rtsp.parse_reply(CAMERA_OK), 0.01, 0.002)
    assert (result.ok, result.reason, result.rtt) == (True, "", 0.002)
    assert "DESCRIBE,PLAY" in result.detail


def test_judge_401_is_ok_but_says_auth() -> None:
    """401 means the stream server runs: up, with the detail saying it asked for authentication."""
    result = rtsp.judge(rtsp.parse_reply(CAMERA_401), 0.01, None)
    assert result.ok
    assert "401" in result.detail and "auth" in result.detail


@pytest.mark.parametrize("status", [404, 454, 503])
def test_judge_other_statuses_fail_as_status(status: int) -> None:
    """Any other status is down with reason ``status`` and the code in the detail."""
    result = rtsp.judge(rtsp.parse_reply(f"RTSP/1.0 {status} Nope\r\n\r\n".encode()), 0.01, None)
    assert (result.ok, result.reason) == (False, "status")
    assert f"{status} Nope" in result.detail


# ---- against servers on 127.0.0.1 ------------------------------------------------------------


async def test_options_ok_against_a_camera() -> None:
    """A camera answering 200 is ok, with connect time as rtt, and received exactly our OPTIONS."""
    async with RtspServer(reply=CAMERA_OK) as srv:
        result = await rtsp.options("127.0.0.1", srv.port, timeout=2.0)
    assert result.ok, result
    assert result.rtt is not None and 0 <= result.rtt <= result.duration < 1.0
    assert srv.requests == [rtsp.request("127.0.0.1", srv.port)]


async def test_options_401_is_ok() -> None:
    """A camera demanding auth even for OPTIONS counts as answering."""
    async with RtspServer(reply=CAMERA_401) as srv:
        result = await rtsp.options("127.0.0.1", srv.port, timeout=2.0)
    assert result.ok and "auth" in result.detail


async def test_options_http_server_is_not_rtsp() -> None:
    """A web server on the RTSP port answers HTTP: not_rtsp, quoting its first line."""
    async with RtspServer(reply=b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n") as srv:
        result = await rtsp.options("127.0.0.1", srv.port, timeout=2.0)
    assert (result.ok, result.reason) == (False, "not_rtsp")
    assert "HTTP/1.1 400" in result.detail


async def test_garbage_is_not_rtsp_without_waiting_for_the_timeout() -> None:
    """Bytes that cannot begin an RTSP reply end the probe at once, even if the server keeps the line open."""

    async def babble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"\x16\x03\x01garbage")
        await writer.drain()
        await asyncio.sleep(5)

    async with RtspServer(babble) as srv:
        result = await rtsp.options("127.0.0.1", srv.port, timeout=3.0)
    assert (result.ok, result.reason) == (False, "not_rtsp")
    assert result.duration < 1.0


async def test_endless_headers_are_too_large() -> None:
    """A reply whose headers never end stops at the size cap as too_large."""

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"RTSP/1.0 200 OK\r\n" + b"X-Padding: " + b"a" * (rtsp.MAX_HEADER_BYTES + 100))
        await writer.drain()
        await asyncio.sleep(5)

    async with RtspServer(flood) as srv:
        result = await rtsp.options("127.0.0.1", srv.port, timeout=3.0)
    assert (result.ok, result.reason) == (False, "too_large")
    assert str(rtsp.MAX_HEADER_BYTES) in result.detail


async def test_close_without_reply_is_closed() -> None:
    """A server that accepts and hangs up without a word is ``closed``."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")

    async with RtspServer(hang_up) as srv:
        result = await rtsp.options("127.0.0.1", srv.port, timeout=2.0)
    assert (result.ok, result.reason) == (False, "closed")
    assert "without replying" in result.detail


async def test_close_mid_reply_is_closed_with_byte_count() -> None:
    """A server that sends half a reply and hangs up is ``closed``, saying how much came."""

    async def half(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n")
        await writer.drain()

    async with RtspServer(half) as srv:
        result = await rtsp.options("127.0.0.1", srv.port, timeout=2.0)
    assert (result.ok, result.reason) == (False, "closed")
    assert "after 26 bytes" in result.detail


async def test_silent_server_is_timeout_at_the_deadline() -> None:
    """A hung streaming process that accepts but never answers is a timeout in the reply phase."""

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    async with RtspServer(mute) as srv:
        result = await rtsp.options("127.0.0.1", srv.port, timeout=0.3)
    assert (result.ok, result.reason) == (False, "timeout")
    assert "no reply" in result.detail
    assert 0.25 <= result.duration < 1.0


async def test_closed_port_is_refused() -> None:
    """Nothing listening on the port is ``refused``, quickly."""
    result = await rtsp.options("127.0.0.1", _free_port(), timeout=2.0)
    assert (result.ok, result.reason) == (False, "refused")
    assert result.duration < 0.5


async def test_probe_uses_spec_port_and_falls_back_to_tcp_timeout() -> None:
    """The registry entry probes the spec's port, with the TCP timeout while settings has no rtsp section."""
    async with RtspServer(reply=CAMERA_OK) as srv:
        device = Device("cam-1", "s1", DeviceKind.CAMERA, "127.0.0.1", (ProbeSpec("rtsp", srv.port),))
        result = await rtsp.probe(device, ProbeSpec("rtsp", srv.port), ProbeContext(Settings()))
    assert result.ok
    assert srv.requests[0].startswith(f"OPTIONS rtsp://127.0.0.1:{srv.port}/ ".encode())


def test_options_under_uvloop() -> None:
    """Under uvloop, the daemon's loop, OPTIONS still works: its transports are not asyncio's classes."""
    import uvloop

    async def run() -> tuple[bool, str]:
        async with RtspServer(reply=CAMERA_OK) as server:
            result = await rtsp.options("127.0.0.1", server.port, timeout=2.0)
        return result.ok, result.reason

    assert uvloop.run(run()) == (True, "")
