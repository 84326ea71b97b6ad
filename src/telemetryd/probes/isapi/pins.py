"""Certificate pins of HTTPS devices: trust on first use, then require the same certificate.

A camera's self-signed certificate cannot be checked against anyone's signature, so the
first successful TLS handshake records the SHA-256 of its leaf certificate (DER) under
``host:port``; every later connection must show the same one, else the check is
``certificate_changed`` and nothing is sent (a replaced camera, or someone in between).

The pins live in ``<state directory>/isapi-certificates.json`` (mode 0600; no secrets,
only fingerprints)::

    {"version": 1, "pins": {"10.20.3.14:443": {"sha256": "<64 hex>", "since": "<ISO 8601>"}}}

The file is the truth and memory a cache of it: a write first re-reads the file if it
changed on disk (the operator's ``telemetryd pins forget`` runs in another process), so a
forgotten pin stays forgotten. Writes are atomic (temporary file, fsync, rename) under an
advisory lock. A corrupt file is never overwritten: `problem` names it, HTTPS checks fail
closed (``pins_unreadable``: trusting anew could let an interceptor in) until it is fixed
or removed; plain-HTTP checks go on. Without a state directory pins are kept in memory.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from telemetryd.probes.isapi.memory import write_private

__all__ = ["PIN_FILE", "Pin", "PinFileError", "PinStore", "certificate_fingerprint", "endpoint", "short"]

PIN_FILE = "isapi-certificates.json"
_VERSION = 1


class PinFileError(Exception):
    """The pin file cannot be read as pins; `path` names it."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"{path}: {why}")
        self.path = path
        self.why = why


@dataclass(frozen=True, slots=True)
class Pin:
    """One device's trusted certificate: SHA-256 of its DER form, and since when."""

    sha256: bytes
    since: str


def endpoint(host: str, port: int) -> str:
    """The key of a device's pin: ``host:port`` (one device may serve two certificates on two ports)."""
    return f"{host}:{port}"


def certificate_fingerprint(der: bytes) -> bytes:
    """SHA-256 of a certificate in DER form (what aiohttp's `Fingerprint` compares)."""
    return hashlib.sha256(der).digest()


def short(digest: bytes) -> str:
    """A fingerprint prefix for people and logs: ``sha256:1a2b3c4d5e6f7a8b``."""
    return "sha256:" + digest.hex()[:16]


def _parse(path: Path, text: str) -> dict[str, Pin]:
    """The pins in the file's text; PinFileError says what is wrong with it."""
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise PinFileError(path, f"not JSON ({exc})") from None
    if (
        not isinstance(document, dict)
        or document.get("version") != _VERSION
        or not isinstance(document.get("pins"), dict)
    ):
        raise PinFileError(path, f'expected {{"version": {_VERSION}, "pins": {{...}}}}')
    pins: dict[str, Pin] = {}
    for key, entry in document["pins"].items():
        digest = entry.get("sha256") if isinstance(entry, dict) else None
        try:
            raw = bytes.fromhex(digest) if isinstance(digest, str) else b""
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise PinFileError(path, f"pin {key!r}: sha256 must be 64 hex digits")
        pins[key] = Pin(raw, str(entry.get("since", "")))
    return pins


def _render(pins: dict[str, Pin]) -> bytes:
    body = {
        "version": _VERSION,
        "pins": {k: {"sha256": p.sha256.hex(), "since": p.since} for k, p in sorted(pins.items())},
    }
    return (json.dumps(body, indent=1) + "\n").encode()


class PinStore:
    """The pins of every HTTPS device, backed by the pin file when there is a state directory."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.problem: PinFileError | None = None
        """A corrupt pin file: HTTPS checks fail closed and nothing is written until it is fixed."""
        self._pins: dict[str, Pin] = {}
        self._pending: dict[str, Pin] = {}
        """Learned here and not yet in the file."""
        self._stamp: tuple[int, int, int] | None = None
        self.refresh(force=True)

    @classmethod
    def in_state(cls, state_path: Path | None) -> PinStore:
        """The store of a state directory (`Settings.state_path`); memory only when None."""
        return cls(state_path / PIN_FILE if state_path is not None else None)

    @property
    def dirty(self) -> bool:
        """Pins learned but not yet written."""
        return bool(self._pending) and self.path is not None

    def __len__(self) -> int:
        return len(self._pins)

    def get(self, key: str) -> bytes | None:
        """The pinned fingerprint of ``host:port``, if any."""
        pin = self._pins.get(key)
        return pin.sha256 if pin is not None else None

    def items(self) -> list[tuple[str, Pin]]:
        """Every pin, sorted by endpoint."""
        return sorted(self._pins.items())

    def learn(self, key: str, digest: bytes, *, now: float) -> None:
        """Trust this certificate from now on (first use); `save` writes it."""
        pin = Pin(digest, datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"))
        self._pins[key] = self._pending[key] = pin

    def refresh(self, *, force: bool = False) -> bool:
        """Re-read the file if it changed on disk (or `force`); True when it was read."""
        if self.path is None:
            return False
        stamp = self._file_stamp()
        if not force and stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            text = self.path.read_text(encoding="utf-8") if stamp is not None else None
            pins = _parse(self.path, text) if text is not None else {}
        except PinFileError as exc:
            self.problem = exc
            self._pins = dict(self._pending)
            return True
        except (OSError, UnicodeDecodeError) as exc:
            self.problem = PinFileError(self.path, f"cannot be read ({type(exc).__name__}: {exc})")
            self._pins = dict(self._pending)
            return True
        self.problem = None
        self._pins = {**pins, **self._pending}
        return True

    def save(self) -> None:
        """Write learned pins to the file (merged with what is on disk now); OSError when it cannot.

        Nothing is written while the file is corrupt: it stays as found, for the operator to look at.
        """
        if self.path is None or not self._pending:
            return
        with self._locked():
            self.refresh()
            if self.problem is not None:
                return
            self._write(self._pins)
            self._pending.clear()

    def forget(self, key: str) -> bool:
        """Drop the pin of ``host:port`` from memory and the file (re-trust); True when there was one."""
        if self.path is None:
            self._pending.pop(key, None)
            return self._pins.pop(key, None) is not None
        with self._locked():
            self.refresh(force=True)
            if self.problem is not None:
                raise self.problem
            self._pending.pop(key, None)
            if self._pins.pop(key, None) is None:
                return False
            self._write(self._pins)
            return True

    # --- the file -------------------------------------------------------------------------

    def _file_stamp(self) -> tuple[int, int, int] | None:
        assert self.path is not None
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """An advisory lock beside the file: the daemon and `telemetryd pins` never interleave writes."""
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _write(self, pins: dict[str, Pin]) -> None:
        """Temporary file, fsync, rename, fsync the directory: a crash leaves the old file or the new one."""
        assert self.path is not None
        write_private(self.path, _render(pins))
        self._stamp = self._file_stamp()
