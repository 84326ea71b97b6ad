"""The DC-09 receiver's limits follow a SIGHUP: a lowered per-source cap applies to the next connection."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest

from tests.daemon_process import DaemonProcess
from tests.helpers import write_config

pytestmark = pytest.mark.integration


def test_reloaded_per_source_cap_displaces_the_idlest(tmp_path: Path) -> None:
    """With max_connections_per_source reloaded from 64 to 1, a second connection from one address displaces the
    first (the first sees EOF), where before the reload both stayed open."""
    config = write_config(tmp_path, [], sia={"listen": "127.0.0.1:0"}, shutdown_timeout="3s")
    with DaemonProcess(config) as daemon:
        port = int(daemon.wait_event("sia_receiver_listening")["port"])
        daemon.started()
        first = socket.create_connection(("127.0.0.1", port), timeout=3)
        second = socket.create_connection(("127.0.0.1", port), timeout=3)
        first.settimeout(0.5)
        with pytest.raises(TimeoutError):
            first.recv(1)  # still open: 2 of 64
        write_config(tmp_path, [], sia={"listen": "127.0.0.1:0", "max_connections_per_source": 1})
        daemon.send_signal(signal.SIGHUP)
        daemon.wait_event("reloaded")
        third = socket.create_connection(("127.0.0.1", port), timeout=3)
        second.settimeout(3)
        assert second.recv(1) == b""  # displaced (first was displaced too: the cap is one)
        for sock in (first, second, third):
            sock.close()
        assert daemon.terminate() == 0
    drops = [r for r in daemon.records() if r.get("event") == "sia_connection_dropped"]
    assert drops and drops[0]["why"] == "evicted"
