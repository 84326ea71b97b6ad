"""A fake `Clock` for scheduler tests: time moves only when the test says so."""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable


class FakeTimer:
    """One pending callback on a FakeClock."""

    __slots__ = ("args", "callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[..., object], args: tuple[object, ...]) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        """Drop the callback."""
        self.cancelled = True


async def settle() -> None:
    """Let the event loop run until every task is blocked (on the fake clock or a future)."""
    loop = asyncio.get_running_loop()
    ready = getattr(loop, "_ready", None)  # asyncio's run queue; nothing else in these tests uses real time
    for _ in range(100_000):
        await asyncio.sleep(0)
        if ready is not None and not ready:
            return
    if ready is not None:
        raise AssertionError("the event loop never went idle: something spins")


class FakeClock:
    """`now()` and `call_at()` like the scheduler's Clock; `advance()` moves time and fires timers in order."""

    def __init__(self, start: float = 1000.0) -> None:
        self.time = start
        self._timers: list[tuple[float, int, FakeTimer]] = []
        self._seq = 0

    def now(self) -> float:
        """The fake time."""
        return self.time

    def call_at(self, when: float, callback: Callable[..., object], *args: object) -> FakeTimer:
        """Queue `callback(*args)` for when `advance` reaches `when`."""
        timer = FakeTimer(when, callback, args)
        self._seq += 1
        heapq.heappush(self._timers, (when, self._seq, timer))
        return timer

    @property
    def pending(self) -> list[float]:
        """Due times of the timers not yet fired nor cancelled, earliest first."""
        return sorted(t.when for _, _, t in self._timers if not t.cancelled)

    async def sleep(self, seconds: float) -> None:
        """`asyncio.sleep` on fake time (for fake probers)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        timer = self.call_at(self.time + seconds, _resolve, future)
        try:
            await future
        finally:
            timer.cancel()

    async def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, firing each timer at its own time and letting the loop settle after it."""
        target = self.time + seconds
        await settle()
        while self._timers:
            when, _, timer = self._timers[0]
            if when > target:
                break
            heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self.time = max(self.time, when)
            timer.callback(*timer.args)
            await settle()
        self.time = target
        await settle()

    async def stall(self, seconds: float) -> None:
        """Move time forward by `seconds` at once and fire every timer due, without the loop running between
        them: what a loop that was blocked (a long render) does when it comes back."""
        self.time += seconds
        due = []
        while self._timers and self._timers[0][0] <= self.time:
            due.append(heapq.heappop(self._timers)[2])
        for timer in due:
            if not timer.cancelled:
                timer.callback(*timer.args)
        await settle()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
