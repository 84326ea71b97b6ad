"""The school-side speed-test responder: a small aiohttp server the NOC measures against.

Endpoints (all but ``/healthz`` need ``Authorization: Bearer <token>``):

``GET /download?bytes=N``
    Streams exactly N bytes cut from one preallocated random buffer (nothing per
    request is allocated; random so no compressing middlebox flatters the link).
``POST /upload``
    Reads the body in chunks, counts it, never keeps it, and answers
    ``{"bytes": n, "seconds": s}``.
``GET /healthz``
    ``ok``; open, so a load balancer or `curl` can check the process without the secret.

A missing or wrong token gets 401 with a fixed body (nothing from the request echoed);
refusals are logged as a summary (``speedtest_unauthorized``: the first at once, then at most
one line a minute with counts per peer), so a scanner cannot flood the journal.

Connections go through `telemetryd.httpguard.ConnectionGuard`: at most `max_connections`
(fewer if ``RLIMIT_NOFILE`` minus a small reserve is lower; the unit's ``LimitNOFILE`` is sized
above the cap), a request head must arrive within `head_timeout`, a kept-alive connection is
closed after `idle_timeout`, and at the cap a new connection evicts the one idle longest, so
idle sockets cannot lock the NOC's speed test out.
`max_bytes_per_request` caps a request: a larger download is refused with 413; an
upload is cut off at the cap with 413.

Wiring (the CLI subcommand ``telemetryd responder`` and config call these)::

    make_app(token: str, *, max_bytes_per_request: int) -> aiohttp.web.Application
    async serve_responder(host: str, port: int, token: str, *, max_bytes_per_request: int,
                          limits: Limits = DEFAULT_LIMITS,
                          ready: Callable[[str, int], None] | None = None,
                          stop: asyncio.Event | None = None) -> None
    read_token_file(path: str | Path) -> str
    main(argv: Sequence[str] | None = None) -> int   # python -m telemetryd.school_responder

`serve_responder` runs until `stop` is set or the task is cancelled; `ready` is called
with the bound address once the socket listens (port 0 picks a free port).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import structlog
from aiohttp import web

from telemetryd import logs
from telemetryd.httpguard import ConnectionGuard, Limits, Tally

CHUNK_BYTES = 256 * 1024
"""Size of the preallocated buffer and of each write: big writes keep Python out of the hot path."""
DEFAULT_MAX_BYTES_PER_REQUEST = 256 * 1024 * 1024
DEFAULT_PORT = 8088
DEFAULT_LIMITS = Limits(max_connections=256, fd_reserve=64, head_timeout=10.0, idle_timeout=30.0)
"""A speed test needs a handful of connections; 256 + 64 stays under the unit's LimitNOFILE=1024."""

TOKEN_KEY = web.AppKey("token", bytes)
CAP_KEY = web.AppKey("max_bytes_per_request", int)
PAYLOAD_KEY = web.AppKey("payload", bytes)
REFUSED_KEY = web.AppKey("unauthorized", Tally)

_UNAUTHORIZED = "unauthorized\n"
_PATHS = frozenset({"/download", "/upload"})
log = structlog.get_logger("telemetryd.school_responder")


def make_app(
    token: str, *, max_bytes_per_request: int = DEFAULT_MAX_BYTES_PER_REQUEST, guard: ConnectionGuard | None = None
) -> web.Application:
    """The responder's application; `token` is the shared secret, compared in constant time."""
    if not token:
        raise ValueError("the responder needs a non-empty token")
    if max_bytes_per_request <= 0:
        raise ValueError("max_bytes_per_request must be positive")
    middlewares = [_require_token] if guard is None else [guard.middleware, _require_token]
    app = web.Application(middlewares=middlewares)
    app[REFUSED_KEY] = Tally("speedtest_unauthorized", log=log)
    if guard is not None:
        guard.tallies.append(app[REFUSED_KEY])  # flushed by the guard's sweep, and at close
    app[TOKEN_KEY] = token.encode()
    app[CAP_KEY] = max_bytes_per_request
    app[PAYLOAD_KEY] = os.urandom(CHUNK_BYTES)
    app.router.add_get("/download", _download)
    app.router.add_post("/upload", _upload, expect_handler=_upload_expect)
    app.router.add_get("/healthz", _healthz)
    return app


@web.middleware
async def _require_token(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if request.path == "/healthz":
        return await handler(request)
    return _unauthorized(request) or await handler(request)


def _unauthorized(request: web.Request) -> web.Response | None:
    """A 401 when the bearer token is missing or wrong, else None."""
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    expected = request.app[TOKEN_KEY]
    # compare_digest on bytes: timing does not reveal how much of the token matched.
    if scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), expected):
        return None
    request.app[REFUSED_KEY].note(request.remote, request.path if request.path in _PATHS else "other")
    response = web.Response(status=401, text=_UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})
    response.force_close()  # an unread upload body must not be drained for a stranger
    return response


def _too_large(cap: int) -> web.Response:
    response = web.Response(status=413, text=f"at most {cap} bytes per request\n")
    response.force_close()
    return response


async def _upload_expect(request: web.Request) -> web.StreamResponse | None:
    """`Expect: 100-continue`: refuse a bad token or an oversized body before a single body byte is sent."""
    refusal = _unauthorized(request)
    if refusal is None and (request.content_length or 0) > request.app[CAP_KEY]:
        refusal = _too_large(request.app[CAP_KEY])
    if refusal is not None:
        return refusal
    if request.headers.get("Expect", "").lower() != "100-continue":
        raise web.HTTPExpectationFailed(text="only Expect: 100-continue is understood\n")
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    return None


async def _download(request: web.Request) -> web.StreamResponse:
    try:
        size = int(request.query.get("bytes", ""))
    except ValueError:
        return web.Response(status=400, text="bytes must be a whole number\n")
    if size < 0:
        return web.Response(status=400, text="bytes must not be negative\n")
    cap = request.app[CAP_KEY]
    if size > cap:
        return _too_large(cap)
    payload = memoryview(request.app[PAYLOAD_KEY])
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream", "Cache-Control": "no-store"})
    response.content_length = size
    await response.prepare(request)
    remaining = size
    while remaining > 0:
        piece = min(remaining, len(payload))
        # write() waits for the transport to drain: the link, not memory, sets the pace.
        await response.write(payload[:piece])
        remaining -= piece
    await response.write_eof()
    return response


async def _upload(request: web.Request) -> web.StreamResponse:
    cap = request.app[CAP_KEY]
    if (request.content_length or 0) > cap:
        return _too_large(cap)
    started = time.monotonic()
    received = 0
    while True:
        chunk = await request.content.readany()
        if not chunk:
            break
        received += len(chunk)
        if received > cap:
            return _too_large(cap)
    return web.json_response({"bytes": received, "seconds": round(time.monotonic() - started, 6)})


async def _healthz(_request: web.Request) -> web.StreamResponse:
    return web.Response(text="ok\n")


async def serve_responder(
    host: str,
    port: int,
    token: str,
    *,
    max_bytes_per_request: int = DEFAULT_MAX_BYTES_PER_REQUEST,
    limits: Limits = DEFAULT_LIMITS,
    ready: Callable[[str, int], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve the responder on host:port until `stop` is set or the task is cancelled."""
    guard = ConnectionGuard(limits, name="responder", log=log)
    app = make_app(token, max_bytes_per_request=max_bytes_per_request, guard=guard)
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, logger=guard.server_log, keepalive_timeout=limits.idle_timeout
    )
    await runner.setup()
    try:
        bound_host, bound_port = await guard.serve(runner, host, port)
        try:
            log.info(
                "speedtest_responder_listening",
                host=bound_host,
                port=bound_port,
                cap=max_bytes_per_request,
                connection_cap=guard.cap,
                nofile=guard.nofile,
            )
            if ready is not None:
                ready(bound_host, bound_port)
            await (stop or asyncio.Event()).wait()
        finally:
            await guard.close()
    finally:
        await runner.cleanup()


def _bound_address(runner: web.AppRunner, host: str, port: int) -> tuple[str, int]:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return str(address[0]), int(address[1])
    return host, port


def read_token_file(path: str | Path) -> str:
    """The token from a credential file, surrounding whitespace (the trailing newline) removed."""
    token = Path(path).read_text(encoding="utf-8").strip()
    if not token:
        raise ValueError(f"{path}: the token file is empty")
    return token


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) into its parts."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--listen must be HOST:PORT, got {listen!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m telemetryd.school_responder --listen H:P --token-file F``; prints ``ready H:P`` once listening."""
    parser = argparse.ArgumentParser(prog="telemetryd responder", description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default=f"0.0.0.0:{DEFAULT_PORT}", help="HOST:PORT to listen on")
    parser.add_argument("--token-file", required=True, help="file holding the shared token (never pass it in argv)")
    parser.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES_PER_REQUEST, help="cap per request")
    parser.add_argument(
        "--max-connections", type=int, default=DEFAULT_LIMITS.max_connections, help="connections held at once"
    )
    parser.add_argument(
        "--fd-reserve", type=int, default=DEFAULT_LIMITS.fd_reserve, help="descriptors kept free under RLIMIT_NOFILE"
    )
    parser.add_argument(
        "--head-timeout", type=float, default=DEFAULT_LIMITS.head_timeout, help="seconds to receive a request head"
    )
    parser.add_argument(
        "--idle-timeout", type=float, default=DEFAULT_LIMITS.idle_timeout, help="seconds a connection may sit idle"
    )
    args = parser.parse_args(argv)
    # stdout carries only the ready line (a parent process waits for it); logs go to stderr.
    logs.configure(stream=sys.stderr)
    try:
        host, port = parse_listen(args.listen)
        token = read_token_file(args.token_file)
        if min(args.max_connections, args.head_timeout, args.idle_timeout) <= 0 or args.fd_reserve < 0:
            raise ValueError("--max-connections and the timeouts must be positive, --fd-reserve not negative")
        limits = Limits(args.max_connections, args.fd_reserve, args.head_timeout, args.idle_timeout)
    except (OSError, ValueError) as exc:
        print(f"telemetryd responder: {exc}", file=sys.stderr)
        return 2

    def announce(bound_host: str, bound_port: int) -> None:
        print(f"ready {bound_host}:{bound_port}", flush=True)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for number in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(number, stop.set)
        await serve_responder(
            host, port, token, max_bytes_per_request=args.max_bytes, limits=limits, ready=announce, stop=stop
        )

    import uvloop  # noqa: PLC0415 - only the long-running server needs it

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
