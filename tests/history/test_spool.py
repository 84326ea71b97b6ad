"""The journal (Spool): order, torn tails after kill -9, the size cap, commit marks, compaction."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest

from telemetryd.history.spool import COMPACT_BYTES, Spool, encode


def _records(n: int, start: int = 0) -> list[dict[str, object]]:
    return [{"t": "state_changes", "v": [i, f"school-{i}"]} for i in range(start, start + n)]


def test_replay_returns_records_in_append_order(tmp_path: Path) -> None:
    """Records come back in the order they were appended, across batches and reopenings."""
    spool = Spool(tmp_path / "s")
    assert spool.append(_records(3)) == 3
    assert Spool(tmp_path / "s").append(_records(2, start=3)) == 2
    reopened = Spool(tmp_path / "s")
    assert [e.record for e in reopened.replay()] == _records(5)
    assert reopened.size_bytes == (tmp_path / "s").stat().st_size


def test_torn_tail_is_cut_and_appends_follow_good_records(tmp_path: Path) -> None:
    """A record half-written by a crash is ignored by replay and cut off on open, so new appends stay readable."""
    path = tmp_path / "s"
    crashed = Spool(path)
    crashed.append(_records(4))
    whole = path.stat().st_size
    with path.open("ab") as f:
        f.write(encode({"t": "state_changes", "v": [99]})[:7])
    assert [e.record for e in crashed.replay()] == _records(4)
    spool = Spool(path)
    assert spool.torn_bytes == 7
    assert path.stat().st_size == whole
    spool.append(_records(1, start=4))
    assert [e.record for e in spool.replay()] == _records(5)


def test_corrupt_record_stops_replay(tmp_path: Path) -> None:
    """A record whose CRC does not match ends the replay there; nothing after it is trusted."""
    path = tmp_path / "s"
    spool = Spool(path)
    spool.append(_records(3))
    ends = [e.end for e in spool.replay()]
    data = bytearray(path.read_bytes())
    data[ends[0] + 10] ^= 0xFF
    path.write_bytes(bytes(data))
    assert [e.record for e in Spool(path).replay()] == _records(1)


def test_cap_drops_and_counts(tmp_path: Path) -> None:
    """Records past the size cap are dropped and counted in records and bytes, never silently."""
    one = len(encode(_records(1)[0]))
    spool = Spool(tmp_path / "s", max_bytes=one * 3 + 1)
    accepted = spool.append(_records(5))
    assert accepted == 3
    assert spool.dropped_records == 2
    assert spool.dropped_bytes == sum(len(encode(r)) for r in _records(5)[3:])
    assert spool.size_bytes <= spool.max_bytes
    assert [e.record for e in spool.replay()] == _records(3)


def test_truncate_through_keeps_later_records(tmp_path: Path) -> None:
    """Truncating through a replayed offset keeps what was appended after it, in order."""
    spool = Spool(tmp_path / "s")
    spool.append(_records(3))
    done = [e.end for e in spool.replay()][1]
    spool.append(_records(2, start=3))
    spool.truncate_through(done)
    assert [e.record for e in spool.replay()] == _records(3, start=2)
    assert spool.size_bytes == (tmp_path / "s").stat().st_size
    spool.truncate_through(spool.end)  # offsets are logical: they stay valid across the cut
    assert spool.size_bytes == 0 == (tmp_path / "s").stat().st_size
    assert list(spool.replay()) == []


# ---------------------------------------------------------------- the journal: write, commit, compact


def test_write_is_in_the_file_before_it_returns_without_fsync(tmp_path: Path) -> None:
    """`write` is one plain os.write: another open of the file (what the next process sees) reads the rows at once."""
    path = tmp_path / "s"
    spool = Spool(path)
    kept = spool.write(_records(3))
    assert [end for _, end in kept] == [e.end for e in Spool(path).replay()]
    assert [e.record for e in Spool(path).replay()] == _records(3)
    assert kept[-1][1] == spool.end == path.stat().st_size


def test_commit_marks_are_kept_across_a_reopen_and_skipped_on_replay(tmp_path: Path) -> None:
    """A crash after a commit in PostgreSQL: the reopened journal only holds the rows after the mark."""
    path = tmp_path / "s"
    spool = Spool(path)
    ends = [end for _, end in spool.write(_records(5))]
    spool.commit(ends[2])
    assert spool.size_bytes == spool.end - ends[2]
    reopened = Spool(path)  # no compact, no close: as a kill -9 leaves it
    assert reopened.committed == ends[2]
    assert [e.record for e in reopened.replay(reopened.committed)] == _records(2, start=3)
    assert [e.record for e in reopened.replay()] == _records(5)  # marks are not rows
    rows, reached = reopened.read(reopened.committed, reopened.end, 100)
    assert [e.record for e in rows] == _records(2, start=3) and reached == reopened.end


def test_committing_everything_empties_the_file(tmp_path: Path) -> None:
    """All rows committed: compact is an ftruncate, the file is empty, and new rows follow at the same offsets."""
    path = tmp_path / "s"
    spool = Spool(path)
    end = spool.write(_records(3))[-1][1]
    spool.commit(end)
    assert spool.size_bytes == 0 and spool.compactable
    spool.compact()
    assert path.stat().st_size == 0 and spool.file_bytes == 0
    later = spool.write(_records(2, start=3))
    assert later[0][1] > end  # logical offsets never go back
    assert [e.record for e in Spool(path).replay()] == _records(2, start=3)


def test_compaction_keeps_the_pending_tail_and_rows_written_during_it(tmp_path: Path) -> None:
    """A big committed head is cut off; the uncommitted tail (and what is written meanwhile) stays, in order."""
    path = tmp_path / "s"
    spool = Spool(path)
    rows = [{"t": "state_changes", "v": [i, "x" * 400]} for i in range(3000)]  # about 1.3 MB
    ends = [end for _, end in spool.write(rows)]
    spool.commit(ends[2899])
    assert spool.compactable
    spool.compact()
    spool.write(_records(2, start=9000))
    assert spool.file_bytes == path.stat().st_size < ends[-1] // 10
    assert [e.record for e in spool.replay(spool.committed)] == [*rows[2900:], *_records(2, start=9000)]
    assert [e.record for e in Spool(path).replay()] == [*rows[2900:], *_records(2, start=9000)]
    got, _ = spool.read(spool.committed, ends[-1], 1000)
    assert [e.end for e in got] == ends[2900:]  # the offsets handed out before the cut still hold


def test_a_small_head_before_a_big_tail_is_not_copied(tmp_path: Path) -> None:
    """Copying costs at most what it frees: a replay a few rows into a big spool does not rewrite it."""
    spool = Spool(tmp_path / "s")
    ends = [end for _, end in spool.write([{"t": "x", "v": [i, "y" * 400]} for i in range(9000)])]
    spool.commit(ends[3000])  # ~1.3 MB head (over COMPACT_BYTES), ~2.6 MB tail
    assert spool.committed - 0 > COMPACT_BYTES and not spool.compactable
    spool.commit(ends[5000])  # the head is now bigger than the tail
    assert spool.compactable


def test_cap_counts_uncommitted_bytes_only(tmp_path: Path) -> None:
    """Committed rows do not count against the cap, even before the file is cut."""
    one = len(encode(_records(1)[0]))
    spool = Spool(tmp_path / "s", max_bytes=one * 3)
    kept = spool.write(_records(3))
    assert spool.write(_records(1, start=3)) == [] and spool.dropped_records == 1
    spool.commit(kept[-1][1])
    assert len(spool.write(_records(3, start=4))) == 3
    assert spool.dropped_records == 1


def test_crash_between_write_and_commit_replays_everything_uncommitted(tmp_path: Path) -> None:
    """Rows written, a batch committed in PostgreSQL but the process killed before the mark: all of it comes back."""
    path = tmp_path / "s"
    spool = Spool(path)
    spool.write(_records(4))
    spool.write(_records(3, start=4))
    reopened = Spool(path)
    assert reopened.committed == 0 and reopened.size_bytes == path.stat().st_size
    assert [e.record for e in reopened.replay()] == _records(7)


def test_torn_last_record_after_a_mark(tmp_path: Path) -> None:
    """A kill mid-write after a commit mark: the torn record is cut, the mark still holds, the rest replays."""
    path = tmp_path / "s"
    spool = Spool(path)
    ends = [end for _, end in spool.write(_records(4))]
    spool.commit(ends[1])
    with path.open("ab") as f:
        f.write(encode({"t": "state_changes", "v": [99]})[:-3])
    reopened = Spool(path)
    assert reopened.torn_bytes > 0 and reopened.committed == ends[1]
    assert [e.record for e in reopened.replay(reopened.committed)] == _records(2, start=2)
    reopened.write(_records(1, start=4))
    assert [e.record for e in Spool(path).replay(ends[1])] == _records(3, start=2)


def test_a_failed_write_leaves_no_torn_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A disk that takes half a write and then fails: the half is cut off and the error raised."""
    path = tmp_path / "s"
    spool = Spool(path)
    spool.write(_records(2))
    real_write = os.write
    calls = 0

    def half_then_enospc(fd: int, data: bytes) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            return real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_enospc)
    with pytest.raises(OSError, match="No space"):
        spool.write(_records(3, start=2))
    monkeypatch.setattr(os, "write", real_write)
    assert Spool(path).torn_bytes == 0
    spool.write(_records(1, start=5))
    assert [e.record for e in Spool(path).replay()] == [*_records(2), *_records(1, start=5)]


def test_writes_after_close_are_refused_and_counted(tmp_path: Path) -> None:
    """Nothing written after close is silently lost: it is counted as dropped."""
    spool = Spool(tmp_path / "s")
    spool.close()
    assert spool.write(_records(2)) == []
    assert spool.dropped_records == 2


def test_compaction_while_another_thread_writes_loses_and_reorders_nothing(tmp_path: Path) -> None:
    """The event loop keeps writing while a worker thread compacts and syncs: every row survives, in order."""
    path = tmp_path / "s"
    spool = Spool(path)
    done = threading.Event()
    written: list[int] = []

    def write() -> None:
        i = 0
        while not done.is_set() or i < 20_000:
            end = spool.write([{"t": "x", "v": [i, "z" * 200]}])[-1][1]
            written.append(end)
            i += 1

    writer = threading.Thread(target=write)
    writer.start()
    compactions = 0
    while len(written) < 20_000:
        if written:
            spool.commit(written[len(written) * 3 // 4])  # most of what exists is in PostgreSQL
            if spool.compactable:
                spool.compact()
                compactions += 1
            spool.sync()
    done.set()
    writer.join()
    assert compactions > 0
    rows = [e.record["v"][0] for e in Spool(path).replay()]
    assert rows[0] > 0  # a head was cut off...
    assert rows == list(range(rows[0], len(written)))  # ...and the rest is every row written since, in order
    first_pending = written.index(spool.committed) + 1
    assert [e.record["v"][0] for e in spool.replay(spool.committed)] == list(range(first_pending, len(written)))
