"""``preset = "auto"``: per-event detection of the canonical / segment / ga4 / shopify shape."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from pydantic import ValidationError

from consumer.samples import DEFECTS, PRESETS, SampleGenerator
from consumer.transform import (
    Conversion,
    FieldMapping,
    Preset,
    ReasonCode,
    Rejection,
    Route,
    RouteSettings,
    RoutingSettings,
    TransformSettings,
)
from consumer.transform.detect import detect_format
from consumer.transform.types import Skip
from tests.unit.transform.helpers import NOW, ROUTE, event, make, raw
from tests.unit.transform.test_properties import json_values, shaped_values

AUTO = make(TransformSettings(preset="auto"))
OWN = {preset: make(TransformSettings(preset=preset)) for preset in PRESETS}


def samples(seed: int, count: int, invalid_share: float) -> list[Any]:
    gen = SampleGenerator(seed=seed, presets=PRESETS, invalid_share=invalid_share, now=lambda: NOW)
    return list(gen.events(count))


@pytest.mark.parametrize("preset", PRESETS)
def test_valid_samples_are_detected_as_their_preset(preset: str) -> None:
    gen = SampleGenerator(seed=21, presets=[preset], now=lambda: NOW)
    for sample in gen.events(50):
        assert detect_format(orjson.loads(sample.value)) is Preset(preset)


def test_auto_verdicts_equal_each_presets_own() -> None:
    seen: dict[str, int] = {}
    defects = set()
    for sample in samples(seed=13, count=800, invalid_share=0.3):
        own = OWN[sample.preset].transform(sample.value)
        auto = AUTO.transform(sample.value)
        assert auto == own, (sample.preset, sample.defect)
        if sample.valid:
            assert isinstance(auto, Conversion)
        else:
            assert isinstance(auto, Rejection)
            assert auto.reason == sample.expected_reason
            defects.add(sample.defect)
        seen[sample.preset] = seen.get(sample.preset, 0) + 1
    assert set(seen) == set(PRESETS)
    assert min(seen.values()) > 100
    assert defects == set(DEFECTS)


def test_a_sample_of_one_shape_is_not_accepted_by_another_preset() -> None:
    # the shapes really differ: detection is not picking one transformer for everything
    for sample in samples(seed=5, count=80, invalid_share=0.0):
        others = [p for p in PRESETS if p != sample.preset]
        for preset in others:
            result = OWN[preset].transform(sample.value)
            assert isinstance(result, Rejection), (sample.preset, preset)


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"id": 1, "created_at": "2025-12-31T20:00:00Z"},
        {"order_id": "A-1", "event_time": "2025-12-31T20:00:00Z"},  # canonical without user
        {"type": "identify", "event": "Order Completed", "properties": {}},
        {"type": "track", "event": "Order Completed", "properties": "x"},
        {"events": [{"name": "page_view"}]},
        {"events": "purchase"},
        {"line_items": []},
        {"total_price": "1.00"},
    ],
)
def test_unknown_shapes_are_rejected(doc: dict[str, Any]) -> None:
    result = AUTO.transform(raw(doc))
    assert isinstance(result, Rejection), result
    assert result.reason == "unknown_format"
    assert result.field is None
    assert "none of" in result.message


def test_several_shapes_are_ambiguous_and_the_message_carries_no_values() -> None:
    doc = event(
        user={"email": "jane.doe@example.com", "ip": "203.0.113.9"},
        line_items=[{"sku": "S"}],
        total_price="12.00",
    )
    result = AUTO.transform(raw(doc))
    assert isinstance(result, Rejection)
    assert result.reason == "unknown_format"
    assert result.message.endswith("canonical, shopify")
    for secret in ("jane.doe", "203.0.113.9", "A-1001"):
        assert secret not in result.message


@pytest.mark.parametrize(
    ("doc", "preset"),
    [
        ({"event": "Order Completed", "properties": {}}, Preset.SEGMENT),  # type omitted
        ({"type": "track", "event": "x", "properties": {}}, Preset.SEGMENT),
        ({"events": [{"name": "login"}, {"name": "purchase"}]}, Preset.GA4),
        ({"line_items": [], "admin_graphql_api_id": "gid://shopify/Order/1"}, Preset.SHOPIFY),
        ({"order_id": None, "event_time": None, "user": None}, Preset.CANONICAL),
    ],
)
def test_signatures(doc: dict[str, Any], preset: Preset) -> None:
    assert detect_format(doc) is preset


def test_detected_preset_rules_apply() -> None:
    # a canonical event missing its order id is the canonical preset's schema_violation
    result = AUTO.transform(raw({"order_id": None, "event_time": NOW, "user": {}}))
    assert isinstance(result, Rejection)
    assert (result.reason, result.field) == ("schema_violation", "order_id")
    # a GA4 body is rejected with the ga4 preset's field path
    ga4 = {"events": [{"name": "purchase", "params": {}}], "timestamp_micros": 1}
    result = AUTO.transform(raw(ga4))
    assert isinstance(result, Rejection)
    assert result.field == "events[name=purchase].params.transaction_id"


def test_not_json_or_not_an_object_keep_their_reasons() -> None:
    for data, reason in ((b"{", "invalid_json"), (b"[]", "schema_violation")):
        result = AUTO.transform(data)
        assert isinstance(result, Rejection)
        assert result.reason == reason


def test_routing_key_is_each_presets_own_and_key_field_applies_to_all() -> None:
    eu = RouteSettings(account_id="acc-eu", pixel_id="pixeu", event_id="eveu")
    by_preset_key = make(
        TransformSettings(preset="auto"), RoutingSettings(routes={"shop-eu": eu}, default=ROUTE)
    )
    canonical = by_preset_key.transform(raw(event(routing_key="shop-eu")))
    assert isinstance(canonical, Conversion)
    assert canonical.route == Route("acc-eu", "pixeu", "eveu")
    shopify_sample = SampleGenerator(seed=1, presets=["shopify"], now=lambda: NOW).event()
    doc = orjson.loads(shopify_sample.value)
    doc["routing_key"] = "shop-eu"  # not a shopify field: the default route applies
    result = by_preset_key.transform(raw(doc))
    assert isinstance(result, Conversion)
    assert result.route == Route("18ce552mlaq", "oka17", "ol288")

    by_field = make(
        TransformSettings(preset="auto"),
        RoutingSettings(routes={"shop-eu": eu}, default=ROUTE, key_field="shop_domain"),
    )
    doc["shop_domain"] = "shop-eu"
    result = by_field.transform(raw(doc))
    assert isinstance(result, Conversion)
    assert result.route.account_id == "acc-eu"
    result = by_field.transform(raw(event(shop_domain="shop-eu")))
    assert isinstance(result, Conversion)
    assert result.route.account_id == "acc-eu"


def test_dropped_identifier_counters_are_shared() -> None:
    transformer = make(TransformSettings(preset="auto"))
    transformer.transform(raw(event(user={"email": "a@b.c", "phone": "call me", "ip": "x"})))
    segment = SampleGenerator(seed=3, presets=["segment"], now=lambda: NOW).event()
    doc = orjson.loads(segment.value)
    doc["context"]["traits"]["phone"] = "12"
    transformer.transform(raw(doc))
    assert (transformer.dropped_phones, transformer.dropped_ips) == (2, 1)


def test_auto_refuses_mapping_overrides() -> None:
    with pytest.raises(ValidationError, match="auto"):
        TransformSettings(preset="auto", mapping=FieldMapping(order_id="name"))
    assert TransformSettings(preset="auto", value_format="string").preset is Preset.AUTO


def check_auto(data: bytes) -> None:
    result = AUTO.transform(data)
    assert isinstance(result, Conversion | Rejection | Skip)
    if isinstance(result, Rejection):
        assert result.reason in {code.value for code in ReasonCode}
        assert result.reason != ReasonCode.INTERNAL_ERROR, result


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_arbitrary_json_never_raises_through_auto(value: Any) -> None:
    check_auto(orjson.dumps(value))


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(shaped_values)
def test_json_with_our_field_names_never_raises_through_auto(value: Any) -> None:
    check_auto(orjson.dumps(value))
