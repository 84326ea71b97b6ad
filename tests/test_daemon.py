"""Daemon lifecycle in a real process: sd_notify, SIGHUP reload (good and bad), SIGTERM deadline,
start-up failures closing what was opened (port taken, spool busy), and a second SIGTERM forcing the exit."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from telemetryd.config import load_config
from telemetryd.daemon import Daemon

from .daemon_process import DaemonProcess, metric
from .helpers import school, write_config


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
    with DaemonProcess(config, notify_dir=tmp_path) as daemon:
        started = daemon.started()
        assert started["devices"] == 2
        messages = "\n".join(daemon.notifications())
        assert "READY=1" in messages and "STATUS=" in messages

        time.sleep(0.8)
        text = daemon.scrape()
        assert metric(text, "telemetryd_device_up", device="s1-cam-1") == 1.0

        # A broken inventory: the daemon says why, keeps running the old one.
        inventory = tmp_path / "inventory" / "schools.yaml"
        good_text = inventory.read_text()
        broken = yaml.safe_load(good_text)
        broken["schools"][0]["devices"][1]["host"] = "127.0.0.999"
        inventory.write_text(yaml.safe_dump(broken, sort_keys=False))
        daemon.send_signal(signal.SIGHUP)
        failed = daemon.wait_event("reload_failed")
        assert any("schools.yaml:" in p and "host" in p and "127.0.0.999" in p for p in failed["problems"])
        text = daemon.scrape()
        assert metric(text, "telemetryd_config_last_reload_successful") == 0.0
        assert metric(text, "telemetryd_device_up", device="s1-cam-1") == 1.0

        # A good inventory with a third camera: swapped in, probed.
        write_config(tmp_path, _schools(listener, 3), **_settings())
        daemon.send_signal(signal.SIGHUP)
        reloaded = daemon.wait_event("reloaded")
        assert (reloaded["devices"], reloaded["was_devices"]) == (3, 2)
        time.sleep(0.8)
        text = daemon.scrape()
        assert metric(text, "telemetryd_config_last_reload_successful") == 1.0
        assert metric(text, "telemetryd_device_up", device="s1-cam-2") == 1.0
        assert "WATCHDOG=1" in "\n".join(daemon.notifications())

        stop_sent = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=5) == 0
        assert time.monotonic() - stop_sent < 3.5
        daemon.wait_event("stopped")
        assert any("STOPPING=1" in m for m in daemon.notifications(timeout=1.0))


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
    closed = _free_port()
    config = write_config(tmp_path, _schools(closed, 1), **_settings())
    with DaemonProcess(config) as daemon:
        down = daemon.wait_event("device_down")
        assert (down["school"], down["device"], down["kind"]) == ("s1", "s1-cam-0", "camera")
        assert down["reason"] == f"tcp:{closed} refused"
        time.sleep(1.0)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=5) == 0
        assert [r["event"] for r in daemon.records()].count("device_down") == 1


# ---------------------------------------------------------------------- start-up failures and forced stop


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _history(spool: Path) -> dict[str, Any]:
    """History into a PostgreSQL that is not there (a closed loopback port): the daemon spools."""
    return {"dsn": f"postgresql://telemetryd@127.0.0.1:{_free_port()}/telemetryd", "spool_directory": str(spool)}


def _icmp_router() -> list[dict[str, Any]]:
    return [school("s1", [{"id": "s1-router", "kind": "router", "host": "127.0.0.1", "probes": ["icmp"]}])]


def _events(daemon: DaemonProcess) -> list[str]:
    return [str(r.get("event")) for r in daemon.records()]


def _bind_both(port: int) -> None:
    """Bind `port` on 127.0.0.1 for TCP (listening) and UDP; raises OSError while anything else holds it."""
    with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        tcp.bind(("127.0.0.1", port))
        tcp.listen(1)
        udp.bind(("127.0.0.1", port))


def test_listen_port_taken_exits_1_and_releases_spool_and_sia_port(tmp_path: Path) -> None:
    """With /metrics' port taken the daemon exits 1 at once, frees the SIA port and the spool lock, and a second
    run on the same spool directory then starts."""
    spool = tmp_path / "spool"
    sia_port = _free_port()
    holder = socket.create_server(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    config = write_config(
        tmp_path,
        _icmp_router(),
        listen=f"127.0.0.1:{port}",
        history=_history(spool),
        sia={"listen": f"127.0.0.1:{sia_port}"},
        shutdown_timeout="20s",
    )
    try:
        with DaemonProcess(config) as first:
            failed = first.wait_event("listen_failed", timeout=20)
            failed_at = time.monotonic()
            assert failed["address"] == f"127.0.0.1:{port}"
            assert first.wait(timeout=10) == 1
            assert time.monotonic() - failed_at < 3.0, "closing what start-up had opened took too long"
            events = _events(first)
            # Everything before the HTTP server was opened: ICMP, history (spool locked), the DC-09 receiver.
            assert {"history_started", "sia_supervision_started"} <= set(events), events
            assert "started" not in events and "unparsed" not in events, first.output()
    finally:
        holder.close()
    _bind_both(sia_port)  # nothing of the first run still listens on the DC-09 port

    with DaemonProcess(config) as second:
        assert second.started()["listen"] == f"127.0.0.1:{port}"
        assert "history_spool_unusable" not in _events(second)
        assert second.terminate(timeout=25) == 0


def test_failed_start_up_in_process_leaves_no_descriptor_thread_or_lock(tmp_path: Path) -> None:
    """Run in this process, a start-up failing at the HTTP port returns 1 with every descriptor opened before it
    (ICMP socket, spool lock, DC-09 sockets, event loop) closed and no thread left behind."""
    with socket.create_server(("127.0.0.1", 0)) as holder:
        port = holder.getsockname()[1]
        config = load_config(
            write_config(
                tmp_path,
                _icmp_router(),
                listen=f"127.0.0.1:{port}",
                history=_history(tmp_path / "spool"),
                sia={"listen": "127.0.0.1:0"},
            )
        )
        fds_before = set(os.listdir("/proc/self/fd"))
        threads_before = set(threading.enumerate())
        assert asyncio.run(Daemon(config).run()) == 1
        assert set(os.listdir("/proc/self/fd")) == fds_before
        assert set(threading.enumerate()) <= threads_before
    # flock is per open file: a descriptor still open in this process would make this fail.
    fd = os.open(tmp_path / "spool" / "lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def test_busy_spool_directory_exits_1_and_the_first_daemon_keeps_running(tmp_path: Path) -> None:
    """A second daemon on a spool directory the first one holds exits 1; the first keeps serving."""
    spool = tmp_path / "spool"
    history = _history(spool)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    config_a = write_config(tmp_path / "a", _icmp_router(), history=history)
    config_b = write_config(tmp_path / "b", _icmp_router(), history=history)
    with DaemonProcess(config_a) as first:
        first.started()
        with DaemonProcess(config_b) as second:
            unusable = second.wait_event("history_spool_unusable", timeout=20)
            assert "another telemetryd" in unusable["error"]
            assert second.wait(timeout=10) == 1
            assert "started" not in _events(second) and "unparsed" not in _events(second), second.output()
        time.sleep(0.5)
        assert first.proc.poll() is None
        assert metric(first.scrape(), "telemetryd_history_db_up") == 0.0  # still serving, still spooling
        assert first.terminate(timeout=15) == 0


@pytest.fixture
def silent_rtsp() -> Iterator[tuple[int, threading.Event]]:
    """A loopback port that accepts connections and never answers (a hung camera stream server)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    accepted = threading.Event()
    connections: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            connections.append(conn)
            accepted.set()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], accepted
    finally:
        stop.set()
        thread.join()
        for conn in connections:
            conn.close()
        server.close()


def test_second_sigterm_forces_the_exit_of_a_slow_shutdown(
    tmp_path: Path, silent_rtsp: tuple[int, threading.Event]
) -> None:
    """A second SIGTERM while shutdown waits for a hung probe makes the daemon exit 1 at once, cleanly."""
    port, accepted = silent_rtsp
    devices = [{"id": "s1-cam-1", "kind": "camera", "host": "127.0.0.1", "probes": [f"rtsp:{port}"]}]
    config = write_config(
        tmp_path,
        [school("s1", devices)],
        probes={"rtsp": {"interval": "60s", "timeout": "30s"}},
        shutdown_timeout="60s",
    )
    with DaemonProcess(config) as daemon:
        daemon.started()
        assert accepted.wait(10), "the RTSP probe never connected"
        daemon.send_signal(signal.SIGTERM)
        daemon.wait_event("stopping")
        time.sleep(1.5)
        assert daemon.proc.poll() is None, "shutdown should still be waiting for the hung probe"

        forced_at = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=10) == 1
        assert time.monotonic() - forced_at < 3.0
        records = daemon.records()
        forced = [r for r in records if r.get("event") == "forced_exit"]
        assert [r["signal"] for r in forced] == ["SIGTERM"]
        stopped = [r for r in records if r.get("event") == "stopped"]
        assert len(stopped) == 1 and stopped[0]["forced"] is True and stopped[0]["probes_cancelled"] == 1
        text = daemon.output(last=len(records))
        assert "Traceback" not in text and "unparsed" not in _events(daemon), text
