"""Isolating the bad events of a batch X rejected with 400 (all-or-nothing).

With pointers. X's (and the sandbox's) per-conversion errors carry
``parameter = "conversions[<i>]..."``: those indices are bad (dead-letter them with
their own errors) and the rest is resent as one request. Extra requests: one per round,
and a round removes every event X named, so usually one resend in total (at most k if X
names only one problem per answer).

Without pointers (whole-request messages, or an index out of range), bisect: send the
two halves separately; a half that succeeds is done, a rejected half is planned again,
and a rejected single event is bad. Each level of the bisection tree holds at most k
groups containing a bad event, each splitting into two requests, and there are
``ceil(log2 n)`` levels, so k bad events among n cost at most ``2·k·ceil(log2 n)`` extra
requests (``bisection_bound``): 18 for one bad event in a full batch of 500.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

_INDEX = re.compile(r"^\s*conversions\[(\d+)\]")


def error_index(error: Mapping[str, Any]) -> int | None:
    """The conversion index an error's ``parameter`` points at, or None."""
    parameter = error.get("parameter")
    if not isinstance(parameter, str):
        return None
    match = _INDEX.match(parameter)
    return int(match.group(1)) if match else None


@dataclass(frozen=True, slots=True)
class IsolationPlan:
    """What to do with a rejected batch; indices refer to its items.

    - ``bad``: index -> the errors naming it (dead-letter those items).
    - ``resend``: indices to send again together as one request (may be empty).
    - ``halves``: groups to send as separate requests when bisecting (else empty).
    """

    bad: dict[int, list[Mapping[str, Any]]] = field(default_factory=dict)
    resend: tuple[int, ...] = ()
    halves: tuple[tuple[int, ...], ...] = ()

    @property
    def bisecting(self) -> bool:
        return bool(self.halves)

    @property
    def retry_groups(self) -> tuple[tuple[int, ...], ...]:
        """Every group to send again, one request each: ``(resend,)`` or ``halves``."""
        if self.halves:
            return self.halves
        return (self.resend,) if self.resend else ()


def plan_isolation(batch_size: int, errors: Sequence[Mapping[str, Any]]) -> IsolationPlan:
    """Plan the next step for a batch of ``batch_size`` events rejected with ``errors``."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    bad: dict[int, list[Mapping[str, Any]]] = {}
    for error in errors:
        index = error_index(error)
        if index is not None and index < batch_size:
            bad.setdefault(index, []).append(error)
    if bad:
        resend = tuple(i for i in range(batch_size) if i not in bad)
        return IsolationPlan(bad=bad, resend=resend)
    if batch_size == 1:
        return IsolationPlan(bad={0: list(errors)})
    middle = batch_size // 2
    return IsolationPlan(halves=(tuple(range(middle)), tuple(range(middle, batch_size))))


def bisection_bound(batch_size: int, bad_events: int = 1) -> int:
    """Worst-case extra requests to isolate ``bad_events`` by bisection: 2·k·ceil(log2 n)."""
    if batch_size <= 1 or bad_events <= 0:
        return 0
    k = min(bad_events, batch_size)
    return 2 * k * math.ceil(math.log2(batch_size))
