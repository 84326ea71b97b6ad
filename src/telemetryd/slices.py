"""Long work in slices the event loop can interleave with probing.

A reload at 100,000 devices is seconds of pure-Python work (parsing, validating, planning).
In a thread it would share the GIL with the loop: every socket call the loop makes lets the
thread in, and the loop then waits out the interpreter's switch interval (5 ms) to get it
back, which at a few thousand socket calls a second stalls probing for the whole reload
(measured: a 2.5–5 s loop lag and 4 s schedule lag p99 at 30,000 devices). Written as a
generator that yields between small steps instead, the work runs on the loop itself and
gives it back after every slice.

A step may also yield a `concurrent.futures.Future` (work handed to a helper process):
the runner then waits for it, `finish` by blocking, `sliced` by awaiting it, so the loop
probes on meanwhile.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Generator
from typing import Any, TypeVar

T = TypeVar("T")

Steps = Generator[Any, None, T]
"""Work that yields between steps and returns its result. A step yields None, or a
`concurrent.futures.Future` to wait for (typed Any so a bare `yield` stays a step)."""

SLICE_SECONDS = 0.005
"""How long one slice holds the loop when the loop comes back quickly."""
SHARE = 0.25
"""A busy loop's iterations are long, and one 5 ms slice per iteration would make a reload at
100,000 devices take minutes (measured: 276 s at 96 % of a core): a slice grows to this share
of the wait before it, so the work gets about a fifth of a saturated loop."""
MAX_SLICE_SECONDS = 0.05
"""The longest slice, whatever the wait: half the scheduler's 100 ms stall budget."""


def finish(steps: Steps[T]) -> T:
    """Run `steps` to its end at once (start-up, tests, command-line tools)."""
    while True:
        try:
            waiting = next(steps)
        except StopIteration as done:
            result: T = done.value
            return result
        if waiting is not None:
            concurrent.futures.wait((waiting,))


async def sliced(steps: Steps[T], slice_seconds: float = SLICE_SECONDS, share: float = SHARE) -> T:
    """Run `steps` on the running loop, handing it back after each slice (`slice_seconds`, more when it is busy)."""
    clock = time.perf_counter
    until = clock() + slice_seconds
    while True:
        try:
            waiting = next(steps)
        except StopIteration as done:
            result: T = done.value
            return result
        if waiting is not None:
            await asyncio.wait((asyncio.wrap_future(waiting),))
            until = clock() + slice_seconds
            continue
        now = clock()
        if now >= until:
            await asyncio.sleep(0)
            resumed = clock()
            until = resumed + min(MAX_SLICE_SECONDS, max(slice_seconds, share * (resumed - now)))
