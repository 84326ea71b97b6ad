"""The history journal: every row is written here before it counts as recorded.

Format: a sequence of records, each ``[u32 length][u32 crc32][length bytes of JSON]``
(big-endian). A record is a history row, or a commit mark ``{"commit": n}``: every row
ending at or before the point `n` bytes ahead of the mark is in PostgreSQL (relative, so
marks stay true when the file's head is cut off).

`write` is one plain ``os.write`` of the encoded records on an ``O_APPEND`` descriptor:
once it returns the kernel holds the rows, so they survive a kill -9 of the process;
`sync` (fsync) is what makes them survive a power loss too, and the writer calls it per
batch it could not commit. A kill -9 during `write` can leave a torn last record; reading
stops at the first record that is short or fails its CRC, and opening the journal cuts
such a tail off so new records never follow garbage.

Offsets are logical: they count bytes from the start of the file as it was opened and
never go back, so an offset handed out stays valid while the committed head is cut off.
`commit` says the rows before an offset are in PostgreSQL (and appends a mark, so a
restart does not send them again); `compact` forgets them: an ftruncate when nothing is
pending, else a copy of the pending tail renamed over the file once the head is at least
as big as the tail (so copying costs at most what it frees). Replaying committed rows is
harmless anyway — every row has an idempotency key — so neither needs to be atomic with
the commit in PostgreSQL.

The journal is capped at `max_bytes` of rows not yet committed: rows that would not fit
are refused and counted (`dropped_records`, `dropped_bytes`) — the only place history is
ever lost, and never silently. No asyncio here: `write` and `commit` are cheap enough for
the event loop; `sync`, `read` and `compact` belong in a thread (they never hold the lock
`write` takes for longer than a short copy).
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
from typing import Any, BinaryIO, TypeVar

_HEADER = struct.Struct(">II")
DEFAULT_MAX_BYTES = 1 << 30
COMPACT_BYTES = 1 << 20
"""Cut a committed head off the file only from this size (a pending tail of rows must be copied)."""
_MARK = "commit"
_BLOCK = 1 << 20
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
"""Made once: json.dumps with these options builds a new encoder per call (a quarter of the cost of a row)."""

R = TypeVar("R", bound=Mapping[str, Any])


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """One row read back and the logical offset just past it (pass that to `commit`)."""

    end: int
    record: dict[str, Any]


def encode(record: Mapping[str, Any]) -> bytes:
    """One record as it is stored: header plus compact JSON."""
    payload = _JSON.encode(record).encode()
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def _is_mark(record: dict[str, Any]) -> bool:
    return len(record) == 1 and isinstance(record.get(_MARK), int)


def _mark_target(record: dict[str, Any], start: int) -> int | None:
    """The offset a commit mark starting at `start` commits through; None for a row."""
    return start - int(record[_MARK]) if _is_mark(record) else None


def _records(handle: BinaryIO, start: int, stop: int | None) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """(start, end, record) of each record from physical offset `start`; ends at a torn or corrupt one."""
    handle.seek(start)
    offset = start
    while stop is None or offset < stop:
        header = handle.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return
        length, crc = _HEADER.unpack(header)
        payload = handle.read(length)
        if len(payload) < length or zlib.crc32(payload) != crc:
            return
        try:
            record = json.loads(payload)
        except ValueError:
            return
        if not isinstance(record, dict):
            return
        end = offset + _HEADER.size + length
        yield offset, end, record
        offset = end


def _rows(handle: BinaryIO, start: int, base: int) -> Iterator[SpoolEntry]:
    for _, end, record in _records(handle, start, None):
        if not _is_mark(record):
            yield SpoolEntry(base + end, record)


def _fsync_directory(path: Path) -> None:
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _copy(src: BinaryIO, dst: BinaryIO, count: int) -> None:
    while count > 0:
        block = src.read(min(count, _BLOCK))
        if not block:
            return
        dst.write(block)
        count -= len(block)


class Spool:
    """A capped, append-only journal of JSON rows with commit marks; safe to share between threads."""

    def __init__(self, path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.dropped_records = 0
        self.dropped_bytes = 0
        self.torn_bytes = 0
        """Bytes of a torn tail cut off when the journal was opened (a crash mid-write)."""
        self._lock = threading.Lock()
        """Guards offsets and the descriptor; held only for short work, so the event loop's writes never wait long."""
        self._swap = threading.Lock()
        """Serialises `sync` and `compact` (an fsync must not meet a descriptor being swapped)."""
        self._base = 0
        """Logical offset of the file's first byte (grows as committed heads are cut off)."""
        self._end = 0
        """Logical offset just past the last record."""
        self._rows_end = 0
        """Logical offset just past the last row (commit marks may follow it)."""
        self._committed = 0
        """Every row ending at or before this logical offset is in PostgreSQL."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch(exist_ok=True)
        self._tmp.unlink(missing_ok=True)  # a compaction cut short by a crash: the journal itself is whole
        self._open()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)

    def _open(self) -> None:
        """Find the last good record and the last commit mark; cut a torn tail off."""
        size = self.path.stat().st_size
        with self.path.open("rb") as handle:
            for start, end, record in _records(handle, 0, None):
                target = _mark_target(record, start)
                if target is None:
                    self._rows_end = end
                else:
                    self._committed = max(self._committed, target)
                self._end = end
        if self._committed >= self._rows_end:
            self._committed = self._end  # nothing pending: only marks after the last row
        if self._end < size:
            self.torn_bytes = size - self._end
            with self.path.open("r+b") as f:
                f.truncate(self._end)
                os.fsync(f.fileno())

    @property
    def _tmp(self) -> Path:
        return self.path.with_name(self.path.name + ".tmp")

    # ------------------------------------------------------------------ state

    @property
    def end(self) -> int:
        """Logical offset just past the last record."""
        return self._end

    @property
    def committed(self) -> int:
        """Logical offset through which rows are in PostgreSQL."""
        return self._committed

    @property
    def size_bytes(self) -> int:
        """Bytes not yet committed (what the cap counts; 0 when every row is in PostgreSQL)."""
        return self._end - self._committed

    @property
    def file_bytes(self) -> int:
        """Bytes in the file now: pending rows plus a committed head not yet cut off."""
        return self._end - self._base

    @property
    def compactable(self) -> bool:
        """Whether `compact` would cut anything off now."""
        head = self._committed - self._base
        return head > 0 and (self._committed == self._end or head >= max(COMPACT_BYTES, self._end - self._committed))

    # ------------------------------------------------------------------ writing

    def write(self, records: Sequence[R]) -> list[tuple[R, int]]:
        """Append rows in order with one ``os.write``, no fsync; returns each row kept with its end offset.

        Rows that would take the uncommitted bytes past the cap, or come after `close`, are
        refused and counted. An OSError (a full disk) is raised with the file as it was before.
        """
        encoded = [(record, encode(record)) for record in records]  # outside the lock: the costly part
        chunks: list[bytes] = []
        kept: list[tuple[R, int]] = []
        with self._lock:
            end = self._end
            for record, chunk in encoded:
                if self._fd < 0 or end + len(chunk) - self._committed > self.max_bytes:
                    self.dropped_records += 1
                    self.dropped_bytes += len(chunk)
                    continue
                chunks.append(chunk)
                end += len(chunk)
                kept.append((record, end))
            if chunks:
                self._put(b"".join(chunks))
                self._end = self._rows_end = end
        return kept

    def _put(self, data: bytes) -> None:
        """os.write all of `data` (called with the lock held)."""
        try:
            written = os.write(self._fd, data)
            while written < len(data):  # only a nearly full disk writes short; the rest may still fit
                written += os.write(self._fd, data[written:])
        except OSError:
            # Cut off whatever part did land: the next record must not follow a torn one.
            os.ftruncate(self._fd, self._end - self._base)
            raise

    def append(self, records: Sequence[Mapping[str, Any]]) -> int:
        """`write` then `sync`; returns how many rows fit under the cap."""
        kept = self.write(records)
        if kept:
            self.sync()
        return len(kept)

    def sync(self) -> None:
        """fsync: what has been written survives a power loss too."""
        with self._swap:
            with self._lock:
                fd = self._fd
            if fd >= 0:
                os.fsync(fd)

    def commit(self, offset: int) -> None:
        """Every row ending at or before `offset` is in PostgreSQL: it stops counting against the cap.

        Appends a commit mark (no fsync: a lost mark only means those rows are sent again).
        """
        with self._lock:
            offset = min(offset, self._end)
            if offset <= self._committed:
                return
            if offset >= self._rows_end:
                self._committed = self._end  # only marks follow: nothing is pending
                return
            self._committed = offset
            mark = encode({_MARK: self._end - offset})
            try:
                self._put(mark)
            except OSError:
                return  # the mark is an optimisation; the commit itself holds in memory
            self._end += len(mark)

    def close(self) -> None:
        """Close the descriptor (the file stays; open it again with a new Spool). Later writes are refused."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    # ------------------------------------------------------------------ reading and forgetting

    def read(self, start: int, stop: int, limit: int) -> tuple[list[SpoolEntry], int]:
        """Up to `limit` rows from logical offset `start` that end at or before `stop`.

        Also returns the offset reading got to (past commit marks); it is `start` when the
        record there is unreadable.
        """
        with self._lock:
            base = self._base
            handle = self.path.open("rb")  # this inode stays readable even if `compact` renames over it
        rows: list[SpoolEntry] = []
        reached = start = max(start, base)
        with handle:
            for _, end, record in _records(handle, start - base, stop - base):
                if base + end > stop:
                    break
                reached = base + end
                if not _is_mark(record):
                    rows.append(SpoolEntry(reached, record))
                    if len(rows) >= limit:
                        break
        return rows, reached

    def replay(self, start: int = 0) -> Iterator[SpoolEntry]:
        """Rows from logical offset `start` in the order they were written, stopping at a torn or corrupt one."""
        with self._lock:
            base = self._base
        with self.path.open("rb") as handle:
            yield from _rows(handle, max(start, base) - base, base)

    def compact(self, *, force: bool = False) -> None:
        """Cut the committed head off the file (see `compactable`; `force`: whatever its size)."""
        with self._swap:
            with self._lock:
                if self._committed <= self._base or self._fd < 0:
                    return
                if self._committed == self._end:
                    # No fsync: should a power loss undo this, the head is sent again and the keys dedup it.
                    os.ftruncate(self._fd, 0)
                    self._base = self._end
                    return
                if not (force or self.compactable):
                    return
                cut, seen, base = self._committed, self._end, self._base
            self._copy_tail(cut, seen, base)
        _fsync_directory(self.path.parent)

    def _copy_tail(self, cut: int, seen: int, base: int) -> None:
        """Rename a copy of the journal from `cut` over it (with `_swap` held, so no fsync runs meanwhile)."""
        try:
            self._swap_in_tail(cut, seen, base)
        except OSError:
            self._tmp.unlink(missing_ok=True)  # a full disk: the journal itself is untouched
            raise

    def _swap_in_tail(self, cut: int, seen: int, base: int) -> None:
        # The pending tail is copied and fsynced without the lock (writes keep landing in the old file)...
        with self.path.open("rb") as src, self._tmp.open("wb") as dst:
            src.seek(cut - base)
            _copy(src, dst, seen - cut)
            dst.flush()
            os.fsync(dst.fileno())
            with self._lock:
                # ...what was written meanwhile is taken under it, and the files swap. Not fsynced: no
                # `sync` ran since the copy began, so in the old file those bytes were not synced either.
                _copy(src, dst, self._end - seen)
                dst.flush()
                os.replace(self._tmp, self.path)
                if self._fd >= 0:  # else closed meanwhile: stay closed
                    os.close(self._fd)
                    self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
                self._base = cut

    def truncate_through(self, offset: int) -> None:
        """Commit through `offset` and cut it off the file now."""
        self.commit(offset)
        self.compact(force=True)
