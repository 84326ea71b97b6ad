"""The exporter's web config at run time: re-read when it changes, TLS per connection, basic auth on every path.

As in the Prometheus exporter-toolkit, a web config with ``basic_auth_users`` protects every
path, /healthz and /-/ready included: what a health check needs it can be given, and an open
path is one more thing a stranger on a school network can reach.

bcrypt is slow on purpose (~0.1-0.3 s a check at cost 10-12): a check runs in a worker thread,
at most `MAX_CHECKS` at once, and a success is remembered by a keyed hash of what was presented,
so a Prometheus scraping every 15 s pays it once, not every scrape. The cache key is a SHA-256
over a per-process random key, the stored hash and the password: it holds no password, and a
changed hash in the file misses the cache.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import os
import ssl
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import structlog
from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from telemetryd.config.loader import ConfigError, load_web_config
from telemetryd.config.webconfig import OPEN, WebConfig, signature
from telemetryd.httpguard import ConnectionGuard, Handler, Tally

CHECK_EVERY = 1.0
"""Seconds between looks at the files' mtimes (a look is a few stat calls)."""
CACHE_SIZE = 256
"""Credentials remembered (successes and failures); least recently used goes first."""
MAX_CHECKS = 4
"""bcrypt checks at once; a flood of guesses waits here instead of taking every worker thread."""
MAX_WAITING = 64
"""Checks waiting beyond this are refused at once (401) rather than queued."""
REALM = "telemetryd"
_DUMMY_HASH = bcrypt.hashpw(b"no such user", bcrypt.gensalt(rounds=10))
"""Checked for an unknown user, so the answer takes as long as for a known one."""

log = structlog.get_logger("telemetryd.export.webauth")


class WebConfigWatch:
    """The web config in force: loaded at start, re-read when the file or a file it names changes.

    A broken new version is logged (``web_config_reload_failed`` with each problem) and the
    previous one kept; the same broken version is not logged again until it changes.
    """

    def __init__(self, path: str | None, *, clock: Any = time.monotonic) -> None:
        self.clock = clock
        self.path: Path | None = None
        self.config: WebConfig = OPEN
        self._signature: tuple[tuple[int, int, int], ...] = ()
        self._looked = 0.0
        self.reloads = 0
        self.reload_failures = 0
        self.follow(path)

    def follow(self, path: str | None) -> None:
        """Use the file at `path` (None: no web config); raises ConfigError if it cannot be loaded."""
        if path is None:
            self.path, self.config, self._signature = None, OPEN, ()
            return
        where = Path(path)
        config = load_web_config(where)
        self.path, self.config = where, config
        self._signature = signature(config.files)
        self._looked = self.clock()

    def current(self) -> WebConfig:
        """The web config to apply to this connection or request (re-read first if its files changed)."""
        if self.path is None:
            return self.config
        now = self.clock()
        if now - self._looked < CHECK_EVERY:
            return self.config
        self._looked = now
        seen = signature(self.config.files)
        if seen == self._signature:
            return self.config
        self._signature = seen
        try:
            config = load_web_config(self.path)
        except ConfigError as exc:
            self.reload_failures += 1
            log.error(
                "web_config_reload_failed",
                path=str(self.path),
                problems=[str(p) for p in exc.problems],
                action="kept the previous web config",
            )
            return self.config
        self.config = config
        self._signature = signature(config.files)
        self.reloads += 1
        log.info("web_config_reloaded", path=str(self.path), tls=config.tls is not None, users=len(config.users))
        return self.config

    def tls(self) -> ssl.SSLContext | None:
        """The TLS context for the next connection (for `ConnectionGuard(tls=...)`)."""
        return self.current().tls


def credentials(header: str) -> tuple[str, bytes] | None:
    """(user, password) from an ``Authorization: Basic`` header, or None when it is not one."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    try:
        return user.decode(), password
    except UnicodeDecodeError:
        return None


class BasicAuth:
    """Basic auth against the web config's bcrypt hashes, with a bounded cache of checked credentials."""

    def __init__(self, watch: WebConfigWatch, *, log: Any = log) -> None:
        self.watch = watch
        self.unauthorized = Tally("http_unauthorized", log=log.bind(listener="exporter"))
        self._key = os.urandom(32)
        self._cache: OrderedDict[bytes, bool] = OrderedDict()
        self._checks = asyncio.Semaphore(MAX_CHECKS)
        self._waiting = 0
        self.bcrypt_checks = 0

    def _cache_key(self, user: str, hashed: bytes, password: bytes) -> bytes:
        return hmac.new(self._key, b"\0".join((user.encode(), hashed, password)), hashlib.sha256).digest()

    async def allowed(self, header: str, users: dict[str, bytes]) -> bool:
        """Whether the Authorization header names a user of `users` with the right password."""
        presented = credentials(header)
        if presented is None:
            return False
        user, password = presented
        hashed = users.get(user)
        key = self._cache_key(user, hashed or _DUMMY_HASH, password)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached and hashed is not None
        if self._waiting >= MAX_WAITING:
            return False
        self._waiting += 1
        try:
            async with self._checks:
                self.bcrypt_checks += 1
                ok = await asyncio.to_thread(bcrypt.checkpw, password, hashed or _DUMMY_HASH)
        finally:
            self._waiting -= 1
        ok = ok and hashed is not None
        self._cache[key] = ok
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return ok

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every path needs the credentials when the web config has users (as in exporter-toolkit)."""
        config = self.watch.current()
        if not config.requires_auth:
            return await handler(request)
        if await self.allowed(request.headers.get("Authorization", ""), config.users):
            return await handler(request)
        self.unauthorized.note(request.remote, request.path if request.path in _KNOWN_PATHS else "other")
        return web.Response(status=401, text="Unauthorized\n", headers={"WWW-Authenticate": f'Basic realm="{REALM}"'})


_KNOWN_PATHS = frozenset({"/", "/metrics", "/healthz", "/-/healthy", "/-/ready", "/api/v1/status"})
"""Paths named in the unauthorized summary; anything else a stranger tries is just "other"."""


@dataclass(frozen=True, slots=True)
class HttpListener:
    """The exporter listener's guard, web config and authentication, read by `HttpCollector`."""

    guard: ConnectionGuard
    watch: WebConfigWatch
    auth: BasicAuth


class HttpCollector(Collector):
    """telemetryd_http_*: connections held and closed, bad and unauthorized requests, web config reloads."""

    def __init__(self, listener: HttpListener | None) -> None:
        self.listener = listener

    def collect(self) -> Iterator[Metric]:
        """The families, read from the listener's counters at scrape time."""
        if self.listener is None:
            return
        guard, watch, auth = self.listener.guard, self.listener.watch, self.listener.auth
        yield GaugeMetricFamily(
            "telemetryd_http_connections", "HTTP connections held by the exporter listener", guard.open_connections
        )
        yield GaugeMetricFamily(
            "telemetryd_http_connection_limit",
            "Connections the listener holds at most (max_connections, lowered to RLIMIT_NOFILE minus fd_reserve)",
            guard.cap,
        )
        closed = CounterMetricFamily(
            "telemetryd_http_connections_closed",
            "Connections the listener closed itself, by reason (evicted, refused, head_timeout, idle_timeout, "
            "stalled, tls_failed)",
            labels=["reason"],
        )
        for reason in CLOSE_REASONS:
            closed.add_metric([reason], guard.closed.get(reason, 0))
        yield closed
        yield CounterMetricFamily(
            "telemetryd_http_bad_requests", "Malformed HTTP requests answered 400", guard.bad_requests.total
        )
        yield CounterMetricFamily(
            "telemetryd_http_unauthorized", "Requests refused for missing or wrong credentials", auth.unauthorized.total
        )
        reloads = CounterMetricFamily(
            "telemetryd_http_web_config_reloads", "Changes of the web config file seen, by result", labels=["result"]
        )
        reloads.add_metric(["ok"], watch.reloads)
        reloads.add_metric(["failed"], watch.reload_failures)
        yield reloads


CLOSE_REASONS = ("evicted", "refused", "head_timeout", "idle_timeout", "stalled", "tls_failed")


__all__ = ["BasicAuth", "HttpCollector", "HttpListener", "WebConfigWatch", "credentials"]
