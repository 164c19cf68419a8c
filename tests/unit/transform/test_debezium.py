"""``preset = "debezium"``: change events of an orders table (envelope, schema, flattened)."""

from __future__ import annotations

import base64
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.transform import (
    Conversion,
    DebeziumSettings,
    FieldMapping,
    Preset,
    ReasonCode,
    Rejection,
    Skip,
    TransformSettings,
)
from consumer.transform.debezium import decode_decimal, is_debezium
from consumer.transform.detect import detect_format
from tests.unit.transform.helpers import NOW, make
from tests.unit.transform.test_properties import json_values

NOW_MS = int(NOW * 1000)
VECTOR = "e586883b2b4faf78d48300a79e0e15138d664cdf796ffb86e533170a9893eda8"
DEBEZIUM = make(TransformSettings(preset="debezium"))
AUTO = make(TransformSettings(preset="auto"))


def b64_decimal(text: str, scale: int) -> str:
    """Debezium's ``precise`` encoding: unscaled two's-complement big-endian, base64."""
    unscaled = int(Decimal(text).scaleb(scale))
    size = (unscaled.bit_length() + 8) // 8
    return base64.b64encode(unscaled.to_bytes(size, "big", signed=True)).decode()


def row(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": 1001,
        "email": "test-email@test.com",
        "total": "19.99",
        "currency": "eur",
        "created_at": NOW_MS - 60_000,
    }
    base.update(changes)
    return base


def envelope(op: str, after: Any, before: Any = None) -> dict[str, Any]:
    return {
        "before": before,
        "after": after,
        "source": {"connector": "postgresql", "table": "orders", "ts_ms": NOW_MS - 30_000},
        "op": op,
        "ts_ms": NOW_MS - 29_000,
    }


def schema_for(fields: list[dict[str, Any]]) -> dict[str, Any]:
    value = {"type": "struct", "fields": fields, "optional": True, "name": "shop.orders.Value"}
    return {
        "type": "struct",
        "fields": [
            {**value, "field": "before"},
            {**value, "field": "after"},
            {"type": "struct", "fields": [], "field": "source"},
            {"type": "string", "field": "op"},
        ],
        "name": "shop.orders.Envelope",
    }


def convert(doc: Any, transformer: Any = DEBEZIUM) -> dict[str, Any]:
    result = transformer.transform(orjson.dumps(doc))
    assert isinstance(result, Conversion), result
    body: dict[str, Any] = orjson.loads(result.payload)
    return body


def test_create_without_schema_maps_canonical_columns() -> None:
    body = convert(envelope("c", row()))
    assert body["conversion_id"] == "1001"
    assert body["identifiers"] == [{"hashed_email": VECTOR}]
    assert body["value"] == 19.99
    assert body["price_currency"] == "EUR"
    assert body["conversion_time"] == "2025-12-31T23:59:00.000Z"


def test_snapshot_read_is_an_order_too() -> None:
    assert convert(envelope("r", row()))["conversion_id"] == "1001"


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        (envelope("d", None, before=row()), "delete"),
        (envelope("t", None), "truncate"),
        (envelope("u", row(status="shipped"), before=row()), "update"),
        (row(__deleted="true"), "delete"),
        (row(__op="d"), "delete"),
        ({"schema": None, "payload": None}, "tombstone"),
    ],
)
def test_what_is_not_a_new_order_is_skipped(doc: dict[str, Any], reason: str) -> None:
    transformer = make(TransformSettings(preset="debezium"))
    result = transformer.transform(orjson.dumps(doc))
    assert result == Skip(reason)
    assert dict(transformer.skipped) == {reason: 1}


def test_tombstone_is_skipped_not_rejected() -> None:
    transformer = make(TransformSettings(preset="debezium"))
    assert transformer.transform(b"") == Skip("tombstone")
    assert transformer.skipped["tombstone"] == 1
    # other presets keep rejecting an empty message (nothing to skip there)
    empty = make().transform(b"")
    assert isinstance(empty, Rejection)
    assert empty.reason == ReasonCode.INVALID_JSON


def test_updates_are_orders_when_enabled() -> None:
    transformer = make(
        TransformSettings(preset="debezium", debezium=DebeziumSettings(updates=True))
    )
    assert convert(envelope("u", row(), before=row()), transformer)["conversion_id"] == "1001"
    assert convert(row(__op="u"), transformer)["conversion_id"] == "1001"


def test_schema_wrapper_decodes_decimals_and_timestamps() -> None:
    fields: list[dict[str, Any]] = [
        {"type": "int64", "field": "id"},
        {"type": "string", "field": "email"},
        {
            "type": "bytes",
            "name": "org.apache.kafka.connect.data.Decimal",
            "parameters": {"scale": "2", "connect.decimal.precision": "12"},
            "field": "total",
        },
        {"type": "int64", "name": "io.debezium.time.MicroTimestamp", "field": "created_at"},
        {"type": "string", "name": "io.debezium.data.Json", "field": "items"},
    ]
    after = row(
        total=b64_decimal("1234.50", 2),
        created_at=(NOW_MS - 60_000) * 1000,
        items=orjson.dumps([{"id": "SKU-1", "price": "12.00", "quantity": 2}]).decode(),
    )
    body = convert({"schema": schema_for(fields), "payload": envelope("c", after)})
    assert body["value"] == 1234.5
    assert body["conversion_time"] == "2025-12-31T23:59:00.000Z"
    assert body["contents"] == [{"content_id": "SKU-1", "content_price": 12.0, "num_items": 2}]
    assert body["number_items"] == 2


def test_nano_and_zoned_timestamps() -> None:
    nano = [{"type": "int64", "name": "io.debezium.time.NanoTimestamp", "field": "created_at"}]
    after = row(created_at=(NOW_MS - 60_000) * 1_000_000)
    body = convert({"schema": schema_for(nano), "payload": envelope("c", after)})
    assert body["conversion_time"] == "2025-12-31T23:59:00.000Z"
    zoned = row(created_at="2025-12-31T23:59:00.250+00:00")
    assert convert(envelope("c", zoned))["conversion_time"] == "2025-12-31T23:59:00.250Z"


def test_variable_scale_decimal() -> None:
    fields = [{"type": "struct", "name": "io.debezium.data.VariableScaleDecimal", "field": "total"}]
    after = row(total={"scale": 3, "value": b64_decimal("7.125", 3)})
    assert (
        convert({"schema": schema_for(fields), "payload": envelope("c", after)})["value"] == 7.125
    )


def test_decimal_scales_setting_without_schema() -> None:
    settings = TransformSettings(
        preset="debezium", debezium=DebeziumSettings(decimal_scales={"total": 2})
    )
    body = convert(envelope("c", row(total=b64_decimal("42.10", 2))), make(settings))
    assert body["value"] == 42.1


def test_flattened_rows_with_and_without_schema() -> None:
    assert convert(row())["conversion_id"] == "1001"
    fields = [
        {
            "type": "bytes",
            "name": "org.apache.kafka.connect.data.Decimal",
            "parameters": {"scale": "2"},
            "field": "total",
        }
    ]
    flat_schema = {"type": "struct", "fields": fields, "name": "shop.orders.Value"}
    body = convert({"schema": flat_schema, "payload": row(total=b64_decimal("5.00", 2))})
    assert body["value"] == 5.0


def test_commit_time_is_the_fallback_event_time() -> None:
    after = row()
    del after["created_at"]
    assert convert(envelope("c", after))["conversion_time"] == "2025-12-31T23:59:30.000Z"


def test_custom_column_names_through_the_mapping() -> None:
    settings = TransformSettings(
        preset="debezium",
        mapping=FieldMapping(order_id="order_number", email="buyer_mail", value="grand_total"),
    )
    after = {"order_number": "SO-9", "buyer_mail": "test-email@test.com", "grand_total": 3}
    body = convert(envelope("c", after), make(settings))
    assert (body["conversion_id"], body["value"]) == ("SO-9", 3)


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        (envelope("x", row()), "op"),
        (envelope("c", "not a row"), "after"),
        (envelope("c", None), "after"),
    ],
)
def test_broken_envelopes_are_rejected(doc: dict[str, Any], field: str) -> None:
    result = DEBEZIUM.transform(orjson.dumps(doc))
    assert isinstance(result, Rejection)
    assert (result.reason, result.field) == (ReasonCode.SCHEMA_VIOLATION, field)


def test_undecodable_decimal_is_left_out() -> None:
    settings = TransformSettings(
        preset="debezium", debezium=DebeziumSettings(decimal_scales={"total": 2})
    )
    result = make(settings).transform(orjson.dumps(envelope("c", row(total="@@not base64"))))
    assert isinstance(result, Conversion)
    assert "value" not in orjson.loads(result.payload)


@given(st.decimals(min_value=-(10**12), max_value=10**12, places=4), st.integers(0, 4))
def test_decode_decimal_round_trips(value: Decimal, scale: int) -> None:
    text = format(value.quantize(Decimal(1).scaleb(-scale)), "f")
    assert Decimal(decode_decimal(b64_decimal(text, scale), scale)) == Decimal(text)


def test_decode_decimal_leaves_plain_values_alone() -> None:
    assert decode_decimal(12.5, 2) == 12.5
    assert decode_decimal("AQ==", None) is None
    assert decode_decimal("", 2) is None


def test_auto_detects_change_events() -> None:
    assert is_debezium(envelope("c", row()))
    assert is_debezium({"schema": {}, "payload": envelope("c", row())})
    assert is_debezium(row(__op="c"))
    assert not is_debezium(row())  # a bare row has no signature: use preset = "debezium"
    assert detect_format(envelope("c", row())) is Preset.DEBEZIUM
    auto = make(TransformSettings(preset="auto"))
    assert auto.transform(orjson.dumps(envelope("d", None, before=row()))) == Skip("delete")
    assert auto.transform(b"") == Skip("tombstone")
    result = auto.transform(orjson.dumps(envelope("c", row())))
    assert isinstance(result, Conversion)
    assert result.conversion_id == "1001"


schema_names = st.sampled_from(
    [
        "org.apache.kafka.connect.data.Decimal",
        "io.debezium.data.VariableScaleDecimal",
        "io.debezium.time.Timestamp",
        "io.debezium.time.MicroTimestamp",
        "io.debezium.time.NanoTimestamp",
        "io.debezium.data.Json",
    ]
)
columns = st.sampled_from(["id", "total", "created_at", "items", "email", "currency"])
anything = json_values | st.integers(min_value=-(2**63), max_value=2**63 - 1)


@st.composite
def change_events(draw: st.DrawFn) -> Any:
    row = (
        draw(st.dictionaries(columns, anything, max_size=6))
        if draw(st.booleans())
        else draw(anything)
    )
    fields = draw(
        st.lists(
            st.fixed_dictionaries(
                {"field": columns | anything, "name": schema_names | anything},
                optional={"parameters": st.fixed_dictionaries({"scale": anything}) | anything},
            ),
            max_size=4,
        )
        | anything
    )
    body: Any = {
        "op": draw(st.sampled_from(["c", "r", "u", "d", "t"]) | anything),
        "after": row,
        "source": draw(st.fixed_dictionaries({"ts_ms": anything}) | anything),
    }
    if draw(st.booleans()):
        body = row if isinstance(row, dict) else body  # flattened
    if draw(st.booleans()):
        return {
            "schema": {"fields": [{"field": "after", "fields": fields}], "x": fields},
            "payload": body,
        }
    return body


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(change_events())
def test_change_events_never_raise(doc: Any) -> None:
    for transformer in (DEBEZIUM, AUTO):
        result = transformer.transform(orjson.dumps(doc))
        assert isinstance(result, Conversion | Rejection | Skip)
        if isinstance(result, Rejection):
            assert result.reason != ReasonCode.INTERNAL_ERROR, (doc, result)
