"""Pause consuming when too many events are buffered; resume below a lower mark.

The gap between the marks (hysteresis) matters with Kafka: ``pause()`` drops the
prefetched messages of a partition, so toggling around a single threshold would refetch
the same data over and over.
"""

from __future__ import annotations


class Backpressure:
    """Counts held events; ``should_pause``/``should_resume`` fire once per transition."""

    def __init__(self, high_water: int, low_water: int) -> None:
        if not 0 <= low_water < high_water:
            raise ValueError("need 0 <= low_water < high_water")
        self.high_water = high_water
        self.low_water = low_water
        self._held = 0
        self._paused = False

    @classmethod
    def from_ratio(cls, max_buffered: int, resume_ratio: float) -> Backpressure:
        """High water ``max_buffered``, low water ``max_buffered * resume_ratio``."""
        low = min(max_buffered - 1, max(0, int(max_buffered * resume_ratio)))
        return cls(max_buffered, low)

    @property
    def held(self) -> int:
        return self._held

    @property
    def paused(self) -> bool:
        return self._paused

    def add(self, n: int = 1) -> None:
        self._held += n

    def release(self, n: int = 1) -> None:
        self._held = max(0, self._held - n)

    def should_pause(self) -> bool:
        """True once when ``held`` reaches the high mark; the caller then pauses."""
        if not self._paused and self._held >= self.high_water:
            self._paused = True
            return True
        return False

    def should_resume(self) -> bool:
        """True once when paused and ``held`` fell to the low mark; the caller resumes."""
        if self._paused and self._held <= self.low_water:
            self._paused = False
            return True
        return False
