"""When a flapping device is up: a deterministic square wave on the wall clock.

Kept free of any telemetryd import so the responder process, which applies the same
schedule inside the namespace, starts fast and agrees with `City.expected` by
construction: both call these functions on `time.time()`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FlapSchedule:
    """Up for the first half of every `period` seconds, down for the second half.

    `phase` (seconds, in ``[0, period)``) shifts the wave so devices do not all flap
    together. Times are Unix seconds (`time.time()`), so separate processes agree.
    """

    period: float
    phase: float

    def __post_init__(self) -> None:
        if self.period <= 0:
            raise ValueError(f"flap period must be positive, got {self.period}")

    @property
    def half(self) -> float:
        """How long each up or down stretch lasts."""
        return self.period / 2

    def is_up(self, at: float) -> bool:
        """Whether the device is up at Unix time `at`."""
        return (at + self.phase) % self.period < self.half

    def next_transition(self, at: float) -> float:
        """The first moment strictly after `at` when the device changes state."""
        return at + (self.half - (at + self.phase) % self.half)

    def seconds_from_transition(self, at: float) -> float:
        """Distance from `at` to the nearest transition, before or after."""
        position = (at + self.phase) % self.half
        return min(position, self.half - position)
