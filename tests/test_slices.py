"""Work in slices: run to the end at once, or on the loop with other tasks in between; a reload built that way."""

from __future__ import annotations

import asyncio
import concurrent.futures
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


class _Ticks:
    """A task that counts its turns on the loop: proof that other work got the loop."""

    def __init__(self) -> None:
        self.count = 0

    async def run(self, every: float) -> None:
        while True:
            self.count += 1
            await asyncio.sleep(every)


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
    ticks = _Ticks()
    task = asyncio.create_task(ticks.run(every=0.0))
    await asyncio.sleep(0)
    before = ticks.count
    assert await slices.sliced(_counting(50), slice_seconds=0.0, share=0.0) == 50
    assert ticks.count - before >= 50
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


def _waiting_on(future: concurrent.futures.Future[int]) -> slices.Steps[int]:
    yield future
    return future.result() + 1


def test_finish_waits_for_a_future_a_step_yields() -> None:
    """A step yielding a future (work in a helper process) makes `finish` block until it is done."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(lambda: (time.sleep(0.05), 41)[1])
        assert slices.finish(_waiting_on(future)) == 42


async def test_sliced_awaits_a_future_while_the_loop_runs() -> None:
    """`sliced` awaits a yielded future instead of blocking: other tasks run until it is done."""
    ticks = _Ticks()
    task = asyncio.create_task(ticks.run(every=0.001))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(lambda: (time.sleep(0.2), 41)[1])
        assert await slices.sliced(_waiting_on(future)) == 42
    task.cancel()
    assert ticks.count >= 20  # a blocking wait would have left the ticker at 0 or 1


async def test_a_reload_parsed_by_helper_processes_on_a_running_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon's sliced reload hands a large inventory's parse to helpers and gets the same configuration."""
    from telemetryd.config import yamlsrc
    from telemetryd.daemon import Daemon

    devices = [{"id": f"s{n}-router", "kind": "router", "host": f"10.0.{n}.1"} for n in range(20)]
    path = write_config(tmp_path, [school(f"s{n}", [devices[n]]) for n in range(20)])
    daemon = Daemon(load_config(path))
    monkeypatch.setattr(yamlsrc, "PARALLEL_BYTES", 1)
    reload = await slices.sliced(daemon._reloading())
    assert reload is not None
    assert "helper process" in reload.config.parsed_by
    assert reload.config.inventory == daemon.config.inventory
