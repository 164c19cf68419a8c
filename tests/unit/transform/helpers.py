"""Shared builders for the transform tests: a fixed clock and a default route."""

from __future__ import annotations

from typing import Any

import orjson

from consumer.transform import RouteSettings, RoutingSettings, Transformer, TransformSettings

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
ROUTE = RouteSettings(account_id="18ce552mlaq", pixel_id="oka17", event_id="ol288")


def make(
    settings: TransformSettings | None = None,
    routing: RoutingSettings | None = None,
    now: float = NOW,
) -> Transformer:
    return Transformer(
        settings or TransformSettings(), routing or RoutingSettings(default=ROUTE), now=lambda: now
    )


def event(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "order_id": "A-1001",
        "event_time": "2025-12-31T23:00:00+01:00",
        "user": {"email": "test-email@test.com"},
        "value": "19.99",
        "currency": "usd",
    }
    base.update(overrides)
    return base


def raw(doc: Any) -> bytes:
    return orjson.dumps(doc)
