"""Values the transform hands to the rest of the pipeline (see docs/architecture.md)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ReasonCode(StrEnum):
    """Stable rejection codes: dead-letter headers and metrics use these strings."""

    INVALID_JSON = "invalid_json"
    SCHEMA_VIOLATION = "schema_violation"
    NO_IDENTIFIER = "no_identifier"
    INVALID_TIME = "invalid_time"
    NAIVE_TIME = "naive_time"
    TIME_TOO_OLD = "time_too_old"
    TIME_IN_FUTURE = "time_in_future"
    NO_ROUTE = "no_route"
    UNKNOWN_CURRENCY = "unknown_currency"
    INVALID_VALUE = "invalid_value"
    INVALID_NUMBER_ITEMS = "invalid_number_items"
    INVALID_CONVERSION_ID = "invalid_conversion_id"
    UNKNOWN_FORMAT = "unknown_format"  # preset auto: none (or several) of the known shapes
    INTERNAL_ERROR = "internal_error"


@dataclass(frozen=True, slots=True)
class Route:
    """Where a conversion goes: one ad account, its pixel (base tag) and one event tag."""

    account_id: str
    pixel_id: str
    event_id: str


class DropReason(StrEnum):
    """Why an optional field was left out of a conversion (metric label values: no PII)."""

    INVALID_TYPE = "invalid_type"  # e.g. a number where text is expected
    INVALID_VALUE = "invalid_value"  # the right type, but not a value X accepts
    NOT_INTEGER = "not_integer"  # content_group_id: X types it as an integer
    UNKNOWN_CURRENCY = "unknown_currency"  # value and currency both left out
    UNUSABLE = "unusable"  # an identifier that cannot be normalised (e-mail, phone, ip...)
    PII = "pii"  # free text holding an e-mail address or a phone number
    TOO_MANY = "too_many"  # more items than MAX_ITEMS


#: (field, reason) pairs: the field is a canonical mapping name (``item.group_id``).
Dropped = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Conversion:
    """Ready for batching: ``payload`` is the orjson bytes of ONE conversion object.

    ``dropped`` names the optional fields left out (field, reason), so that a user
    checking a mapping sees what degraded; empty for the common, clean event.
    """

    route: Route
    conversion_id: str
    payload: bytes
    dropped: Dropped = ()


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an event can never be sent; ``field`` is a dotted path, never a value."""

    reason: str
    field: str | None
    message: str


@dataclass(frozen=True, slots=True)
class Skip:
    """A message that is not a conversion and must not be dead-lettered.

    Debezium deletes, tombstones, truncates (and updates unless enabled): the engine
    marks the offset done (so it commits) and counts ``reason``; nothing is sent.
    """

    reason: str  # a SkipReason value
    # For an engine that does not know skips yet: it dead-letters anything not a
    # Conversion with (reason, field, message), which stays safe (nothing is lost).
    field: str | None = None
    message: str = "change event is not a new order (skipped)"


class SkipReason(StrEnum):
    """Stable skip reasons (metric label values)."""

    DELETE = "delete"
    TOMBSTONE = "tombstone"
    TRUNCATE = "truncate"
    UPDATE = "update"


#: What ``Transformer.transform`` answers for one message.
Result = Conversion | Rejection | Skip
