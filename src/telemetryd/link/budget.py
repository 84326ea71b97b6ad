"""When speed tests may run: the NOC uplink budget concurrent tests share, and quiet windows.

Pure, no I/O: the link monitor asks before it starts a test and gives back after.
"""

from __future__ import annotations


def quiet_wait(wall: float, windows: list[tuple[int, int]], utc_offset_hours: float) -> float:
    """Seconds until the quiet window `wall` falls in ends; 0 when tests may run now.

    Windows are (start, end) minutes of the local day; one with end < start wraps midnight.
    """
    minute = ((wall + utc_offset_hours * 3600) % 86400) / 60
    for start, end in windows:
        if start <= end:
            inside = start <= minute < end
            left = end - minute
        else:
            inside = minute >= start or minute < end
            left = (end - minute) % 1440
        if inside:
            return left * 60
    return 0.0


class Budget:
    """Share of the NOC's uplink that concurrent speed tests may use, in Mbit/s.

    A test reserves its school's contracted total; a school contracted above the whole
    capacity may still run, but only alone, so no school waits forever.
    """

    def __init__(self, capacity_mbps: float) -> None:
        self.capacity_mbps = capacity_mbps
        self.reserved_mbps = 0.0
        self.running = 0

    def fits(self, mbps: float) -> bool:
        """Whether a test of `mbps` may start now."""
        return self.running == 0 or self.reserved_mbps + mbps <= self.capacity_mbps + 1e-9

    def take(self, mbps: float) -> None:
        """Reserve `mbps` for a test that starts now (call only when `fits`)."""
        self.reserved_mbps += mbps
        self.running += 1

    def give_back(self, mbps: float) -> None:
        """Release a finished test's reservation."""
        self.reserved_mbps = max(0.0, self.reserved_mbps - mbps)
        self.running -= 1
