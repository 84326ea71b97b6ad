"""The garbage collector at 100,000 devices: long-lived state kept out of its way, its pauses measured.

A loaded city is a million tracked objects (inventory, state, schedule) that live until the
next reload. CPython's full collection walks all of them: ~0.8 s per pass at 100,000 devices
on this hardware, every few seconds under probing, with the event loop stopped. Three rules:

* build a generation (start-up, reload) with the collector off, then `gc.freeze()` it into
  the permanent generation, which no collection scans;
* collect the young generation less often (`GEN0_THRESHOLD`): per-probe garbage is almost
  all freed by reference counting, so frequent passes only re-walk survivors;
* time every pass (`gc.callbacks`) and export it, so the share is a measured figure.

Cyclic garbage of a replaced generation stays frozen (nothing in a roster or a schedule
is cyclic; a reload replaces them whole), at the cost of never being collected.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

GEN0_THRESHOLD = 50_000
"""Allocations between young-generation passes (CPython's default: 700)."""
GEN1_THRESHOLD = 20
GEN2_THRESHOLD = 100


@contextmanager
def building() -> Iterator[None]:
    """Build long-lived structures with the collector off, then freeze everything alive out of its sight."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


@dataclass(slots=True)
class CollectorClock:
    """Seconds and passes of the collector per generation, from `gc.callbacks`."""

    seconds: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    passes: list[int] = field(default_factory=lambda: [0, 0, 0])
    longest: float = 0.0
    _started: float = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        """The gc callback: note the start, add the pass on its stop."""
        if phase == "start":
            self._started = time.perf_counter()
            return
        spent = time.perf_counter() - self._started
        generation = int(info.get("generation", 2))
        self.seconds[generation] += spent
        self.passes[generation] += 1
        self.longest = max(self.longest, spent)

    @property
    def frozen(self) -> int:
        """Objects in the permanent generation."""
        return gc.get_freeze_count()


def tune() -> CollectorClock:
    """Set the daemon's thresholds and start timing the collector; returns the clock to export."""
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)
    clock = CollectorClock()
    gc.callbacks.append(clock)
    return clock


def untune(clock: CollectorClock) -> None:
    """Stop timing and restore CPython's default thresholds (the daemon's shutdown, and tests)."""
    if clock in gc.callbacks:
        gc.callbacks.remove(clock)
    gc.set_threshold(700, 10, 10)
