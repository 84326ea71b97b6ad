"""The receiver's fair-share bookkeeping (pure): who gives way at a connection cap, how floods are logged."""

from __future__ import annotations

import pytest

from telemetryd.alarm.peers import OTHER_PEERS, ConnectionTable, RateLimitedSummary, Standing, Summary, source_of

# ---- ConnectionTable ---------------------------------------------------------------------------


def test_source_of_strips_the_port() -> None:
    """Caps and summaries are per address: the port (different for every connection) is not part of it."""
    assert source_of("10.1.2.3:40001") == "10.1.2.3"
    assert source_of("[2001:db8::1]:9000") == "2001:db8::1"
    assert source_of("?") == "?"


def test_new_connection_is_admitted_and_the_idlest_silent_one_goes() -> None:
    """At the global cap the newcomer stays; the connection that never sent a frame and was opened first goes."""
    table: ConnectionTable[str] = ConnectionTable(max_connections=3, max_per_source=10)
    for key in ("a", "b", "c"):
        assert table.admit(key, f"10.0.0.{key}") == []
    assert table.admit("d", "10.0.0.d") == ["a"]
    assert list(table) == ["b", "c", "d"]


def test_a_frame_makes_a_connection_the_last_to_go_of_its_standing() -> None:
    """Idle is measured from the last frame: a connection just heard goes after those silent longer."""
    table: ConnectionTable[str] = ConnectionTable(max_connections=3, max_per_source=10)
    for key in ("a", "b", "c"):
        table.admit(key, key)
    table.heard("a", Standing.STRANGER)
    table.heard("b", Standing.STRANGER)
    table.heard("a", Standing.STRANGER)  # a heard again after b: b is now idle longer
    assert table.admit("d", "d") == ["c"]  # silent beats any stranger
    assert table.admit("e", "e") == ["d"]  # d never spoke either
    assert table.admit("f", "f") == ["e"]
    table.heard("f", Standing.STRANGER)
    assert table.admit("g", "g") == ["b"]  # strangers only now: the idlest of them


def test_a_supervised_panel_gives_way_last() -> None:
    """Silent connections go before strangers', strangers' before a supervised panel's, however old it is."""
    table: ConnectionTable[str] = ConnectionTable(max_connections=3, max_per_source=10)
    table.admit("panel", "10.0.0.1")
    table.heard("panel", Standing.SUPERVISED)
    table.admit("stranger", "10.0.0.2")
    table.heard("stranger", Standing.STRANGER)
    table.admit("scan", "10.0.0.3")
    assert table.admit("x", "10.0.0.4") == ["scan"]
    table.heard("x", Standing.STRANGER)
    assert table.admit("y", "10.0.0.5") == ["stranger"]
    table.heard("y", Standing.STRANGER)
    assert table.admit("z", "10.0.0.6") == ["x"]
    assert "panel" in table


def test_standing_never_falls() -> None:
    """A supervised panel's connection that then sends a bad frame keeps its standing (and is heard again)."""
    table: ConnectionTable[str] = ConnectionTable(max_connections=2, max_per_source=10)
    table.admit("panel", "p")
    table.heard("panel", Standing.SUPERVISED)
    table.heard("panel", Standing.SILENT)  # a NAKed frame
    table.admit("other", "o")
    assert table.admit("new", "n") == ["other"]


def test_per_source_cap_displaces_only_that_source() -> None:
    """A source over its share displaces its own idlest connection; other sources' connections stay."""
    table: ConnectionTable[str] = ConnectionTable(max_connections=100, max_per_source=2)
    table.admit("school", "10.0.0.1")
    table.admit("flood-1", "10.9.9.9")
    table.admit("flood-2", "10.9.9.9")
    assert table.admit("flood-3", "10.9.9.9") == ["flood-1"]
    assert table.from_source("10.9.9.9") == 2
    assert table.from_source("10.0.0.1") == 1
    assert len(table) == 3


def test_both_caps_at_once() -> None:
    """A newcomer at both caps displaces one of its source's and, if still full, the idlest overall."""
    table: ConnectionTable[str] = ConnectionTable(max_connections=2, max_per_source=1)
    table.admit("a", "s1")
    table.admit("b", "s2")
    assert table.admit("c", "s2") == ["b"]  # per source first; then the table has room
    assert sorted(table) == ["a", "c"]


def test_remove_forgets_and_tolerates_unknown_keys() -> None:
    """Closed connections leave the table; removing twice (evicted, then connection_lost) is harmless."""
    table: ConnectionTable[str] = ConnectionTable(max_connections=2, max_per_source=2)
    table.admit("a", "s")
    table.remove("a")
    table.remove("a")
    table.heard("a", Standing.STRANGER)
    assert len(table) == 0 and table.from_source("s") == 0


def test_lowered_cap_shrinks_the_table_at_the_next_admission() -> None:
    """After a reload lowers the cap, the next newcomer brings the table under it."""
    table: ConnectionTable[str] = ConnectionTable(max_connections=4, max_per_source=4)
    for key in "abcd":
        table.admit(key, key)
    table.max_connections = 2
    assert table.admit("e", "e") == ["a", "b", "c"]


def test_caps_must_be_positive() -> None:
    """A cap of zero would refuse everything: rejected."""
    with pytest.raises(ValueError, match="at least 1"):
        ConnectionTable(max_connections=0, max_per_source=1)


# ---- RateLimitedSummary ------------------------------------------------------------------------


def test_first_occurrence_is_logged_the_rest_counted_until_the_window_passes() -> None:
    """One line per peer per window: the first at once, the next after a minute carrying every count since."""
    log = RateLimitedSummary(window=60.0)
    assert log.note("10.0.0.5", "crc", 100.0) == Summary("10.0.0.5", 1, {"crc": 1}, 0.0)
    assert all(log.note("10.0.0.5", reason, 100.0 + n * 0.01) is None for n, reason in enumerate(["crc", "format"] * 5))
    assert log.due(159.0) == []
    assert log.note("10.0.0.5", "crc", 160.0) == Summary("10.0.0.5", 11, {"crc": 6, "format": 5}, 60.0)
    assert log.note("10.0.0.5", "crc", 161.0) is None


def test_due_emits_summaries_and_forgets_quiet_peers() -> None:
    """A flood that stops still gets its summary (periodic `due`); a peer quiet for a whole window is forgotten."""
    log = RateLimitedSummary(window=60.0)
    log.note("a", "crc", 0.0)
    log.note("a", "crc", 1.0)
    log.note("b", "length", 0.0)
    assert log.due(60.0) == [Summary("a", 1, {"crc": 1}, 60.0)]
    assert log.due(120.0) == []  # a: nothing since its summary; b: nothing since its first line
    assert log.note("b", "length", 121.0) == Summary("b", 1, {"length": 1}, 0.0)  # new again


def test_flush_gives_every_pending_count() -> None:
    """At the stop every count not yet logged comes out, so the log accounts for every rejected frame."""
    log = RateLimitedSummary(window=60.0)
    for n in range(500):
        log.note(f"10.0.0.{n % 2}", "crc", n * 0.01)
    lines = log.flush(10.0)
    assert sorted((line.peer, line.count) for line in lines) == [("10.0.0.0", 249), ("10.0.0.1", 249)]
    assert log.flush(11.0) == []


def test_lines_stay_bounded_however_many_peers() -> None:
    """Thousands of source addresses: at most max_peers + 1 first lines and as many summaries per window."""
    log = RateLimitedSummary(window=60.0, max_peers=8)
    first = [line for n in range(10_000) if (line := log.note(f"peer-{n % 1000}", "crc", n * 0.001)) is not None]
    assert len(first) == 9
    assert first[-1].peer == OTHER_PEERS
    summaries = log.due(70.0)
    assert len(summaries) == 9
    assert sum(line.count for line in first + summaries) == 10_000
