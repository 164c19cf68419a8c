"""Purchase events -> X conversions: presets, routing, PII normalisation and hashing."""

from consumer.transform.config import (
    DebeziumSettings,
    FieldMapping,
    ItemMapping,
    Preset,
    RouteSettings,
    RoutingSettings,
    TransformSettings,
)
from consumer.transform.transformer import Transformer
from consumer.transform.types import (
    Conversion,
    DropReason,
    ReasonCode,
    Rejection,
    Result,
    Route,
    Skip,
    SkipReason,
)

__all__ = [
    "Conversion",
    "DebeziumSettings",
    "DropReason",
    "FieldMapping",
    "ItemMapping",
    "Preset",
    "ReasonCode",
    "Rejection",
    "Result",
    "Route",
    "RouteSettings",
    "RoutingSettings",
    "Skip",
    "SkipReason",
    "TransformSettings",
    "Transformer",
]
