"""The daemon's own monitoring gaps: a heartbeat file in the spool directory.

While running, the daemon rewrites ``heartbeat.json`` every `heartbeat_interval`
(atomically: write, fsync, rename). At start-up the previous file says when the last
run was last alive and whether it stopped cleanly; the time from then to now is a
monitoring gap, recorded in the history so reports never count it as uptime. After a
crash the gap starts at the last heartbeat, up to one interval before the crash: too
long rather than too short.

The directory is also locked (flock) for the life of the process, so two daemons, say
two shards started with the same settings, cannot share a spool and a heartbeat.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path

from telemetryd.history.records import MonitoringGap

HEARTBEAT_FILE = "heartbeat.json"
LOCK_FILE = "lock"
MIN_GAP_SECONDS = 1.0


class SpoolDirectoryBusy(Exception):
    """Another process holds the spool directory's lock; the message is safe to log."""


@dataclass(frozen=True, slots=True)
class LastRun:
    """What the previous run's heartbeat file says."""

    alive: float
    clean: bool
    shard: str


def gap_since(last: LastRun | None, started: float) -> MonitoringGap | None:
    """The gap between the previous run's last sign of life and this start, if there is one."""
    if last is None or started - last.alive < MIN_GAP_SECONDS:
        return None
    reason = "daemon stopped" if last.clean else "daemon not running (crash, kill or power loss; from last heartbeat)"
    return MonitoringGap(last.alive, started, last.shard, reason)


class Liveness:
    """The heartbeat file and the directory lock of one spool directory."""

    def __init__(self, directory: Path, shard: str) -> None:
        self.directory = directory
        self.shard = shard
        self.path = directory / HEARTBEAT_FILE
        self._lock_fd: int | None = None

    def lock(self) -> None:
        """Take the directory for this process (released when it exits, however it exits)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpoolDirectoryBusy(
                f"another telemetryd is using {self.directory} (history.spool_directory)"
            ) from None
        self._lock_fd = fd

    def unlock(self) -> None:
        """Release the directory lock."""
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)

    def last_run(self) -> LastRun | None:
        """The previous run's heartbeat; None on the first run or when the file is unreadable."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return LastRun(float(data["alive"]), bool(data["clean"]), str(data.get("shard", "")))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def beat(self, now: float, *, clean: bool = False) -> None:
        """Record that this run was alive at `now` (and, at shutdown, that it stopped cleanly)."""
        temporary = self.path.with_suffix(".tmp")
        payload = json.dumps({"alive": now, "clean": clean, "shard": self.shard}).encode()
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self.path)
