"""Pure arithmetic of the link speed test: byte samples → ramp, stability, steady-state rate.

The client samples the cumulative payload bytes of all its streams every `interval`
seconds. From those samples:

* interval rates are the byte deltas over the measured (not the nominal) time deltas;
* the test is *stable* once the last `window` block rates (each over `block`
  intervals) agree: their spread (max − min) is within `tolerance` of their median;
* the *ramp* (TCP slow start, the shaper's initial burst, the sender filling its socket
  buffers) is the leading run of intervals whose rate lies outside `ramp_band` around
  the steady reference (the median of the intervals the stability test looks at); it is left out;
* the steady rate is the bytes moved in the newest window (at most `block` × `window`
  intervals, never reaching back into the ramp) over the time they took — one quotient,
  not a mean of interval rates, so sampling jitter cancels out. Reaching further back
  risks starting the quotient inside a loss stall whose catch-up burst comes later.

No I/O, no clocks: tests build sample series by hand.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Sample:
    """Cumulative payload bytes moved by all streams at monotonic time `at`."""

    at: float
    total_bytes: int


@dataclass(frozen=True, slots=True)
class IntervalRate:
    """Goodput between two consecutive samples."""

    start: float
    end: float
    moved: int

    @property
    def bits_per_second(self) -> float:
        """The interval's rate; 0 for an empty interval."""
        span = self.end - self.start
        return self.moved * 8 / span if span > 0 else 0.0


@dataclass(frozen=True, slots=True)
class SpeedPolicy:
    """How the speed test samples and when it calls the rate settled.

    Defaults were tuned on tbf-shaped 10–150 Mbit links against iperf3 (see
    bench/speedtest.py). Single 0.1 s intervals are too noisy to judge on their own
    (a loss recovery stalls in-order delivery for a few hundred ms and then releases a
    burst), so stability is judged on blocks of `block` intervals.
    """

    interval: float = 0.1
    """Seconds between samples."""
    block: int = 5
    """Intervals summed into one block rate for the stability test (0.5 s)."""
    window: int = 3
    """Consecutive block rates that must agree before the test may stop."""
    tolerance: float = 0.05
    """Allowed (max − min) / median of the window's block rates."""
    ramp_band: float = 0.10
    """An interval belongs to the ramp while its rate is off the reference by more than this."""
    min_steady_seconds: float = 1.5
    """Post-ramp time needed before a stable verdict."""

    def __post_init__(self) -> None:
        if self.interval <= 0 or self.block < 1 or self.window < 2:
            raise ValueError("interval must be positive, block at least 1 and window at least 2")
        if not (0 < self.tolerance < 1 and 0 < self.ramp_band < 1):
            raise ValueError("tolerance and ramp_band are fractions between 0 and 1")

    @property
    def stable_after(self) -> int:
        """Intervals the stability test needs."""
        return self.block * self.window


@dataclass(frozen=True, slots=True)
class Assessment:
    """What the samples so far say: is the rate settled, and what is it."""

    stable: bool
    bits_per_second: float | None
    """Steady-state goodput; None until there is at least one interval with a duration."""
    steady_from: float | None
    """When the ramp ended (the start of the steady part), None without rates."""
    steady_bytes: int = 0
    """Bytes moved in the steady part, the numerator of the rate."""

    @property
    def mbps(self) -> float:
        """The rate in Mbit/s (10^6), 0 when unknown."""
        return (self.bits_per_second or 0.0) / 1e6


def interval_rates(samples: Sequence[Sample]) -> list[IntervalRate]:
    """Rates between consecutive samples; samples out of time order or with no time between them are skipped."""
    rates: list[IntervalRate] = []
    previous: Sample | None = None
    for sample in samples:
        if previous is not None and sample.at > previous.at:
            rates.append(IntervalRate(previous.at, sample.at, max(0, sample.total_bytes - previous.total_bytes)))
            previous = sample
        elif previous is None:
            previous = sample
    return rates


def until_last_arrival(samples: Sequence[Sample]) -> list[Sample]:
    """The samples up to the first that holds the final byte count: a test ended by its budget ends there.

    The arrival counters (`receiver_arrived`, `peer_received`) see the last byte before the
    stream has read or written it, so the sample taken when the stream completes can add an
    interval that moved nothing (measured on loopback: 195 MB in the first 0.1 s, then an
    empty 2 ms interval that became the whole "steady" part and read 0 Mbit/s). Only for a
    test that spent its budget: an empty tail of a test still running is a stall and counts.
    """
    samples = list(samples)
    while len(samples) > 2 and samples[-1].total_bytes <= samples[-2].total_bytes:
        samples.pop()
    return samples


def spread(rates: Sequence[float]) -> float:
    """(max − min) / median of `rates`; infinite when the median is 0."""
    middle = statistics.median(rates)
    return (max(rates) - min(rates)) / middle if middle > 0 else math.inf


def ramp_end(rates: Sequence[IntervalRate], reference: float, band: float) -> int:
    """Index of the first interval whose rate is within `band` of `reference`; len(rates) if none is.

    The first interval always counts as ramp: it holds connection set-up and request time.
    """
    for index, rate in enumerate(rates):
        if index == 0 and len(rates) > 1:
            continue
        if reference > 0 and abs(rate.bits_per_second - reference) <= band * reference:
            return index
    return len(rates)


def block_rates(rates: Sequence[IntervalRate], block: int) -> list[float]:
    """Rates (bit/s) over consecutive blocks of `block` intervals, aligned to the newest interval.

    Leading intervals that do not fill a block are left out.
    """
    rates = list(rates)
    blocks: list[float] = []
    for end in range(len(rates), block - 1, -block):
        part = rates[end - block : end]
        span = part[-1].end - part[0].start
        blocks.append(sum(r.moved for r in part) * 8 / span if span > 0 else 0.0)
    return blocks[::-1]


def is_stable(rates: Sequence[IntervalRate], policy: SpeedPolicy) -> bool:
    """Whether the last `policy.window` block rates agree within `policy.tolerance`."""
    if len(rates) < policy.stable_after:
        return False
    window = block_rates(rates[-policy.stable_after :], policy.block)
    return spread(window) <= policy.tolerance


def assess(samples: Sequence[Sample], policy: SpeedPolicy) -> Assessment:
    """The verdict on the samples so far: stable or not, and the steady-state rate.

    The reference for the ramp is the median interval rate of the stability window (or of every interval
    after the first when there are fewer): what the link does now is what it does.
    """
    rates = interval_rates(samples)
    if not rates:
        return Assessment(stable=False, bits_per_second=None, steady_from=None)
    recent = rates[-policy.stable_after :] if len(rates) > policy.stable_after else rates[1:] or rates
    reference = statistics.median(r.bits_per_second for r in recent)
    start = ramp_end(rates, reference, policy.ramp_band)
    if start >= len(rates):
        # Never settled near the reference (a test cut short): the best guess is everything but set-up.
        start = 1 if len(rates) > 1 else 0
    # Only the newest window counts: an earlier cut can land in a loss stall whose catch-up burst
    # (held-back bytes released at once) then falls inside, which measured 2–5 % high on tbf links.
    steady = rates[max(start, len(rates) - policy.stable_after) :]
    moved = sum(r.moved for r in steady)
    span = steady[-1].end - steady[0].start
    rate = moved * 8 / span if span > 0 else None
    # The epsilon keeps float sums of nominal intervals (15 × 0.1 s) from missing the bar by 1e-15.
    settled_for = rates[-1].end - rates[start].start
    stable = settled_for + 1e-9 >= policy.min_steady_seconds and is_stable(rates, policy)
    return Assessment(stable=stable, bits_per_second=rate, steady_from=steady[0].start, steady_bytes=moved)


def peer_received(bytes_acked: int, sacked_segments: int, mss: int) -> int:
    """Upload bytes the peer holds, in order or not: the cumulative ACK plus the SACKed segments beyond it.

    `bytes_acked` alone (tcpi_bytes_acked) only moves when the in-order edge does: after a loss,
    everything the peer receives behind the hole is held back until the retransmission lands
    and then acknowledged in one jump (on a 10 Mbit tbf link up to ~100 SACKed segments,
    0.1 s of the link). A rate window that starts inside such a hole and ends after its jump
    counts bytes that crossed the link before the window: measured 2–9 % high. Adding the
    SACKed segments (tcpi_sacked × tcpi_snd_mss) counts each byte when it arrives. A SACKed
    segment may be shorter than the MSS, so this can run ahead by a few bytes per segment;
    the caller caps it at what was written.
    """
    if bytes_acked < 0 or sacked_segments < 0 or mss < 0:
        raise ValueError("TCP counters are never negative")
    return bytes_acked + sacked_segments * mss


def receiver_arrived(bytes_received: int, data_segments_in: int, rcv_mss: int) -> int:
    """Download bytes that reached this end, in order or not: data segments in × their size, at least in-order bytes.

    `bytes_received` alone (tcpi_bytes_received, what the application can read) stalls during
    every loss recovery: the segments arriving behind a hole wait in the out-of-order queue
    until the retransmission lands and are then released at once. The download twin of the
    upload bias `peer_received` removes: on a 20 Mbit tbf link a 0.3–0.4 s hole moves a
    1.5 s window's rate 10–15 % either way (a window ending in a hole reads low, one starting
    in a hole and ending after its release reads high). Linux keeps no byte count of the
    out-of-order queue, but it counts every data segment in (tcpi_data_segs_in, GRO-merged
    segments counted one by one) and knows their size (tcpi_rcv_mss): a bulk sender's
    segments are full, so their product counts each byte when it arrives. A short segment
    (headers, the tail of a write that drained the send queue) or a spurious retransmission
    makes it run ahead by less than a segment each; a rate over a steady window does not see
    that constant, and the caller caps the total at what was asked for.
    """
    if bytes_received < 0 or data_segments_in < 0 or rcv_mss < 0:
        raise ValueError("TCP counters are never negative")
    return max(bytes_received, data_segments_in * rcv_mss)


def default_budget(contract_mbps: float, *, seconds: float = 4.0) -> int:
    """A per-direction byte budget: `seconds` at the contracted rate.

    A stable test stops in about 1.5–2.5 s, so 4 s of contract rate leaves headroom for a
    noisy link and still caps the cost at 40 % of what a 10 s iperf3 run moves.
    """
    if contract_mbps <= 0 or seconds <= 0:
        raise ValueError("contract_mbps and seconds must be positive")
    return int(contract_mbps * 1e6 / 8 * seconds)


def default_streams(contract_mbps: float) -> int:
    """Parallel connections for a link: 2 below 40 Mbit/s, 4 from there on.

    On slow shaped links four flows share a shallow queue and take turns in loss recovery,
    so 0.5 s blocks rarely agree and tests end at the budget instead of stable; two flows
    settled in 3 of 3 runs at 10 and 20 Mbit (bench/speedtest.py).
    """
    return 2 if contract_mbps < 40 else 4
