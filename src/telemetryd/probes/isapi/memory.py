"""What the ISAPI client must remember across restarts: rejected credentials, locks, capabilities.

Hikvision locks an account after 5–7 failed logins. If a restart forgot that a camera
rejected our password, every restart would cost one more failed login on it; so the
rejection (and any lock the device announced) is written to the state directory the
moment it happens, and read back at start-up.

No secret reaches the disk: a credential is stored as an HMAC-SHA-256 under a random key
kept beside it (`isapi-key`, mode 0600). The key only makes equal credentials compare
equal within one state directory; without it the hash cannot be tested against guesses,
and with it one still has to guess the password.

Files, all mode 0600, written whole to a temporary file and renamed (a crash leaves the
old file or the new one, never half of one):

* ``isapi-logins.json``: endpoint → rejected credential hash and/or lock end (epoch);
  written at once on every change (rare: a rejection, a lock, a credential that works again);
* ``isapi-capabilities.json``: endpoint → firmware and the checks it lacks with when that
  was learnt; written at most once a minute and at close (start-up learns thousands at once).

A file that cannot be read or parsed is reported (`isapi_memory_unreadable`) and set aside
as ``<name>.corrupt``, never silently overwritten. With no state directory everything is
held in memory only, and start-up says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

__all__ = ["CAPABILITY_SECONDS", "DeviceMemory", "Login", "write_private"]

CAPABILITY_SECONDS = 86400.0
"""A check a device lacks is asked again after this long (or at once after a firmware change)."""
_FLUSH_SECONDS = 60.0
_KEY_FILE = "isapi-key"
_LOGINS_FILE = "isapi-logins.json"
_CAPABILITIES_FILE = "isapi-capabilities.json"

log = structlog.get_logger("telemetryd.probe.isapi")


@dataclass(frozen=True, slots=True)
class Login:
    """One device's remembered login state: the credential it rejected, the lock it announced."""

    rejected: bytes | None = None
    locked_until: float | None = None


@dataclass(slots=True)
class _Capabilities:
    firmware: str = ""
    lacks: dict[str, float] = field(default_factory=dict)
    """check → epoch seconds when the device was found lacking it."""


class DeviceMemory:
    """Per-endpoint (``host:port``) login state and capabilities, persisted under `directory` when given."""

    def __init__(self, directory: Path | None, *, clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self._clock = clock
        self._logins: dict[str, Login] = {}
        self._capabilities: dict[str, _Capabilities] = {}
        self._dirty_since: float | None = None
        if directory is None:
            self._key = os.urandom(32)
            return
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._key = self._load_key(directory / _KEY_FILE)
        for endpoint, entry in self._load(_LOGINS_FILE).items():
            with contextlib.suppress(TypeError, ValueError, AttributeError):
                rejected = entry.get("rejected")
                locked = entry.get("locked_until")
                self._logins[str(endpoint)] = Login(
                    bytes.fromhex(rejected) if rejected else None, float(locked) if locked else None
                )
        for endpoint, entry in self._load(_CAPABILITIES_FILE).items():
            with contextlib.suppress(TypeError, ValueError, AttributeError):
                lacks = {str(check): float(at) for check, at in dict(entry.get("lacks", {})).items()}
                self._capabilities[str(endpoint)] = _Capabilities(str(entry.get("firmware", "")), lacks)

    @property
    def persistent(self) -> bool:
        """Whether what is learnt survives a restart."""
        return self.directory is not None

    def fingerprint(self, username: str, password: str) -> bytes:
        """A keyed hash standing in for the credential: equal credentials compare equal, nothing is recoverable."""
        return hmac.new(self._key, f"{username}\0{password}".encode(), hashlib.sha256).digest()

    # --- logins ---------------------------------------------------------------------------

    def login(self, endpoint: str) -> Login:
        """What is remembered of the endpoint's login (nothing: `Login()`)."""
        return self._logins.get(endpoint, Login())

    def remember_login(self, endpoint: str, login: Login) -> None:
        """Record a rejection, a lock or their end, on disk before returning."""
        if self._logins.get(endpoint, Login()) == login:
            return
        if login == Login():
            self._logins.pop(endpoint, None)
        else:
            self._logins[endpoint] = login
        self._write(
            _LOGINS_FILE,
            {
                endpoint: {
                    "rejected": entry.rejected.hex() if entry.rejected else None,
                    "locked_until": entry.locked_until,
                }
                for endpoint, entry in self._logins.items()
            },
        )

    # --- capabilities ---------------------------------------------------------------------

    def lacks(self, endpoint: str, firmware: str | None, now: float) -> frozenset[str]:
        """Checks the device lacks, learnt under this firmware within the last day (`firmware` None: not known yet)."""
        known = self._capabilities.get(endpoint)
        if known is None:
            return frozenset()
        if firmware is not None and firmware != known.firmware:
            del self._capabilities[endpoint]  # an upgrade may have added what was missing: learn again
            self._mark_dirty()
            return frozenset()
        return frozenset(check for check, at in known.lacks.items() if now - at < CAPABILITY_SECONDS)

    def remember_lack(self, endpoint: str, firmware: str, check: str, now: float) -> None:
        """The device (with this firmware) does not offer `check`."""
        known = self._capabilities.get(endpoint)
        if known is None or known.firmware != firmware:
            known = self._capabilities[endpoint] = _Capabilities(firmware)
        known.lacks[check] = now
        self._mark_dirty()

    def remember_offered(self, endpoint: str, check: str) -> None:
        """The device answered `check` after all (asked again after a day): no longer lacking."""
        known = self._capabilities.get(endpoint)
        if known is not None and known.lacks.pop(check, None) is not None:
            self._mark_dirty()

    def flush(self, *, force: bool = False) -> None:
        """Write the capabilities if they changed at least a minute ago (or at all, with `force`)."""
        if self._dirty_since is None or (not force and self._clock() - self._dirty_since < _FLUSH_SECONDS):
            return
        self._dirty_since = None
        self._write(
            _CAPABILITIES_FILE,
            {
                endpoint: {"firmware": known.firmware, "lacks": known.lacks}
                for endpoint, known in self._capabilities.items()
                if known.lacks
            },
        )

    def _mark_dirty(self) -> None:
        if self._dirty_since is None:
            self._dirty_since = self._clock()
        self.flush()

    # --- files ----------------------------------------------------------------------------

    @staticmethod
    def _load_key(path: Path) -> bytes:
        try:
            key = path.read_bytes()
            if len(key) == 32:
                return key
            log.warning("isapi_memory_unreadable", file=str(path), error="not a 32-byte key; a new one is made")
        except FileNotFoundError:
            pass
        key = os.urandom(32)
        write_private(path, key)
        return key

    def _load(self, name: str) -> dict[str, Any]:
        assert self.directory is not None
        path = self.directory / name
        try:
            document = json.loads(path.read_bytes())
            if not isinstance(document, dict):
                raise ValueError("not a JSON object")
            return document
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            aside = path.with_name(name + ".corrupt")
            with contextlib.suppress(OSError):
                path.replace(aside)
            log.error("isapi_memory_unreadable", file=str(path), moved_to=str(aside), error=str(exc)[:200])
            return {}

    def _write(self, name: str, document: dict[str, Any]) -> None:
        if self.directory is None:
            return
        try:
            write_private(self.directory / name, json.dumps(document, separators=(",", ":")).encode())
        except OSError as exc:
            # Memory still holds it; the daemon goes on, loudly (a full disk must not stop the probes).
            log.error("isapi_memory_write_failed", file=str(self.directory / name), error=str(exc))


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` whole, readable by the owner only: temporary file, fsync, rename, fsync
    the directory, so a crash leaves the old file or the new one (the ISAPI memory and the pins)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(fd, 0o600)  # O_CREAT's mode is ignored for a leftover file
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
