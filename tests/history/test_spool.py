"""Spool: order, torn tails after kill -9, the size cap, truncation after a write."""

from __future__ import annotations

from pathlib import Path

from telemetryd.history.spool import Spool, encode


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
    spool.truncate_through(spool.size_bytes)
    assert spool.size_bytes == 0
    assert list(spool.replay()) == []
