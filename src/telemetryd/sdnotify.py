"""systemd notification protocol (READY, STATUS, WATCHDOG, STOPPING) without libsystemd."""

from __future__ import annotations

import os
import socket


class Notifier:
    """Sends sd_notify messages when `NOTIFY_SOCKET` is set; does nothing otherwise."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        # An abstract socket is written with a leading '@'.
        self.address = "\0" + address[1:] if address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        watchdog_for_us = usec.isdigit() and (not pid or pid == str(os.getpid()))
        self.watchdog_interval: float | None = int(usec) / 1e6 / 2 if watchdog_for_us else None
        """Half the watchdog timeout, as sd_watchdog_enabled(3) recommends; None when off."""

    @property
    def enabled(self) -> bool:
        """True under systemd with Type=notify."""
        return bool(self.address)

    def notify(self, **fields: str | int) -> bool:
        """Send ``READY=1``-style fields; returns False when not under systemd or the send failed."""
        if not self.address:
            return False
        message = "\n".join(f"{key.upper()}={value}" for key, value in fields.items()).encode()
        try:
            # Non-blocking: a receiver that stops reading fills its queue (10 datagrams by
            # default), and a blocking send would then freeze the whole event loop.
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK) as sock:
                sock.sendto(message, self.address)
        except OSError:
            return False
        return True
