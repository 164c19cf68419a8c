"""Transformer rules, reason codes, routing, presets and custom mappings."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from consumer.samples import DEFECTS, PRESETS, SampleGenerator
from consumer.transform import (
    Conversion,
    FieldMapping,
    ItemMapping,
    ReasonCode,
    Rejection,
    Route,
    RouteSettings,
    RoutingSettings,
    TransformSettings,
)
from consumer.transform.types import Result
from tests.unit.transform.helpers import NOW, ROUTE, event, make, raw

VECTOR = "e586883b2b4faf78d48300a79e0e15138d664cdf796ffb86e533170a9893eda8"


def ok(result: Result) -> dict[str, Any]:
    assert isinstance(result, Conversion), result
    body: dict[str, Any] = orjson.loads(result.payload)
    return body


def rejected(result: Result, reason: ReasonCode) -> Rejection:
    assert isinstance(result, Rejection), result
    assert result.reason == reason.value, result
    return result


def test_minimal_canonical_event() -> None:
    result = make().transform(raw(event()))
    body = ok(result)
    assert isinstance(result, Conversion)
    assert result.route == Route("18ce552mlaq", "oka17", "ol288")
    assert result.conversion_id == "A-1001"
    assert body == {
        "conversion_time": "2025-12-31T22:00:00.000Z",
        "event_id": "ol288",
        "identifiers": [{"hashed_email": VECTOR}],
        "value": 19.99,
        "price_currency": "USD",
        "conversion_id": "A-1001",
    }


def test_full_event_maps_every_field() -> None:
    doc = event(
        user={
            "email": "Test-Email@test.com",
            "phone": "(201) 555-0123",
            "twclid": "23opevjt88psuo13lu8d020qkn",
            "ip": "8.25.197.25",
            "user_agent": "Mozilla/5.0",
        },
        description="Pet supply purchases",
        items=[
            {
                "id": "SKU1",
                "group_id": 123,
                "name": "Blankets",
                "price": "100.99",
                "category": "Pet supplies",
                "quantity": 2,
            },
            {"id": 7, "price": 0.5},
        ],
    )
    body = ok(make().transform(raw(doc)))
    assert body["identifiers"] == [
        {"twclid": "23opevjt88psuo13lu8d020qkn"},
        {"hashed_email": VECTOR},
        {"hashed_phone_number": hashlib.sha256(b"+12015550123").hexdigest()},
        {"ip_address": "8.25.197.25", "user_agent": "Mozilla/5.0"},
    ]
    assert body["number_items"] == 3
    assert body["description"] == "Pet supply purchases"
    assert body["contents"] == [
        {
            "content_id": "SKU1",
            "content_group_id": "123",
            "content_name": "Blankets",
            "content_price": 100.99,
            "content_type": "Pet supplies",
            "num_items": 2,
        },
        {"content_id": "7", "content_price": 0.5},
    ]


def test_payload_is_one_conversion_object_for_batch_bodies() -> None:
    results = [make().transform(raw(event(order_id=f"o{i}"))) for i in range(3)]
    payloads = [r.payload for r in results if isinstance(r, Conversion)]
    body = orjson.loads(b'{"conversions":[' + b",".join(payloads) + b"]}")
    assert [c["conversion_id"] for c in body["conversions"]] == ["o0", "o1", "o2"]


@pytest.mark.parametrize(
    ("raw_bytes", "reason"),
    [
        (b"{not json", ReasonCode.INVALID_JSON),
        (b"", ReasonCode.INVALID_JSON),
        (b"\xff\xfe", ReasonCode.INVALID_JSON),
        (b"[1,2]", ReasonCode.SCHEMA_VIOLATION),
        (b'"text"', ReasonCode.SCHEMA_VIOLATION),
        (b"null", ReasonCode.SCHEMA_VIOLATION),
    ],
)
def test_not_an_event(raw_bytes: bytes, reason: ReasonCode) -> None:
    result = rejected(make().transform(raw_bytes), reason)
    assert result.field is None


@pytest.mark.parametrize(
    ("changes", "reason", "field"),
    [
        ({"order_id": None}, ReasonCode.SCHEMA_VIOLATION, "order_id"),
        ({"order_id": {"x": 1}}, ReasonCode.SCHEMA_VIOLATION, "order_id"),
        ({"order_id": True}, ReasonCode.SCHEMA_VIOLATION, "order_id"),
        ({"event_time": None}, ReasonCode.SCHEMA_VIOLATION, "event_time"),
        ({"event_time": "soon"}, ReasonCode.INVALID_TIME, "event_time"),
        ({"event_time": "2025-12-31T23:00:00"}, ReasonCode.NAIVE_TIME, "event_time"),
        ({"event_time": NOW - 8 * 86400}, ReasonCode.TIME_TOO_OLD, "event_time"),
        ({"event_time": NOW + 301}, ReasonCode.TIME_IN_FUTURE, "event_time"),
        ({"event_type": 5}, ReasonCode.SCHEMA_VIOLATION, "event_type"),
        ({"event_type": "refund"}, ReasonCode.NO_ROUTE, "event_type"),
        ({"conversion_id": "x" * 300}, ReasonCode.INVALID_CONVERSION_ID, "conversion_id"),
    ],
)
@pytest.mark.parametrize("strict", [False, True])
def test_required_parts_reject_the_event(
    changes: dict[str, Any], reason: ReasonCode, field: str, strict: bool
) -> None:
    result = rejected(
        make(TransformSettings(strict=strict)).transform(raw(event(**changes))), reason
    )
    assert result.field == field


# An invalid optional field: strict rejects with (reason, field); the default leaves the
# field out and reports (dropped field, drop reason).
OPTIONAL_CASES = [
    (
        {"currency": "ZZZ"},
        ReasonCode.UNKNOWN_CURRENCY,
        "currency",
        ("currency", "unknown_currency"),
    ),
    ({"currency": 840}, ReasonCode.SCHEMA_VIOLATION, "currency", ("currency", "invalid_type")),
    ({"value": "-1"}, ReasonCode.INVALID_VALUE, "value", ("value", "invalid_value")),
    ({"value": "12,50"}, ReasonCode.INVALID_VALUE, "value", ("value", "invalid_value")),
    (
        {"number_items": 0},
        ReasonCode.INVALID_NUMBER_ITEMS,
        "number_items",
        ("number_items", "invalid_value"),
    ),
    (
        {"items": [{"quantity": 1}, {"quantity": -2}]},
        ReasonCode.INVALID_NUMBER_ITEMS,
        "items[1].quantity",
        ("item.quantity", "invalid_value"),
    ),
    (
        {"items": [{"price": "x"}]},
        ReasonCode.INVALID_VALUE,
        "items[0].price",
        ("item.price", "invalid_value"),
    ),
    (
        {"items": [{"name": 5}]},
        ReasonCode.SCHEMA_VIOLATION,
        "items[0].name",
        ("item.name", "invalid_type"),
    ),
    (
        {"items": [{"group_id": "SKU-1-0"}]},
        ReasonCode.SCHEMA_VIOLATION,
        "items[0].group_id",
        ("item.group_id", "not_integer"),
    ),
    ({"items": ["SKU1"]}, ReasonCode.SCHEMA_VIOLATION, "items[0]", ("items", "invalid_type")),
    ({"items": {"id": 1}}, ReasonCode.SCHEMA_VIOLATION, "items", ("items", "invalid_type")),
    (
        {"description": 5},
        ReasonCode.SCHEMA_VIOLATION,
        "description",
        ("description", "invalid_type"),
    ),
    (
        {"user": {"email": "a@b.c", "phone": 5}},
        ReasonCode.SCHEMA_VIOLATION,
        "user.phone",
        ("phone", "invalid_type"),
    ),
    (
        {"user": {"email": "a@b.c", "ip": 5}},
        ReasonCode.SCHEMA_VIOLATION,
        "user.ip",
        ("ip", "invalid_type"),
    ),
    (
        {"user": {"email": "a@b.c", "twclid": 5}},
        ReasonCode.SCHEMA_VIOLATION,
        "user.twclid",
        ("twclid", "invalid_type"),
    ),
]


@pytest.mark.parametrize(("changes", "reason", "field", "drop"), OPTIONAL_CASES)
def test_strict_rejects_invalid_optional_fields(
    changes: dict[str, Any], reason: ReasonCode, field: str, drop: tuple[str, str]
) -> None:
    result = rejected(make(TransformSettings(strict=True)).transform(raw(event(**changes))), reason)
    assert result.field == field


@pytest.mark.parametrize(("changes", "reason", "field", "drop"), OPTIONAL_CASES)
def test_invalid_optional_fields_are_left_out_and_counted(
    changes: dict[str, Any], reason: ReasonCode, field: str, drop: tuple[str, str]
) -> None:
    transformer = make()
    result = transformer.transform(raw(event(**changes)))
    body = ok(result)
    assert isinstance(result, Conversion)
    assert drop in result.dropped
    assert transformer.dropped_fields[drop] >= 1
    assert sum(transformer.dropped_fields.values()) == len(result.dropped)
    assert all(type(name) is str and type(why) is str for name, why in transformer.dropped_fields)
    sent = {"currency": "price_currency", "number_items": "number_items"}.get(drop[0])
    if sent is not None:
        assert sent not in body
    if drop[0] == "value":
        assert "value" not in body


def test_unusable_currency_drops_value_and_item_prices() -> None:
    result = make().transform(
        raw(event(currency="ZZZ", items=[{"id": "S1", "price": "2.50", "quantity": 2}]))
    )
    body = ok(result)
    assert isinstance(result, Conversion)
    assert "value" not in body
    assert "price_currency" not in body
    assert body["contents"] == [{"content_id": "S1", "num_items": 2}]
    assert set(result.dropped) == {
        ("currency", "unknown_currency"),
        ("value", "unknown_currency"),
        ("item.price", "unknown_currency"),
    }


@pytest.mark.parametrize(
    ("group", "sent"),
    [
        (123, "123"),
        ("  456 ", "456"),
        (0, "0"),
        ("507f1f77bcf86cd799439011", None),
        (-3, None),
        ("12.5", None),
        ("\uff11\uff12", None),
        (True, None),
    ],
)
def test_content_group_id_only_from_integer_like_values(group: Any, sent: str | None) -> None:
    body = ok(make().transform(raw(event(items=[{"id": "S1", "group_id": group}]))))
    assert body["contents"][0].get("content_group_id") == sent
    assert body["contents"][0]["content_id"] == "S1"


def test_clean_event_reports_no_drops() -> None:
    transformer = make()
    result = transformer.transform(raw(event()))
    assert isinstance(result, Conversion)
    assert result.dropped == ()
    assert dict(transformer.dropped_fields) == {}


@pytest.mark.parametrize(
    "user",
    [
        {},
        {"ip": "8.25.197.25"},
        {"user_agent": "Mozilla/5.0"},
        {"email": "not-an-address", "ip": "8.25.197.25"},
        {"phone": "12", "user_agent": "Mozilla/5.0"},
        {"email": "", "twclid": "  "},
    ],
)
def test_no_usable_identifier(user: dict[str, Any]) -> None:
    result = rejected(make().transform(raw(event(user=user))), ReasonCode.NO_IDENTIFIER)
    assert result.field is None


def test_ip_and_user_agent_together_are_enough_unless_disabled() -> None:
    doc = event(user={"ip": "8.25.197.25", "user_agent": "Mozilla/5.0"})
    body = ok(make().transform(raw(doc)))
    assert body["identifiers"] == [{"ip_address": "8.25.197.25", "user_agent": "Mozilla/5.0"}]
    strict = make(TransformSettings(allow_ip_and_user_agent_only=False))
    rejected(strict.transform(raw(doc)), ReasonCode.NO_IDENTIFIER)


def test_invalid_identifiers_are_dropped_and_counted_never_sent() -> None:
    transformer = make()
    doc = event(
        user={"email": "ava@example.com", "phone": "call me", "ip": "2001:db8::1", "user_agent": ""}
    )
    result = transformer.transform(raw(doc))
    body = ok(result)
    assert body["identifiers"] == [{"hashed_email": hashlib.sha256(b"ava@example.com").hexdigest()}]
    assert b"call me" not in result.payload  # type: ignore[union-attr]
    assert (transformer.dropped_phones, transformer.dropped_ips) == (1, 1)


def test_rejection_messages_carry_no_pii() -> None:
    transformer = make()
    secrets = ["jane.doe@example.com", "+12015550123", "203.0.113.9"]
    docs = [
        event(
            user={
                "email": "jane.doe@example.com@@",
                "phone": "12345 +12015550123",
                "ip": "203.0.113.9",
            }
        ),
        event(user={"ip": "203.0.113.9"}),
        event(user={"email": ["jane.doe@example.com", 5]}),
    ]
    for doc in docs:
        result = transformer.transform(raw(doc))
        assert isinstance(result, Rejection)
        for secret in secrets:
            assert secret not in result.message
            assert secret not in (result.field or "")


def test_already_hashed_values_pass_through() -> None:
    phone_hash = hashlib.sha256(b"+12015550123").hexdigest()
    doc = event(user={"hashed_email": VECTOR.upper(), "hashed_phone": phone_hash})
    body = ok(make().transform(raw(doc)))
    assert body["identifiers"] == [{"hashed_email": VECTOR}, {"hashed_phone_number": phone_hash}]


def test_list_identifiers_are_deduplicated() -> None:
    doc = event(user={"email": ["test-email@test.com", " TEST-EMAIL@test.com", VECTOR]})
    body = ok(make().transform(raw(doc)))
    assert body["identifiers"] == [{"hashed_email": VECTOR}]


def test_value_string_format_keeps_producer_digits() -> None:
    settings = TransformSettings(value_format="string")
    assert ok(make(settings).transform(raw(event(value="20.00"))))["value"] == "20.00"
    assert ok(make().transform(raw(event(value="20.00"))))["value"] == 20.0


def test_value_from_items_when_absent() -> None:
    doc = event(items=[{"price": "0.10", "quantity": 3}, {"price": "19.99"}])
    del doc["value"]
    body = ok(make(TransformSettings(value_format="string")).transform(raw(doc)))
    assert body["value"] == "20.29"
    assert body["number_items"] == 4


def test_defaults_for_currency_and_description() -> None:
    doc = event()
    del doc["currency"]
    body = ok(
        make(TransformSettings(default_currency="eur", description="Web order")).transform(raw(doc))
    )
    assert (body["price_currency"], body["description"]) == ("EUR", "Web order")


def test_epoch_times_and_future_tolerance() -> None:
    body = ok(make().transform(raw(event(event_time=int((NOW + 200) * 1000)))))
    assert body["conversion_time"] == "2026-01-01T00:03:20.000Z"


def test_conversion_id_template_and_explicit_id() -> None:
    templated = make(TransformSettings(conversion_id_template="shop1-{order_id}-{event_type}"))
    assert ok(templated.transform(raw(event())))["conversion_id"] == "shop1-A-1001-purchase"
    assert ok(make().transform(raw(event(conversion_id="c-9"))))["conversion_id"] == "c-9"
    ignoring = make(TransformSettings(use_event_conversion_id=False))
    assert ok(ignoring.transform(raw(event(conversion_id="c-9"))))["conversion_id"] == "A-1001"


def test_conversion_id_is_deterministic() -> None:
    a, b = make(), make()
    first, second = a.transform(raw(event())), b.transform(raw(event()))
    assert first == second


def test_routing_by_key_with_default_and_event_types() -> None:
    eu = RouteSettings(
        account_id="acc-eu", pixel_id="pixeu", event_id="eveu", event_ids={"refund": "refeu"}
    )
    routing = RoutingSettings(
        routes={"shop-eu": eu}, default=ROUTE, event_ids={"subscribe": "sub1"}
    )
    transformer = make(routing=routing)
    result = transformer.transform(raw(event(routing_key="shop-eu")))
    assert isinstance(result, Conversion)
    assert result.route == Route("acc-eu", "pixeu", "eveu")
    refund = transformer.transform(raw(event(routing_key="shop-eu", event_type="refund")))
    assert isinstance(refund, Conversion)
    assert refund.route.event_id == "refeu"
    other = transformer.transform(raw(event(routing_key="shop-us", event_type="subscribe")))
    assert isinstance(other, Conversion)
    assert other.route == Route("18ce552mlaq", "oka17", "sub1")


def test_no_route_without_default() -> None:
    eu = RouteSettings(account_id="acc-eu", pixel_id="pixeu", event_id="eveu")
    transformer = make(routing=RoutingSettings(routes={"shop-eu": eu}, key_field="meta.shop"))
    assert isinstance(transformer.transform(raw(event(meta={"shop": "shop-eu"}))), Conversion)
    result = rejected(transformer.transform(raw(event(meta={"shop": "x"}))), ReasonCode.NO_ROUTE)
    assert result.field == "meta.shop"
    rejected(make(routing=RoutingSettings()).transform(raw(event())), ReasonCode.NO_ROUTE)


def test_custom_mapping() -> None:
    settings = TransformSettings(
        preset="custom",
        mapping=FieldMapping(
            order_id="data.order.number",
            event_time="data.order.placed",
            email=["data.buyer.mail", "data.order.contact.mail"],
            event_type="=purchase",
            value="data.order.amount",
            currency="data.order.ccy",
            items="data.lines[]",
            item=ItemMapping(id="sku", quantity="qty", price="unit.amount"),
        ),
    )
    doc = {
        "data": {
            "order": {
                "number": 77,
                "placed": "2025-12-31T20:00:00Z",
                "amount": "5.00",
                "ccy": "gbp",
                "contact": {"mail": "test-email@test.com"},
            },
            "buyer": {"mail": None},
            "lines": [{"sku": "S1", "qty": 2, "unit": {"amount": "2.50"}}],
        }
    }
    result = make(settings).transform(raw(doc))
    body = ok(result)
    assert body["conversion_id"] == "77"
    assert body["identifiers"] == [{"hashed_email": VECTOR}]
    assert body["price_currency"] == "GBP"
    assert body["contents"] == [{"content_id": "S1", "content_price": 2.5, "num_items": 2}]
    doc["data"]["lines"][0]["qty"] = "many"  # type: ignore[index]
    strict = settings.model_copy(update={"strict": True})
    bad = rejected(make(strict).transform(raw(doc)), ReasonCode.INVALID_NUMBER_ITEMS)
    assert bad.field == "data.lines[0].qty"


def test_preset_fields_can_be_overridden() -> None:
    settings = TransformSettings(preset="shopify", mapping=FieldMapping(order_id="name"))
    gen = SampleGenerator(seed=5, presets=["shopify"], now=lambda: NOW)
    sample = gen.event()
    result = make(settings).transform(sample.value)
    assert isinstance(result, Conversion)
    assert result.conversion_id.startswith("#")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"preset": "custom"},
        {"preset": "nope"},
        {"default_currency": "dollars"},
        {"conversion_id_template": "{order}"},
        {"conversion_id_template": "static"},
        {"mapping": {"order_id": "a..b"}},
        {"mapping": {"items": "lines"}},
        {"mapping": {"unknown": "x"}},
        {"max_age_s": 0},
    ],
)
def test_invalid_settings_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        TransformSettings.model_validate(kwargs)


def test_invalid_routing_is_refused() -> None:
    with pytest.raises(ValidationError):
        RoutingSettings.model_validate(
            {"default": {"account_id": "a", "pixel_id": "P!", "event_id": "e"}}
        )


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_samples_have_the_expected_verdict(preset: str) -> None:
    transformer = make(TransformSettings(preset=preset))
    gen = SampleGenerator(seed=11, presets=[preset], invalid_share=0.3, now=lambda: NOW)
    seen_defects = set()
    accepted = 0
    for sample in gen.events(400):
        result = transformer.transform(sample.value)
        if sample.valid:
            assert isinstance(result, Conversion), (sample.defect, result)
            accepted += 1
        else:
            assert isinstance(result, Rejection)
            assert result.reason == sample.expected_reason
            seen_defects.add(sample.defect)
    assert accepted > 200
    assert seen_defects == set(DEFECTS)


def test_segment_sample_details() -> None:
    gen = SampleGenerator(seed=2, presets=["segment"], now=lambda: NOW)
    transformer = make(TransformSettings(preset="segment"))
    for _ in range(50):
        sample = gen.event()
        doc = orjson.loads(sample.value)
        body = ok(transformer.transform(sample.value))
        assert body["conversion_id"] == doc["properties"]["order_id"]
        assert body["value"] == doc["properties"]["total"]
        if "twclid=" in doc["context"]["page"]["url"]:
            twclid = doc["context"]["page"]["url"].split("twclid=")[1]
            assert {"twclid": twclid} in body["identifiers"]


def test_ga4_uses_the_purchase_event_and_micros() -> None:
    doc = {
        "client_id": "1.2",
        "timestamp_micros": int((NOW - 60) * 1_000_000),
        "user_data": {"sha256_email_address": [VECTOR]},
        "ip_override": "203.0.113.7",
        "events": [
            {"name": "page_view", "params": {"transaction_id": "wrong"}},
            {
                "name": "purchase",
                "params": {
                    "transaction_id": "T-1",
                    "value": 30.03,
                    "currency": "EUR",
                    "items": [{"item_id": "I1", "quantity": 3}],
                },
            },
        ],
    }
    body = ok(make(TransformSettings(preset="ga4")).transform(raw(doc)))
    assert body["conversion_id"] == "T-1"
    assert body["conversion_time"] == "2025-12-31T23:59:00.000Z"
    assert body["value"] == 30.03
    assert body["number_items"] == 3
    missing = rejected(
        make(TransformSettings(preset="ga4")).transform(raw({"events": []})),
        ReasonCode.SCHEMA_VIOLATION,
    )
    assert missing.field == "events[name=purchase].params.transaction_id"


def test_shopify_phone_fallbacks_and_landing_site_twclid() -> None:
    doc = {
        "id": 450789469,
        "created_at": "2025-12-31T18:00:00-05:00",
        "currency": "CAD",
        "total_price": "598.94",
        "email": "",
        "phone": None,
        "customer": {"phone": None},
        "billing_address": {"phone": "555-625-1199"},
        "landing_site": "/?utm_source=x&twclid=abc123",
        "client_details": {"browser_ip": "216.191.105.146", "user_agent": "Mozilla/5.0"},
        "line_items": [
            {
                "id": 1,
                "variant_id": 447654529,
                "sku": "",
                "title": "IPod Nano",
                "price": "199.00",
                "quantity": 1,
                "product_id": 632910392,
            }
        ],
    }
    body = ok(make(TransformSettings(preset="shopify")).transform(raw(doc)))
    assert body["conversion_id"] == "450789469"
    assert body["value"] == 598.94
    assert body["identifiers"][:2] == [
        {"twclid": "abc123"},
        {"hashed_phone_number": hashlib.sha256(b"+15556251199").hexdigest()},
    ]
    assert body["contents"][0]["content_id"] == "447654529"
