"""Pause consuming when too much is held in memory; resume below a lower mark.

The gap between the marks (hysteresis) matters with Kafka: ``pause()`` drops the
prefetched messages of a partition, so toggling around a single threshold would refetch
the same data over and over. For the same reason a full buffer first only stops
fetching, for up to ``grace_s``: in a steady backlog (the API slower than Kafka) room
comes back within a batch's round trip and nothing is dropped and refetched; only a
buffer that stays full that long (an outage) pauses, so that polling, and with it the
group membership and the rebalance callbacks, goes on.

This is a pure decision. It keeps no count and no paused flag of its own: the count is
the offset tracker's ``held`` and the paused state is the Kafka source's (applied to the
library's own assignment), so a rebalance cannot leave a stale copy behind (v1's
``Backpressure`` stayed "paused" after the partitions it paused were revoked, and never
paused again).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backpressure:
    """High and low water marks on held events."""

    high_water: int
    low_water: int
    grace_s: float = 0.0
    # A fetch waits until it can take at least this many events: each fetch has a fixed
    # cost (a thread hop, futures, timers), so refilling 500 at a time cost ~1 µs/event.
    refill: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.low_water < self.high_water:
            raise ValueError("need 0 <= low_water < high_water")
        if self.grace_s < 0:
            raise ValueError("need grace_s >= 0")
        if not 1 <= self.refill <= self.high_water - self.low_water:
            raise ValueError("need 1 <= refill <= high_water - low_water")

    @classmethod
    def from_ratio(
        cls, max_buffered: int, resume_ratio: float, grace_s: float = 0.0, refill: int = 1
    ) -> Backpressure:
        """High water ``max_buffered``, low water ``max_buffered * resume_ratio``.

        ``refill`` is clamped to the gap between the marks.
        """
        low = min(max_buffered - 1, max(0, int(max_buffered * resume_ratio)))
        return cls(max_buffered, low, grace_s, max(1, min(refill, max_buffered - low)))

    def full(self, held: int) -> bool:
        """No fetch now: less room than ``refill`` below the high mark."""
        return held > self.high_water - self.refill

    def should_pause(self, held: int, paused: bool, full_for_s: float | None = None) -> bool:
        """Whether consuming should be paused now, given what is held and the state.

        ``full_for_s``: how long the buffer has been at the high mark without a pause
        (None: not full); a pause waits for ``grace_s`` of it.
        """
        if paused:
            return held > self.low_water
        if not self.full(held):
            return False
        return full_for_s is None or full_for_s >= self.grace_s

    def room(self, held: int) -> int:
        """How many more events a fetch may take before reaching the high mark."""
        return max(0, self.high_water - held)
