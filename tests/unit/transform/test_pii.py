"""PII policy of the transform: ids holding contact data are hashed, free text dropped."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.observability.redact import contains_contact, is_contact_id
from consumer.transform import Conversion, TransformSettings
from consumer.transform.normalize import hash_email, hash_phone
from tests.unit.transform.helpers import event, make, raw

EMAIL = "Jane.Doe@Example.com"
PHONE = "+1 415-555-0100"


def sent(doc: dict[str, Any], **settings: Any) -> tuple[Conversion, dict[str, Any]]:
    result = make(TransformSettings(**settings)).transform(raw(doc))
    assert isinstance(result, Conversion), result
    body: dict[str, Any] = orjson.loads(result.payload)
    return result, body


@pytest.mark.parametrize(
    ("order_id", "expected"),
    [
        (EMAIL, hash_email(EMAIL)),
        (PHONE, hash_phone(PHONE, "US")),
        ("(415) 555-0100", hash_phone("(415) 555-0100", "US")),
        (f"order {EMAIL}", hashlib.sha256(f"order {EMAIL}".encode()).hexdigest()),
    ],
)
def test_an_order_id_holding_contact_data_is_hashed(order_id: str, expected: str) -> None:
    result, body = sent(event(order_id=order_id))
    assert body["conversion_id"] == expected == result.conversion_id
    again, _ = sent(event(order_id=order_id))  # deterministic: redeliveries de-duplicate
    assert again.conversion_id == expected


@pytest.mark.parametrize("order_id", ["ORD-100024", "5600000100007", "T100024", "A-1001"])
def test_ordinary_order_ids_are_kept(order_id: str) -> None:
    assert sent(event(order_id=order_id))[1]["conversion_id"] == order_id


def test_an_explicit_conversion_id_holding_an_address_is_hashed() -> None:
    _, body = sent(event(conversion_id=EMAIL))
    assert body["conversion_id"] == hash_email(EMAIL)


def test_free_text_holding_contact_data_is_dropped_and_counted() -> None:
    doc = event(
        description=f"gift for {EMAIL}",
        user={"email": "test-email@test.com", "twclid": EMAIL, "user_agent": f"Bot {PHONE}"},
        items=[
            {"id": EMAIL, "name": f"call {PHONE}", "category": f"to {EMAIL}", "price": "1.00"},
            {"id": "SKU-1", "name": "Yoga Mat", "category": "Sports"},
        ],
    )
    transformer = make()
    result = transformer.transform(raw(doc))
    assert isinstance(result, Conversion)
    body = orjson.loads(result.payload)
    assert "description" not in body
    assert body["identifiers"] == [
        {"hashed_email": hash_email("test-email@test.com")}
    ]  # twclid and the agent left out
    assert body["contents"] == [
        {"content_id": hash_email(EMAIL), "content_price": 1.0},
        {"content_id": "SKU-1", "content_name": "Yoga Mat", "content_type": "Sports"},
    ]
    assert set(result.dropped) == {
        ("description", "pii"),
        ("twclid", "pii"),
        ("user_agent", "pii"),
        ("item.name", "pii"),
        ("item.category", "pii"),
    }
    assert transformer.dropped_fields[("item.name", "pii")] == 1
    assert EMAIL.lower() not in result.payload.decode().lower()


def test_the_policy_can_be_turned_off() -> None:
    _, body = sent(event(order_id=EMAIL, description=f"for {EMAIL}"), pii_scan=False)
    assert body["conversion_id"] == EMAIL
    assert body["description"] == f"for {EMAIL}"


def test_clean_free_text_is_kept_and_cached() -> None:
    transformer = make()
    agent = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0"
    for _ in range(2):
        result = transformer.transform(
            raw(event(user={"email": "a@b.co", "user_agent": agent, "ip": "8.25.197.25"}))
        )
        assert isinstance(result, Conversion)
        assert orjson.loads(result.payload)["identifiers"][-1]["user_agent"] == agent


phones = st.sampled_from(
    ["+1 415 555 0100", "(415) 555-0100", "415-555-0100", "+44 20 7946 0958", "+4915123456789"]
)
contacts = st.emails() | phones


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(contact=contacts, prefix=st.sampled_from(["", "note: ", "x "]), where=st.integers(0, 6))
def test_no_contact_data_reaches_the_payload(contact: str, prefix: str, where: int) -> None:
    # Ids (order id, twclid, item id) are checked for an address anywhere and for being a
    # phone number as a whole; free text for either anywhere.
    is_id = where in (0, 2, 6)
    text = contact if is_id and "@" not in contact else prefix + contact
    doc = event(
        user={"email": "test-email@test.com", "ip": "8.25.197.25", "user_agent": "Mozilla/5.0"},
        items=[{"id": "SKU-1", "name": "Mat", "category": "Sports", "price": "2.00"}],
    )
    if where == 0:
        doc["order_id"] = text
    elif where == 1:
        doc["description"] = text
    elif where == 2:
        doc["user"]["twclid"] = text
    elif where == 3:
        doc["user"]["user_agent"] = text
    elif where == 4:
        doc["items"][0]["name"] = text
    elif where == 5:
        doc["items"][0]["category"] = text
    else:
        doc["items"][0]["id"] = text
    result = make().transform(raw(doc))
    assert isinstance(result, Conversion), result
    body = orjson.loads(result.payload)
    texts = [body["conversion_id"], body.get("description", "")]
    texts += [v for ident in body["identifiers"] for v in ident.values()]
    texts += [v for c in body.get("contents", []) for v in c.values() if isinstance(v, str)]
    assert contact not in result.payload.decode()
    assert not any(contains_contact(t) for t in texts if len(t) != 64), texts


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ORD-100024", False),
        ("5600000100007", False),
        ("8v5379ar4ootg07hl7irat0gb6", False),
        ("SKU-37174-M", False),
        ("+1 415 555 0100", True),
        ("415-555-0100", True),
        ("a@example.com", True),
        ("order a@example.com", True),
    ],
)
def test_is_contact_id(text: str, expected: bool) -> None:
    assert is_contact_id(text) is expected
