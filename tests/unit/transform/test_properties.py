"""Property tests: transform never raises, valid events give schema-valid conversions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker  # type: ignore[import-untyped]

from consumer.samples import PRESETS, SampleGenerator
from consumer.transform import Conversion, ReasonCode, Rejection, TransformSettings
from consumer.transform.normalize import hash_email, hash_phone
from tests.unit.transform.helpers import NOW, make

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"
CONVERSION = Draft202012Validator(
    json.loads((SCHEMAS / "conversion.schema.json").read_text()), format_checker=FormatChecker()
)
TRANSFORMERS = [make(TransformSettings(preset=p)) for p in PRESETS]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=30,
)

KEYS = [
    "order_id",
    "event_time",
    "user",
    "email",
    "phone",
    "ip",
    "user_agent",
    "twclid",
    "value",
    "currency",
    "items",
    "id",
    "price",
    "quantity",
    "number_items",
    "events",
    "params",
    "transaction_id",
    "properties",
    "context",
    "line_items",
    "total_price",
]
shaped_values = st.recursive(
    json_values,
    lambda children: (
        st.dictionaries(st.sampled_from(KEYS), children, max_size=8)
        | st.lists(children, max_size=4)
    ),
    max_leaves=40,
)


def check_never_raises(data: bytes) -> None:
    for transformer in TRANSFORMERS:
        result = transformer.transform(data)
        assert isinstance(result, Conversion | Rejection)
        if isinstance(result, Rejection):
            assert result.reason in {code.value for code in ReasonCode}
            assert result.reason != ReasonCode.INTERNAL_ERROR, result
        else:
            errors = list(CONVERSION.iter_errors(orjson.loads(result.payload)))
            assert not errors, errors


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    check_never_raises(data)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_arbitrary_json_never_raises(value: Any) -> None:
    check_never_raises(orjson.dumps(value))


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(shaped_values)
def test_json_with_our_field_names_never_raises(value: Any) -> None:
    check_never_raises(orjson.dumps(value))


emails = st.emails()
phones = st.from_regex(r"\+?[1-9][0-9 ()\-]{6,16}", fullmatch=True)
ips = st.ip_addresses().map(str)
amounts = st.decimals(min_value=0, max_value=10**9, places=2).map(str) | st.floats(
    min_value=0, max_value=1e9, allow_nan=False
)


@st.composite
def canonical_events(draw: st.DrawFn) -> dict[str, Any]:
    user: dict[str, Any] = {"email": draw(emails)}
    for key, strategy in (
        ("phone", phones),
        ("ip", ips),
        ("twclid", st.text(min_size=1)),
        ("user_agent", st.text(min_size=1, max_size=300)),
    ):
        if draw(st.booleans()):
            user[key] = draw(strategy)
    offset = draw(st.integers(min_value=-14 * 60, max_value=14 * 60))
    age_ms = draw(st.integers(min_value=0, max_value=6 * 86_400_000))
    epoch_ms = int(NOW * 1000) - age_ms
    when: Any = draw(st.sampled_from(["iso", "s", "ms"]))
    if when == "iso":
        from datetime import UTC, datetime, timedelta, timezone

        moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).astimezone(
            timezone(timedelta(minutes=offset))
        )
        event_time: Any = moment.isoformat()
    elif when == "s":
        event_time = epoch_ms // 1000
    else:
        event_time = epoch_ms
    items = draw(
        st.lists(
            st.fixed_dictionaries(
                {"id": st.text(min_size=1, max_size=20).filter(str.strip) | st.integers(0, 10**12)},
                optional={
                    "name": st.text(),
                    "price": amounts,
                    "quantity": st.integers(1, 100),
                    "category": st.text(),
                    "group_id": st.integers(0, 10**9),
                },
            ),
            max_size=5,
        )
    )
    doc: dict[str, Any] = {
        "order_id": draw(
            st.text(min_size=1, max_size=40).filter(str.strip) | st.integers(0, 2**62)
        ),
        "event_time": event_time,
        "user": user,
        "currency": draw(st.sampled_from(["usd", "EUR", " gbp ", "JPY"])),
        "items": items,
    }
    if draw(st.booleans()):
        doc["value"] = draw(amounts)
    return doc


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(canonical_events())
def test_valid_canonical_events_give_schema_valid_conversions(doc: dict[str, Any]) -> None:
    result = TRANSFORMERS[0].transform(orjson.dumps(doc))
    assert isinstance(result, Conversion), result
    body = orjson.loads(result.payload)
    assert not list(CONVERSION.iter_errors(body))
    assert body["price_currency"] == doc["currency"].strip().upper()
    assert result.conversion_id == str(doc["order_id"]).strip()


@given(st.text(max_size=80))
def test_hashing_is_idempotent_on_hashed_input(text: str) -> None:
    for hashed in (hash_email(text), hash_phone(text, "US")):
        if hashed is not None:
            assert hash_email(hashed) == hashed
            assert hash_phone(hashed, "GB") == hashed
            assert hash_email(hashed.upper()) == hashed


def test_samples_of_every_preset_validate() -> None:
    for transformer, preset in zip(TRANSFORMERS, PRESETS, strict=True):
        gen = SampleGenerator(seed=99, presets=[preset], now=lambda: NOW)
        for sample in gen.events(100):
            result = transformer.transform(sample.value)
            assert isinstance(result, Conversion)
            assert not list(CONVERSION.iter_errors(orjson.loads(result.payload)))
