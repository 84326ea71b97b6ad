"""Hostile peers against the two HTTP listeners: the exporter (:9817) and the school's speed-test responder.

Rows of issue 13 pinned here:

- (4) 1,100 idle connections to the responder at LimitNOFILE 1024: the legitimate speed test's
  requests still all get through;
- (8) 5,000 idle connections to the exporter at a lowered descriptor limit: no EMFILE, the
  control device never misjudged, /metrics answers every scrape;
- (9) anyone who reaches the exporter: without credentials 401 on every path, and
  /api/v1/status does not leak a camera's name or address;
- (11) a malformed HTTP request: one structured log line, no plain-text traceback.

The idle floods keep their connections: one the server closes is opened again (a patient
attacker), so eviction must keep making room for the legitimate client all through the flood.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import resource
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
import yaml

from telemetryd.sim.certs import certificate_authority, issued_by
from tests.daemon_process import DaemonProcess, metric
from tests.helpers import write_config
from tests.hostile.harness import (
    CONTROL_DEVICE,
    ControlDevice,
    Watch,
    assert_control_healthy,
    control_school,
    control_settings,
    hostile_daemon,
)

pytestmark = [pytest.mark.hostile, pytest.mark.integration]

TOKEN = "hostile-suite-speedtest-token"
USER, PASSWORD = "prometheus", "scrape-secret-Ahv3ohsh"
EXPORTER_NOFILE = 1024
"""The daemon's descriptor limit in the exporter flood (the shipped unit has 65536)."""


class IdleFlood:
    """`count` TCP connections to host:port that send nothing; any the server closes is opened again."""

    def __init__(self, host: str, port: int, count: int) -> None:
        self.address = (host, port)
        self.count = count
        self.sockets: list[socket.socket] = []
        self.opened = 0
        self.closed_by_server = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="idle-flood", daemon=True)

    def __enter__(self) -> IdleFlood:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < self.count + 512:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, self.count + 4096), hard))
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for sock in self.sockets:
            sock.close()

    def _open(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex(self.address)
        self.opened += 1
        return sock

    def _run(self) -> None:
        while len(self.sockets) < self.count and not self._stop.is_set():
            self.sockets.append(self._open())
            if len(self.sockets) % 100 == 0:
                time.sleep(0.02)  # let the server accept: past its backlog, SYNs wait seconds for a retry
        while not self._stop.wait(0.2):
            # A socket the server closed turns readable (EOF or reset): open another in its place.
            poller = select.poll()
            by_fd = {sock.fileno(): index for index, sock in enumerate(self.sockets)}
            for fd in by_fd:
                poller.register(fd, select.POLLIN)
            for fd, _events in poller.poll(0):
                sock = self.sockets[by_fd[fd]]
                try:
                    gone = sock.recv(1) == b""
                except BlockingIOError:
                    gone = False
                except OSError:
                    gone = True
                if gone:
                    self.closed_by_server += 1
                    sock.close()
                    self.sockets[by_fd[fd]] = self._open()


@contextlib.contextmanager
def nofile(limit: int) -> Iterator[None]:
    """This process's soft descriptor limit lowered while children are started (they inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def basic(user: str = USER, password: str = PASSWORD) -> str:
    """An Authorization header value for basic auth."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def get(
    address: str,
    path: str,
    *,
    authorization: str | None = None,
    timeout: float = 5.0,
    tls: ssl.SSLContext | None = None,
) -> tuple[int, str]:
    """GET http(s)://address/path; (status, body) whatever the status."""
    request = urllib.request.Request(f"{'https' if tls else 'http'}://{address}{path}")
    if authorization:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=tls) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def control_downtime(records: list[dict[str, Any]]) -> float:
    """Seconds the control device spent judged down (from device_down to device_up records, or to now)."""
    down_at: float | None = None
    total = 0.0
    for record in records:
        if record.get("device") != CONTROL_DEVICE:
            continue
        stamp = _timestamp(record)
        if record.get("event") == "device_down" and down_at is None:
            down_at = stamp
        elif record.get("event") == "device_up" and down_at is not None:
            total += stamp - down_at
            down_at = None
    if down_at is not None:
        total += time.time() - down_at
    return total


def _timestamp(record: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(record["timestamp"])).timestamp()


def _lag_over(text: str, bound: float) -> float | None:
    count = metric(text, "telemetryd_event_loop_lag_seconds_count")
    within = metric(text, "telemetryd_event_loop_lag_seconds_bucket", le=str(bound))
    return None if count is None or within is None else count - within


def emfile_lines(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Log records that speak of running out of descriptors."""
    return [r for r in records if "Too many open files" in repr(r) or "EMFILE" in repr(r)]


# ---------------------------------------------------------------------------------------------- (8) exporter


def test_idle_flood_on_the_exporter_leaves_probes_and_scrapes_alone(tmp_path: Path) -> None:
    """5,000 idle connections at RLIMIT_NOFILE 1024: no EMFILE, control device up, every scrape answered."""
    with ControlDevice() as control, contextlib.ExitStack() as stack:
        with nofile(EXPORTER_NOFILE):
            daemon = stack.enter_context(hostile_daemon(tmp_path, control))
        host, _, port = daemon.address.rpartition(":")
        with Watch(daemon) as watch, IdleFlood(host, int(port), 5000) as flood:
            time.sleep(12)
        records = daemon.records()
        figures = {
            "scrapes_ok": len(watch.up),
            "scrapes_failed": len(watch.failures),
            "control_down_s": round(control_downtime(records), 1),
            "emfile_lines": len(emfile_lines(records)),
            "flood_opened": flood.opened,
            "closed_by_server": flood.closed_by_server,
            "rss_mb": round((metric(watch.last_text, "process_resident_memory_bytes") or 0) / 1e6, 1),
            "lag_over_0.1s": _lag_over(watch.last_text, 0.1),
            "lag_over_0.05s": _lag_over(watch.last_text, 0.05),
        }
        print("figures:", figures)
        assert not emfile_lines(records), emfile_lines(records)[:3]
        assert not watch.failures, f"{len(watch.failures)} of {len(watch.failures) + len(watch.up)} scrapes failed"
        assert_control_healthy(daemon, control, watch)
        text = daemon.scrape()
        assert metric(text, "telemetryd_http_connection_limit") == 256.0
        assert (metric(text, "telemetryd_http_connections") or 0) <= 256
        assert (metric(text, "telemetryd_http_connections_closed_total", reason="evicted") or 0) > 4000


def test_idle_flood_on_the_tls_exporter_holds_handshakes_to_the_cap(tmp_path: Path) -> None:
    """The same flood against HTTPS with basic auth: the silent sockets never send a ClientHello."""
    client = _web_config(tmp_path, tls=True)
    with ControlDevice() as control, contextlib.ExitStack() as stack:
        with nofile(EXPORTER_NOFILE):
            daemon = stack.enter_context(authenticated_daemon(tmp_path, control, [], tls=client))
        host, _, port = daemon.address.rpartition(":")

        def scrape_text() -> str:
            status, text = get(daemon.address, "/metrics", authorization=basic(), tls=client)
            assert status == 200, status
            return text

        with Watch(daemon, scrape_text=scrape_text) as watch, IdleFlood(host, int(port), 5000) as flood:
            time.sleep(10)
        records = daemon.records()
        lag = {"lag_over_0.1s": _lag_over(watch.last_text, 0.1), "lag_over_0.05s": _lag_over(watch.last_text, 0.05)}
        print(
            "figures:",
            {"scrapes_ok": len(watch.up), "scrapes_failed": len(watch.failures), "opened": flood.opened, **lag},
        )
        assert not emfile_lines(records), emfile_lines(records)[:3]
        assert not watch.failures, f"{len(watch.failures)} of {len(watch.failures) + len(watch.up)} scrapes failed"
        assert_control_healthy(daemon, control, watch)
        text = scrape_text()
        assert (metric(text, "telemetryd_http_connections") or 0) <= 256
        assert (metric(text, "telemetryd_http_connections_closed_total", reason="evicted") or 0) > 4000


# ---------------------------------------------------------------------------------------------- (9) auth


def _web_config(tmp_path: Path, *, tls: bool = False) -> ssl.SSLContext | None:
    """web-config.yml with basic auth (and TLS); the client context that trusts its certificate."""
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
    body: dict[str, Any] = {"basic_auth_users": {USER: hashed}}
    client = None
    if tls:
        ca = certificate_authority(tmp_path)
        server = issued_by(ca, tmp_path, "127.0.0.1")
        body["tls_server_config"] = {"cert_file": server.cert.name, "key_file": server.key.name}
        client = ssl.create_default_context(cafile=str(ca.cert))
    (tmp_path / "web-config.yml").write_text(yaml.safe_dump(body))
    return client


def _camera_school(tmp_path: Path) -> dict[str, Any]:
    device = {"id": "sec-cam-7", "kind": "camera", "host": "127.0.0.77", "name": "Gate camera", "probes": ["tcp:9"]}
    return {"id": "sec", "name": "School sec", "district": "Abay", "devices": [device]}


@contextlib.contextmanager
def authenticated_daemon(
    tmp_path: Path, control: ControlDevice, schools: list[dict[str, Any]], *, tls: ssl.SSLContext | None = None
) -> Iterator[DaemonProcess]:
    """`hostile_daemon` with web-config.yml: the control device's first "up" is read with credentials."""
    settings = control_settings(web_config_file="web-config.yml")
    config = write_config(tmp_path, [control_school(control), *schools], **settings)
    with DaemonProcess(config, tee=tmp_path / "daemon.log") as daemon:
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(OSError):
                text = get(daemon.address, "/metrics", authorization=basic(), tls=tls)[1]
                if metric(text, CONTROL_UP, device=CONTROL_DEVICE) == 1:
                    break
            assert time.monotonic() < deadline, f"control device never came up\n{daemon.output()}"
            time.sleep(0.1)
        yield daemon


CONTROL_UP = "telemetryd_device_up"


def test_exporter_without_credentials_gets_401_and_learns_nothing(tmp_path: Path) -> None:
    """With a web config, every path answers 401 without the right credentials; the status never leaks."""
    _web_config(tmp_path)
    with ControlDevice() as control, authenticated_daemon(tmp_path, control, [_camera_school(tmp_path)]) as d:
        address = d.address
        # The harness's start-up scrape had no credentials; a Watch with them judges the control device.
        with Watch(d, scrape_text=lambda: get(address, "/metrics", authorization=basic())[1]) as watch:
            for path in ("/metrics", "/api/v1/status", "/api/v1/status?school=sec", "/", "/healthz", "/-/ready"):
                for authorization in (None, basic(password="wrong"), basic(user="root"), "Bearer x", "Basic !!"):
                    status, body = get(address, path, authorization=authorization)
                    assert status == 401, (path, authorization, status)
                    assert "sec-cam-7" not in body and "127.0.0.77" not in body and "Gate camera" not in body
            status, body = get(address, "/api/v1/status", authorization=basic())
            assert status == 200 and "sec-cam-7" in body
            time.sleep(1.5)
        assert_control_healthy(d, control, watch)
        text = get(address, "/metrics", authorization=basic())[1]
        assert (metric(text, "telemetryd_http_unauthorized_total") or 0) >= 30
        summaries = [r for r in d.records() if r.get("event") == "http_unauthorized"]
        assert len(summaries) == 1, summaries  # rate-limited: one line in the first minute
        assert PASSWORD not in d.text() and "wrong" not in d.text()


# ---------------------------------------------------------------------------------------------- (11) malformed


BAD_REQUESTS = [
    b"GET /metrics HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 64 + b"\r\n\r\n",  # TLS to a plain port
    b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n",
]


def _send_raw(address: str, payload: bytes) -> bytes:
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(payload)
        chunks = []
        with contextlib.suppress(OSError):
            while chunk := sock.recv(4096):
                chunks.append(chunk)
        return b"".join(chunks)


def test_malformed_request_is_one_structured_line(tmp_path: Path) -> None:
    """A malformed request gets 400 and one JSON line; more within the minute are counted, not logged."""
    with ControlDevice() as control, hostile_daemon(tmp_path, control) as daemon, Watch(daemon) as watch:
        before = len(daemon.text().splitlines())
        answer = _send_raw(daemon.address, BAD_REQUESTS[0])
        assert answer.split(b" ", 2)[1] == b"400", answer[:80]
        time.sleep(0.5)
        for payload in BAD_REQUESTS[1:] * 20:
            _send_raw(daemon.address, payload)
        time.sleep(1.0)
        new_lines = daemon.text().splitlines()[before:]
        unparsed = [r for r in daemon.records() if r.get("event") == "unparsed"]
        assert not unparsed, unparsed[:5]
        assert "Traceback" not in "\n".join(new_lines)
        bad = [r for r in daemon.records() if r.get("event") == "http_bad_requests"]
        print("figures:", {"bad_request_lines": len(bad), "unparsed_lines": len(unparsed), "line": bad[:1]})
        assert len(bad) == 1, bad
        assert bad[0]["count"] == 1 and bad[0]["listener"] == "exporter"
        assert (metric(daemon.scrape(), "telemetryd_http_bad_requests_total") or 0) >= 41
    assert_control_healthy(daemon, control, watch)


# ---------------------------------------------------------------------------------------------- (4) responder


@contextlib.contextmanager
def responder_process(tmp_path: Path, nofile_limit: int) -> Iterator[str]:
    """`telemetryd responder` as a child at `nofile_limit` descriptors; yields its base URL."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")

    command = [sys.executable, "-m", "telemetryd", "responder", "--listen", "127.0.0.1:0", "--token-file"]
    with nofile(nofile_limit):  # the child inherits the limit, as from the unit's LimitNOFILE
        process = subprocess.Popen(
            [*command, str(token_file)],
            stdout=subprocess.PIPE,
            stderr=(tmp_path / "responder.log").open("wb"),
            text=True,
        )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("ready "), (line, (tmp_path / "responder.log").read_text())
        yield f"http://{line.split()[1]}"
    finally:
        process.kill()
        process.wait()


async def _legitimate_test(base: str, requests: int) -> tuple[int, list[str]]:
    """The NOC's speed test as requests: downloads and uploads over four kept-alive streams."""
    through, errors = 0, []
    timeout = aiohttp.ClientTimeout(total=5)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    payload = b"u" * 65536
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=4), timeout=timeout) as session:

        async def one(index: int) -> None:
            nonlocal through
            try:
                if index % 2:
                    async with session.post(f"{base}/upload", data=payload, headers=headers) as response:
                        ok = response.status == 200 and (await response.json())["bytes"] == len(payload)
                else:
                    async with session.get(f"{base}/download?bytes=262144", headers=headers) as response:
                        ok = response.status == 200 and len(await response.read()) == 262144
                through += ok
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")

        await asyncio.gather(*(one(i) for i in range(requests)))
    return through, errors


def test_idle_flood_on_the_responder_leaves_the_speed_test_through(tmp_path: Path) -> None:
    """1,100 idle connections at LimitNOFILE 1024: all 110 requests of the legitimate speed test get through."""
    with responder_process(tmp_path, 1024) as base:
        host, _, port = base.removeprefix("http://").rpartition(":")
        with IdleFlood(host, int(port), 1100) as flood:
            time.sleep(2)
            through, errors = asyncio.run(_legitimate_test(base, 110))
        print("figures:", {"through": through, "of": 110, "flood_opened": flood.opened, "errors": errors[:3]})
        assert through == 110, f"{through} of 110 through; {errors[:3]}"
        log = (tmp_path / "responder.log").read_text()
        assert "Too many open files" not in log and "Traceback" not in log
