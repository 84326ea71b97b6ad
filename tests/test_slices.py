"""Work in slices: run to the end at once, or on the loop with other tasks in between; a reload built that way."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from telemetryd import slices
from telemetryd.config import load_config, loading_config

from .helpers import school, write_config


def _counting(steps: int) -> slices.Steps[int]:
    total = 0
    for _ in range(steps):
        total += 1
        yield
    return total


def test_finish_returns_the_result() -> None:
    """A generator run at once gives its return value; errors inside propagate."""
    assert slices.finish(_counting(5)) == 5

    def broken() -> slices.Steps[int]:
        yield
        raise ValueError("bad step")

    with pytest.raises(ValueError, match="bad step"):
        slices.finish(broken())


async def test_sliced_hands_the_loop_to_other_tasks() -> None:
    """With a zero slice (and no share of the wait) every step gives the loop back: a concurrent task runs between."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    assert await slices.sliced(_counting(50), slice_seconds=0.0, share=0.0) == 50
    assert ticks - before >= 50
    task.cancel()


def test_a_config_loaded_in_steps_equals_one_loaded_at_once(tmp_path: Path) -> None:
    """loading_config yields between schools and builds exactly what load_config builds."""
    devices = [{"id": f"s{n}-router", "kind": "router", "host": f"10.0.{n}.1"} for n in range(40)]
    path = write_config(tmp_path, [school(f"s{n}", [devices[n]]) for n in range(40)])
    steps = loading_config(path)
    yields = 0
    while True:
        try:
            next(steps)
            yields += 1
        except StopIteration as done:
            stepped = done.value
            break
    assert yields >= 40
    assert stepped.inventory == load_config(path).inventory
    assert stepped.settings == load_config(path).settings


async def test_a_slice_grows_with_the_wait_before_it_up_to_its_cap() -> None:
    """After a long loop iteration (a busy daemon) the next slice is a share of the wait: the steps after
    it run back to back, where without a share every step would hand the loop back."""
    ticks = 0
    seen: list[int] = []

    def steps() -> slices.Steps[None]:
        for _ in range(200):
            seen.append(ticks)
            yield

    async def busy_loop() -> None:
        nonlocal ticks
        time.sleep(0.08)  # one long iteration of the loop, as a saturated daemon has
        while True:
            ticks += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(busy_loop())
    await slices.sliced(steps(), slice_seconds=0.0, share=0.5)
    other.cancel()
    first_after = next(i for i, t in enumerate(seen) if t > 0)
    assert first_after < 5  # the loop got its turn at once
    assert len(set(seen[first_after:])) <= 2  # then one slice of min(50 ms, 40 ms) took (nearly) all the rest
