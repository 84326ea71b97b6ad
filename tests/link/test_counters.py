"""Counter-to-rate rules on hand-built samples: wraps, reboots, resets, gaps, glitches, saturation."""

from __future__ import annotations

import pytest

from telemetryd.link.counters import (
    COUNTER32_RANGE,
    COUNTER64_RANGE,
    LinkRates,
    NoRate,
    SaturationWatch,
    counter_delta,
    rebooted,
    saturated,
    utilisation,
)
from telemetryd.model import InterfaceCounters, SnmpSample

INTERVAL = 10.0
MBIT_IN_10S = 10 * 1_000_000 // 8
"""Octets that make 1 Mbit/s over a 10 s interval."""


def counters(in_octets: int, out_octets: int = 0, *, bits: int = 64, speed: int | None = 1000) -> InterfaceCounters:
    return InterfaceCounters("edu0", 4, in_octets, out_octets, bits, speed_mbps=speed)


def sample(at: float, uptime_s: float | None, **roles: InterfaceCounters) -> SnmpSample:
    ticks = None if uptime_s is None else int(uptime_s * 100)
    return SnmpSample(True, at, 0.01, ticks, tuple(roles.items()))


def failed(at: float) -> SnmpSample:
    return SnmpSample(False, at, 2.0, reason="timeout", detail="no answer")


def test_first_sample_is_a_baseline_without_rates() -> None:
    """The first sample gives no rate and says it was a baseline."""
    rates = LinkRates(INTERVAL)
    assert rates.update(sample(100.0, 1000, education=counters(5_000))) is None
    assert rates.skipped == {"education": NoRate.BASELINE}


def test_steady_counters_give_bits_per_second_per_role() -> None:
    """Octet deltas over 10 s become bit rates, each role on its own."""
    rates = LinkRates(INTERVAL)
    rates.update(sample(100.0, 1000, education=counters(0, 0), wan=counters(1_000, 0)))
    got = rates.update(
        sample(
            110.0, 1010, education=counters(50 * MBIT_IN_10S, 2 * MBIT_IN_10S), wan=counters(1_000, 75 * MBIT_IN_10S)
        )
    )
    assert got is not None
    assert got["education"].in_bps == pytest.approx(50e6)
    assert got["education"].out_bps == pytest.approx(2e6)
    assert got["wan"].in_bps == 0
    assert got["wan"].out_bps == pytest.approx(75e6)
    assert got["education"].seconds == pytest.approx(10.0)


def test_counter32_wrap_adds_two_to_the_32() -> None:
    """A 32-bit counter that went back wrapped: the rate counts through 2^32."""
    rates = LinkRates(INTERVAL)
    rates.update(sample(0.0, 100, alarm=counters(COUNTER32_RANGE - 1_000, bits=32)))
    got = rates.update(sample(10.0, 110, alarm=counters(10 * MBIT_IN_10S - 1_000, bits=32)))
    assert got is not None
    assert got["alarm"].in_bps == pytest.approx(10e6)


def test_counter64_wrap_near_the_top_is_a_wrap() -> None:
    """A 64-bit counter going from just under 2^64 to a small value wrapped; the rate is right."""
    rates = LinkRates(INTERVAL)
    rates.update(sample(0.0, 100, wan=counters(COUNTER64_RANGE - 500)))
    got = rates.update(sample(10.0, 110, wan=counters(MBIT_IN_10S - 500)))
    assert got is not None
    assert got["wan"].in_bps == pytest.approx(1e6)


def test_counter64_going_back_without_reboot_is_a_reset_not_a_spike() -> None:
    """A 64-bit counter that fell far back (interface recreated) gives no rate and re-baselines."""
    rates = LinkRates(INTERVAL)
    rates.update(sample(0.0, 100, video=counters(9_000_000_000)))
    assert rates.update(sample(10.0, 110, video=counters(1_000))) is None
    assert rates.skipped == {"video": NoRate.COUNTER_RESET}
    got = rates.update(sample(20.0, 120, video=counters(1_000 + MBIT_IN_10S)))
    assert got is not None
    assert got["video"].in_bps == pytest.approx(1e6)


def test_reboot_seen_in_uptime_gives_no_rate_then_resumes() -> None:
    """sysUpTime going back means counters restarted: no rate (no spike), then normal rates."""
    rates = LinkRates(INTERVAL)
    rates.update(sample(0.0, 86_400, alarm=counters(5_000_000, bits=32)))
    # 32-bit counters restarted at a small value: without the uptime rule this reads as a huge wrap.
    assert rates.update(sample(10.0, 5, alarm=counters(100, bits=32))) is None
    assert rates.skipped == {"alarm": NoRate.REBOOT}
    got = rates.update(sample(20.0, 15, alarm=counters(100 + 3 * MBIT_IN_10S, bits=32)))
    assert got is not None
    assert got["alarm"].in_bps == pytest.approx(3e6)


def test_reboot_within_the_interval_is_seen_even_when_uptime_grew() -> None:
    """Uptime that advanced far less than the elapsed time means the router restarted in between."""
    assert rebooted(500, 600, elapsed=10.0)  # 1 s of uptime in 10 s of wall time
    assert not rebooted(500, 1_490, elapsed=10.0)  # 9.9 s: jitter, not a reboot
    assert rebooted(86_400, 100, elapsed=10.0)
    assert not rebooted(None, 100, elapsed=10.0)


def test_gap_longer_than_three_intervals_rebaselines() -> None:
    """A sample more than 3 intervals after the last good one is a baseline, not a long average."""
    rates = LinkRates(INTERVAL)
    rates.update(sample(0.0, 100, wan=counters(0)))
    assert rates.update(sample(31.0, 410, wan=counters(31 * MBIT_IN_10S))) is None
    assert rates.skipped == {"wan": NoRate.GAP}
    got = rates.update(sample(41.0, 510, wan=counters(32 * MBIT_IN_10S)))
    assert got is not None
    assert got["wan"].in_bps == pytest.approx(1e6)


def test_two_intervals_apart_still_rate() -> None:
    """One skipped poll (20 s, under the 3-interval limit) still gives an average rate."""
    rates = LinkRates(INTERVAL)
    rates.update(sample(0.0, 100, wan=counters(0)))
    got = rates.update(sample(20.0, 2_100, wan=counters(2 * MBIT_IN_10S)))
    assert got is not None
    assert got["wan"].in_bps == pytest.approx(1e6)


def test_failed_poll_clears_baselines() -> None:
    """After a failed poll the next good sample is a baseline, even within the gap limit."""
    rates = LinkRates(INTERVAL)
    rates.update(sample(0.0, 100, wan=counters(0)))
    assert rates.update(failed(10.0)) is None
    assert rates.update(sample(20.0, 2_100, wan=counters(MBIT_IN_10S))) is None
    assert rates.skipped == {"wan": NoRate.BASELINE}


def test_rate_above_interface_speed_is_dropped_as_glitch() -> None:
    """A delta implying more than ifHighSpeed x 1.1 is a glitch: no rate, re-baselined."""
    rates = LinkRates(INTERVAL)
    rates.update(sample(0.0, 100, education=counters(0, speed=100)))
    assert rates.update(sample(10.0, 1_100, education=counters(200 * MBIT_IN_10S, speed=100))) is None
    assert rates.skipped == {"education": NoRate.GLITCH}
    got = rates.update(sample(20.0, 2_100, education=counters(300 * MBIT_IN_10S, speed=100)))
    assert got is not None
    assert got["education"].in_bps == pytest.approx(100e6)  # at line rate, still plausible


def test_unknown_speed_never_glitches() -> None:
    """Without ifHighSpeed there is no ceiling to compare with, so any rate passes."""
    rates = LinkRates(INTERVAL)
    rates.update(sample(0.0, 100, wan=counters(0, speed=None)))
    got = rates.update(sample(10.0, 1_100, wan=counters(50_000 * MBIT_IN_10S, speed=None)))
    assert got is not None
    assert got["wan"].in_bps == pytest.approx(50e9)


def test_switch_from_32_to_64_bit_counters_rebaselines() -> None:
    """When the agent starts answering HC counters the old 32-bit baseline is not compared with them."""
    rates = LinkRates(INTERVAL)
    rates.update(sample(0.0, 100, wan=counters(1_000, bits=32)))
    assert rates.update(sample(10.0, 1_100, wan=counters(9_000_000_000))) is None
    assert rates.skipped == {"wan": NoRate.BASELINE}


def test_role_missing_from_a_sample_rebaselines_that_role_only() -> None:
    """A role absent from one partial sample gets a baseline when it returns; other roles keep rating."""
    rates = LinkRates(INTERVAL)
    rates.update(sample(0.0, 100, wan=counters(0), video=counters(0)))
    partial = SnmpSample(False, 10.0, 0.01, 11_000, (("wan", counters(MBIT_IN_10S)),), reason="missing_oid")
    got = rates.update(partial)
    assert got is not None
    assert set(got) == {"wan"}
    got = rates.update(sample(20.0, 2_100, wan=counters(2 * MBIT_IN_10S), video=counters(MBIT_IN_10S)))
    assert got is not None
    assert set(got) == {"wan"}
    assert rates.skipped == {"video": NoRate.BASELINE}


def test_same_time_twice_gives_no_rate() -> None:
    """Two samples with the same timestamp cannot make a rate (no division by zero)."""
    rates = LinkRates(INTERVAL)
    rates.update(sample(5.0, 100, wan=counters(0)))
    assert rates.update(sample(5.0, 100, wan=counters(10))) is None
    assert rates.skipped == {"wan": NoRate.NO_TIME}


@pytest.mark.parametrize(
    ("previous", "current", "bits", "expected"),
    [
        (10, 25, 64, 15),
        (COUNTER32_RANGE - 5, 5, 32, 10),
        (COUNTER64_RANGE - 5, 5, 64, 10),
        (5_000_000, 10, 64, None),
        (5_000_000, 10, 32, COUNTER32_RANGE - 4_999_990),
    ],
)
def test_counter_delta(previous: int, current: int, bits: int, expected: int | None) -> None:
    """Deltas count through wraps; a 64-bit counter falling far back is a reset (None)."""
    assert counter_delta(previous, current, bits) == expected


def test_utilisation_is_rate_over_allocation() -> None:
    """19 Mbit/s on a 20 Mbit/s allocation is 95 %; a zero allocation is a programming error."""
    assert utilisation(19e6, 20.0) == pytest.approx(0.95)
    with pytest.raises(ValueError, match="positive"):
        utilisation(1.0, 0.0)


@pytest.mark.parametrize(
    ("history", "expected"),
    [
        ([0.96, 0.97, 0.95], True),
        ([0.5, 0.96, 0.97, 0.99], True),
        ([0.96, 0.94, 0.99], False),
        ([0.96, 0.99], False),
        ([0.99, None, 0.99, 0.99], False),
        ([0.99, 0.99, None], False),
        ([], False),
    ],
)
def test_saturated_needs_three_consecutive_samples_at_95_percent(history: list[float | None], expected: bool) -> None:
    """Saturated only when each of the last three samples is at ≥ 95 %; a missing rate breaks the run."""
    assert saturated(history) is expected


def test_saturation_rule_is_parameterised() -> None:
    """Threshold and run length are parameters, not constants."""
    assert saturated([0.91, 0.92], threshold=0.9, consecutive=2)
    assert not saturated([0.91, 0.92], threshold=0.95, consecutive=2)
    assert saturated([0.96], consecutive=1)
    with pytest.raises(ValueError, match="at least 1"):
        saturated([1.0], consecutive=0)


def test_saturation_watch_tracks_each_segment_apart() -> None:
    """A watch turns saturated on the third high sample of one segment and off again when it drops."""
    watch = SaturationWatch()
    seen = [watch.observe("video", u) for u in (0.97, 0.98, 0.99, 0.5)]
    assert seen == [False, False, True, False]
    assert not watch.observe("alarm", 0.99)
    watch.forget(["video"])
    assert not watch.observe("video", 0.99)
