"""Parking: a sick account's events wait on a Kafka topic, not in memory, not in front of
the healthy accounts' offsets.

Kafka commits one offset per partition, so one account's undeliverable event at the
head of a partition holds every account's offsets behind it, and back-pressure then
stops every account's delivery (issue 12). Parking moves such events to
``kafka.parking_topic`` (original key, value and headers, plus the ``xconv.park.*``
headers below); once Kafka acknowledged the parking record, the source offset counts as
done and the source partition commits. The same service consumes the parking topic, in
the same group, and delivers parked events when the account's gate lets them through.

This module is pure: the headers of a parking record, their (untrusted) reading, the
decision of what a failing batch calls for, and the buffer share of an account.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from consumer.delivery.dlq import SOURCE_HEADERS, DeadLetter, Headers, KafkaMessage
from consumer.observability.redact import redact_headers

PARK_PREFIX = "xconv.park."
H_ACCOUNT = "xconv.park.account"
H_ATTEMPTS = "xconv.park.attempts"
H_FIRST_FAILURE = "xconv.park.first_failure"
H_REASON = "xconv.park.reason"
H_PARKS = "xconv.park.parks"
H_TIME = "xconv.park.time"
# Room a parking record needs beyond the original record (the headers above): a record
# this close to the producer's limit goes to the dead-letter topic as ``too_large``.
PARK_HEADROOM_BYTES = 2048
# Bounds on values read back from headers (never trusted): attempts and parks beyond
# these are clamped, a first failure in the future is taken as now.
_MAX_COUNT = 10**9


class Policy(enum.StrEnum):
    """``delivery.stuck_policy``."""

    HOLD = "hold"
    PARK = "park"
    DEAD_LETTER = "dead_letter"


@dataclass(frozen=True, slots=True)
class ParkNote:
    """What a parking record says about its event's trouble so far."""

    account: str
    attempts: int
    first_failure: float  # epoch seconds
    reason: str
    parks: int  # times parked, 1 on the first


def iso_ms(epoch: float) -> str:
    stamp = datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def _pairs(
    headers: Sequence[tuple[str, str | bytes | None]] | Mapping[str, str | bytes | None] | None,
) -> list[tuple[str, bytes]]:
    raw = headers.items() if isinstance(headers, Mapping) else headers or []
    return [(k, v.encode() if isinstance(v, str) else v or b"") for k, v in raw]


def _count(raw: bytes | None) -> int:
    try:
        value = int((raw or b"0").decode("ascii", "replace").strip() or "0")
    except ValueError:
        return 0
    return min(max(value, 0), _MAX_COUNT)


def _epoch(raw: bytes | None, now: float) -> float:
    """An ISO 8601 time from a header, as epoch seconds; ``now`` when absent or odd."""
    if not raw:
        return now
    try:
        parsed = datetime.fromisoformat(raw.decode("ascii").replace("Z", "+00:00"))
    except (UnicodeDecodeError, ValueError):
        return now
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    value = parsed.timestamp()
    return value if math.isfinite(value) and value <= now else now


def original_headers(source: KafkaMessage) -> Headers:
    """The record's headers as name/bytes pairs (for its size)."""
    return _pairs(source.headers())


def read_note(source: KafkaMessage, now: float) -> ParkNote | None:
    """The note of a parking record, or None when ``source`` was never parked.

    Header values come from outside: counts are clamped, odd times are taken as now.
    """
    found = {k: v for k, v in _pairs(source.headers()) if k.startswith(PARK_PREFIX)}
    account = found.get(H_ACCOUNT)
    if account is None:
        return None
    return ParkNote(
        account=account.decode("utf-8", "replace"),
        attempts=_count(found.get(H_ATTEMPTS)),
        first_failure=_epoch(found.get(H_FIRST_FAILURE), now),
        reason=found.get(H_REASON, b"").decode("utf-8", "replace"),
        parks=_count(found.get(H_PARKS)),
    )


def next_note(
    source: KafkaMessage,
    *,
    account: str,
    attempts: int,
    failing_since: float,
    reason: str,
    now: float,
) -> ParkNote:
    """The note for parking ``source`` now; a re-parked event keeps its history."""
    prior = read_note(source, now)
    if prior is None:
        return ParkNote(account, attempts, min(failing_since, now), reason, 1)
    return ParkNote(
        account=account,
        attempts=min(prior.attempts + attempts, _MAX_COUNT),
        first_failure=min(prior.first_failure, failing_since, now),
        reason=reason,
        parks=min(prior.parks + 1, _MAX_COUNT),
    )


def park_letter(note: ParkNote) -> DeadLetter:
    """The sink's entry for a parking record (its headers come from ``parking_headers``)."""
    return DeadLetter(
        reason="parked",
        message=note.reason,
        attempts=note.attempts,
        extra=(
            (H_ACCOUNT, note.account.encode()),
            (H_ATTEMPTS, str(note.attempts).encode()),
            (H_FIRST_FAILURE, iso_ms(note.first_failure).encode()),
            (H_REASON, note.reason.encode()),
            (H_PARKS, str(note.parks).encode()),
        ),
    )


def parking_headers(source: KafkaMessage, letter: DeadLetter, now: datetime) -> Headers:
    """Original headers (less ``xconv.*``), the event's origin, then the park headers.

    The origin (``xconv.source.*``) is the first topic the event was read from: kept
    when the event is parked again, or when it came through a dead-letter replay.
    """
    original = _pairs(source.headers())
    kept = [(k, v) for k, v in original if not k.startswith("xconv.")]
    previous = dict(original)
    if all(h in previous for h in SOURCE_HEADERS):
        origin = [(h, previous[h]) for h in SOURCE_HEADERS]
    else:
        origin = [
            ("xconv.source.topic", (source.topic() or "").encode()),
            ("xconv.source.partition", str(source.partition()).encode()),
            ("xconv.source.offset", str(source.offset()).encode()),
        ]
    stamp = now.isoformat(timespec="milliseconds").replace("+00:00", "Z").encode()
    return redact_headers([*kept, *origin, *letter.extra, (H_TIME, stamp)])


def _int(raw: str | None) -> int:
    try:
        return int(raw or "-1")
    except ValueError:
        return -1


def decode_park(
    headers: Sequence[tuple[str, str | bytes | None]] | Mapping[str, str | bytes | None] | None,
) -> dict[str, object]:
    """The decoded view of a parking record's headers (for ``xconv dlq show``)."""
    raw = {k: v.decode("utf-8", "replace") for k, v in _pairs(headers) if k.startswith("xconv.")}
    return {
        "account": raw.get(H_ACCOUNT),
        "reason": raw.get(H_REASON),
        "attempts": _count(raw.get(H_ATTEMPTS, "0").encode()),
        "parks": _count(raw.get(H_PARKS, "0").encode()),
        "first_failure": raw.get(H_FIRST_FAILURE),
        "time": raw.get(H_TIME),
        "source": {
            "topic": raw.get("xconv.source.topic"),
            "partition": _int(raw.get("xconv.source.partition")),
            "offset": _int(raw.get("xconv.source.offset")),
        },
    }


def share(max_buffered: int, accounts_holding: int) -> int:
    """An account's buffer quota: an equal share among the accounts holding events."""
    return max(1, max_buffered // max(1, accounts_holding))


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a failing batch calls for: keep trying, or set it aside (park/dead-letter)."""

    set_aside: bool
    why: str = ""


def judge_failure(
    policy: Policy,
    *,
    failing_for: float | None,
    park_after_s: float,
    crowding: bool,
    other_healthy: bool,
    parked_at_closed_gate: bool = False,
) -> Verdict:
    """A batch's retryable failure: set it aside once stuck, if that frees anyone.

    Stuck: failing for ``park_after_s`` or longer, or its account holds more than its
    share of a full buffer (``crowding``). Setting aside only helps when another
    account is healthy; in an outage of every account it would rewrite the whole
    backlog into the parking topic (or the dead-letter topic) for nothing. Events that
    were parked already and failed at a closed gate (their probe) go back at once,
    whoever else is healthy: only one probe's worth is taken from the parking topic.
    """
    if policy is Policy.HOLD or failing_for is None:
        return Verdict(False)
    if parked_at_closed_gate:
        return Verdict(True, "parked before, and its account's probe failed")
    if not other_healthy:
        return Verdict(False)
    if failing_for >= park_after_s:
        return Verdict(True, f"failing for {failing_for:.0f}s")
    if crowding:
        return Verdict(True, f"failing for {failing_for:.0f}s and over its buffer share")
    return Verdict(False)
