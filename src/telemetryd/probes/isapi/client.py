"""Camera and NVR health over Hikvision ISAPI, without ever locking a device out.

`IsapiProber` owns one aiohttp session (a bounded, keep-alive connector shared by every
device) and one `IsapiClient` per device. A check reads deviceInfo, System/status and
System/time; for an NVR also the IP channel status, the disks, and evidence that each
online channel recorded recently (the JSON working status where the firmware has it,
else a `ContentMgmt/search` per channel).

Lockout safety — Hikvision locks the source address after 5–7 failed logins for up to
30 minutes, and that also locks out the school's operator behind the same NAT:

* one authenticated attempt per credential: a 401 to a request carrying our digest puts
  the device in ``auth_failed``, and nothing authenticated is sent again until the
  caller passes a different credential (compared by keyed hash; the password is never
  stored, logged or put in a result);
* the one exception is a 401 whose challenge says ``stale=true``: the server is saying
  the password was right and only the nonce expired, so it is answered once;
* lock information (a `userCheck` body with ``lockStatus=lock`` and ``unlockTime``) sends
  nothing at all to the device until the unlock time — retrying during a lock restarts
  it on some firmware;
* a nonce is used at most `nonce_uses` times, then a fresh one is fetched with an
  unauthenticated request (those never count as failed logins): some firmware rejects
  the third use of a nonce with a 401 that carries no challenge, which would otherwise
  look like a rejected password.

HTTPS (``isapis:443``): the certificate is checked before any HTTP request goes out, so
no credential reaches a device that is not the one we trusted. With `probes.isapi.ca_file`
the chain and the IP SAN are verified; otherwise the first handshake (a bare TLS handshake,
no HTTP) pins the leaf certificate's SHA-256 (`pins`) and every connection after must show
it; aiohttp's `Fingerprint` checks it at connect time, before the request is written.

Device faults are results, never exceptions. Reasons: ``timeout``, ``refused``,
``unreachable``, ``error``, ``tls_error``, ``certificate_changed``, ``pins_unreadable``,
``auth_failed``, ``bad_challenge``, ``locked``, ``redirect``,
``too_large``, ``bad_xml``, ``xml_too_large``, ``xml_too_deep``, ``json_too_large``,
``json_too_deep`` (a body over a parsing limit of `xml`, refused before it is parsed),
``http_<code>``, ``not_supported``, ``isapi_error``, and for health ``channel_offline``,
``video_loss``, ``disk_fault``, ``no_disk``, ``clock_drift``, ``not_recording`` (AX PRO:
``zone_fault``, ``tamper``). This module only fetches and parses (`xml`); what counts as
wrong is decided by the pure functions of `health`.
"""

from __future__ import annotations

import asyncio
import enum
import errno
import os
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, NamedTuple, TypeVar, overload
from urllib.parse import quote

import aiohttp
import structlog

from telemetryd.config.settings import Settings
from telemetryd.model import Device, DeviceKind, Finding, Inventory, ProbeResult, ProbeSpec
from telemetryd.probes.base import ProbeContext
from telemetryd.probes.isapi import health, xml
from telemetryd.probes.isapi.digest import (
    DigestChallenge,
    authorization,
    choose_challenge,
    digest_offered,
    parse_challenges,
)
from telemetryd.probes.isapi.health import Problem
from telemetryd.probes.isapi.memory import DeviceMemory, Login
from telemetryd.probes.isapi.pins import PinStore, certificate_fingerprint, endpoint, short
from telemetryd.secrets import SecretMissing

__all__ = [
    "AuthState",
    "AxProStatus",
    "IsapiClient",
    "IsapiHealth",
    "IsapiPolicy",
    "IsapiProber",
    "Problem",
    "StreamRefused",
    "TlsTrust",
    "credential_pair",
    "isapi_endpoints",
    "open_prober",
    "policy_from",
    "probe",
    "probe_axpro",
]

Kind = Literal["camera", "nvr"]
T = TypeVar("T")

_UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN}
_LACKING = ("not_supported", "http_403", "http_404", "http_405", "http_501")
"""Step results that mean the model (or the user's role) does not offer the endpoint: a capability, not a fault."""


@dataclass(frozen=True, slots=True)
class IsapiPolicy:
    """Timeouts, caps and thresholds of ISAPI checks."""

    request_timeout: float = 5.0
    """Per request, body included: an endless or trickling body ends here at the latest."""
    check_timeout: float = 30.0
    """A whole check (an NVR with many channels makes many requests)."""
    max_body_bytes: int = 1 << 20
    """Replies we read are a few KiB; a 32-channel NVR's storage or status list stays far below 1 MiB."""
    max_clock_drift: float = 10.0
    """Seconds off before `clock_drift`: enough for request latency, tight enough for evidential video timestamps."""
    recording_window: float = 3600.0
    """An online channel must have recorded within this long (continuous recording is assumed)."""
    default_lock_seconds: float = 1800.0
    """Lock length when the device says it is locked but not for how long (manual: 30 minutes)."""
    nonce_uses: int | None = None
    """Requests per nonce before fetching a fresh one; None: reuse while the device accepts it, learning its limit
    (some firmware refuses the 3rd use of a nonce with a 401 that carries no challenge)."""
    nonce_max_age: float = 30.0
    """A nonce older than this is not used again: firmware that lets nonces expire without saying ``stale``
    would otherwise make a correct password look rejected."""
    retry_stale_nonce: bool = True
    max_search_channels: int = 64


class AuthState(enum.StrEnum):
    """Where a device's login stands with the credential last passed."""

    UNKNOWN = "unknown"
    OK = "ok"
    AUTH_FAILED = "auth_failed"
    """Rejected once; nothing authenticated is sent until the credential changes."""
    LOCKED = "locked"
    """The device locked our address; nothing is sent until `locked_until`."""


@dataclass(frozen=True, slots=True)
class IsapiHealth(Finding):
    """What one ISAPI check of a camera or NVR found."""

    ok: bool
    duration: float
    reason: str = ""
    detail: str = ""
    auth: AuthState = AuthState.UNKNOWN
    locked_until: float | None = None
    """Epoch seconds until which the device is left alone."""
    retry_login_time: int | None = None
    """Failed logins the device says we have left, when it said."""
    identity: xml.DeviceIdentity | None = None
    replaced_identity: xml.DeviceIdentity | None = None
    """The identity the previous check saw, when serial or firmware changed since (a swap or an upgrade)."""
    status: xml.DeviceStatus | None = None
    time: xml.DeviceTime | None = None
    clock_drift: float | None = None
    """Seconds the device clock is ahead of ours (negative: behind)."""
    rebooted: bool = False
    """Uptime shows a restart since the previous check."""
    channels: tuple[xml.Channel, ...] = ()
    disks: tuple[xml.Disk, ...] = ()
    recording: tuple[tuple[int, bool], ...] = ()
    """(channel, recorded within the window) for each online channel checked."""
    video_loss: tuple[int, ...] = ()
    inputs: tuple[xml.VideoInput, ...] = ()
    """A DVR's analog inputs, with whether each has a video signal."""
    unsupported: tuple[str, ...] = ()
    """Checks the device does not offer (a capability, not a fault): it is judged on the rest."""
    problems: tuple[Problem, ...] = ()
    requests: int = 0
    """HTTP requests sent (unauthenticated challenge fetches included)."""
    certificate: str = ""
    """HTTPS: the trusted certificate's fingerprint prefix (``sha256:…``); empty over HTTP or with a CA bundle."""
    certificate_changed: bool = False
    """HTTPS: the device shows another certificate than the pinned one; nothing is sent until re-trusted."""

    def probe_result(self) -> ProbeResult:
        """The scheduler's view: ok, duration, first reason and a detail sentence."""
        return ProbeResult(self.ok, self.duration, self.reason, self.detail, finding=self)


@dataclass(frozen=True, slots=True)
class AxProStatus(Finding):
    """What one status read of a Hikvision AX PRO alarm panel found."""

    ok: bool
    duration: float
    reason: str = ""
    detail: str = ""
    auth: AuthState = AuthState.UNKNOWN
    locked_until: float | None = None
    subsystems: tuple[xml.AxProSubsystem, ...] = ()
    zones: tuple[xml.AxProZone, ...] = ()
    problems: tuple[Problem, ...] = ()
    requests: int = 0

    def probe_result(self) -> ProbeResult:
        """The scheduler's view: ok, duration, first reason and a detail sentence."""
        return ProbeResult(self.ok, self.duration, self.reason, self.detail, finding=self)


class _Failure(Exception):
    """A step failed; `fatal` ends the whole check (the device is unreachable, rejects us or is locked)."""

    def __init__(self, reason: str, detail: str, *, fatal: bool = False) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.fatal = fatal


@dataclass(frozen=True, slots=True)
class TlsTrust:
    """How HTTPS devices are trusted: a CA bundle's context (chain and IP SAN), else the pins (first use)."""

    pins: PinStore
    ca: ssl.SSLContext | None = None


def _handshake_context() -> ssl.SSLContext:
    """For the first-use handshake only: any certificate is accepted, then pinned."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


_FIRST_USE = _handshake_context()


class StreamRefused(Exception):
    """The device did not open the event stream; `reason` is a probe result word (`not_supported`, `auth_failed`…)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class _Reply(NamedTuple):
    status: int
    body: bytes
    challenges: list[str]
    cookies: list[str]


class _Login:
    """The credential of one check, held only for its duration; its repr never shows the password."""

    __slots__ = ("password", "username")

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self.password = password

    def __repr__(self) -> str:
        return f"_Login({self.username!r}, <redacted>)"


@dataclass(slots=True)
class _Run:
    """Mutable scratch of one check; frozen into `IsapiHealth` at the end."""

    started: float
    now: float
    login: _Login
    problems: list[Problem] = field(default_factory=list)
    requests: int = 0
    identity: xml.DeviceIdentity | None = None
    status: xml.DeviceStatus | None = None
    time: xml.DeviceTime | None = None
    clock_drift: float | None = None
    rebooted: bool = False
    channels: tuple[xml.Channel, ...] = ()
    disks: tuple[xml.Disk, ...] = ()
    recording: tuple[tuple[int, bool], ...] = ()
    video_loss: tuple[int, ...] = ()
    inputs: tuple[xml.VideoInput, ...] = ()
    lacking: frozenset[str] = frozenset()
    """Checks the device was found lacking (memory): not asked this time."""
    unsupported: list[str] = field(default_factory=list)

    def wall(self) -> float:
        """Our epoch time now: the injected start plus what has elapsed since."""
        return self.now + (time.monotonic() - self.started)


class IsapiClient:
    """One camera or NVR: its digest nonce, login state, lock and last uptime.

    Checks of one device never overlap (a lock serialises them), so nonce counts and the
    one-attempt rule hold even if a caller fires twice.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        host: str,
        port: int = 80,
        *,
        policy: IsapiPolicy | None = None,
        scheme: str = "http",
        memory: DeviceMemory | None = None,
        trust: TlsTrust | None = None,
        stream_session: aiohttp.ClientSession | None = None,
        log: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.policy = policy or IsapiPolicy()
        self.endpoint = f"{host}:{port}"
        self._memory = memory or DeviceMemory(None)
        self.trust = trust
        """HTTPS when set: how the device's certificate is trusted."""
        self._session = session
        self._stream_session = stream_session or session
        self._base = f"{'https' if trust is not None else scheme}://{host}:{port}"
        self._changed_to: bytes | None = None
        """The unpinned certificate the device last showed (certificate_changed), until re-trusted."""
        self._log = log or structlog.get_logger("telemetryd.probe.isapi")
        self._serial = asyncio.Lock()
        self._credential: bytes | None = None
        self._auth = AuthState.UNKNOWN
        self._rejected = False
        """The current credential drew a 401: it is never sent again."""
        self._locked_until: float | None = None
        self._retry_login_time: int | None = None
        self._challenge: DigestChallenge | None = None
        self._nonce_count = 0
        self._nonce_at = 0.0
        """When the held challenge came (monotonic)."""
        self._nonce_limit: int | None = None
        """Uses per nonce the device allows, once learnt (a refused use with a proven credential)."""
        self._proven = False
        """The current credential was accepted at least once."""
        self._last_uptime: tuple[int, float] | None = None
        self._last_identity: xml.DeviceIdentity | None = None
        self._web_session: str | None = None
        """AX PRO session cookie ("WebSession…=…"): a bearer secret, never logged."""
        remembered = self._memory.login(self.endpoint)
        if remembered.rejected is not None:
            # Rejected before a restart: the same credential is still not sent.
            self._credential, self._rejected, self._auth = remembered.rejected, True, AuthState.AUTH_FAILED
        if remembered.locked_until is not None:
            self._locked_until, self._auth = remembered.locked_until, AuthState.LOCKED

    @property
    def auth(self) -> AuthState:
        """Login state with the credential last passed."""
        return self._auth

    @property
    def locked_until(self) -> float | None:
        """Epoch seconds until which the device is left alone, if locked."""
        return self._locked_until

    async def check(self, username: str, password: str, kind: Kind, *, now: float) -> IsapiHealth:
        """Run the health check; `now` is our epoch time (NTP-synced), used for clock drift and lock expiry."""
        async with self._serial:
            run = _Run(started=time.monotonic(), now=now, login=_Login(username, password))
            try:
                async with asyncio.timeout(self.policy.check_timeout):
                    self._admit(username, password, now)
                    await self._check_steps(run, kind)
            except _Failure as failure:
                run.problems.insert(
                    0,
                    Problem(
                        "login" if failure.reason in ("auth_failed", "locked") else "device",
                        failure.reason,
                        failure.detail,
                    ),
                )
            except TimeoutError:
                run.problems.insert(
                    0, Problem("device", "timeout", f"check not done in {self.policy.check_timeout:g}s")
                )
            finally:
                self._remember()
            return self._health(run)

    async def open_stream(self, username: str, password: str, path: str, *, now: float) -> aiohttp.ClientResponse:
        """Open a long-lived GET (the event stream) under the rules of a check: the same login
        state, the same one attempt per credential, the same lock. The caller reads and closes
        the response; anything but a 2xx raises `StreamRefused` with its reason."""
        async with self._serial:
            run = _Run(started=time.monotonic(), now=now, login=_Login(username, password))
            try:
                self._admit(username, password, now)
                reply = await self._authorized(run, "GET", path, None, stream=True)
                if isinstance(reply, _Reply):
                    _parse(reply, path, bytes)  # raises the step failure that says why
                    raise _Failure(f"http_{reply.status}", f"{path}: HTTP {reply.status}")
            except _Failure as failure:
                raise StreamRefused(failure.reason, failure.detail) from None
            finally:
                self._remember()
            return reply

    # --- the steps ----------------------------------------------------------------------

    async def _check_steps(self, run: _Run, kind: Kind) -> None:
        run.identity = await self._step(run, "device_info", "GET", "/ISAPI/System/deviceInfo", xml.parse_device_info)
        run.lacking = self._memory.lacks(
            self.endpoint, run.identity.firmware if run.identity is not None else None, run.now
        )
        status = run.status = await self._step(run, "status", "GET", "/ISAPI/System/status", xml.parse_device_status)
        if status is not None and status.uptime is not None:
            at = run.wall()
            if self._last_uptime is not None:
                run.rebooted = xml.rebooted(*self._last_uptime, status.uptime, at)
            self._last_uptime = (status.uptime, at)
        device_time = run.time = await self._step(run, "time", "GET", "/ISAPI/System/time", xml.parse_device_time)
        if device_time is not None:
            drift = run.clock_drift = xml.clock_drift(device_time.local_time, run.wall())
            run.problems.extend(health.clock_problems(device_time, drift, self.policy.max_clock_drift))
        if kind != "nvr":
            return

        channels = await self._step(
            run, "channels", "GET", "/ISAPI/ContentMgmt/InputProxy/channels/status", xml.parse_channels
        )
        run.channels = channels or ()
        run.problems.extend(health.channel_problems(run.channels))
        # A DVR or hybrid recorder: analog inputs report "NO VIDEO" when the camera's signal is gone.
        inputs = await self._step(
            run, "video_inputs", "GET", "/ISAPI/System/Video/inputs/channels", xml.parse_video_inputs
        )
        run.inputs = inputs or ()
        run.problems.extend(health.input_problems(run.inputs))

        disks = await self._step(run, "storage", "GET", "/ISAPI/ContentMgmt/Storage", xml.parse_storage)
        run.disks = disks or ()
        if disks is not None:  # a failed storage read is its own problem, not "no disk"
            run.problems.extend(health.storage_problems(disks))

        online = health.online_channels(run.channels) + health.live_inputs(run.inputs)
        recording = run.recording = await self._recording(run, online)
        run.problems.extend(health.recording_problems(recording, self.policy.recording_window))

    async def _step(
        self,
        run: _Run,
        check: str,
        method: str,
        path: str,
        parse: Callable[[bytes], T],
        *,
        body: bytes | None = None,
        about: str = "",
    ) -> T | None:
        """One read of the check; a failure is a problem, an endpoint the device lacks a capability.

        A check the device was found lacking within the last day (and firmware) is not asked
        at all; the device is judged on what it offers. Only the identity is not optional.
        """
        if check in run.lacking:
            run.unsupported.append(check)
            return None
        try:
            reply = await self._request(run, method, path, body)
            parsed = _parse(reply, path, parse)
        except _Failure as failure:
            if failure.fatal:
                raise
            if check != "device_info" and failure.reason in _LACKING:
                firmware = run.identity.firmware if run.identity is not None else ""
                self._memory.remember_lack(self.endpoint, firmware, check, run.now)
                run.unsupported.append(check)
                self._log.debug(
                    "isapi_check_unsupported", host=self.host, port=self.port, check=check, reason=failure.reason
                )
            else:
                run.problems.append(Problem(check, failure.reason, about + failure.detail))
            return None
        self._memory.remember_offered(self.endpoint, check)
        return parsed

    async def _recording(self, run: _Run, online: list[int]) -> tuple[tuple[int, bool], ...]:
        """Per online channel: did it record in the window? The working status answers all at once."""
        # Lacking it (learnt), `_step` does not ask; the searches answer instead.
        working = await self._quiet_step(
            run, "working_status", "/ISAPI/System/workingstatus?format=json", xml.parse_working_status
        )
        if working is not None:
            run.video_loss = health.video_loss_channels(working)
            run.problems.extend(health.video_loss_problems(working))
            return health.working_recording(working, online)
        results = []
        end = datetime.fromtimestamp(run.wall(), UTC)
        start = datetime.fromtimestamp(run.wall() - self.policy.recording_window, UTC)
        for number in online[: self.policy.max_search_channels]:
            track = number * 100 + 1
            query = xml.search_request(track, start, end, search_id=str(uuid.uuid4()).upper())
            search = await self._step(
                run,
                "recording_search",
                "POST",
                "/ISAPI/ContentMgmt/search",
                xml.parse_search_result,
                body=query,
                about=f"search on track {track}: ",
            )
            if search is None:
                if "recording_search" in run.unsupported:
                    break  # the recorder cannot search: no channel can prove it recorded
                continue
            results.append((number, health.recorded_since(search, track, start)))
        return tuple(results)

    async def _quiet_step(self, run: _Run, check: str, path: str, parse: Callable[[bytes], T]) -> T | None:
        """A read with a fallback: its failure is no problem of its own (the fallback answers); lacking it is learnt."""
        problems = len(run.problems)
        found = await self._step(run, check, "GET", path, parse)
        del run.problems[problems:]
        return found

    async def axpro_status(
        self, username: str, password: str, *, now: float, timeout: float | None = None
    ) -> AxProStatus:
        """Areas and zones of an AX PRO panel over a cookie session (session login under the one-attempt rule).

        `timeout` bounds the whole read (`probes.axpro.timeout`); the policy's check timeout when not given.
        """
        timeout = self.policy.check_timeout if timeout is None else timeout
        async with self._serial:
            run = _Run(started=time.monotonic(), now=now, login=_Login(username, password))
            subsystems: tuple[xml.AxProSubsystem, ...] = ()
            zones: tuple[xml.AxProZone, ...] = ()
            try:
                async with asyncio.timeout(timeout):
                    self._admit(username, password, now)
                    subsystems = await self._axpro_read(
                        run, "/ISAPI/SecurityCP/status/subSystems?format=json", xml.parse_axpro_subsystems
                    )
                    zones = await self._axpro_read(
                        run, "/ISAPI/SecurityCP/status/zones?format=json", xml.parse_axpro_zones
                    )
            except _Failure as failure:
                step = "login" if failure.reason in ("auth_failed", "locked") else "panel"
                run.problems.insert(0, Problem(step, failure.reason, failure.detail))
            except TimeoutError:
                run.problems.insert(0, Problem("panel", "timeout", f"check not done in {timeout:g}s"))
            finally:
                self._remember()
            run.problems.extend(health.zone_problems(zones))
            problems = tuple(run.problems)
            summary = health.summarize(problems)
            return AxProStatus(
                ok=summary.ok,
                duration=time.monotonic() - run.started,
                reason=summary.reason,
                detail=summary.detail,
                auth=self._auth,
                locked_until=self._locked_until,
                subsystems=subsystems,
                zones=zones,
                problems=problems,
                requests=run.requests,
            )

    async def _axpro_read(self, run: _Run, path: str, parse: Callable[[bytes], T]) -> T:
        """GET with the session cookie; an expired session (401 with a cookie) earns one fresh login."""
        for _ in range(2):
            if self._web_session is None:
                await self._axpro_login(run)
            assert self._web_session is not None
            reply = await self._send(run, "GET", path, {"Cookie": self._web_session}, None)
            if reply.status != 401:
                try:
                    return _parse(reply, path, parse)
                except _Failure as failure:
                    failure.fatal = True  # a status read that fails leaves nothing to report
                    raise
            self._web_session = None
        raise _Failure("auth_failed", f"{path}: session refused right after login", fatal=True)

    async def _axpro_login(self, run: _Run) -> None:
        """Session login: the capabilities fetch is unauthenticated; the POST is the one attempt."""
        username, password = run.login.username, run.login.password
        query = f"/ISAPI/Security/sessionLogin/capabilities?username={quote(username)}"
        cap_reply = await self._send(run, "GET", query, {}, None)
        try:
            cap = _parse(cap_reply, "/ISAPI/Security/sessionLogin/capabilities", xml.parse_session_login_cap)
        except _Failure as failure:
            failure.fatal = True
            raise
        body = xml.session_login_request(cap, username, password)
        path = f"/ISAPI/Security/sessionLogin?timeStamp={int(run.wall() * 1000)}"
        reply = await self._send(run, "POST", path, {"Content-Type": "application/xml"}, body)
        if reply.status == 401:
            self._rejected = True
            self._auth = AuthState.AUTH_FAILED
            if self._learn_lock(reply, run.now):
                assert self._locked_until is not None
                raise _Failure("locked", f"panel locked us out for {self._locked_until - run.now:.0f}s", fatal=True)
            self._log.warning(
                "isapi_auth_failed", host=self.host, port=self.port, retry_login_time=self._retry_login_time
            )
            raise _Failure(
                "auth_failed", "session login rejected (401); no further attempt until it changes", fatal=True
            )
        if not 200 <= reply.status < 300:
            raise _Failure(f"http_{reply.status}", f"session login: HTTP {reply.status}", fatal=True)
        cookie = next((c.split(";", 1)[0] for c in reply.cookies if c.startswith("WebSession")), None)
        if cookie is None:
            raise _Failure("error", "session login answered without a WebSession cookie", fatal=True)
        self._web_session = cookie
        self._auth = AuthState.OK

    # --- login state ----------------------------------------------------------------------

    def _admit(self, username: str, password: str, now: float) -> None:
        """Decide whether anything may be sent: a lock or a rejected, unchanged credential says no."""
        credential = self._memory.fingerprint(username, password)
        if credential != self._credential:
            # A new credential earns one attempt; a lock (per source address) still holds.
            self._credential = credential
            self._set_challenge(None)
            self._retry_login_time = None
            self._rejected = self._proven = False
            self._web_session = None
            if self._auth is not AuthState.LOCKED:
                self._auth = AuthState.UNKNOWN
        if self._locked_until is not None:
            if now < self._locked_until:
                raise _Failure(
                    "locked", f"device locked us out; left alone for {self._locked_until - now:.0f}s more", fatal=True
                )
            self._locked_until = None
            if self._auth is AuthState.LOCKED:
                self._auth = AuthState.AUTH_FAILED if self._rejected else AuthState.UNKNOWN
        if self._rejected:
            raise _Failure("auth_failed", "credential rejected; waiting for a changed credential", fatal=True)

    def _remember(self) -> None:
        """Put the rejection and the lock on disk (when they changed) so a restart keeps to them."""
        self._memory.remember_login(
            self.endpoint, Login(self._credential if self._rejected else None, self._locked_until)
        )

    def _learn_lock(self, reply: _Reply, now: float) -> bool:
        """Read a `userCheck` 401 body; on a lock, leave the device alone until it lifts. True when locked."""
        try:
            check = xml.parse_user_check(reply.body)
        except (xml.IsapiParseError, xml.IsapiStatusError):
            return False
        self._retry_login_time = check.retry_login_time
        if not check.locked:
            return False
        seconds = check.unlock_time if check.unlock_time else self.policy.default_lock_seconds
        self._locked_until = now + seconds
        self._auth = AuthState.LOCKED
        self._log.warning("isapi_device_locked", host=self.host, port=self.port, unlock_in=seconds)
        return True

    async def _request(self, run: _Run, method: str, path: str, body: bytes | None = None) -> _Reply:
        """One ISAPI request with digest auth under the one-attempt rule; a 401 never returns from here."""
        reply = await self._authorized(run, method, path, body, stream=False)
        assert isinstance(reply, _Reply)
        return reply

    async def _authorized(
        self, run: _Run, method: str, path: str, body: bytes | None, *, stream: bool
    ) -> _Reply | aiohttp.ClientResponse:
        """`_request`; with `stream`, a 2xx comes back as the open response for the caller to read and close.

        A nonce is reused with an increasing ``nc`` while the device accepts it (within
        `nonce_max_age`, and below the use limit learnt for the device). A 401 to our digest is
        a rejected credential unless the device says otherwise: ``stale=true``, or, for a
        credential it has accepted before on a nonce used before, a 401 that did not count
        as a failed login (no new challenge, or ``retryLoginTime`` not lower than before).
        Only then is the request tried once more, on a fresh nonce.
        """
        refreshed = False
        for _ in range(4):  # challenge fetch, the attempt, a fetch after a spent nonce, one retry on a fresh nonce
            headers: dict[str, str] = {}
            challenge = self._usable_challenge()
            nc = 0
            if challenge is not None:
                nc = self._nonce_count = self._nonce_count + 1
                headers["Authorization"] = authorization(
                    challenge,
                    method,
                    path,
                    username=run.login.username,
                    password=run.login.password,
                    nc=nc,
                    cnonce=os.urandom(8).hex(),
                )
            left_before = self._retry_login_time
            reply = await self._send(run, method, path, headers, body, stream=stream)
            if reply.status != 401:
                if challenge is not None:
                    self._auth, self._proven = AuthState.OK, True
                return reply
            assert isinstance(reply, _Reply)
            fresh = choose_challenge(parse_challenges(reply.challenges))
            self._set_challenge(fresh)
            locked = self._learn_lock(reply, run.now)
            if challenge is None:  # an unauthenticated fetch: never a failed login
                if locked:
                    raise self._locked_failure(run)
                if fresh is None:
                    if digest_offered(reply.challenges) and not parse_challenges(reply.challenges):
                        raise _Failure("bad_challenge", "401 with a digest challenge that cannot be parsed", fatal=True)
                    raise _Failure(
                        "auth_failed",
                        "401 without a digest challenge we can answer (MD5/SHA-256, qop=auth)",
                        fatal=True,
                    )
                continue
            if not refreshed and not locked and self._nonce_refused(fresh, nc, left_before):
                refreshed = True
                if fresh is None or not fresh.stale:
                    self._learn_nonce_limit(nc)
                continue
            # Our digest was refused: this credential is spent, whatever else the reply says (even a lock).
            self._rejected = True
            self._auth = AuthState.LOCKED if locked else AuthState.AUTH_FAILED
            self._set_challenge(None)
            if locked:
                raise self._locked_failure(run)
            self._log.warning(
                "isapi_auth_failed", host=self.host, port=self.port, retry_login_time=self._retry_login_time
            )
            raise _Failure("auth_failed", "credential rejected (401); no further attempt until it changes", fatal=True)
        raise _Failure("auth_failed", "no digest challenge settled", fatal=True)  # pragma: no cover - loop bound

    def _usable_challenge(self) -> DigestChallenge | None:
        """The held challenge if its nonce may be used once more; None means fetch a fresh one first."""
        challenge = self._challenge
        if challenge is None:
            return None
        limit = self._nonce_limit if self.policy.nonce_uses is None else self.policy.nonce_uses
        # A challenge not used yet is always tried: it is as fresh as the device makes them.
        too_old = self._nonce_count > 0 and time.monotonic() - self._nonce_at > self.policy.nonce_max_age
        if too_old or (limit is not None and self._nonce_count >= limit):
            self._set_challenge(None)
            return None
        return challenge

    def _set_challenge(self, challenge: DigestChallenge | None) -> None:
        self._challenge, self._nonce_count, self._nonce_at = challenge, 0, time.monotonic()

    def _nonce_refused(self, fresh: DigestChallenge | None, nc: int, left_before: int | None) -> bool:
        """Whether a 401 to our digest refused the nonce, not the credential (see `_request`)."""
        if fresh is not None and fresh.stale:
            return self.policy.retry_stale_nonce
        if not self._proven or nc <= 1:
            return False  # a first use, or a credential never accepted: the device judged the password
        if fresh is None:
            return True  # firmware refusing a spent nonce answers 401 without a challenge; a bad password gets one
        left = self._retry_login_time
        return left is not None and left_before is not None and left >= left_before

    def _learn_nonce_limit(self, refused_nc: int) -> None:
        """The device refused use `refused_nc` of a nonce it took before: from now on fetch a fresh one sooner."""
        limit = max(1, refused_nc - 1)
        if self._nonce_limit is None or limit < self._nonce_limit:
            self._nonce_limit = limit
            self._log.info("isapi_nonce_limit_learnt", host=self.host, port=self.port, uses=limit)

    def _locked_failure(self, run: _Run) -> _Failure:
        assert self._locked_until is not None
        return _Failure("locked", f"device locked us out for {self._locked_until - run.now:.0f}s", fatal=True)

    @overload
    async def _send(
        self,
        run: _Run,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes | None,
        *,
        stream: Literal[False] = False,
    ) -> _Reply: ...

    @overload
    async def _send(
        self, run: _Run, method: str, path: str, headers: dict[str, str], body: bytes | None, *, stream: bool
    ) -> _Reply | aiohttp.ClientResponse: ...

    async def _send(
        self, run: _Run, method: str, path: str, headers: dict[str, str], body: bytes | None, *, stream: bool = False
    ) -> _Reply | aiohttp.ClientResponse:
        """Send one request and read at most `max_body_bytes` of the reply within `request_timeout`.

        With `stream`, a 2xx reply is returned unread once its headers are in (an event stream
        never ends): the caller reads it under its own deadlines and closes it.
        """
        verify = await self._verification(run)
        run.requests += 1
        cap = self.policy.max_body_bytes
        try:
            async with asyncio.timeout(self.policy.request_timeout):
                session = self._stream_session if stream else self._session
                response = await session.request(
                    method, self._base + path, headers=headers, data=body, allow_redirects=False, ssl=verify
                )
                if 300 <= response.status < 400:
                    # A device is one address: another host's answers must never become this camera's.
                    target = _printable(response.headers.get("Location", "nowhere"))
                    response.close()
                    raise _Failure(
                        "redirect",
                        f"{path}: HTTP {response.status} to {target}; redirects are not followed",
                        fatal=True,
                    )
                if stream and 200 <= response.status < 300:
                    return response
                try:
                    return await _read_capped(response, path, cap)
                finally:
                    response.release()
        except TimeoutError:
            raise _Failure(
                "timeout", f"{path}: no complete answer in {self.policy.request_timeout:g}s", fatal=True
            ) from None
        except aiohttp.ServerFingerprintMismatch as exc:
            raise self._certificate_changed(exc.expected, exc.got) from None
        except aiohttp.ClientConnectorCertificateError as exc:
            why = getattr(exc.certificate_error, "verify_message", "") or type(exc.certificate_error).__name__
            raise _Failure("tls_error", f"port {self.port}: certificate not trusted ({why})", fatal=True) from None
        except aiohttp.ClientConnectorError as exc:
            raise _connect_failure(exc, self.port, tls=self.trust is not None) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise _Failure("error", f"{path}: {type(exc).__name__}", fatal=True) from None

    # --- HTTPS trust ------------------------------------------------------------------------

    async def _verification(self, run: _Run) -> ssl.SSLContext | aiohttp.Fingerprint | bool:
        """What aiohttp must check of the certificate before the request is written (True: its default)."""
        trust = self.trust
        if trust is None:
            return True
        if trust.ca is not None:
            return trust.ca
        pins = trust.pins
        if pins.problem is not None or self._changed_to is not None:
            pins.refresh()  # the operator may have fixed the file or re-trusted the device since
        if pins.problem is not None:
            raise _Failure(
                "pins_unreadable", f"{pins.problem}; nothing is sent over HTTPS until it is fixed", fatal=True
            )
        key = endpoint(self.host, self.port)
        pinned = pins.get(key)
        if pinned is None:
            pinned = certificate_fingerprint(await self._peer_certificate())
            pins.learn(key, pinned, now=run.wall())
            self._changed_to = None
            self._log.info("isapi_certificate_pinned", host=self.host, port=self.port, fingerprint=short(pinned))
        return aiohttp.Fingerprint(pinned)

    async def _peer_certificate(self) -> bytes:
        """The device's certificate from a bare TLS handshake: nothing else is sent before it is pinned."""
        writer = None
        try:
            async with asyncio.timeout(self.policy.request_timeout):
                _reader, writer = await asyncio.open_connection(self.host, self.port, ssl=_FIRST_USE)
                ssl_object = writer.get_extra_info("ssl_object")
                der: bytes | None = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        except TimeoutError:
            raise _Failure(
                "timeout", f"port {self.port}: no TLS handshake in {self.policy.request_timeout:g}s", fatal=True
            ) from None
        except ssl.SSLError as exc:
            raise _Failure(
                "tls_error", f"port {self.port}: TLS handshake failed ({_ssl_reason(exc)})", fatal=True
            ) from None
        except OSError as exc:
            raise _socket_failure(exc, self.port, tls=True) from None
        finally:
            if writer is not None:
                writer.transport.abort()
        if not der:
            raise _Failure("tls_error", f"port {self.port}: the device showed no certificate", fatal=True)
        return der

    def _certificate_changed(self, expected: bytes, got: bytes) -> _Failure:
        if got != self._changed_to:
            self._changed_to = got  # once per change: a device stuck on the new certificate is not logged every check
            self._log.warning(
                "isapi_certificate_changed", host=self.host, port=self.port, pinned=short(expected), shown=short(got)
            )
        return _Failure(
            "certificate_changed",
            f"port {self.port}: certificate {short(got)} is not the pinned {short(expected)}; nothing sent "
            f"(re-trust with `telemetryd pins forget {self.host}:{self.port}` if the device was replaced)",
            fatal=True,
        )

    def _health(self, run: _Run) -> IsapiHealth:
        replaced = None
        if run.identity is not None:
            old = self._last_identity
            if old is not None and (old.serial, old.firmware) != (run.identity.serial, run.identity.firmware):
                replaced = old
            self._last_identity = run.identity
        problems = tuple(run.problems)
        summary = health.summarize(problems)
        return IsapiHealth(
            ok=summary.ok,
            duration=time.monotonic() - run.started,
            reason=summary.reason,
            detail=summary.detail,
            auth=self._auth,
            locked_until=self._locked_until,
            retry_login_time=self._retry_login_time,
            identity=run.identity,
            replaced_identity=replaced,
            status=run.status,
            time=run.time,
            clock_drift=run.clock_drift,
            rebooted=run.rebooted,
            channels=run.channels,
            disks=run.disks,
            recording=run.recording,
            video_loss=run.video_loss,
            inputs=run.inputs,
            unsupported=tuple(run.unsupported),
            problems=problems,
            requests=run.requests,
            certificate=self._pinned_display(),
            certificate_changed=self._changed_to is not None,
        )

    def _pinned_display(self) -> str:
        if self.trust is None or self.trust.ca is not None:
            return ""
        pinned = self.trust.pins.get(endpoint(self.host, self.port))
        return short(pinned) if pinned is not None else ""


async def _read_capped(response: aiohttp.ClientResponse, path: str, cap: int) -> _Reply:
    """The whole reply, at most `cap` bytes of body; beyond it the connection is dropped (`too_large`)."""
    length = response.content_length
    if length is not None and length > cap:
        response.close()
        raise _Failure("too_large", f"{path}: {length} byte body over the {cap} byte cap")
    chunks, size = [], 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > cap:
            response.close()  # drop the connection: the rest must not be read into the pool
            raise _Failure("too_large", f"{path}: body over the {cap} byte cap")
        chunks.append(chunk)
    return _Reply(
        response.status,
        b"".join(chunks),
        response.headers.getall("WWW-Authenticate", []),
        response.headers.getall("Set-Cookie", []),
    )


def _parse(reply: _Reply, path: str, parse: Callable[[bytes], T]) -> T:
    """The parsed document of a 2xx reply; other statuses and bad bodies as step failures."""
    if not 200 <= reply.status < 300:
        try:
            status = xml.parse_response_status(reply.body)
        except xml.IsapiParseError:
            raise _Failure(f"http_{reply.status}", f"{path}: HTTP {reply.status}") from None
        reason = "not_supported" if status.not_supported else f"http_{reply.status}"
        raise _Failure(reason, f"{path}: HTTP {reply.status} {status.status_string} ({status.sub_status_code})")
    try:
        return parse(reply.body)
    except xml.IsapiStatusError as exc:
        reason = "not_supported" if exc.status.not_supported else "isapi_error"
        raise _Failure(reason, f"{path}: {exc}") from None
    except xml.IsapiLimitError as exc:
        raise _Failure(exc.reason, f"{path}: {exc}; not parsed") from None
    except xml.IsapiParseError as exc:
        raise _Failure("bad_xml", f"{path}: {exc}") from None


def _printable(text: str, limit: int = 200) -> str:
    """A peer's header value fit for a log line and a result: printable and short."""
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in text[:limit])
    return cleaned + ("…" if len(text) > limit else "")


def _ssl_reason(exc: ssl.SSLError) -> str:
    return _printable(str(exc.reason or type(exc).__name__))


def _connect_failure(exc: aiohttp.ClientConnectorError, port: int, *, tls: bool = False) -> _Failure:
    return _socket_failure(exc.os_error, port, tls=tls)


def _socket_failure(os_error: OSError, port: int, *, tls: bool = False) -> _Failure:
    if isinstance(os_error, ssl.SSLError):
        return _Failure("tls_error", f"port {port}: TLS handshake failed ({_ssl_reason(os_error)})", fatal=True)
    if tls and isinstance(os_error, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return _Failure("tls_error", f"port {port}: connection closed during the TLS handshake", fatal=True)
    if isinstance(os_error, ConnectionRefusedError):
        return _Failure("refused", f"port {port} refused the connection", fatal=True)
    if isinstance(os_error, TimeoutError):
        return _Failure("timeout", f"no answer on port {port}", fatal=True)
    if os_error.errno in _UNREACHABLE:
        return _Failure("unreachable", f"port {port}: {errno.errorcode.get(os_error.errno, 'unreachable')}", fatal=True)
    return _Failure("error", f"port {port}: {type(os_error).__name__}", fatal=True)


class IsapiProber:
    """ISAPI checks of many devices over one shared, bounded keep-alive session.

    Create inside the running loop, or use as ``async with IsapiProber() as prober``.
    """

    def __init__(
        self,
        *,
        policy: IsapiPolicy | None = None,
        connections: int = 256,
        connections_per_device: int = 2,
        keepalive: float = 8.0,
        memory: DeviceMemory | None = None,
        pins: PinStore | None = None,
        ca_file: str | None = None,
        log: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self.policy = policy or IsapiPolicy()
        self.memory = memory or DeviceMemory(None)
        self._log = log or structlog.get_logger("telemetryd.probe.isapi")
        self.pins = pins if pins is not None else PinStore(None)
        """HTTPS devices' certificate pins (memory only unless given a store on a state directory)."""
        self._trust = TlsTrust(self.pins, _ca_context(ca_file))
        self._save_timer: asyncio.TimerHandle | None = None
        self._reported_problem = ""
        self._report_pin_problem()
        # keepalive below Hikvision's "Keep-Alive: timeout=10" so we never reuse a socket the camera is closing.
        connector = aiohttp.TCPConnector(
            limit=connections, limit_per_host=connections_per_device, keepalive_timeout=keepalive, ttl_dns_cache=None
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),  # thousands of devices: no shared cookie jar to grow or leak across
            timeout=aiohttp.ClientTimeout(total=None),  # per-request deadlines are ours (asyncio.timeout)
            headers={"User-Agent": "telemetryd"},
        )
        # Event streams hold a connection each for hours: their own pool, unbounded in total (one per
        # device), so 10,000 open streams never starve the checks of the bounded pool above.
        self.stream_session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=1, ttl_dns_cache=None),
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None),
            headers={"User-Agent": "telemetryd"},
        )
        self._clients: dict[tuple[str, int, bool], IsapiClient] = {}

    def client(self, device_host: str, port: int = 80, *, tls: bool = False) -> IsapiClient:
        """The device's client, created on first use (it carries the login state between checks)."""
        key = (device_host, port, tls)
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = IsapiClient(
                self.session,
                device_host,
                port,
                policy=self.policy,
                trust=self._trust if tls else None,
                memory=self.memory,
                stream_session=self.stream_session,
                log=self._log,
            )
        return client

    async def check(
        self, device_host: str, port: int, username: str, password: str, kind: Kind, *, now: float, tls: bool = False
    ) -> IsapiHealth:
        """Health of one camera or NVR (over HTTPS when `tls`); never raises for device faults."""
        found = await self.client(device_host, port, tls=tls).check(username, password, kind, now=now)
        if self.pins.dirty:
            self._save_pins_soon()
        if self.pins.problem is not None or self._reported_problem:
            self._report_pin_problem()  # the file went bad (or was fixed) while we run
        return found

    def _save_pins_soon(self) -> None:
        """Write new pins within a second: 10,000 new HTTPS devices cost a few writes, not 10,000."""
        if self._save_timer is None:
            self._save_timer = asyncio.get_running_loop().call_later(1.0, self._save_pins)

    def _save_pins(self) -> None:
        self._save_timer = None
        try:
            self.pins.save()
        except OSError as exc:  # kept in memory; the next new pin tries again
            self._log.error("isapi_pin_save_failed", path=str(self.pins.path), error=f"{type(exc).__name__}: {exc}")
        self._report_pin_problem()

    def _report_pin_problem(self) -> None:
        """Log a corrupt pin file once per distinct problem, not at every save attempt."""
        problem = self.pins.problem
        text = str(problem) if problem is not None else ""
        if problem is not None and text != self._reported_problem:
            self._log.error("isapi_pin_file_unreadable", path=str(problem.path), why=problem.why)
        self._reported_problem = text

    async def axpro_status(
        self, device_host: str, port: int, username: str, password: str, *, now: float, timeout: float | None = None
    ) -> AxProStatus:
        """Areas and zones of one AX PRO alarm panel; never raises for device faults."""
        return await self.client(device_host, port).axpro_status(username, password, now=now, timeout=timeout)

    def forget(self, device_host: str, port: int = 80, tls: bool = False) -> None:
        """Drop a removed device's session state (on config reload).

        What it rejected stays in `memory`: were it added back, the same credential is still not sent.
        """
        self._clients.pop((device_host, port, tls), None)

    def reconfigure(self, settings: Settings, inventory: Inventory) -> None:
        """A reload: the new policy for every device, and removed devices forgotten.

        A device that stays keeps its login state, so a rejected credential is still never retried.
        """
        self.policy = policy_from(settings)
        self._trust = TlsTrust(self.pins, _ca_context(settings.probes.isapi.ca_file))
        self.pins.refresh()  # pins forgotten with `telemetryd pins forget`, a pin file fixed by hand
        self._report_pin_problem()
        kept = isapi_endpoints(inventory)
        for key in list(self._clients):
            if key not in kept:
                self.forget(*key)
            else:
                client = self._clients[key]
                client.policy = self.policy
                if client.trust is not None:
                    client.trust = self._trust

    @property
    def devices(self) -> int:
        """Devices whose login state is held."""
        return len(self._clients)

    async def close(self) -> None:
        """Write what was learnt (pins not yet written, capabilities), close the shared session."""
        self.memory.flush(force=True)
        if self._save_timer is not None:
            self._save_timer.cancel()
        if self.pins.dirty:
            self._save_pins()
        await self.stream_session.close()
        await self.session.close()

    async def __aenter__(self) -> IsapiProber:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def credential_pair(secret: str) -> tuple[str, str]:
    """A camera secret file holds ``user:password`` (the password may contain colons)."""
    username, sep, password = secret.partition(":")
    if not sep or not username:
        raise ValueError("the secret must hold user:password on one line")
    return username, password


def isapi_endpoints(inventory: Inventory) -> set[tuple[str, int, bool]]:
    """(host, port, over TLS) of every ISAPI and AX PRO probe in the inventory."""
    return {
        (device.host, _port(spec), spec.tls)
        for device in inventory.devices_by_id.values()
        for spec in device.probes
        if spec.protocol in ("isapi", "axpro")
    }


def _port(spec: ProbeSpec) -> int:
    return spec.port or (443 if spec.tls else 80)


def _ca_context(ca_file: str | None) -> ssl.SSLContext | None:
    """Chain and IP SAN verification against the bundle (Python matches an IP address against IP SANs only)."""
    return ssl.create_default_context(cafile=ca_file) if ca_file else None


@asynccontextmanager
async def open_prober(settings: Settings) -> AsyncIterator[IsapiProber]:
    """The shared ISAPI session for the life of the context (the daemon's, or one `telemetryd probe`)."""
    state = settings.state_path
    if state is None:
        structlog.get_logger("telemetryd.probe.isapi").warning(
            "isapi_memory_volatile",
            detail="no state_directory: a restart forgets which credentials devices rejected and which certificates",
        )
    memory, pins = DeviceMemory(state), PinStore.in_state(state)
    async with IsapiProber(
        policy=policy_from(settings), memory=memory, pins=pins, ca_file=settings.probes.isapi.ca_file
    ) as prober:
        yield prober


def policy_from(settings: Settings) -> IsapiPolicy:
    """The client's policy from `probes.isapi`."""
    options = settings.probes.isapi
    return IsapiPolicy(
        request_timeout=min(5.0, options.timeout),
        check_timeout=options.timeout,
        max_body_bytes=options.max_body_bytes,
        max_clock_drift=options.max_clock_drift,
        recording_window=options.recording_window,
    )


async def _login_for(device: Device, ctx: ProbeContext) -> tuple[str, str] | ProbeResult:
    if ctx.resource(IsapiProber) is None or ctx.secrets is None:
        return ProbeResult(False, 0.0, "error", "the ISAPI client is not running")
    try:
        return credential_pair(ctx.secrets.get(device.credentials or ""))
    except SecretMissing as exc:
        return ProbeResult(False, 0.0, "credentials", str(exc))
    except ValueError as exc:
        return ProbeResult(False, 0.0, "credentials", f"credential {device.credentials!r}: {exc}")


async def probe(device: Device, spec: ProbeSpec, ctx: ProbeContext) -> ProbeResult:
    """ISAPI health of a camera or NVR (``isapi:80``, ``isapis:443``); the finding rides on the result into State."""
    login = await _login_for(device, ctx)
    if isinstance(login, ProbeResult):
        return login
    prober = ctx.resource(IsapiProber)
    assert prober is not None
    kind: Literal["camera", "nvr"] = "nvr" if device.kind is DeviceKind.NVR else "camera"
    found = await prober.check(device.host, _port(spec), *login, kind, now=time.time(), tls=spec.tls)
    if found.replaced_identity is not None and found.identity is not None:
        _log_identity_change(ctx, device, found.replaced_identity, found.identity)
    return found.probe_result()


def _log_identity_change(ctx: ProbeContext, device: Device, old: xml.DeviceIdentity, new: xml.DeviceIdentity) -> None:
    """A new serial means the device was swapped; new firmware means someone upgraded it: both worth a line."""
    fields = {"school": device.school_id, "device": device.id, "kind": device.kind.value}
    if old.serial != new.serial:
        ctx.log.warning("device_replaced", old_serial=old.serial, new_serial=new.serial, model=new.model, **fields)
    elif old.firmware != new.firmware:
        ctx.log.warning("device_firmware_changed", old=old.firmware, new=new.firmware, **fields)


async def probe_axpro(device: Device, spec: ProbeSpec, ctx: ProbeContext) -> ProbeResult:
    """Status of a Hikvision AX PRO alarm panel (``axpro:80``)."""
    login = await _login_for(device, ctx)
    if isinstance(login, ProbeResult):
        return login
    prober = ctx.resource(IsapiProber)
    assert prober is not None
    status = await prober.axpro_status(
        device.host, spec.port or 80, *login, now=time.time(), timeout=ctx.settings.probes.axpro.timeout
    )
    return status.probe_result()
