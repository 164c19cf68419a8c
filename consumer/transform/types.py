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


@dataclass(frozen=True, slots=True)
class Conversion:
    """Ready for batching: ``payload`` is the orjson bytes of ONE conversion object."""

    route: Route
    conversion_id: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an event can never be sent; ``field`` is a dotted path, never a value."""

    reason: str
    field: str | None
    message: str
