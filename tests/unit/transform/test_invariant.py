"""The transform never emits what X rejects: every conversion passes the sandbox's validator.

The sandbox's ``validate_body`` encodes X's field rules. For each preset the events are
built from the preset's own field map (so a new preset or path is covered without
editing this file): required parts valid, every optional field either absent, a
plausible value, or any JSON value at all. Each emitted conversion must pass alone and
joined into a full 500-conversion request body, as the batcher builds it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.samples import DEGRADING_DEFECTS, EXTRA_PRESETS, PRESETS, SampleGenerator
from consumer.sandbox.validation import MAX_CONVERSIONS, accepted_event_ids, validate_body
from consumer.transform import Conversion, Preset, Rejection, Transformer, TransformSettings
from consumer.transform.config import FieldMapping, Source
from consumer.transform.paths import Path, compile_path
from consumer.transform.presets import PRESETS as FIELD_MAPS
from tests.unit.transform.helpers import NOW, ROUTE, make
from tests.unit.transform.test_properties import json_values

EVENT_IDS = accepted_event_ids(ROUTE.pixel_id, [ROUTE.event_id])
SHAPED = [p for p in Preset if p not in (Preset.AUTO, Preset.CUSTOM)]


def body_of(payloads: list[bytes]) -> bytes:
    return b'{"conversions":[' + b",".join(payloads) + b"]}"


def assert_accepted(payloads: list[bytes]) -> None:
    """Alone, and joined (repeated up to X's 500-conversion limit) into one request."""
    for payload in payloads:
        result = validate_body(body_of([payload]), event_ids=EVENT_IDS)
        assert result.ok, (payload, result.problems)
    if payloads:
        full = (payloads * (MAX_CONVERSIONS // len(payloads) + 1))[:MAX_CONVERSIONS]
        result = validate_body(body_of(full), event_ids=EVENT_IDS)
        assert result.ok, result.problems


def place(doc: dict[str, Any], path: Path, value: Any) -> None:
    """Set ``value`` at ``path`` in ``doc``, creating objects and lists on the way."""
    node: Any = doc
    for position, step in enumerate(path):
        last = position == len(path) - 1
        if type(step) is str:
            if last:
                node[step] = value
                return
            shape = list if type(path[position + 1]) is tuple else dict
            node = node.setdefault(step, shape())
            if type(node) is not shape:
                return  # an earlier field took this place with another shape
        elif type(step) is tuple:
            key, want = step
            if type(node) is not list:
                return
            found = next((e for e in node if type(e) is dict and str(e.get(key)) == want), None)
            if found is None:
                found = {key: want}
                node.append(found)
            node = found
        else:
            return  # list indexes are not used by the presets' maps


def first_path(source: Source | None) -> Path | None:
    if source is None:
        return None
    text = source if isinstance(source, str) else source[0]
    return None if text.startswith("=") else compile_path(text)


def first(source: Source | None) -> str | None:
    return None if source is None else source if isinstance(source, str) else source[0]


def iso(draw: st.DrawFn) -> Any:
    age_ms = draw(st.integers(min_value=0, max_value=6 * 86_400_000))
    epoch_ms = int(NOW * 1000) - age_ms
    offset = draw(st.integers(min_value=-14 * 60, max_value=14 * 60))
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).astimezone(
        timezone(timedelta(minutes=offset))
    )
    return draw(st.sampled_from([moment.isoformat(), epoch_ms, epoch_ms * 1000]))


pii_text = st.sampled_from(
    ["jane.doe@example.com", "+1 415 555 0100", "(415) 555-0100", "call 020 7946 0958"]
)
ids = st.text(min_size=1, max_size=30) | st.integers(0, 2**62) | pii_text
optional = st.one_of(
    json_values,
    st.sampled_from(["SKU-1-0", "507f1f77bcf86cd799439011", "-5.00", "12,50", "ZZZ", "", "0"]),
    st.decimals(min_value=-10, max_value=10**6, places=2).map(str),
    st.integers(-5, 10**6),
    pii_text,
)
item_optional = optional | st.integers(0, 10**9).map(str)


@st.composite
def items(draw: st.DrawFn, mapping: FieldMapping) -> list[Any]:
    out: list[Any] = []
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.integers(0, 9)) == 0:
            out.append(draw(json_values))  # not an object at all
            continue
        element: dict[str, Any] = {}
        for name in ("id", "group_id", "name", "price", "category", "quantity"):
            path = first_path(getattr(mapping.item, name))
            if path is not None and draw(st.booleans()):
                place(element, path, draw(item_optional))
        out.append(element)
    return out


@st.composite
def preset_events(draw: st.DrawFn, preset: Preset) -> dict[str, Any]:
    mapping = FIELD_MAPS[preset]
    doc: dict[str, Any] = {}
    required = {"order_id": draw(ids), "event_time": iso(draw), "email": draw(st.emails())}
    for name, value in required.items():
        path = first_path(getattr(mapping, name))
        assert path is not None
        place(doc, path, value)
    path = first_path(mapping.event_type)
    if path is not None and all(type(step) is str for step in path):  # not ga4's events[name=]
        place(doc, path, draw(st.sampled_from(["purchase", "Order Completed"])))
    for name in (
        "conversion_id",
        "phone",
        "twclid",
        "twclid_url",
        "ip",
        "user_agent",
        "value",
        "currency",
        "number_items",
        "description",
    ):
        path = first_path(getattr(mapping, name))
        if path is not None and draw(st.booleans()):
            place(doc, path, draw(optional | st.sampled_from(["EUR", "usd", "19.99"])))
    if mapping.items is not None and draw(st.booleans()):
        path = compile_path(mapping.items[:-2])
        place(doc, path, draw(items(mapping)))
    if preset is Preset.DEBEZIUM:
        return {"op": draw(st.sampled_from(["c", "r"])), "before": None, "after": doc}
    return doc


TRANSFORMERS: dict[Preset, Transformer] = {
    preset: make(TransformSettings(preset=preset)) for preset in SHAPED
}


@pytest.mark.parametrize("preset", SHAPED)
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_emitted_conversion_passes_the_validator(preset: Preset, data: st.DataObject) -> None:
    docs = data.draw(st.lists(preset_events(preset), min_size=1, max_size=5))
    mapping = FIELD_MAPS[preset]
    # Only the required parts may reject: here the order id (blank text) or an explicit
    # conversion id (drawn among the optional values); every other field degrades.
    may_reject = {first(mapping.order_id), first(mapping.conversion_id)}
    payloads = []
    for doc in docs:
        result = TRANSFORMERS[preset].transform(orjson.dumps(doc))
        if isinstance(result, Conversion):
            payloads.append(result.payload)
        else:
            assert isinstance(result, Rejection), result
            assert result.field in may_reject, result
    assert_accepted(payloads)


@pytest.mark.parametrize("preset", SHAPED)
def test_well_formed_events_of_each_preset_are_accepted(preset: Preset) -> None:
    """The generator above does produce conversions (the invariant is not vacuous)."""
    emitted = 0
    transformer = make(TransformSettings(preset=preset))
    mapping = FIELD_MAPS[preset]
    for number in range(40):
        doc: dict[str, Any] = {}
        for name, value in (
            ("order_id", f"A-{number}"),
            ("event_time", int(NOW * 1000) - 60_000),
            ("email", f"buyer{number}@example.com"),
        ):
            path = first_path(getattr(mapping, name))
            assert path is not None
            place(doc, path, value)
        if preset is Preset.DEBEZIUM:
            doc = {"op": "c", "before": None, "after": doc}
        result = transformer.transform(orjson.dumps(doc))
        assert isinstance(result, Conversion), result
        emitted += 1
    assert emitted == 40


@pytest.mark.parametrize("preset", PRESETS + EXTRA_PRESETS)
@pytest.mark.parametrize("strict", [False, True])
def test_sample_generator_events_pass_the_validator(preset: str, strict: bool) -> None:
    gen = SampleGenerator(seed=7, presets=[preset], invalid_share=0.2, now=lambda: NOW)
    transformer = make(TransformSettings(preset=preset, strict=strict))
    payloads = []
    for _ in range(MAX_CONVERSIONS):
        result = transformer.transform(gen.event().value)
        if isinstance(result, Conversion):
            payloads.append(result.payload)
    for defect, (_, strict_reason) in DEGRADING_DEFECTS.items():
        sample = gen.event(defect=defect)
        result = transformer.transform(sample.value)
        if strict:
            assert isinstance(result, Rejection), result
            assert result.reason == strict_reason
        else:
            assert isinstance(result, Conversion), result
            assert sample.expected_drop in result.dropped
            payloads.append(result.payload)
    # strict rejects Segment's ObjectId-like product ids (content_group_id) whole
    assert len(payloads) > (MAX_CONVERSIONS * 0.7 if not strict else 10)
    assert_accepted(payloads)
