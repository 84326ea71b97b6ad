"""Simulated Hikvision cameras and NVRs speaking ISAPI, for tests and the ISAPI bench.

One aiohttp application serves every device; each device has its own listening socket
(an ephemeral port on 127.0.0.1 by default, or 127.x.y.z:80 when run as root), and the
handler finds the device by the socket the request arrived on. Behaviour follows
/work/shared/reference/hikvision-isapi.md:

* real digest auth (MD5, SHA-256 or both offered, qop=auth, nonces that expire with
  ``stale=TRUE``); unauthenticated requests get a challenge and never count;
* lockout as the manuals describe: `max_failures` bad digests from one address lock
  it for `lock_seconds`; while locked even the right password gets the `userCheck`
  lock body, and (as some firmware does) every attempt restarts the lock;
* firmware variants that differ in namespace, version, uptime format, time format,
  401 body and features;
* faults set on a `SimDevice` at any time: offline channels with a reason, disk states,
  clock offset, channels that stopped recording, video loss, a changed password,
  slow replies, garbage or hostile XML (billion laughs, 100,000 or 5,000 deep,
  45,000 attributes, 120,000 elements), a lazily streamed 1 GB body, an endless stream;
* models that lack endpoints (`lacks`: 403 notSupport, or 404 on old firmware), DVRs with
  analog inputs some of which read NO VIDEO.

HTTPS (`SimDevice.tls`): the device serves TLS with its own self-signed certificate, made
at `add` with the `openssl` command (`sim.certs`); `swap_certificate` gives it another (a
replaced camera, or an interceptor) and drops its open connections, as a new box would.
Firmware that forces HTTPS is a second, plain device with `redirect_to` set.

Counters on each device (`failed_logins`, `authenticated`, `requests`, `asked` per path) let tests assert
exactly how a client behaved. `clock` is injectable so lock expiry can be tested
without sleeping.

Run alone for the bench: ``python -m telemetryd.sim.hikvision --cameras 450 --nvrs 50``
prints one JSON line with the devices, serves until stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Literal

import uvloop
from aiohttp import web

from telemetryd.probes.isapi.digest import ALGORITHMS, DigestChallenge, parse_authorization, response
from telemetryd.probes.isapi.xml import SessionLoginCap, session_login_password
from telemetryd.sim.certs import CertPair, self_signed

SimKind = Literal["camera", "nvr", "axpro"]
BodyFault = Literal[
    "garbage", "truncated", "billion_laughs", "huge", "huge_unsized", "endless", "trickle",
    "deep", "nested", "wide", "flat",
]  # fmt: skip

HUGE_BYTES = 1 << 30
_CHUNK = b"<x>" + b"A" * (64 * 1024 - 7) + b"</x>"
_BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>
<DeviceInfo><model>&lol4;</model></DeviceInfo>"""
_DEEP = b"<DeviceInfo><model>DS-2CD</model>" + b"<a>" * 100_000 + b"</a>" * 100_000 + b"</DeviceInfo>"
"""100,000 nested elements in 700 KB: under the 1 MiB body cap, a 0.14-0.27 s parse where nothing bounds it."""
_NESTED = b"<DeviceInfo><model>DS-2CD</model>" + b"<a>" * 5_000 + b"</a>" * 5_000 + b"</DeviceInfo>"
"""5,000 nested elements in 35 KB: small, and deeper than any ISAPI document."""
_WIDE = b"<DeviceInfo " + b" ".join(b'a%d="v"' % n for n in range(45_000)) + b"><model>DS-2CD</model></DeviceInfo>"
"""One element with 45,000 attributes (480 KB)."""
_FLAT = b"<DeviceInfo><model>DS-2CD</model>" + b"<x/>" * 120_000 + b"</DeviceInfo>"
"""120,000 sibling elements (480 KB)."""
_HOSTILE_XML = {"deep": _DEEP, "nested": _NESTED, "wide": _WIDE, "flat": _FLAT}
_HTML_401 = (
    b"<!DOCTYPE html><html><head><title>Document Error: Unauthorized</title></head>"
    b"<body><h2>Access Error: 401 -- Unauthorized</h2><p>Authentication Error</p></body></html>"
)
_HTML_404 = (
    b"<html><head><title>Document Error: Not Found</title></head>"
    b"<body><h2>Access Error: 404 -- Not Found</h2></body></html>"
)


@dataclass(frozen=True, slots=True)
class Firmware:
    """How one firmware line writes its replies."""

    name: str
    namespace: str | None
    version: str = "2.0"
    algorithms: tuple[str, ...] = ("MD5",)
    """Digest challenges offered, one WWW-Authenticate header each, in this order."""
    localized_uptime: bool = False
    naive_local_time: bool = False
    """localTime without an offset: the reader must apply timeZone."""
    html_401: bool = False
    """Old firmware: 401 bodies are the HTML error page, not `userCheck`."""
    working_status: bool = False
    """Answers /ISAPI/System/workingstatus?format=json."""
    nonce_max_uses: int | None = None
    """Reject a nonce's use beyond this with a 401 `userCheck` and no challenge (access-terminal behaviour)."""
    storage_namespace: str | None = None
    """hddList in a different namespace than its storage parent, as captured."""
    event_json: bool = False
    """The event stream writes JSON parts (newer firmware) instead of XML."""
    event_images: bool = False
    """Each event is followed by an image/jpeg snapshot part."""
    event_lengths: bool = True
    """Parts carry Content-Length; some firmware leaves it out (a part then ends at the next boundary)."""
    says_stale: bool = True
    """An expired nonce gets ``stale=TRUE``; some firmware answers ``stale=FALSE`` (a plain 401, not counted)."""


HIK20 = "http://www.hikvision.com/ver20/XMLSchema"
HIK10 = "http://www.hikvision.com/ver10/XMLSchema"
ISAPI20 = "http://www.isapi.org/ver20/XMLSchema"
STDCGI10 = "http://www.std-cgi.com/ver10/XMLSchema"

FIRMWARE: dict[str, Firmware] = {
    f.name: f
    for f in (
        Firmware("ipc-v5", HIK20, storage_namespace=HIK10),
        Firmware("ipc-old", STDCGI10, "1.0", localized_uptime=True, naive_local_time=True, html_401=True),
        Firmware("ipc-sha256", None, algorithms=("SHA-256", "MD5")),
        Firmware("ipc-strict-nonce", ISAPI20, algorithms=("SHA-256",), nonce_max_uses=2),
        Firmware("ipc-quiet-expiry", HIK20, says_stale=False),
        Firmware("ipc-json-events", ISAPI20, algorithms=("SHA-256", "MD5"), event_json=True, event_lengths=False),
        Firmware("nvr-snapshots", HIK20, working_status=True, event_images=True),
        Firmware("nvr-isapi", ISAPI20, algorithms=("SHA-256", "MD5"), working_status=True, storage_namespace=HIK10),
        Firmware("nvr-v4", HIK10, "1.0", localized_uptime=True),
    )
}


@dataclass
class SimDevice:
    """One simulated camera or NVR: identity, credential, faults and what it has seen."""

    kind: SimKind = "camera"
    firmware: Firmware = FIRMWARE["ipc-v5"]
    username: str = "admin"
    password: str = "Sch00l-cam"
    model: str = ""
    serial: str = ""
    firmware_version: str = "V5.7.14"
    channels: int = 4
    realm: str = "IP Camera(C2183)"
    boot_time: float = 0.0
    """Sim-clock time of the last boot (0: set when added)."""
    # faults
    offline_channels: dict[int, str] = field(default_factory=dict)
    """Channel → chanDetectResult (netUnreachable, errorUserNameOrPasswd, …)."""
    disk_status: str = "ok"
    disks: int = 1
    clock_offset: float = 0.0
    time_mode: str = "NTP"
    idle_channels: set[int] = field(default_factory=set)
    """Channels without recordings in the recent past."""
    stale_channels: set[int] = field(default_factory=set)
    """Channels a search answers with one match whose segment ended three weeks ago (seen on real NVRs)."""
    video_loss: set[int] = field(default_factory=set)
    delay: float = 0.0
    body_faults: dict[str, BodyFault] = field(default_factory=dict)
    """ISAPI path → hostile or broken body served there."""
    status_overrides: dict[str, int] = field(default_factory=dict)
    """ISAPI path → HTTP status answered with a ResponseStatus body."""
    lacks: set[str] = field(default_factory=set)
    """ISAPI paths this model (or the user's role) does not offer: 403 ``notSupport`` as current
    firmware answers, the HTML 404 page on old firmware (`Firmware.html_401`)."""
    analog_inputs: int = 0
    """A DVR or hybrid recorder: analog inputs 1..n in `System/Video/inputs/channels`."""
    no_video_inputs: set[int] = field(default_factory=set)
    """Analog inputs whose signal is gone: ``resDesc`` reads NO VIDEO."""
    heartbeat_interval: float = 10.0
    """The event stream's heartbeat (``videoloss`` / ``inactive``, as the firmware sends it)."""
    event_repeat: float = 1.0
    """An active event is sent again this often while it lasts (``activePostCount`` counting up)."""
    active_events: dict[tuple[str, int], int] = field(default_factory=dict)
    """(eventType, channel) → posts so far, while active; set with `raise_event`, ended with `clear_event`."""
    stream_fault: str = ""
    """``endless_part``: the event stream sends one part that never ends."""
    redirect_to: str = ""
    """Answer every request with a 302 to this base URL plus the path, as firmware that
    forces HTTPS does (`http://` → `https://`), or a hijacked address would."""
    tls: bool = False
    """Serve HTTPS with `certificate` (a self-signed one made at `add` when not given)."""
    certificate: CertPair | None = None
    # lockout
    max_failures: int = 7
    lock_seconds: float = 1800.0
    lock_restarts_on_retry: bool = True
    nonce_lifetime: float = 60.0
    # counters
    requests: int = 0
    asked: dict[str, int] = field(default_factory=dict)
    """ISAPI path → requests that reached it authenticated."""
    authenticated: int = 0
    failed_logins: int = 0
    nonce_refusals: int = 0
    """Right password on a nonce the device no longer takes (expired or used up): not failed logins."""
    locked_rejections: int = 0
    _failures: dict[str, int] = field(default_factory=dict)
    _locked_until: dict[str, float] = field(default_factory=dict)
    _nonces: dict[str, tuple[float, int]] = field(default_factory=dict)
    # AX PRO
    zones: int = 4
    zone_status: dict[int, str] = field(default_factory=dict)
    """Zone → status other than online (offline, breakDown, heartbeatAbnormal…)."""
    tampered_zones: set[int] = field(default_factory=set)
    _login_caps: dict[str, SessionLoginCap] = field(default_factory=dict)
    _web_sessions: set[str] = field(default_factory=set)
    _outboxes: list[list[tuple[str, int, bool]]] = field(default_factory=list)
    _wakers: list[asyncio.Event] = field(default_factory=list)
    _stream_generation: int = 0
    _connections: set[asyncio.BaseTransport] = field(default_factory=set)

    def locked_until(self, address: str = "127.0.0.1") -> float | None:
        """When the lock on `address` lifts (sim clock), if locked."""
        return self._locked_until.get(address)

    def raise_event(self, event_type: str, channel: int = 1) -> None:
        """The device detects an event (``shelteralarm``, ``videoloss``, ``diskerror``…): streams send it now."""
        self.active_events[(event_type, channel)] = 0
        for outbox in self._outboxes:
            outbox.append((event_type, channel, True))
        self._wake()

    def clear_event(self, event_type: str, channel: int = 1) -> None:
        """The event ends: streams send its ``inactive`` once."""
        self.active_events.pop((event_type, channel), None)
        for outbox in self._outboxes:
            outbox.append((event_type, channel, False))
        self._wake()

    def drop_streams(self) -> None:
        """Close every open event stream of the device (a reboot, a switch port flap)."""
        self._stream_generation += 1
        self._wake()

    @property
    def open_streams(self) -> int:
        """Event streams open now."""
        return len(self._outboxes)

    def _wake(self) -> None:
        for waker in self._wakers:
            waker.set()

    def reboot(self, at: float) -> None:
        """Restart: uptime starts again from zero."""
        self.boot_time = at


class HikvisionSim:
    """Many simulated Hikvision devices in one process."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.devices: dict[tuple[str, int], SimDevice] = {}
        self._app = web.Application()
        self._app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(self._app, access_log=None, handle_signals=False)
        self._started = False
        self._sites: list[web.SockSite] = []
        self._tls: dict[tuple[str, int], ssl.SSLContext] = {}
        self._cert_dir: tempfile.TemporaryDirectory[str] | None = None

    async def add(self, device: SimDevice, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Start serving `device` on host:port (port 0: an ephemeral one); returns where it listens."""
        if not host.startswith("127."):
            raise ValueError(f"the simulator binds loopback addresses only, not {host}")
        if not self._started:
            await self._runner.setup()
            self._started = True
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
        where = sock.getsockname()
        if not device.boot_time:
            device.boot_time = self.clock() - 173358
        if not device.model:
            device.model = "DS-7608NXI-I2" if device.kind == "nvr" else "DS-2CD2386G2-IU"
        if not device.serial:
            device.serial = f"{device.model}20260101AAWR{len(self.devices):09d}"
        context = None
        if device.tls:
            if device.certificate is None:
                device.certificate = await asyncio.to_thread(self_signed, self.cert_directory, where[0])
            context = self._tls[(where[0], where[1])] = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(device.certificate.cert, device.certificate.key)
        site = web.SockSite(self._runner, sock, ssl_context=context)
        await site.start()
        self._sites.append(site)
        self.devices[(where[0], where[1])] = device
        return where[0], where[1]

    @property
    def cert_directory(self) -> Path:
        """Where this simulator's certificates are made (removed on `close`)."""
        if self._cert_dir is None:
            self._cert_dir = tempfile.TemporaryDirectory(prefix="hiksim-certs-")
        return Path(self._cert_dir.name)

    async def swap_certificate(self, where: tuple[str, int], certificate: CertPair | None = None) -> CertPair:
        """Serve another certificate at `where` (a new self-signed one unless given); open connections are dropped."""
        device = self.devices[where]
        context = self._tls[where]
        if certificate is None:
            certificate = await asyncio.to_thread(self_signed, self.cert_directory, where[0])
        context.load_cert_chain(certificate.cert, certificate.key)  # new handshakes only
        device.certificate = certificate
        for transport in list(device._connections):
            transport.close()
        device._connections.clear()
        return certificate

    async def close(self) -> None:
        """Stop every device (its event streams first: they would hold the shutdown until their next write)."""
        for device in self.devices.values():
            device.drop_streams()
        if self._started:
            await self._runner.cleanup()
        if self._cert_dir is not None:
            self._cert_dir.cleanup()
            self._cert_dir = None

    async def __aenter__(self) -> HikvisionSim:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- request handling ------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        host, port = request.transport.get_extra_info("sockname")[:2]
        device = self.devices[(host, port)]
        device.requests += 1
        if device.tls:
            if len(device._connections) > 64:  # keep-alive sockets of a long bench: forget the closed
                device._connections = {t for t in device._connections if not t.is_closing()}
            device._connections.add(request.transport)
        if device.delay:
            await asyncio.sleep(device.delay)
        if device.redirect_to:
            raise web.HTTPFound(device.redirect_to + request.path_qs)
        if device.kind == "axpro":
            return await self._axpro(device, request)
        denial = self._authenticate(device, request)
        if denial is not None:
            return denial
        return await self._serve(device, request)

    def _challenge_headers(self, device: SimDevice, *, stale: bool = False) -> list[tuple[str, str]]:
        now = self.clock()
        nonce = os.urandom(16).hex() + f":{int(now * 1000)}"
        device._nonces[nonce] = (now, 0)
        if len(device._nonces) > 4096:  # a bench runs long: forget the oldest
            for old in list(device._nonces)[:2048]:
                del device._nonces[old]
        return [
            (
                "WWW-Authenticate",
                f'Digest qop="auth", realm="{device.realm}", nonce="{nonce}", algorithm="{algorithm}", '
                f'stale="{"TRUE" if stale else "FALSE"}"',
            )
            for algorithm in device.firmware.algorithms
        ]

    def _unauthorized(
        self, device: SimDevice, address: str, *, challenge: bool = True, stale: bool = False
    ) -> web.Response:
        locked_until = device._locked_until.get(address)
        now = self.clock()
        if device.firmware.html_401 and locked_until is None:
            body, content_type = _HTML_401, "text/html"
        else:
            left = max(0, device.max_failures - device._failures.get(address, 0))
            lock = locked_until is not None
            body = (
                f"<userCheck><statusValue>401</statusValue><statusString>Unauthorized</statusString>"
                f"<lockStatus>{'lock' if lock else 'unlock'}</lockStatus>"
                f"<unlockTime>{int(locked_until - now) if lock and locked_until else 0}</unlockTime>"
                f"<retryLoginTime>{0 if lock else left}</retryLoginTime></userCheck>"
            ).encode()
            content_type = "application/xml"
        headers = self._challenge_headers(device, stale=stale) if challenge else []
        response = web.Response(status=401, body=body, content_type=content_type)
        for name, value in headers:
            response.headers.add(name, value)
        return response

    def _authenticate(self, device: SimDevice, request: web.Request) -> web.Response | None:
        """None when the request may be served; otherwise the 401 to send."""
        address = request.remote or "?"
        now = self.clock()
        locked_until = device._locked_until.get(address)
        if locked_until is not None and now >= locked_until:
            del device._locked_until[address]
            device._failures[address] = 0
            locked_until = None
        header = request.headers.get("Authorization", "")
        if locked_until is not None:
            if header:
                device.locked_rejections += 1
                if device.lock_restarts_on_retry:
                    device._locked_until[address] = now + device.lock_seconds
            return self._unauthorized(device, address, challenge=not header)
        if not header:
            return self._unauthorized(device, address)
        params = parse_authorization(header)
        nonce = params.get("nonce", "")
        algorithm = params.get("algorithm", "MD5")
        try:
            nc = int(params.get("nc", ""), 16)
            challenge = DigestChallenge(realm=device.realm, nonce=nonce, algorithm=algorithm, qop="auth")
            expected = response(
                challenge,
                request.method,
                request.path_qs,
                username=device.username,
                password=device.password,
                nc=nc,
                cnonce=params.get("cnonce", ""),
            )
        except (ValueError, KeyError):
            expected = ""
        valid = (
            bool(expected)
            and algorithm.upper() in {a.upper() for a in device.firmware.algorithms}
            and algorithm.upper() in ALGORITHMS
            and params.get("username") == device.username
            and params.get("realm") == device.realm
            and params.get("uri") == request.path_qs
            and params.get("response") == expected
        )
        issued = device._nonces.get(nonce)
        if valid and (issued is None or now - issued[0] > device.nonce_lifetime):
            device.nonce_refusals += 1  # right password, old nonce: not a failed login
            return self._unauthorized(device, address, stale=device.firmware.says_stale)
        if valid and issued is not None:
            limit = device.firmware.nonce_max_uses
            if limit is not None and issued[1] >= limit:
                device.nonce_refusals += 1
                return self._unauthorized(device, address, challenge=False)  # not counted, but no challenge either
            device._nonces[nonce] = (issued[0], issued[1] + 1)
            device._failures[address] = 0
            device.authenticated += 1
            return None
        device.failed_logins += 1
        failures = device._failures[address] = device._failures.get(address, 0) + 1
        if failures >= device.max_failures:
            device._locked_until[address] = now + device.lock_seconds
        return self._unauthorized(device, address)

    async def _serve(self, device: SimDevice, request: web.Request) -> web.StreamResponse:
        path = request.path
        device.asked[path] = device.asked.get(path, 0) + 1
        if path in device.lacks:
            if device.firmware.html_401:
                return web.Response(status=404, body=_HTML_404, content_type="text/html")
            return _status(device, 403, path, "Invalid Operation", "notSupport")
        fault = device.body_faults.get(path)
        if fault is not None:
            return await _hostile(request, fault)
        if path in device.status_overrides:
            return _status(device, device.status_overrides[path], path, "Device Error", "deviceError")
        now = self.clock()
        fw = device.firmware
        if path == "/ISAPI/System/deviceInfo":
            device_type = "NVR" if device.kind == "nvr" else "IPCamera"
            return _xml(
                fw,
                "DeviceInfo",
                f"<deviceName>{device.kind}-{device.serial[-4:]}</deviceName><deviceID>6aff4000</deviceID>"
                f"<model>{device.model}</model><serialNumber>{device.serial}</serialNumber>"
                f"<macAddress>14:92:3c:4f:f8:42</macAddress><firmwareVersion>{device.firmware_version}</firmwareVersion>"
                f"<firmwareReleasedDate>build 231028</firmwareReleasedDate><deviceType>{device_type}</deviceType>",
            )
        if path == "/ISAPI/System/status":
            uptime = int(now - device.boot_time)
            if fw.localized_uptime:
                days, rest = divmod(uptime, 86400)
                text = f"{days}天{rest // 3600}时{rest % 3600 // 60}分{rest % 60}秒"
            else:
                text = str(uptime)
            return _xml(
                fw,
                "DeviceStatus",
                f"<currentDeviceTime>{_device_time(device, now, naive=False)}</currentDeviceTime>"
                f"<deviceUpTime>{text}</deviceUpTime><CPUList><CPU><cpuUtilization>12</cpuUtilization></CPU></CPUList>"
                "<MemoryList><Memory><memoryDescription>DDR Memory</memoryDescription>"
                "<memoryUsage>387.093750</memoryUsage><memoryAvailable>562.992188</memoryAvailable></Memory></MemoryList>",
            )
        if path == "/ISAPI/System/time":
            return _xml(
                fw,
                "Time",
                f"<timeMode>{device.time_mode}</timeMode>"
                f"<localTime>{_device_time(device, now, naive=fw.naive_local_time)}</localTime>"
                "<timeZone>CST-8:00:00</timeZone>",
            )
        if path == "/ISAPI/Event/notification/alertStream":
            return await _alert_stream(device, request)
        if path == "/ISAPI/Security/userCheck":
            return _xml(fw, "userCheck", "<statusValue>200</statusValue><statusString>OK</statusString>")
        if device.kind != "nvr":
            if path.startswith("/ISAPI/ContentMgmt/InputProxy") or path == "/ISAPI/System/workingstatus":
                return _status(device, 403, path, "Invalid Operation", "notSupport")
        elif path == "/ISAPI/ContentMgmt/InputProxy/channels/status":
            entries = "".join(
                f"<InputProxyChannelStatus><id>{n}</id><sourceInputPortDescriptor><ipAddress>10.0.0.{n}</ipAddress>"
                f"</sourceInputPortDescriptor><online>{'false' if n in device.offline_channels else 'true'}</online>"
                f"<chanDetectResult>{device.offline_channels.get(n, 'connect')}</chanDetectResult>"
                "</InputProxyChannelStatus>"
                for n in range(1, device.channels + 1)
            )
            return _xml(fw, "InputProxyChannelStatusList", entries)
        elif path == "/ISAPI/System/Video/inputs/channels":
            if not device.analog_inputs:
                return _status(device, 403, path, "Invalid Operation", "notSupport")
            entries = "".join(
                f'<VideoInputChannel version="2.0"><id>{n}</id><inputPort>{n}</inputPort>'
                f"<videoInputEnabled>true</videoInputEnabled><name>Camera {n:02d}</name><videoFormat>PAL</videoFormat>"
                f"<portType>Analog</portType>"
                f"<resDesc>{'NO VIDEO' if n in device.no_video_inputs else '1920*1080P25'}</resDesc>"
                "</VideoInputChannel>"
                for n in range(1, device.analog_inputs + 1)
            )
            return _xml(fw, "VideoInputChannelList", entries)
        elif path == "/ISAPI/System/workingstatus" and fw.working_status:
            return web.json_response(
                {
                    "WorkingStatus": {
                        "ChanStatus": [
                            {
                                "chanNo": n,
                                "online": 0 if n in device.offline_channels else 1,
                                "record": 0 if n in device.idle_channels or n in device.offline_channels else 1,
                                "recordStatus": 2 if n in device.offline_channels else 0,
                                "signal": 1 if n in device.video_loss else 0,
                                "linkNum": 1,
                                "bitRate": 4096,
                            }
                            for n in range(1, device.channels + 1)
                        ],
                        "HDStatus": [
                            {"hdNo": n, "status": 0 if device.disk_status == "ok" else 2}
                            for n in range(1, device.disks + 1)
                        ],
                    }
                }
            )
        elif path == "/ISAPI/ContentMgmt/search" and request.method == "POST":
            return _search(device, fw, await request.read(), now)
        if path == "/ISAPI/ContentMgmt/Storage":
            inner_ns = fw.storage_namespace
            xmlns = f' xmlns="{inner_ns}"' if inner_ns else ""
            hdds = "".join(
                f'<hdd version="1.0"><id>{n}</id><hddName>hdd{n}</hddName><hddPath></hddPath><hddType>SATA</hddType>'
                f"<status>{device.disk_status}</status><capacity>3815447</capacity><freeSpace>0</freeSpace>"
                "<property>RW</property><manufacturer>unknow</manufacturer></hdd>"
                for n in range(1, device.disks + 1)
            )
            return _xml(
                fw, "storage", f'<hddList version="1.0"{xmlns} size="8">{hdds}</hddList><workMode>group</workMode>'
            )
        return web.Response(status=404, body=_HTML_404, content_type="text/html")

    async def _axpro(self, device: SimDevice, request: web.Request) -> web.Response:
        """AX PRO: cookie session login with the iterated-SHA-256 password, then JSON status."""
        address = request.remote or "?"
        now = self.clock()
        path = request.path
        if path == "/ISAPI/Security/sessionLogin/capabilities":
            cap = SessionLoginCap(
                session_id=os.urandom(16).hex(),
                challenge=os.urandom(16).hex(),
                iterations=100,
                irreversible=True,
                salt=os.urandom(32).hex(),
                salt2=os.urandom(32).hex(),
                session_id_version="2.1",
            )
            device._login_caps[cap.session_id] = cap
            return _xml(
                device.firmware,
                "SessionLoginCap",
                f"<sessionID>{cap.session_id}</sessionID><challenge>{cap.challenge}</challenge>"
                f"<iterations>{cap.iterations}</iterations><isIrreversible>true</isIrreversible>"
                f"<salt>{cap.salt}</salt><salt2>{cap.salt2}</salt2><sessionIDVersion>2.1</sessionIDVersion>",
            )
        if path == "/ISAPI/Security/sessionLogin" and request.method == "POST":
            locked_until = device._locked_until.get(address)
            if locked_until is not None and now >= locked_until:
                del device._locked_until[address]
                device._failures[address] = 0
            elif locked_until is not None:
                device.locked_rejections += 1
                if device.lock_restarts_on_retry:
                    device._locked_until[address] = now + device.lock_seconds
                return self._unauthorized(device, address, challenge=False)
            text = (await request.read()).decode(errors="replace")
            fields = {name: _between(text, name) for name in ("userName", "password", "sessionID")}
            issued = device._login_caps.pop(fields["sessionID"], None)
            expected = session_login_password(issued, device.username, device.password) if issued else None
            if fields["userName"] == device.username and expected is not None and fields["password"] == expected:
                device._failures[address] = 0
                device.authenticated += 1
                token = os.urandom(16).hex()
                device._web_sessions.add(token)
                response = _xml(device.firmware, "SessionLogin", "<statusValue>200</statusValue>")
                response.headers.add("Set-Cookie", f"WebSession_5f1a={token}; path=/; HttpOnly")
                return response
            device.failed_logins += 1
            failures = device._failures[address] = device._failures.get(address, 0) + 1
            if failures >= device.max_failures:
                device._locked_until[address] = now + device.lock_seconds
            return self._unauthorized(device, address, challenge=False)
        cookie = request.headers.get("Cookie", "")
        if cookie.partition("=")[2] not in device._web_sessions:
            return self._unauthorized(device, address, challenge=False)
        if path == "/ISAPI/SecurityCP/status/subSystems":
            return web.json_response(
                {
                    "SubSysList": [
                        {"SubSys": {"id": 1, "arming": "away", "alarm": False, "enabled": True, "name": "School"}}
                    ]
                }
            )
        if path == "/ISAPI/SecurityCP/status/zones":
            zones = [
                {
                    "Zone": {
                        "id": n,
                        "name": f"Zone {n}",
                        "status": device.zone_status.get(n, "online"),
                        "sensorStatus": "normal",
                        "tamperEvident": n in device.tampered_zones,
                        "bypassed": False,
                        "armed": True,
                        "alarm": False,
                        "charge": "normal",
                        "signal": 120,
                    }
                }
                for n in range(1, device.zones + 1)
            ]
            return web.json_response({"ZoneList": zones})
        return web.Response(status=404, body=_HTML_404, content_type="text/html")


def _between(text: str, tag: str) -> str:
    start = text.find(f"<{tag}>")
    end = text.find(f"</{tag}>")
    return text[start + len(tag) + 2 : end] if 0 <= start < end else ""


def _device_time(device: SimDevice, now: float, *, naive: bool) -> str:
    local = datetime.fromtimestamp(now + device.clock_offset, timezone(timedelta(hours=8)))
    return local.strftime("%Y-%m-%dT%H:%M:%S") if naive else local.isoformat(timespec="seconds")


def _xml(fw: Firmware, root: str, inner: str) -> web.Response:
    xmlns = f' xmlns="{fw.namespace}"' if fw.namespace else ""
    body = f'<?xml version="1.0" encoding="UTF-8"?>\n<{root} version="{fw.version}"{xmlns}>{inner}</{root}>\n'
    return web.Response(body=body.encode(), content_type="application/xml")


def _status(device: SimDevice, status: int, path: str, text: str, sub: str) -> web.Response:
    code = {"notSupport": 4, "deviceError": 3}.get(sub, 9)
    body = (
        f"<requestURL>{path}</requestURL><statusCode>{code}</statusCode>"
        f"<statusString>{text}</statusString><subStatusCode>{sub}</subStatusCode>"
    )
    response = _xml(device.firmware, "ResponseStatus", body)
    response.set_status(status)
    return response


def _search(device: SimDevice, fw: Firmware, query: bytes, now: float) -> web.Response:
    text = query.decode(errors="replace")
    start = text.find("<trackID>")
    track = int(text[start + 9 : text.find("</trackID>")]) if start >= 0 else 0
    channel = track // 100
    recorded = 1 <= channel <= max(device.channels, device.analog_inputs) and channel not in device.idle_channels
    recorded = recorded and channel not in device.no_video_inputs
    recorded = recorded and channel not in device.offline_channels
    if not recorded:
        return _xml(
            fw,
            "CMSearchResult",
            "<searchID>x</searchID><responseStatus>true</responseStatus>"
            "<responseStatusStrg>NO MATCHES</responseStatusStrg><numOfMatches>0</numOfMatches><matchList/>",
        )
    ago = 21 * 86400 if channel in device.stale_channels else 0
    end = datetime.fromtimestamp(now - ago - 30, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    begin = datetime.fromtimestamp(now - ago - 1830, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return _xml(
        fw,
        "CMSearchResult",
        "<searchID>x</searchID><responseStatus>true</responseStatus><responseStatusStrg>MORE</responseStatusStrg>"
        f"<numOfMatches>1</numOfMatches><matchList><searchMatchItem><sourceID>x</sourceID><trackID>{track}</trackID>"
        f"<timeSpan><startTime>{begin}</startTime><endTime>{end}</endTime></timeSpan></searchMatchItem></matchList>",
    )


_JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 20_000 + b"\xff\xd9"


def _alert_part(device: SimDevice, event_type: str, channel: int, active: bool, posts: int) -> bytes:
    fw = device.firmware
    when = datetime.now(timezone(timedelta(hours=8))).isoformat(timespec="seconds")
    state = "active" if active else "inactive"
    if fw.event_json:
        body = json.dumps(
            {
                "ipAddress": "10.0.0.1",
                "portNo": 80,
                "protocol": "HTTP",
                "channelID": channel,
                "dateTime": when,
                "activePostCount": posts,
                "eventType": event_type,
                "eventState": state,
                "eventDescription": f"{event_type} alarm",
            }
        ).encode()
        content_type = 'application/json; charset="UTF-8"'
    else:
        xmlns = f' xmlns="{fw.namespace}"' if fw.namespace else ""
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\r\n<EventNotificationAlert version="2.0"{xmlns}>\r\n'
            f"<ipAddress>10.0.0.1</ipAddress>\r\n<portNo>80</portNo>\r\n<protocol>HTTP</protocol>\r\n"
            f"<macAddress>14:92:3c:4f:f8:42</macAddress>\r\n<channelID>{channel}</channelID>\r\n"
            f"<dateTime>{when}</dateTime>\r\n<activePostCount>{posts}</activePostCount>\r\n"
            f"<eventType>{event_type}</eventType>\r\n<eventState>{state}</eventState>\r\n"
            f"<eventDescription>{event_type} alarm</eventDescription>\r\n</EventNotificationAlert>\r\n"
        ).encode()
        content_type = 'application/xml; charset="UTF-8"'
    part = _part(fw, content_type, body)
    if fw.event_images and active:
        part += _part(fw, "image/jpeg", _JPEG)
    return part


def _part(fw: Firmware, content_type: str, body: bytes) -> bytes:
    length = f"Content-Length: {len(body)}\r\n" if fw.event_lengths else ""
    return f"--boundary\r\nContent-Type: {content_type}\r\n{length}\r\n".encode() + body + b"\r\n"


async def _alert_stream(device: SimDevice, request: web.Request) -> web.StreamResponse:
    """`/ISAPI/Event/notification/alertStream`: heartbeats, active events repeated, inactive ones once."""
    response = web.StreamResponse(headers={"Content-Type": "multipart/mixed; boundary=boundary"})
    await response.prepare(request)
    outbox: list[tuple[str, int, bool]] = []
    waker = asyncio.Event()
    device._outboxes.append(outbox)
    device._wakers.append(waker)
    generation = device._stream_generation
    loop = asyncio.get_running_loop()
    last_heartbeat = last_repeat = -1e9
    try:
        if device.stream_fault == "endless_part":
            await response.write(b"--boundary\r\nContent-Type: application/xml\r\n\r\n")
            while True:
                await response.write(_CHUNK)
        while device._stream_generation == generation:
            now = loop.time()
            data = b""
            if now - last_heartbeat >= device.heartbeat_interval:
                data += _alert_part(device, "videoloss", 1, False, 0)
                last_heartbeat = now
            if device.active_events and now - last_repeat >= device.event_repeat:
                for key in device.active_events:
                    device.active_events[key] += 1
                    data += _alert_part(device, key[0], key[1], True, device.active_events[key])
                last_repeat = now
            while outbox:
                event_type, channel, active = outbox.pop(0)
                if active:
                    continue  # sent with the repeats above, right now
                data += _alert_part(device, event_type, channel, False, 0)
            if data:
                await response.write(data)
            waker.clear()
            pause = device.heartbeat_interval - (now - last_heartbeat)
            if device.active_events:
                pause = min(pause, device.event_repeat - (now - last_repeat))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waker.wait(), timeout=max(0.01, pause))
            if device.active_events and any(count == 0 for count in device.active_events.values()):
                last_repeat = -1e9  # a new event goes out at once
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        device._outboxes.remove(outbox)
        device._wakers.remove(waker)
    return response


async def _hostile(request: web.Request, fault: BodyFault) -> web.StreamResponse:
    """Broken or hostile replies; large ones are generated lazily, never held in memory."""
    if fault == "garbage":
        return web.Response(body=b"\x00\xff<<not xml at all>>\x89PNG", content_type="application/xml")
    if fault == "truncated":
        return web.Response(body=b'<?xml version="1.0"?><DeviceInfo><model>DS-2CD', content_type="application/xml")
    if fault == "billion_laughs":
        return web.Response(body=_BILLION_LAUGHS, content_type="application/xml")
    if fault in _HOSTILE_XML:
        return web.Response(body=_HOSTILE_XML[fault], content_type="application/xml")
    response = web.StreamResponse(headers={"Content-Type": "application/xml"})
    if fault == "huge":
        response.content_length = HUGE_BYTES
    await response.prepare(request)
    sent = 0
    with contextlib.suppress(ConnectionError, asyncio.CancelledError):
        while fault in {"endless", "trickle"} or sent < HUGE_BYTES:
            if fault == "trickle":
                await response.write(b"<")
                await asyncio.sleep(0.2)
                continue
            await response.write(_CHUNK)
            sent += len(_CHUNK)
    return response


# --- stand-alone process for the bench ----------------------------------------------------------


async def _serve_fleet(
    cameras: int, nvrs: int, password: str, heartbeat: float, events_per_minute: float, *, own_hosts: bool = False
) -> None:
    sim = HikvisionSim()
    listed = []
    variants = ["ipc-v5", "ipc-sha256", "ipc-old"]
    for index in range(cameras + nvrs):
        nvr = index >= cameras
        firmware = FIRMWARE["nvr-isapi" if nvr else variants[index % len(variants)]]
        device = SimDevice(
            kind="nvr" if nvr else "camera", firmware=firmware, password=password, heartbeat_interval=heartbeat
        )
        # own_hosts: one loopback address per device on port 80, as a city has (no ephemeral ports taken).
        where = (f"127.20.{index // 250}.{index % 250 + 1}", 80) if own_hosts else ("127.0.0.1", 0)
        host, port = await sim.add(device, *where)
        listed.append({"host": host, "port": port, "kind": "nvr" if nvr else "camera"})
    print(json.dumps({"devices": listed}), flush=True)
    if events_per_minute > 0:
        asyncio.get_running_loop().create_task(_event_schedule(sim, 60.0 / events_per_minute))
    loop = asyncio.get_running_loop()
    closed = asyncio.Event()
    loop.add_reader(sys.stdin.fileno(), closed.set)  # the parent closing our stdin ends us
    try:
        await closed.wait()
    finally:
        await sim.close()


def raise_file_limit(wanted: int) -> int:
    """Open-file limit of at least `wanted` where allowed (root may raise the hard limit); returns the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limit in (max(wanted, soft), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, max(limit, hard)))
            return limit
        except (ValueError, OSError):
            continue
    return soft


async def _event_schedule(sim: HikvisionSim, every: float) -> None:
    """Tampering on a random device every `every` seconds, each ending 5 s later (the bench's event load)."""
    rng = random.Random(12)
    devices = list(sim.devices.values())
    while True:
        await asyncio.sleep(every)
        device = rng.choice(devices)
        device.raise_event("shelteralarm", 1)
        asyncio.get_running_loop().call_later(5.0, device.clear_event, "shelteralarm", 1)


def main() -> None:
    """Serve a fleet of simulated cameras and NVRs on 127.0.0.1 until stdin closes."""
    parser = argparse.ArgumentParser(description="simulated Hikvision cameras/NVRs on 127.0.0.1")
    parser.add_argument("--cameras", type=int, default=450)
    parser.add_argument("--nvrs", type=int, default=50)
    parser.add_argument("--password", default="Sch00l-cam")
    parser.add_argument("--heartbeat", type=float, default=10.0, help="event stream heartbeat, seconds")
    parser.add_argument("--events-per-minute", type=float, default=0.0, help="tampering events across the fleet")
    parser.add_argument("--own-hosts", action="store_true", help="each device on its own 127.20.x.y:80 (root)")
    args = parser.parse_args()
    raise_file_limit(4 * (args.cameras + args.nvrs))  # a listening and an accepted socket per device, and spare
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(
            _serve_fleet(
                args.cameras, args.nvrs, args.password, args.heartbeat, args.events_per_minute, own_hosts=args.own_hosts
            )
        )


if __name__ == "__main__":
    main()
