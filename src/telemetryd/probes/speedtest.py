"""Active link speed test against a school's responder (`telemetryd.school_responder`).

`measure` moves bytes over several parallel TCP connections for one direction, samples
the bytes moved every `policy.interval` seconds, and stops as soon as the rate has
settled (see `telemetryd.probes.speedcalc`), when the byte budget is spent, or at the time
budget — whichever comes first. The reported rate is the steady-state goodput, the
slow-start ramp left out; `bytes_used` is everything the test cost the link.

How bytes are counted:

* download: for the rate, bytes that have arrived at this end, in order or not — data
  segments in × their size (`tcpi_data_segs_in` × `tcpi_rcv_mss`), at least the in-order
  `tcpi_bytes_received` (see `speedcalc.receiver_arrived`). What the application has read
  stalls behind every loss hole and jumps when the retransmission releases the
  out-of-order queue (and under CPU load it lags by however late the reads run): a 1.5 s
  window of read bytes on a 20 Mbit link read 16–22.5 Mbit/s. For `bytes_used`, bytes read;
* upload: for the rate, bytes the peer has received — acknowledged (`tcpi_bytes_acked`
  from Linux TCP_INFO) plus selectively acknowledged beyond a loss hole (`tcpi_sacked` ×
  `tcpi_snd_mss`, see `speedcalc.peer_received`). What the application wrote is only what
  entered the socket buffer, which runs ahead of the link by up to several hundred KiB;
  the cumulative ACK alone lags the link during every loss recovery and then jumps. For
  `bytes_used`, bytes written (an upper bound of what crossed the link). Without TCP_INFO
  (not Linux, or a caller's own session) read or written bytes are used for both.

Failures are results, never exceptions: ``refused``, ``timeout`` (no answer, or no bytes
for `stall_timeout`), ``unauthorized`` (401, never retried), ``http`` (another non-2xx
status such as 413), ``error`` (garbage, short bodies, the responder gone mid-test).
Details never carry the token.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from telemetryd.model import Direction, SpeedResult
from telemetryd.probes.speedcalc import (
    Sample,
    SpeedPolicy,
    assess,
    peer_received,
    receiver_arrived,
    until_last_arrival,
)

DEFAULT_STREAMS = 4
"""Four connections: one TCP flow rarely fills a link alone, and four keep the sum smooth at 0.1 s."""
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_STALL_TIMEOUT = 3.0
"""No byte moved for this long (the first byte included) is a timeout."""
UPLOAD_CHUNK = 64 * 1024
"""Upload write size: small enough that the written-bytes count (the fallback) stays smooth."""

Progress = Callable[[float, int], None]
"""Called after every sample with (seconds since start, bytes used so far)."""

_TCP_INFO_COUNTERS = struct.Struct("=Q")
_TCP_INFO_U32 = struct.Struct("=I")
_SND_MSS_OFFSET = 16  # struct tcp_info: tcpi_snd_mss
_RCV_MSS_OFFSET = 20  # tcpi_rcv_mss: the peer's segment size as this end sees it
_SACKED_OFFSET = 28  # tcpi_sacked: segments the peer holds beyond the cumulative ACK
_BYTES_ACKED_OFFSET = 120  # tcpi_bytes_acked, Linux >= 4.1
_BYTES_RECEIVED_OFFSET = 128  # tcpi_bytes_received (in order), Linux >= 4.1
_DATA_SEGS_IN_OFFSET = 152  # tcpi_data_segs_in (out-of-order segments included), Linux >= 4.6
_BYTES_SENT_OFFSET = 200  # tcpi_bytes_sent (retransmissions included), Linux >= 4.19
_TCP_INFO_LENGTH = 208
_UPLOAD_PAYLOAD = os.urandom(UPLOAD_CHUNK)
_LINGER_RESET = struct.pack("ii", 1, 0)


class _StreamFailed(Exception):
    """One stream's failure, already put in the result's words."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class TcpCounters:
    """The TCP_INFO counters the speed test reads from one socket."""

    received: int
    """Bytes the peer holds: bytes_acked plus the SACKed segments (`speedcalc.peer_received`)."""
    sent: int | None
    """tcpi_bytes_sent (retransmissions included); None before Linux 4.19."""


def parse_tcp_info(raw: bytes) -> TcpCounters | None:
    """The counters in a raw `struct tcp_info`; None when it is too short to hold tcpi_bytes_acked (Linux < 4.1)."""
    if len(raw) < _BYTES_ACKED_OFFSET + 8:
        return None
    (acked,) = _TCP_INFO_COUNTERS.unpack_from(raw, _BYTES_ACKED_OFFSET)
    (sacked,) = _TCP_INFO_U32.unpack_from(raw, _SACKED_OFFSET)
    (mss,) = _TCP_INFO_U32.unpack_from(raw, _SND_MSS_OFFSET)
    sent: int | None = None
    if len(raw) >= _BYTES_SENT_OFFSET + 8:
        (sent,) = _TCP_INFO_COUNTERS.unpack_from(raw, _BYTES_SENT_OFFSET)
    return TcpCounters(received=peer_received(acked, sacked, mss), sent=sent)


def parse_arrived(raw: bytes) -> int | None:
    """Download bytes that reached this socket, in order or not (`speedcalc.receiver_arrived`), from raw tcp_info.

    None when it is too short to hold tcpi_data_segs_in (Linux < 4.6).
    """
    if len(raw) < _DATA_SEGS_IN_OFFSET + 4:
        return None
    (in_order,) = _TCP_INFO_COUNTERS.unpack_from(raw, _BYTES_RECEIVED_OFFSET)
    (segments_in,) = _TCP_INFO_U32.unpack_from(raw, _DATA_SEGS_IN_OFFSET)
    (rcv_mss,) = _TCP_INFO_U32.unpack_from(raw, _RCV_MSS_OFFSET)
    return receiver_arrived(in_order, segments_in, rcv_mss)


@dataclass(slots=True)
class _SocketLedger:
    """A TCPConnector `socket_factory` that remembers its sockets, to read TCP_INFO from them."""

    sockets: list[socket.socket] = field(default_factory=list)
    received: dict[int, int] = field(default_factory=dict)
    sent: dict[int, int] = field(default_factory=dict)
    arrived: dict[int, int] = field(default_factory=dict)
    usable: bool = hasattr(socket, "TCP_INFO")

    def __call__(self, addr_info: tuple[Any, ...]) -> socket.socket:
        family, kind, proto, _name, _address = addr_info
        sock = socket.socket(family=family, type=kind, proto=proto)
        sock.setblocking(False)
        self.sockets.append(sock)
        return sock

    def abort(self) -> None:
        """Take a last reading, then reset the connections: what the socket buffers still hold is dropped.

        SO_LINGER 0 makes the close a reset. The shutdown is what gets the socket closed at all:
        asyncio closes a transport only once its own write buffer is flushed, which with a full
        kernel buffer takes as long as the link needs to drain it; a shut-down socket polls
        writable and fails the write at once, so the transport closes (and resets) right away.
        """
        self.read()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                sock.shutdown(socket.SHUT_RDWR)

    def read(self) -> bool:
        """Refresh the counters of open sockets (closed ones keep their last value); False without TCP_INFO."""
        if not self.usable:
            return False
        for index, sock in enumerate(self.sockets):
            try:
                raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LENGTH)
            except OSError:
                continue
            counters = parse_tcp_info(raw)
            if counters is None:
                self.usable = False  # a kernel older than 4.1
                return False
            self.received[index] = counters.received
            if counters.sent is not None:
                self.sent[index] = counters.sent
            arrived = parse_arrived(raw)
            if arrived is not None:
                self.arrived[index] = arrived
        return True


@dataclass(slots=True)
class _Stream:
    """One connection's share of the test and what it has moved."""

    direction: Direction
    share: int
    ledger: _SocketLedger | None
    moved: int = 0
    """Payload bytes read (download) or written (upload) by the application."""
    completed: bool = False
    """The whole share went through (for uploads: the responder confirmed it)."""

    def delivered(self) -> int:
        """Bytes that reached the other end: download bytes arrived here, upload bytes the peer ACKed or SACKed."""
        if self.direction is Direction.DOWNLOAD:
            if not self.completed and self.ledger is not None and self.ledger.read() and self.ledger.arrived:
                # Never below what was read (a closed socket keeps a stale reading), never above the share
                # (the count includes the response headers and may run ahead by a short segment).
                return min(self.share, max(self.moved, sum(self.ledger.arrived.values())))
            return self.moved
        if self.completed:
            return self.share  # exact, where a closed socket's last TCP_INFO reading may be stale
        if self.ledger is not None and self.ledger.read():
            return min(self.moved, sum(self.ledger.received.values()))
        return self.moved

    def used(self) -> int:
        """Payload bytes the stream put on the link: for uploads what left the machine, not what was buffered."""
        if self.direction is Direction.DOWNLOAD or self.completed:
            return self.moved
        if self.ledger is not None and self.ledger.sent:
            return min(self.moved, sum(self.ledger.sent.values()))
        return self.moved


async def measure(
    url: str,
    token: str,
    direction: Direction,
    *,
    streams: int = DEFAULT_STREAMS,
    max_bytes: int,
    max_seconds: float,
    session: aiohttp.ClientSession | None = None,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.monotonic,
    policy: SpeedPolicy | None = None,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    stall_timeout: float = DEFAULT_STALL_TIMEOUT,
) -> SpeedResult:
    """Measure one direction against the responder at `url` (``http://host:port``, no path).

    `max_bytes` is the budget for this direction over all streams; `max_seconds` bounds
    the test's wall time (plus up to one sample interval and the time to close the
    streams). Pass `session` only to reuse its settings; a session of our own uses one
    connection per stream and reads TCP_INFO for exact upload figures.
    """
    if streams < 1 or max_bytes < streams or max_seconds <= 0:
        raise ValueError("need streams >= 1, max_bytes >= streams and max_seconds > 0")
    policy = policy or SpeedPolicy()
    base = url.rstrip("/")
    headers = {"Authorization": f"Bearer {token}"}
    shares = [max_bytes // streams + (1 if i < max_bytes % streams else 0) for i in range(streams)]
    # One session per stream of our own: one TCP connection each, and its sockets known for TCP_INFO.
    ledgers = [_SocketLedger() if session is None else None for _ in shares]
    parts = [_Stream(direction, share, ledger) for share, ledger in zip(shares, ledgers, strict=True)]
    sessions = [session or _stream_session(ledger, connect_timeout) for ledger in ledgers]
    started = clock()
    tasks = [
        asyncio.create_task(_run_stream(stream_session, base, headers, part), name=f"speedtest-{i}")
        for i, (stream_session, part) in enumerate(zip(sessions, parts, strict=True))
    ]
    samples = [Sample(started, 0)]
    failure: _StreamFailed | None = None
    last_progress_at, last_delivered = started, 0
    try:
        while True:
            await asyncio.wait(tasks, timeout=policy.interval, return_when=asyncio.FIRST_COMPLETED)
            now = clock()
            delivered = sum(part.delivered() for part in parts)
            samples.append(Sample(now, delivered))
            if progress is not None:
                progress(now - started, sum(part.used() for part in parts))
            failure = _first_failure(tasks)
            # The first stream through its share ends the test: the budget is spent, and a tail
            # with fewer streams would not fill the link the way the steady part did.
            if failure is not None or any(part.completed for part in parts):
                break
            if delivered > last_delivered:
                last_progress_at, last_delivered = now, delivered
            if assess(samples, policy).stable:
                break
            if now - last_progress_at >= stall_timeout:
                failure = _stalled(delivered, now - last_progress_at)
                break
            if now - started >= max_seconds:
                break
    finally:
        # Whatever still sits in the socket buffers would keep flowing after the test, unmeasured and
        # uncounted (measured: ~1.2 MB, 1 s of a 10 Mbit link, after every upload); reset instead.
        for ledger in ledgers:
            if ledger is not None:
                ledger.abort()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if session is None:
            await asyncio.gather(*(own.close() for own in sessions))
    used = sum(part.used() for part in parts)
    duration = clock() - started
    if failure is None and samples[-1].total_bytes == 0:
        failure = _stalled(0, duration)
    if failure is not None:
        return SpeedResult(
            ok=False,
            direction=direction,
            mbps=0.0,
            bytes_used=used,
            duration=duration,
            streams=streams,
            reason=failure.reason,
            detail=failure.detail,
        )
    if any(part.completed for part in parts):
        samples = until_last_arrival(samples)
    verdict = assess(samples, policy)
    return SpeedResult(
        ok=True,
        direction=direction,
        mbps=verdict.mbps,
        bytes_used=used,
        duration=duration,
        streams=streams,
        stable=verdict.stable,
    )


async def run_test(
    url: str,
    token: str,
    *,
    streams: int = DEFAULT_STREAMS,
    max_bytes: int,
    max_seconds: float,
    progress: Progress | None = None,
    policy: SpeedPolicy | None = None,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    stall_timeout: float = DEFAULT_STALL_TIMEOUT,
) -> tuple[SpeedResult, SpeedResult]:
    """Download then upload against one responder; `max_bytes` and `max_seconds` apply to each direction.

    An unauthorized download is not followed by an upload with the same wrong token.
    """
    options: dict[str, Any] = {
        "streams": streams,
        "max_bytes": max_bytes,
        "max_seconds": max_seconds,
        "progress": progress,
        "policy": policy,
        "connect_timeout": connect_timeout,
        "stall_timeout": stall_timeout,
    }
    download = await measure(url, token, Direction.DOWNLOAD, **options)
    if download.reason == "unauthorized":
        skipped = SpeedResult(
            ok=False,
            direction=Direction.UPLOAD,
            mbps=0.0,
            bytes_used=0,
            duration=0.0,
            streams=streams,
            reason="unauthorized",
            detail="not attempted: the responder refused the token for the download",
        )
        return download, skipped
    upload = await measure(url, token, Direction.UPLOAD, **options)
    return download, upload


def _stream_session(ledger: _SocketLedger | None, connect_timeout: float) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(force_close=True, limit=1, socket_factory=ledger)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout),
        auto_decompress=False,
    )


def _first_failure(tasks: list[asyncio.Task[None]]) -> _StreamFailed | None:
    for task in tasks:
        if task.done() and not task.cancelled():
            error = task.exception()
            if isinstance(error, _StreamFailed):
                return error
            if error is not None:
                return _StreamFailed("error", f"speed test stream failed: {type(error).__name__}")
    return None


def _stalled(moved: int, seconds: float) -> _StreamFailed:
    if moved == 0:
        return _StreamFailed("timeout", f"no bytes moved in {seconds:.1f}s")
    return _StreamFailed("timeout", f"stalled: no bytes moved for {seconds:.1f}s after {moved} bytes")


async def _run_stream(
    session: aiohttp.ClientSession,
    base: str,
    headers: dict[str, str],
    part: _Stream,
) -> None:
    """One connection's part of the test; raises _StreamFailed in the result's words."""
    direction = part.direction
    try:
        if direction is Direction.DOWNLOAD:
            await _download(session, base, headers, part)
        else:
            await _upload(session, base, headers, part)
        part.completed = True
    except _StreamFailed:
        raise
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, ConnectionRefusedError):
            raise _StreamFailed("refused", f"{exc.host}:{exc.port} refused the connection") from None
        raise _StreamFailed("error", f"cannot connect to {exc.host}:{exc.port}: {exc.strerror}") from None
    except (aiohttp.ServerTimeoutError, TimeoutError):
        raise _StreamFailed("timeout", "no answer from the responder in time") from None
    except aiohttp.ClientPayloadError:
        raise _StreamFailed("error", f"{direction} body cut short: the responder closed the connection") from None
    except aiohttp.ServerDisconnectedError:
        raise _StreamFailed("error", "the responder closed the connection") from None
    except aiohttp.ClientResponseError as exc:
        # Not HTTP at all (bad status line, broken headers): say what, not the bytes.
        raise _StreamFailed("error", f"the responder did not speak HTTP: {exc.message[:80]}") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise _StreamFailed("error", f"{direction} failed: {type(exc).__name__}") from None


def _check_status(response: aiohttp.ClientResponse) -> None:
    if response.status == 401:
        raise _StreamFailed("unauthorized", "the responder refused the token (401)")
    if response.status >= 300:
        raise _StreamFailed("http", f"the responder answered {response.status} {response.reason or ''}".strip())


async def _download(session: aiohttp.ClientSession, base: str, headers: dict[str, str], part: _Stream) -> None:
    share = part.share
    async with session.get(f"{base}/download", params={"bytes": str(share)}, headers=headers) as response:
        _check_status(response)
        received = 0
        async for chunk in response.content.iter_any():
            received += len(chunk)
            if received > share:
                # A responder without Content-Length could send forever: the budget wins.
                part.moved += len(chunk) - (received - share)
                raise _StreamFailed("error", f"the responder sent more than the {share} bytes asked for")
            part.moved += len(chunk)
        if received != share:
            raise _StreamFailed("error", f"download body cut short: {received} of {share} bytes")


async def _upload(session: aiohttp.ClientSession, base: str, headers: dict[str, str], part: _Stream) -> None:
    share = part.share
    payload = memoryview(_UPLOAD_PAYLOAD)

    async def body() -> AsyncIterator[memoryview]:
        remaining = share
        while remaining > 0:
            piece = min(remaining, len(payload))
            part.moved += piece  # counted before the write: a stop mid-write still paid for it
            remaining -= piece
            yield payload[:piece]

    # Expect: 100-continue lets the responder refuse a bad token before any body byte moves.
    async with session.post(
        f"{base}/upload",
        data=body(),
        headers={**headers, "Content-Length": str(share), "Content-Type": "application/octet-stream"},
        expect100=True,
    ) as response:
        _check_status(response)
        try:
            answer = await response.json(content_type=None)
        except ValueError:
            raise _StreamFailed("error", "the responder's upload answer was not JSON") from None
        counted = answer.get("bytes") if isinstance(answer, dict) else None
        if not isinstance(counted, int) or isinstance(counted, bool):
            raise _StreamFailed("error", "the responder's upload answer had no byte count")
        if counted != share:
            raise _StreamFailed("error", f"the responder counted {counted} of {share} uploaded bytes")


__all__ = ["DEFAULT_STREAMS", "Progress", "measure", "run_test"]
