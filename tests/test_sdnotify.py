"""sd_notify never blocks the event loop, even when nobody reads the socket."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from telemetryd.sdnotify import Notifier


def test_messages_arrive_as_key_value_lines(tmp_path: Path) -> None:
    """notify(ready=1, status=...) returns true and the socket gets `READY=1` and `STATUS=3 schools` on two lines."""
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(path)
        assert Notifier({"NOTIFY_SOCKET": path}).notify(ready=1, status="3 schools")
        assert receiver.recv(4096) == b"READY=1\nSTATUS=3 schools"


def test_a_receiver_that_stops_reading_does_not_block_the_sender(tmp_path: Path) -> None:
    """200 notifications to a socket nobody reads finish within 2 s, the first sent and the last dropped."""
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(path)
        notifier = Notifier({"NOTIFY_SOCKET": path})
        started = time.monotonic()
        sent = [notifier.notify(watchdog=1) for _ in range(200)]
        assert time.monotonic() - started < 2.0  # a blocking send would hang on the 11th datagram
        assert sent[0] and not sent[-1]  # the queue filled up; later messages are dropped, not waited on


def test_without_notify_socket_nothing_is_sent() -> None:
    """With no NOTIFY_SOCKET notify() returns false, and WATCHDOG_USEC=2000000 gives a 1 s watchdog interval (half)."""
    assert not Notifier({}).notify(ready=1)
    assert Notifier({"WATCHDOG_USEC": "2000000"}).watchdog_interval == 1.0
