"""The collector policy: generations built with it off and frozen, every pass timed."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from telemetryd import heap


@pytest.fixture(autouse=True)
def _restore_collector() -> Iterator[None]:
    """Each test leaves the collector as it found it: enabled, nothing frozen, default thresholds."""
    yield
    gc.unfreeze()
    gc.enable()


def test_building_freezes_what_it_built_and_restores_the_collector() -> None:
    """Objects made inside are frozen; the collector is off meanwhile and back on after, even on an error."""
    gc.unfreeze()
    before = gc.get_freeze_count()
    with heap.building():
        assert not gc.isenabled()
        built = [{"device": i} for i in range(1000)]
    assert gc.isenabled()
    assert gc.get_freeze_count() >= before + len(built)
    with pytest.raises(RuntimeError), heap.building():
        raise RuntimeError("a config that failed to load")
    assert gc.isenabled()


def test_building_keeps_a_disabled_collector_disabled() -> None:
    """A caller that had turned the collector off finds it off afterwards."""
    gc.disable()
    with heap.building():
        pass
    assert not gc.isenabled()


def test_the_clock_times_every_pass_by_generation() -> None:
    """After tune(), forced passes of generations 0 and 2 are counted and timed; untune() stops it."""
    clock = heap.tune()
    try:
        assert gc.get_threshold() == (heap.GEN0_THRESHOLD, heap.GEN1_THRESHOLD, heap.GEN2_THRESHOLD)
        gc.collect(0)
        gc.collect(2)
        assert clock.passes[0] >= 1 and clock.passes[2] >= 1
        assert clock.seconds[2] > 0 and clock.longest >= max(clock.seconds[0] / clock.passes[0], 0)
    finally:
        heap.untune(clock)
    passes = list(clock.passes)
    gc.collect(0)
    assert clock.passes == passes
    assert gc.get_threshold() == (700, 10, 10)
