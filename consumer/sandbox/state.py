"""What the sandbox saw: counters, accepted conversion ids, a ring of recent conversions.

Tests read it through the admin API to prove delivery properties (nothing lost, which
ids were sent twice), so ids are counted per account exactly, not sampled.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import orjson


def _by_status(counts: Counter[int]) -> dict[str, int]:
    """Status codes as JSON keys; 0 stands for connections dropped without an answer."""
    return {(str(k) if k else "dropped"): v for k, v in sorted(counts.items())}


@dataclass(slots=True)
class AccountStats:
    requests_by_status: Counter[int] = field(default_factory=Counter)
    accepted_conversions: int = 0
    accepted_requests: int = 0
    rate_limited: int = 0
    without_conversion_id: int = 0
    conversion_ids: Counter[str] = field(default_factory=Counter)

    def as_json(self) -> dict[str, Any]:
        with_id = self.accepted_conversions - self.without_conversion_id
        return {
            "requests_by_status": _by_status(self.requests_by_status),
            "accepted_requests": self.accepted_requests,
            "accepted_conversions": self.accepted_conversions,
            "rate_limited": self.rate_limited,
            "unique_conversion_ids": len(self.conversion_ids),
            "duplicate_conversion_ids": with_id - len(self.conversion_ids),
            "conversions_without_id": self.without_conversion_id,
        }


@dataclass(frozen=True, slots=True)
class RecentConversion:
    account_id: str
    pixel_id: str
    received_at: float
    conversion: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Chunk:
    """One accepted request, kept as its body bytes and parsed again only when read.

    Holding the parsed objects instead would keep hundreds of thousands of containers
    alive for the garbage collector to scan on every full collection (measured: about a
    fifth of the sandbox's time at 500-event requests).
    """

    account_id: str
    pixel_id: str
    received_at: float
    body: bytes
    count: int

    def conversions(self) -> list[dict[str, Any]]:
        parsed: list[dict[str, Any]] = orjson.loads(self.body)["conversions"]
        return parsed


class SandboxState:
    def __init__(self, recent_capacity: int) -> None:
        self._recent_capacity = recent_capacity
        self.requests_by_status: Counter[int] = Counter()
        self.faults: Counter[str] = Counter()
        # Conversions accepted but reported missing from conversions_processed (faults).
        self.conversions_unprocessed = 0
        self.auth_failures: Counter[str] = Counter()
        self.accounts: dict[str, AccountStats] = {}
        self._chunks: deque[_Chunk] = deque()
        self._chunked = 0  # conversions held in _chunks

    def reset(self) -> None:
        self.__init__(self._recent_capacity)  # type: ignore[misc]

    def account(self, account_id: str) -> AccountStats:
        stats = self.accounts.get(account_id)
        if stats is None:
            stats = self.accounts[account_id] = AccountStats()
        return stats

    def record_status(self, status: int, account_id: str | None) -> None:
        self.requests_by_status[status] += 1
        if account_id is not None:
            self.account(account_id).requests_by_status[status] += 1

    def record_accepted(
        self,
        account_id: str,
        pixel_id: str,
        conversions: list[dict[str, Any]],
        now: float,
        body: bytes | None = None,
    ) -> None:
        """Count an accepted request; ``body`` (its bytes) feeds the recent-conversions ring."""
        ids = [c["conversion_id"] for c in conversions if c.get("conversion_id") is not None]
        if body is None and self._recent_capacity:
            body = orjson.dumps({"conversions": conversions})
        self.record_batch(account_id, pixel_id, len(conversions), ids, now=now, body=body)

    def record_batch(
        self,
        account_id: str,
        pixel_id: str,
        count: int,
        conversion_ids: list[str],
        *,
        now: float,
        body: bytes | None,
    ) -> None:
        """Count an accepted request of ``count`` conversions, ``conversion_ids`` those of
        the ones that have one; ``body``, a JSON object whose ``conversions`` are those,
        feeds the recent-conversions ring (``None``: not kept)."""
        stats = self.account(account_id)
        stats.accepted_requests += 1
        stats.accepted_conversions += count
        stats.conversion_ids.update(conversion_ids)  # Counter: counted in C
        stats.without_conversion_id += count - len(conversion_ids)
        if self._recent_capacity and body is not None and count:
            self._chunks.append(_Chunk(account_id, pixel_id, now, body, count))
            self._chunked += count
            chunks = self._chunks
            while self._chunked - chunks[0].count >= self._recent_capacity:
                self._chunked -= chunks.popleft().count

    def conversion_ids(self, account_id: str | None = None) -> Counter[str]:
        """Accepted ids with their acceptance counts, summed over accounts unless one is named."""
        if account_id is not None:
            stats = self.accounts.get(account_id)
            return Counter(stats.conversion_ids) if stats else Counter()
        per_account = [s.conversion_ids for s in self.accounts.values() if s.conversion_ids]
        if len(per_account) == 1:
            return per_account[0]
        merged: Counter[str] = Counter()
        for ids in per_account:
            merged.update(ids)
        return merged

    def recent_conversions(
        self, limit: int, account_id: str | None = None
    ) -> list[RecentConversion]:
        """The last ``limit`` accepted conversions, oldest first."""
        if limit <= 0:
            return []
        limit = min(limit, self._recent_capacity)
        picked: list[RecentConversion] = []
        for chunk in reversed(self._chunks):
            if account_id is not None and chunk.account_id != account_id:
                continue
            for conversion in reversed(chunk.conversions()):
                picked.append(
                    RecentConversion(
                        chunk.account_id, chunk.pixel_id, chunk.received_at, conversion
                    )
                )
                if len(picked) >= limit:
                    picked.reverse()
                    return picked
        picked.reverse()
        return picked

    def as_json(self) -> dict[str, Any]:
        totals = AccountStats()
        for stats in self.accounts.values():
            totals.accepted_requests += stats.accepted_requests
            totals.accepted_conversions += stats.accepted_conversions
            totals.rate_limited += stats.rate_limited
            totals.without_conversion_id += stats.without_conversion_id
        merged_ids = self.conversion_ids()
        totals.conversion_ids = merged_ids
        body = totals.as_json()
        body["requests_by_status"] = _by_status(self.requests_by_status)
        body["faults_injected"] = dict(self.faults)
        body["conversions_unprocessed"] = self.conversions_unprocessed
        body["auth_failures"] = dict(self.auth_failures)
        body["accounts"] = {name: s.as_json() for name, s in sorted(self.accounts.items())}
        return body
