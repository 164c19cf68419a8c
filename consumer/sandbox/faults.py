"""Fault decisions drawn from a seeded RNG, so a run with the same seed and traffic repeats.

Every endpoint request costs exactly two draws (fault kind, latency jitter) whatever
the settings, so changing one share does not shift the sequence of the others.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from consumer.sandbox.config import FaultConfig


class FaultKind(enum.Enum):
    NONE = "none"
    ERROR_500 = "error_500"
    ERROR_503 = "error_503"
    ERROR_503_RETRY_AFTER = "error_503_retry_after"
    BURST_429 = "burst_429"
    HANG = "hang"
    DROP = "drop"


# Order of the shares on the [0, 1) line; the remainder is NONE.
_ORDER = (
    FaultKind.ERROR_500,
    FaultKind.ERROR_503,
    FaultKind.ERROR_503_RETRY_AFTER,
    FaultKind.BURST_429,
    FaultKind.HANG,
    FaultKind.DROP,
)


@dataclass(frozen=True, slots=True)
class FaultDecision:
    kind: FaultKind
    latency_s: float


class FaultInjector:
    def __init__(self, settings: FaultConfig, seed: int) -> None:
        self.settings = settings
        self.seed = seed
        self._rng = random.Random(seed)
        self.reject_ids: frozenset[str] = frozenset(settings.reject_conversion_ids)

    def configure(self, settings: FaultConfig, seed: int | None = None) -> None:
        """Swap settings; a given seed restarts the sequence of draws."""
        self.settings = settings
        self.reject_ids = frozenset(settings.reject_conversion_ids)
        if seed is not None:
            self.seed = seed
            self._rng = random.Random(seed)

    def decide(self) -> FaultDecision:
        settings = self.settings
        draw = self._rng.random()
        jitter = self._rng.random()
        kind = FaultKind.NONE
        edge = 0.0
        for candidate in _ORDER:
            edge += getattr(settings, candidate.value)
            if draw < edge:
                kind = candidate
                break
        latency_ms = settings.latency_ms + jitter * settings.latency_jitter_ms
        return FaultDecision(kind, latency_ms / 1000.0)

    def status_override(self, account_id: str) -> int | None:
        return self.settings.status_overrides.get(account_id)


def processed_count(sent: int, shortfall: int) -> int:
    """``conversions_processed`` to report for ``sent`` conversions: a partial success."""
    return max(0, sent - shortfall)


def html_error_page(status: int, reason: str) -> str:
    """A bare HTML error page, as a proxy or a wrong base URL answers instead of X."""
    title = f"{status} {reason}"
    return (
        "<!DOCTYPE html>\n<html><head><title>"
        f"{title}</title></head><body><h1>{title}</h1><p>nginx</p></body></html>\n"
    )
