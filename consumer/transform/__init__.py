"""Purchase events -> X conversions: presets, routing, PII normalisation and hashing."""

from consumer.transform.config import (
    FieldMapping,
    ItemMapping,
    Preset,
    RouteSettings,
    RoutingSettings,
    TransformSettings,
)
from consumer.transform.transformer import Transformer
from consumer.transform.types import Conversion, ReasonCode, Rejection, Route

__all__ = [
    "Conversion",
    "FieldMapping",
    "ItemMapping",
    "Preset",
    "ReasonCode",
    "Rejection",
    "Route",
    "RouteSettings",
    "RoutingSettings",
    "TransformSettings",
    "Transformer",
]
