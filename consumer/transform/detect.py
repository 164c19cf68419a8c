"""Which producer shape an event has, for ``preset = "auto"`` (one topic, several producers).

Each shape has a signature of a few top-level keys that the others' never carry, so a
check is a handful of dict look-ups. An event matching none, or more than one, is not
guessed at: the transform rejects it as ``unknown_format``.
"""

from __future__ import annotations

from typing import Any, Final

from consumer.transform.config import Preset
from consumer.transform.debezium import is_debezium

# The presets auto chooses from, in the order their signatures are listed.
AUTO_PRESETS: Final = (
    Preset.CANONICAL,
    Preset.SEGMENT,
    Preset.GA4,
    Preset.SHOPIFY,
    Preset.DEBEZIUM,
)

_SHOPIFY_GID: Final = "gid://shopify/Order/"


def is_canonical(doc: dict[str, Any]) -> bool:
    """The required keys of schemas/purchase-event.schema.json: order_id, event_time, user."""
    return "order_id" in doc and "event_time" in doc and "user" in doc


def is_segment(doc: dict[str, Any]) -> bool:
    """A Segment track call: ``event`` and a ``properties`` object; ``type`` is ``track``
    when present (page or identify calls are not purchases)."""
    return (
        "event" in doc
        and type(doc.get("properties")) is dict
        and doc.get("type", "track") == "track"
    )


def is_ga4(doc: dict[str, Any]) -> bool:
    """A Measurement Protocol body whose ``events`` list has an element named purchase
    (compared as the ga4 preset's ``events[name=purchase]`` path does)."""
    events = doc.get("events")
    return type(events) is list and any(
        type(event) is dict and str(event.get("name")) == "purchase" for event in events
    )


def is_shopify(doc: dict[str, Any]) -> bool:
    """A Shopify order: ``line_items`` and ``total_price`` (or an Order GraphQL id)."""
    if "line_items" not in doc:
        return False
    gid = doc.get("admin_graphql_api_id")
    return "total_price" in doc or (type(gid) is str and gid.startswith(_SHOPIFY_GID))


_CHECKS: Final = (
    (Preset.CANONICAL, is_canonical),
    (Preset.SEGMENT, is_segment),
    (Preset.GA4, is_ga4),
    (Preset.SHOPIFY, is_shopify),
    (Preset.DEBEZIUM, is_debezium),
)


def detect_format(doc: dict[str, Any]) -> Preset | str:
    """The one preset whose signature ``doc`` has, else a PII-free reason (names only)."""
    found = [preset for preset, check in _CHECKS if check(doc)]
    if len(found) == 1:
        return found[0]
    if not found:
        return "event has none of the canonical, segment, ga4, shopify or debezium shapes"
    return "event has the shapes of several formats: " + ", ".join(p.value for p in found)
