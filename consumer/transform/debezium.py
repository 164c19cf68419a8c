"""Debezium change events of an orders table -> the row to map, or a skip.

Handles the three shapes a topic fed by Debezium's JSON converter carries:

- the envelope with the schema wrapper: ``{"schema": …, "payload": {"op", "before",
  "after", "source", "ts_ms"}}``;
- the envelope without it (``value.converter.schemas.enable=false``);
- the row flattened by the ``ExtractNewRecordState`` transform, optionally with
  ``__op`` / ``__deleted`` / ``__source_ts_ms`` (``add.fields``,
  ``delete.handling.mode=rewrite``), with or without the schema wrapper.

Creates (``c``) and snapshot reads (``r``) are orders; updates (``u``) only when
``debezium.updates`` is set; deletes, truncates and tombstones are skipped (the engine
commits them without a dead letter). Values are decoded by the row's schema when the
message has one: base64 ``Decimal`` (scale from the schema, or ``decimal_scales`` in
the settings without a schema), ``VariableScaleDecimal``, ``Timestamp`` (ms),
``MicroTimestamp`` (µs), ``NanoTimestamp`` (ns) and ``Json`` columns. Pure, no I/O.
"""

from __future__ import annotations

import base64
import binascii
from decimal import Decimal
from typing import Any, Final

import orjson

from consumer.transform.config import DebeziumSettings
from consumer.transform.normalize import format_time_ms
from consumer.transform.types import ReasonCode, Rejection, Skip, SkipReason

#: The row key under which the change's commit time is offered to the mapping (the name
#: ``ExtractNewRecordState`` gives it with ``add.fields=source.ts_ms``).
SOURCE_TS_KEY: Final = "__source_ts_ms"

_DECIMAL: Final = "org.apache.kafka.connect.data.Decimal"
_VARIABLE_DECIMAL: Final = "io.debezium.data.VariableScaleDecimal"
_JSON: Final = "io.debezium.data.Json"
# semantic type -> divisor to epoch milliseconds
_TIMESTAMPS: Final = {
    "io.debezium.time.Timestamp": 1,
    "org.apache.kafka.connect.data.Timestamp": 1,
    "io.debezium.time.MicroTimestamp": 1000,
    "io.debezium.time.NanoTimestamp": 1_000_000,
}
_SKIPS: Final = {
    "d": Skip(SkipReason.DELETE.value),
    "t": Skip(SkipReason.TRUNCATE.value),
}
_UPDATE_SKIP: Final = Skip(SkipReason.UPDATE.value)
_TOMBSTONE: Final = Skip(SkipReason.TOMBSTONE.value)
_ROW_OPS: Final = frozenset({"c", "r", "u"})
# Year 10000: a later epoch is left as it is (the time rule then answers invalid_time).
_MAX_EPOCH_MS: Final = 253_402_300_800_000


def is_envelope(body: dict[str, Any]) -> bool:
    """A change-event envelope: ``op`` with ``before`` or ``after``."""
    return "op" in body and ("after" in body or "before" in body)


def is_debezium(doc: dict[str, Any]) -> bool:
    """The shape ``auto`` recognises: the Kafka Connect schema wrapper, an envelope with
    ``source``, or a flattened row carrying ``__op`` or ``__deleted``."""
    if "schema" in doc and "payload" in doc:
        return True
    if "source" in doc and is_envelope(doc):
        return True
    return "__op" in doc or "__deleted" in doc


def unwrap_change(
    doc: dict[str, Any], settings: DebeziumSettings
) -> dict[str, Any] | Skip | Rejection:
    """The row to map (decoded), a ``Skip`` for what is not a new order, or a rejection."""
    schema: Any = None
    body: Any = doc
    if "schema" in doc and "payload" in doc:
        schema, body = doc["schema"], doc["payload"]
        if body is None:
            return _TOMBSTONE
        if type(body) is not dict:
            return Rejection(
                ReasonCode.SCHEMA_VIOLATION.value, "payload", "payload must be an object"
            )
    source_ms: Any = None
    if is_envelope(body):
        op = body.get("op")
        if type(op) is not str:
            op = None
        if op in _SKIPS:
            return _SKIPS[op]
        if op not in _ROW_OPS:
            return Rejection(
                ReasonCode.SCHEMA_VIOLATION.value, "op", "op must be one of c, r, u, d, t"
            )
        if op == "u" and not settings.updates:
            return _UPDATE_SKIP
        row = body.get("after")
        if type(row) is not dict:
            return Rejection(
                ReasonCode.SCHEMA_VIOLATION.value, "after", "after must be the row object"
            )
        source = body.get("source")
        if type(source) is dict:
            source_ms = source.get("ts_ms")
        if source_ms is None:
            source_ms = body.get("ts_ms")
        schema = _field_schema(schema, "after")
    else:
        row = body
        deleted = row.get("__deleted")
        if deleted is True or deleted == "true":
            return _SKIPS["d"]
        op = row.get("__op")
        if type(op) is str:
            if op in _SKIPS:
                return _SKIPS[op]
            if op == "u" and not settings.updates:
                return _UPDATE_SKIP
    decoded = _decode(row, schema, settings)
    if source_ms is not None and SOURCE_TS_KEY not in decoded:
        if decoded is row:
            decoded = dict(row)
        decoded[SOURCE_TS_KEY] = source_ms
    return decoded


def _field_schema(schema: Any, name: str) -> Any:
    """The schema of struct field ``name`` (Kafka Connect JSON schema), or None."""
    if type(schema) is not dict:
        return None
    for entry in _fields_of(schema):
        if type(entry) is dict and entry.get("field") == name:
            return entry
    return None


def _fields_of(schema: dict[str, Any]) -> list[Any]:
    fields = schema.get("fields")
    return fields if type(fields) is list else []


def _decode(row: dict[str, Any], schema: Any, settings: DebeziumSettings) -> dict[str, Any]:
    """A copy of ``row`` with Debezium's encodings turned into plain values (the row
    itself when nothing needs decoding)."""
    plan: list[tuple[str, str, Any]] = []
    if type(schema) is dict:
        for entry in _fields_of(schema):
            if type(entry) is not dict:
                continue
            name = entry.get("name")
            column = entry.get("field")
            if type(column) is not str or column not in row or type(name) is not str:
                continue
            if name == _DECIMAL:
                params = entry.get("parameters")
                scale = params.get("scale") if type(params) is dict else None
                plan.append((column, "decimal", scale))
            elif name in _TIMESTAMPS or name in (_VARIABLE_DECIMAL, _JSON):
                plan.append((column, name, None))
    else:
        for column, scale in settings.decimal_scales.items():
            if column in row:
                plan.append((column, "decimal", scale))
    if not plan:
        return row
    out = dict(row)
    for column, kind, scale in plan:
        value = out[column]
        if kind == "decimal":
            out[column] = decode_decimal(value, scale)
        elif kind == _VARIABLE_DECIMAL:
            if type(value) is dict:
                out[column] = decode_decimal(value.get("value"), value.get("scale"))
        elif kind == _JSON:
            if type(value) is str:
                try:
                    out[column] = orjson.loads(value)
                except orjson.JSONDecodeError:
                    out[column] = None
        elif type(value) is int and 0 <= value // _TIMESTAMPS[kind] < _MAX_EPOCH_MS:
            out[column] = format_time_ms(value // _TIMESTAMPS[kind])
    return out


def decode_decimal(value: Any, scale: Any) -> Any:
    """Debezium's ``precise`` decimal (base64 of the unscaled two's-complement
    big-endian integer) as decimal text; other values (text, numbers) unchanged, and
    an undecodable one as ``None`` (the field is then absent)."""
    if type(value) is not str:
        return value
    try:
        digits = int(scale)
    except (TypeError, ValueError):
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    if not raw or not 0 <= digits <= 30:
        return None
    unscaled = int.from_bytes(raw, "big", signed=True)
    return format(Decimal(unscaled).scaleb(-digits), "f")
