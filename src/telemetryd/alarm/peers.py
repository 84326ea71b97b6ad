"""Fair shares among the DC-09 receiver's peers: which connection gives way, what gets logged (pure).

The receiver (`alarm.receiver`) faces anything on a school LAN that can reach its port. Two
pieces of bookkeeping keep one peer from costing the others, both free of I/O and driven
by the caller's clock:

- `ConnectionTable`: the open TCP connections under a global cap and a per-source-address
  cap. A new connection is always admitted; when a cap is full the connection idle longest
  gives way, those that never sent a valid frame before those of unknown accounts, and those
  before a supervised panel's. Every operation is O(1), so a peer churning connections
  costs no scan of thousands of sockets.
- `RateLimitedSummary`: at most one log line per peer per window (a minute) with the count of
  what happened since the last line, and at most `MAX_LOGGED_PEERS` peers tracked, so a
  flood of bad frames is a handful of lines instead of one per frame: journald's rate limit
  (10,000 lines per 30 s by default, per service) then never drops an alarm line because of it.
"""

from __future__ import annotations

import enum
from collections import Counter, OrderedDict
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

LOG_WINDOW = 60.0
"""Seconds between two log lines about the same peer."""
MAX_LOGGED_PEERS = 256
"""Peers tracked for log summaries; beyond them the rest share one entry, `OTHER_PEERS`."""
OTHER_PEERS = "*"


def source_of(peer: str) -> str:
    """The address part of ``host:port`` (``[v6]:port`` too): caps and log summaries are per source address."""
    host, sep, port = peer.rpartition(":")
    if not sep or not port.isdigit():
        return peer
    return host.strip("[]")


class Standing(enum.IntEnum):
    """How much a connection has proved; the lowest gives way first. Only ever rises."""

    SILENT = 0
    """No valid frame yet (a port scan, an idle socket, a panel that connected a moment ago)."""
    STRANGER = 1
    """Valid frames, but of an account nobody supervises."""
    SUPERVISED = 2
    """A frame of a supervised panel was ACKed on it."""


K = TypeVar("K", bound=Hashable)


@dataclass(slots=True)
class _Entry:
    source: str
    standing: Standing = Standing.SILENT


@dataclass(slots=True)
class _Queues(Generic[K]):
    """Connections per standing, each ordered from idle longest to most recently heard."""

    by_standing: tuple[OrderedDict[K, None], ...] = field(
        default_factory=lambda: tuple(OrderedDict() for _ in Standing)
    )
    size: int = 0

    def add(self, key: K, standing: Standing) -> None:
        self.by_standing[standing][key] = None
        self.size += 1

    def heard(self, key: K, was: Standing, now: Standing) -> None:
        if was is now:
            self.by_standing[now].move_to_end(key)
        else:
            del self.by_standing[was][key]
            self.by_standing[now][key] = None

    def remove(self, key: K, standing: Standing) -> None:
        del self.by_standing[standing][key]
        self.size -= 1

    def first_to_go(self) -> K | None:
        for queue in self.by_standing:
            if queue:
                return next(iter(queue))
        return None


class ConnectionTable(Generic[K]):
    """Open connections under a global and a per-source cap; `admit` names who gives way."""

    def __init__(self, max_connections: int, max_per_source: int) -> None:
        if max_connections < 1 or max_per_source < 1:
            raise ValueError("connection caps must be at least 1")
        self.max_connections = max_connections
        self.max_per_source = max_per_source
        self._entries: dict[K, _Entry] = {}
        self._all: _Queues[K] = _Queues()
        self._sources: dict[str, _Queues[K]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._entries))

    def from_source(self, source: str) -> int:
        """Open connections from `source`."""
        queues = self._sources.get(source)
        return queues.size if queues is not None else 0

    def admit(self, key: K, source: str) -> list[K]:
        """Add a new connection; returns those it displaces (already removed here), for the caller to close.

        Per-source cap first (a source over its share displaces its own connection), then the
        global cap. In each, the victim is the lowest `Standing`, and within it the one idle longest.
        """
        evicted: list[K] = []
        own = self._sources.get(source)
        if own is not None and own.size >= self.max_per_source:
            evicted.extend(self._evict(own))
        while len(self._entries) >= self.max_connections and (victim := self._all.first_to_go()) is not None:
            self.remove(victim)
            evicted.append(victim)
        self._entries[key] = _Entry(source)
        self._all.add(key, Standing.SILENT)
        self._sources.setdefault(source, _Queues()).add(key, Standing.SILENT)
        return evicted

    def _evict(self, queues: _Queues[K]) -> Iterator[K]:
        while queues.size >= self.max_per_source and (victim := queues.first_to_go()) is not None:
            self.remove(victim)
            yield victim

    def heard(self, key: K, standing: Standing) -> None:
        """A frame arrived on `key`: it is now the most recently heard of its (possibly raised) standing."""
        entry = self._entries.get(key)
        if entry is None:
            return
        now = max(entry.standing, standing)
        self._all.heard(key, entry.standing, now)
        self._sources[entry.source].heard(key, entry.standing, now)
        entry.standing = now

    def remove(self, key: K) -> None:
        """Forget a connection (closed, or displaced); no-op when unknown."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self._all.remove(key, entry.standing)
        queues = self._sources[entry.source]
        queues.remove(key, entry.standing)
        if queues.size == 0:
            del self._sources[entry.source]


@dataclass(frozen=True, slots=True)
class Summary:
    """One log line about one peer: what happened since its previous line."""

    peer: str
    count: int
    reasons: dict[str, int]
    """Reason → occurrences, in this line."""
    seconds: float
    """Since the peer's previous line (0 for its first)."""


@dataclass(slots=True)
class _Tally:
    logged_at: float
    pending: Counter[str] = field(default_factory=Counter)


class RateLimitedSummary:
    """At most one line per peer per `window`, carrying the count of everything since its last line.

    The first occurrence from a peer is logged at once (the operator sees what is wrong, with its
    detail); later ones within the window are counted and come out as one summary when the window
    has passed (`due`, called periodically) or at the stop (`flush`). At most `max_peers` peers
    are tracked; further ones share the entry `OTHER_PEERS`, so lines per window stay bounded.
    """

    def __init__(self, window: float = LOG_WINDOW, max_peers: int = MAX_LOGGED_PEERS) -> None:
        self.window = window
        self.max_peers = max_peers
        self._tallies: dict[str, _Tally] = {}

    def note(self, peer: str, reason: str, now: float) -> Summary | None:
        """Count one occurrence; returns the line to log now, or None when it waits for the summary."""
        if peer not in self._tallies and len(self._tallies) >= self.max_peers:
            peer = OTHER_PEERS
        tally = self._tallies.get(peer)
        if tally is None:
            self._tallies[peer] = _Tally(now)
            return Summary(peer, 1, {reason: 1}, 0.0)
        tally.pending[reason] += 1
        if now - tally.logged_at >= self.window:
            return self._emit(peer, tally, now)
        return None

    def due(self, now: float) -> list[Summary]:
        """Summaries whose window has passed; peers quiet for a whole window are forgotten."""
        lines = []
        for peer, tally in list(self._tallies.items()):
            if now - tally.logged_at < self.window:
                continue
            if tally.pending:
                lines.append(self._emit(peer, tally, now))
            else:
                del self._tallies[peer]
        return lines

    def flush(self, now: float) -> list[Summary]:
        """Every pending count as a line now (at the stop: no count is lost from the log)."""
        lines = [self._emit(peer, tally, now) for peer, tally in self._tallies.items() if tally.pending]
        self._tallies.clear()
        return lines

    def _emit(self, peer: str, tally: _Tally, now: float) -> Summary:
        line = Summary(peer, tally.pending.total(), dict(tally.pending), round(now - tally.logged_at, 3))
        tally.pending.clear()
        tally.logged_at = now
        return line
