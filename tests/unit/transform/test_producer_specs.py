"""Each preset against its producer's published example, field by field.

The bodies follow the examples of Segment's e-commerce spec (Order Completed), Google's
GA4 ``purchase`` event, and Shopify's ``orders/create`` webhook; only the times are
moved to "now" (the transform refuses old events) and a contact is added where the
example has none.
"""

from __future__ import annotations

from typing import Any

import orjson

from consumer.sandbox.validation import accepted_event_ids, validate_body
from consumer.transform import Conversion, TransformSettings
from consumer.transform.normalize import hash_email, hash_phone
from tests.unit.transform.helpers import NOW, ROUTE, make

EVENT_IDS = accepted_event_ids(ROUTE.pixel_id, [ROUTE.event_id])


def converted(preset: str, doc: dict[str, Any]) -> tuple[Conversion, dict[str, Any]]:
    result = make(TransformSettings(preset=preset)).transform(orjson.dumps(doc))
    assert isinstance(result, Conversion), result
    body = b'{"conversions":[' + result.payload + b"]}"
    assert validate_body(body, event_ids=EVENT_IDS).ok
    parsed: dict[str, Any] = orjson.loads(result.payload)
    return result, parsed


def test_segment_order_completed() -> None:
    doc = {
        "type": "track",
        "userId": "019mr8mf4r",
        "event": "Order Completed",
        "timestamp": "2025-12-31T23:30:00.000Z",
        "context": {"traits": {"email": "peter@example.com"}, "ip": "8.8.8.8"},
        "properties": {
            "checkout_id": "fksdjfsdjfisjf9sdfjsd9f",
            "order_id": "50314b8e9bcf000000000000",
            "affiliation": "Google Store",
            "total": 27.50,
            "subtotal": 22.50,
            "revenue": 25.00,
            "shipping": 3,
            "tax": 2,
            "discount": 2.5,
            "coupon": "hasbros",
            "currency": "USD",
            "products": [
                {
                    "product_id": "507f1f77bcf86cd799439011",
                    "sku": "45790-32",
                    "name": "Monopoly: 3rd Edition",
                    "price": 19,
                    "quantity": 1,
                    "category": "Games",
                },
                {
                    "product_id": "505bd76785ebb509fc183733",
                    "sku": "46493-32",
                    "name": "Uno Card Game",
                    "price": 3,
                    "quantity": 2,
                    "category": "Games",
                },
            ],
        },
    }
    result, body = converted("segment", doc)
    assert body == {
        "conversion_time": "2025-12-31T23:30:00.000Z",
        "event_id": "ol288",
        "identifiers": [
            {"hashed_email": hash_email("peter@example.com")},
            {"ip_address": "8.8.8.8"},
        ],
        "value": 27.5,  # total: revenue + tax + shipping - discount
        "price_currency": "USD",
        "number_items": 3,
        "conversion_id": "50314b8e9bcf000000000000",
        "contents": [
            {
                "content_id": "45790-32",
                "content_name": "Monopoly: 3rd Edition",
                "content_price": 19.0,
                "content_type": "Games",
                "num_items": 1,
            },
            {
                "content_id": "46493-32",
                "content_name": "Uno Card Game",
                "content_price": 3.0,
                "content_type": "Games",
                "num_items": 2,
            },
        ],
    }
    # the spec's ObjectId product ids are no integer: left out, counted, not fatal
    assert result.dropped == (("item.group_id", "not_integer"),) * 2


def test_ga4_purchase() -> None:
    micros = int((NOW - 120) * 1_000_000)
    doc = {
        "client_id": "123456.7654321",
        "timestamp_micros": micros,
        "user_data": {"sha256_email_address": [hash_email("ga@example.com")]},
        "events": [
            {
                "name": "purchase",
                "params": {
                    "transaction_id": "T_12345",
                    "value": 30.03,
                    "tax": 4.90,
                    "shipping": 5.99,
                    "currency": "USD",
                    "coupon": "SUMMER_SALE",
                    "items": [
                        {
                            "item_id": "SKU_12345",
                            "item_name": "Stan and Friends Tee",
                            "affiliation": "Google Merchandise Store",
                            "coupon": "SUMMER_FUN",
                            "discount": 2.22,
                            "index": 0,
                            "item_brand": "Google",
                            "item_category": "Apparel",
                            "item_category2": "Adult",
                            "item_list_id": "related_products",
                            "item_variant": "green",
                            "price": 10.01,
                            "quantity": 3,
                        }
                    ],
                },
            }
        ],
    }
    result, body = converted("ga4", doc)
    assert body == {
        "conversion_time": "2025-12-31T23:58:00.000Z",
        "event_id": "ol288",
        "identifiers": [{"hashed_email": hash_email("ga@example.com")}],
        "value": 30.03,
        "price_currency": "USD",
        "number_items": 3,
        "conversion_id": "T_12345",
        "contents": [
            {
                "content_id": "SKU_12345",
                "content_name": "Stan and Friends Tee",
                "content_price": 10.01,
                "content_type": "Apparel",
                "num_items": 3,
            }
        ],
    }
    assert result.dropped == ()


def test_shopify_orders_create() -> None:
    doc = {
        "id": 820982911946154508,
        "admin_graphql_api_id": "gid://shopify/Order/820982911946154508",
        "email": "jon@example.com",
        "created_at": "2025-12-31T18:30:00-05:00",
        "processed_at": "2025-12-31T18:30:00-05:00",
        "currency": "USD",
        "total_price": "403.00",
        "browser_ip": None,
        "landing_site": None,
        "phone": None,
        "customer": {"id": 115310627314723954, "email": "john@example.com", "phone": None},
        "billing_address": {"phone": "555-625-1199", "country_code": "US"},
        "line_items": [
            {
                "id": 866550311766439020,
                "product_id": 632910392,
                "variant_id": 808950810,
                "sku": "IPOD2008PINK",
                "title": "IPod Nano - 8GB",
                "name": "IPod Nano - 8GB - Pink",
                "price": "199.00",
                "quantity": 1,
            },
            {
                "id": 141249953214522974,
                "product_id": 632910392,
                "variant_id": 49148385,
                "sku": "",
                "title": "IPod Nano - 8GB",
                "price": "204.00",
                "quantity": 1,
            },
        ],
        "note_attributes": [],
    }
    result, body = converted("shopify", doc)
    assert body == {
        "conversion_time": "2025-12-31T23:30:00.000Z",
        "event_id": "ol288",
        "identifiers": [
            {"hashed_email": hash_email("jon@example.com")},
            {"hashed_phone_number": hash_phone("555-625-1199", "US")},
        ],
        "value": 403.0,
        "price_currency": "USD",
        "number_items": 2,
        "conversion_id": "820982911946154508",
        "contents": [
            {
                "content_id": "IPOD2008PINK",
                "content_group_id": "632910392",
                "content_name": "IPod Nano - 8GB",
                "content_price": 199.0,
                "num_items": 1,
            },
            {
                "content_id": "49148385",  # empty sku: the variant id
                "content_group_id": "632910392",
                "content_name": "IPod Nano - 8GB",
                "content_price": 204.0,
                "num_items": 1,
            },
        ],
    }
    assert result.dropped == ()
