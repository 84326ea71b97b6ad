"""Interface counters → link rates, per role (``wan`` or a segment), for one router.

Pure: no I/O, no clock of its own; times come from the samples (`SnmpSample.at`, the
monotonic time the answer arrived). The rules, in the order they are checked for each
role of each sample:

1. no earlier reading of this role, or the counter width changed → baseline, no rate;
2. more than `gap_factor` x the poll interval since the last good reading (polls failed
   or were skipped) → re-baseline, no rate: a long average would hide what happened;
3. the router rebooted (sysUpTime went back, or advanced by less than half the elapsed
   time) → re-baseline, no rate, so counters restarting from zero give no spike;
4. a counter went back: Counter32 → a wrap, add 2^32; Counter64 → a wrap only when the
   wrapped delta is under half the range (2^63), otherwise a reset → re-baseline;
5. a rate above ifHighSpeed x `glitch_factor` (when the speed is known) → dropped as a
   glitch and re-baselined.

A failed poll clears every baseline (rule 2 would catch it too, but only after the
interval; clearing makes the next good sample a baseline at once).

Saturation: a segment is saturated when its utilisation (rate / allocation) is at or
above `threshold` (0.95) in each of the last `consecutive` (3) rated samples. A sample
without a rate (baseline, gap, reboot, glitch) breaks the run.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from telemetryd.model import InterfaceCounters, SnmpSample

COUNTER32_RANGE = 2**32
COUNTER64_RANGE = 2**64
GAP_FACTOR = 3.0
GLITCH_FACTOR = 1.1
SATURATION_THRESHOLD = 0.95
SATURATION_CONSECUTIVE = 3


class NoRate(enum.StrEnum):
    """Why a role has no rate for an interval."""

    BASELINE = "baseline"
    GAP = "gap"
    REBOOT = "reboot"
    COUNTER_RESET = "counter_reset"
    GLITCH = "glitch"
    NO_TIME = "no_time"


@dataclass(frozen=True, slots=True)
class InterfaceRate:
    """Average bit rates of one interface over one poll interval, seen from the router."""

    in_bps: float
    out_bps: float
    seconds: float
    """Length of the interval the rates average over."""
    speed_mbps: int | None = None
    """ifHighSpeed at the end of the interval, when the agent knows it."""


@dataclass(frozen=True, slots=True)
class _Reading:
    at: float
    uptime_ticks: int | None
    counters: InterfaceCounters


def counter_delta(previous: int, current: int, bits: int) -> int | None:
    """Octets counted between two readings of one counter; None when it was reset, not wrapped."""
    delta = current - previous
    if delta >= 0:
        return delta
    if bits == 32:
        # Without sysUpTime a 32-bit reset looks like a wrap; rule 3 and the glitch check catch it.
        return delta + COUNTER32_RANGE
    wrapped = delta + COUNTER64_RANGE
    # 2^63 octets take ~23 years at 100 Gbit/s: anything that large is a reset, not a wrap.
    return wrapped if wrapped < COUNTER64_RANGE // 2 else None


def rebooted(previous_ticks: int | None, current_ticks: int | None, elapsed: float) -> bool:
    """Whether sysUpTime shows a restart between two readings `elapsed` seconds apart.

    Uptime going back is a restart; so is uptime advancing by less than half the wall
    time (the device restarted and has been up for less than the interval). A 497-day
    TimeTicks wrap also reads as a restart: one lost interval, no harm.
    """
    if previous_ticks is None or current_ticks is None:
        return False
    if current_ticks < previous_ticks:
        return True
    return (current_ticks - previous_ticks) / 100.0 < elapsed / 2 - 1.0


def utilisation(rate_bps: float, allocation_mbps: float) -> float:
    """The share of an allocation a rate uses: 1.0 is exactly the allocation."""
    if allocation_mbps <= 0:
        raise ValueError(f"an allocation must be positive, got {allocation_mbps} Mbit/s")
    return rate_bps / (allocation_mbps * 1e6)


def saturated(
    utilisations: Sequence[float | None],
    *,
    threshold: float = SATURATION_THRESHOLD,
    consecutive: int = SATURATION_CONSECUTIVE,
) -> bool:
    """Whether the last `consecutive` utilisations (oldest first; None = no rate) are all ≥ `threshold`."""
    if consecutive < 1:
        raise ValueError("consecutive must be at least 1")
    recent = list(utilisations[-consecutive:])
    return len(recent) == consecutive and all(u is not None and u >= threshold for u in recent)


class LinkRates:
    """Successive SNMP samples of ONE router → in/out bit rates per role.

    `poll_interval` is the scheduler's interval for this router; it sets how long a
    silence may last before the next sample is a new baseline. After each `update`,
    `skipped` says why roles without a rate have none.
    """

    def __init__(
        self, poll_interval: float, *, gap_factor: float = GAP_FACTOR, glitch_factor: float = GLITCH_FACTOR
    ) -> None:
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        self.poll_interval = poll_interval
        self.gap_factor = gap_factor
        self.glitch_factor = glitch_factor
        self._last: dict[str, _Reading] = {}
        self.skipped: dict[str, NoRate] = {}

    def update(self, sample: SnmpSample) -> dict[str, InterfaceRate] | None:
        """Rates per role since the previous sample, or None when no role has one this time."""
        self.skipped = {}
        if not sample.ok and not sample.interfaces:
            self._last.clear()
            return None
        rates: dict[str, InterfaceRate] = {}
        seen = set()
        for role, counters in sample.interfaces:
            seen.add(role)
            reading = _Reading(sample.at, sample.uptime_ticks, counters)
            previous = self._last.get(role)
            self._last[role] = reading
            outcome = self._rate(previous, reading)
            if isinstance(outcome, InterfaceRate):
                rates[role] = outcome
            else:
                self.skipped[role] = outcome
        for role in set(self._last) - seen:
            del self._last[role]  # not read this time: its next reading is a baseline
        return rates or None

    def reset(self) -> None:
        """Forget every baseline (the router's interfaces were reconfigured)."""
        self._last.clear()

    def _rate(self, previous: _Reading | None, current: _Reading) -> InterfaceRate | NoRate:
        if previous is None or previous.counters.counter_bits != current.counters.counter_bits:
            return NoRate.BASELINE
        elapsed = current.at - previous.at
        if elapsed <= 0:
            return NoRate.NO_TIME
        if elapsed > self.gap_factor * self.poll_interval:
            return NoRate.GAP
        if rebooted(previous.uptime_ticks, current.uptime_ticks, elapsed):
            return NoRate.REBOOT
        bits = current.counters.counter_bits
        in_octets = counter_delta(previous.counters.in_octets, current.counters.in_octets, bits)
        out_octets = counter_delta(previous.counters.out_octets, current.counters.out_octets, bits)
        if in_octets is None or out_octets is None:
            return NoRate.COUNTER_RESET
        rate = InterfaceRate(in_octets * 8 / elapsed, out_octets * 8 / elapsed, elapsed, current.counters.speed_mbps)
        speed = current.counters.speed_mbps
        if speed and max(rate.in_bps, rate.out_bps) > speed * 1e6 * self.glitch_factor:
            return NoRate.GLITCH
        return rate


class SaturationWatch:
    """Per-segment run of recent utilisations, answering `saturated` after each sample."""

    def __init__(self, *, threshold: float = SATURATION_THRESHOLD, consecutive: int = SATURATION_CONSECUTIVE) -> None:
        if consecutive < 1:
            raise ValueError("consecutive must be at least 1")
        self.threshold = threshold
        self.consecutive = consecutive
        self._recent: dict[str, deque[float | None]] = {}

    def observe(self, segment: str, utilisation_share: float | None) -> bool:
        """Record one sample's utilisation (None when it had no rate) and say whether the segment is saturated."""
        recent = self._recent.setdefault(segment, deque(maxlen=self.consecutive))
        recent.append(utilisation_share)
        return saturated(list(recent), threshold=self.threshold, consecutive=self.consecutive)

    def forget(self, segments: Iterable[str]) -> None:
        """Drop segments that no longer exist."""
        for segment in segments:
            self._recent.pop(segment, None)


__all__ = [
    "GAP_FACTOR",
    "GLITCH_FACTOR",
    "SATURATION_CONSECUTIVE",
    "SATURATION_THRESHOLD",
    "InterfaceRate",
    "LinkRates",
    "NoRate",
    "SaturationWatch",
    "counter_delta",
    "rebooted",
    "saturated",
    "utilisation",
]
