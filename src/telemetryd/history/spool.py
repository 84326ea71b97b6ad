"""Append-only on-disk spool for history rows while PostgreSQL is unreachable.

Format: a sequence of records, each ``[u32 length][u32 crc32][length bytes of JSON]``
(big-endian). A kill -9 during `append` can leave a torn last record; `replay` stops
at the first record that is short or fails its CRC, and opening the spool cuts such a
tail off so new appends never follow garbage.

The file is capped at `max_bytes`: records that would not fit are dropped and counted
(`dropped_records`, `dropped_bytes`) — the only place history is ever lost, and never
silently. No asyncio here: callers run it in a thread when the fsync matters.
"""

from __future__ import annotations

import json
import os
import struct
import threading
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_HEADER = struct.Struct(">II")
DEFAULT_MAX_BYTES = 1 << 30


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """One replayed record and the offset just past it (pass that to `truncate_through`)."""

    end: int
    record: dict[str, Any]


def encode(record: Mapping[str, Any]) -> bytes:
    """One record as it is stored: header plus compact JSON."""
    payload = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def _scan(path: Path, start: int = 0) -> Iterator[SpoolEntry]:
    with path.open("rb") as f:
        f.seek(start)
        offset = start
        while True:
            header = f.read(_HEADER.size)
            if len(header) < _HEADER.size:
                return
            length, crc = _HEADER.unpack(header)
            payload = f.read(length)
            if len(payload) < length or zlib.crc32(payload) != crc:
                return
            try:
                record = json.loads(payload)
            except ValueError:
                return
            offset += _HEADER.size + length
            yield SpoolEntry(offset, record)


class Spool:
    """A capped, fsynced, append-only file of JSON records; safe to share between threads."""

    def __init__(self, path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.dropped_records = 0
        self.dropped_bytes = 0
        self.torn_bytes = 0
        """Bytes of a torn tail cut off when the spool was opened (a crash mid-append)."""
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch(exist_ok=True)
        self._size = self._repair()

    def _repair(self) -> int:
        size = self.path.stat().st_size
        valid = 0
        for entry in _scan(self.path):
            valid = entry.end
        if valid < size:
            self.torn_bytes = size - valid
            with self.path.open("r+b") as f:
                f.truncate(valid)
                os.fsync(f.fileno())
        return valid

    @property
    def size_bytes(self) -> int:
        """Bytes held (0 when everything has been replayed)."""
        return self._size

    def append(self, records: Sequence[Mapping[str, Any]]) -> int:
        """Append records in order with one fsync; returns how many fit under the cap (the rest are counted)."""
        chunks: list[bytes] = []
        with self._lock:
            size = self._size
            for record in records:
                chunk = encode(record)
                if size + len(chunk) > self.max_bytes:
                    self.dropped_records += 1
                    self.dropped_bytes += len(chunk)
                    continue
                chunks.append(chunk)
                size += len(chunk)
            if chunks:
                with self.path.open("ab") as f:
                    f.write(b"".join(chunks))
                    f.flush()
                    os.fsync(f.fileno())
                self._size = size
        return len(chunks)

    def replay(self, start: int = 0) -> Iterator[SpoolEntry]:
        """Records in the order they were appended, stopping cleanly at a torn or corrupt record."""
        return _scan(self.path, start)

    def truncate_through(self, offset: int) -> None:
        """Forget every record ending at or before `offset` (they are safely in PostgreSQL)."""
        with self._lock:
            if offset <= 0:
                return
            if offset >= self._size:
                with self.path.open("r+b") as f:
                    f.truncate(0)
                    os.fsync(f.fileno())
                self._size = 0
                return
            # Records appended during a replay sit after `offset`: keep them, atomically.
            tmp = self.path.with_name(self.path.name + ".tmp")
            with self.path.open("rb") as src, tmp.open("wb") as dst:
                src.seek(offset)
                while block := src.read(1 << 20):
                    dst.write(block)
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(tmp, self.path)
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            self._size -= offset
