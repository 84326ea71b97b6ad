"""Daemon lifecycle in a real process: sd_notify, SIGHUP reload (good and bad), SIGTERM deadline."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from .helpers import school, write_config


class DaemonProcess:
    """`telemetryd run` as a child process, with its JSON log lines and sd_notify messages captured."""

    def __init__(self, config: Path, notify_dir: Path) -> None:
        self.notify_path = str(notify_dir / "notify.sock")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.notify_path)
        self.notify.settimeout(0.2)
        env = {**os.environ, "NOTIFY_SOCKET": self.notify_path, "WATCHDOG_USEC": "2000000"}
        env["WATCHDOG_PID"] = ""  # the child's pid is not known in advance; empty means "for us"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "telemetryd", "run", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.lines.put(json.loads(line))
            except json.JSONDecodeError:
                self.lines.put({"event": "unparsed", "line": line})

    def wait_event(self, event: str, timeout: float = 10.0) -> dict[str, Any]:
        """The next log record with this event name."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                record = self.lines.get(timeout=0.1)
            except queue.Empty:
                continue
            self.seen.append(record)
            if record.get("event") == event:
                return record
        raise AssertionError(f"no {event!r} log line in {timeout}s; saw {[r.get('event') for r in self.seen]}")

    def notifications(self, timeout: float = 3.0) -> list[str]:
        """sd_notify datagrams received so far (waits up to timeout for at least one)."""
        out: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                out.append(self.notify.recv(4096).decode())
            except TimeoutError:
                if out:
                    break
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.notify.close()


@pytest.fixture
def listener() -> Iterator[int]:
    """One TCP port accepting on 127.0.0.1-127.0.0.5 (stand-in cameras' RTSP ports)."""
    first = socket.socket()
    first.bind(("127.0.0.1", 0))
    port = first.getsockname()[1]
    sockets = [first]
    for last_octet in range(2, 6):
        sock = socket.socket()
        sock.bind((f"127.0.0.{last_octet}", port))
        sockets.append(sock)
    for sock in sockets:
        sock.listen(128)
        sock.settimeout(0.1)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            for sock in sockets:
                try:
                    conn, _ = sock.accept()
                    conn.close()
                except OSError:
                    continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        thread.join()
        for sock in sockets:
            sock.close()


def _scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        return str(response.read().decode())


def _metric(text: str, name: str, **labels: str) -> float | None:
    """Value of the first sample of `name` whose labels include `labels`."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return float(sample.value)
    return None


def _schools(port: int, devices: int) -> list[dict[str, Any]]:
    return [
        school(
            "s1",
            [
                {"id": f"s1-cam-{i}", "kind": "camera", "host": f"127.0.0.{i + 1}", "probes": [f"tcp:{port}"]}
                for i in range(devices)
            ],
        )
    ]


def _settings() -> dict[str, Any]:
    return {"probes": {"tcp": {"interval": "200ms", "timeout": "500ms"}}, "shutdown_timeout": "3s"}


def test_lifecycle_notify_reload_and_stop(tmp_path: Path, listener: int) -> None:
    """READY at start; a broken SIGHUP keeps the old config, a good one swaps it; SIGTERM exits 0 in time."""
    config = write_config(tmp_path, _schools(listener, 2), **_settings())
    daemon = DaemonProcess(config, tmp_path)
    try:
        started = daemon.wait_event("started")
        address = started["listen"]
        assert started["devices"] == 2
        messages = "\n".join(daemon.notifications())
        assert "READY=1" in messages and "STATUS=" in messages

        time.sleep(0.8)
        text = _scrape(address)
        assert _metric(text, "telemetryd_device_up", device="s1-cam-1") == 1.0

        # A broken inventory: the daemon says why, keeps running the old one.
        inventory = tmp_path / "inventory" / "schools.yaml"
        good_text = inventory.read_text()
        broken = yaml.safe_load(good_text)
        broken["schools"][0]["devices"][1]["host"] = "127.0.0.999"
        inventory.write_text(yaml.safe_dump(broken, sort_keys=False))
        daemon.proc.send_signal(signal.SIGHUP)
        failed = daemon.wait_event("reload_failed")
        assert any("schools.yaml:" in p and "host" in p and "127.0.0.999" in p for p in failed["problems"])
        text = _scrape(address)
        assert _metric(text, "telemetryd_config_last_reload_successful") == 0.0
        assert _metric(text, "telemetryd_device_up", device="s1-cam-1") == 1.0

        # A good inventory with a third camera: swapped in, probed.
        write_config(tmp_path, _schools(listener, 3), **_settings())
        daemon.proc.send_signal(signal.SIGHUP)
        reloaded = daemon.wait_event("reloaded")
        assert (reloaded["devices"], reloaded["was_devices"]) == (3, 2)
        time.sleep(0.8)
        text = _scrape(address)
        assert _metric(text, "telemetryd_config_last_reload_successful") == 1.0
        assert _metric(text, "telemetryd_device_up", device="s1-cam-2") == 1.0
        assert "WATCHDOG=1" in "\n".join(daemon.notifications())

        stop_sent = time.monotonic()
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=5) == 0
        assert time.monotonic() - stop_sent < 3.5
        daemon.wait_event("stopped")
        assert any("STOPPING=1" in m for m in daemon.notifications(timeout=1.0))
    finally:
        daemon.stop()


def test_invalid_config_at_start_exits_2_with_file_line(tmp_path: Path) -> None:
    """A daemon started on a broken config exits 2 and logs every problem with file and line."""
    config = write_config(tmp_path, [school("s1", [])], **_settings())
    proc = subprocess.run(
        [sys.executable, "-m", "telemetryd", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    assert record["event"] == "config_invalid"
    assert any("schools.yaml:" in p and "no devices" in p for p in record["problems"])


def test_device_going_down_is_logged_once(tmp_path: Path) -> None:
    """A camera whose port refuses is logged as device_down once, with school, device and reason."""
    with socket.socket() as probe_port:
        probe_port.bind(("127.0.0.1", 0))
        closed = probe_port.getsockname()[1]
    config = write_config(tmp_path, _schools(closed, 1), **_settings())
    daemon = DaemonProcess(config, tmp_path)
    try:
        down = daemon.wait_event("device_down")
        assert (down["school"], down["device"], down["kind"]) == ("s1", "s1-cam-0", "camera")
        assert down["reason"] == f"tcp:{closed} refused"
        time.sleep(1.0)
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=5) == 0
        while not daemon.lines.empty():
            daemon.seen.append(daemon.lines.get())
        assert [r["event"] for r in daemon.seen].count("device_down") == 1
    finally:
        daemon.stop()
