"""The whole-body fast path against the detailed path: same verdict, same answer.

``validate_body`` asks ``fastpath.accept`` first and falls back to ``validate_detailed``
(the checks that name every problem). The fast path must never accept what the detailed
path refuses, must accept the bodies that matter (valid traffic takes it), and the
answers of ``validate_body`` must be those of the detailed path, problem for problem.
"""

from __future__ import annotations

import calendar
import re
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.samples import EXTRA_PRESETS, PRESETS, SampleGenerator
from consumer.sandbox import fastpath, validation
from consumer.sandbox.validation import (
    ValidationResult,
    accept_body,
    accepted_event_ids,
    validate_body,
    validate_detailed,
)
from consumer.transform import Conversion, TransformSettings
from tests.unit.sandbox.test_validation_paths import REJECT, conversions
from tests.unit.transform.helpers import NOW, ROUTE, make

EVENTS = accepted_event_ids("oka17", ["ol288"])
HASH = "e586883b2b4faf78d48300a79e0e15138d664cdf796ffb86e533170a9893eda8"
VALID: dict[str, Any] = {
    "conversion_time": "2022-02-18T01:14:00.603Z",
    "event_id": "ol288",
    "identifiers": [{"hashed_email": HASH}, {"ip_address": "8.25.197.25", "user_agent": "UA"}],
    "value": "20.00",
    "price_currency": "USD",
    "number_items": 2,
    "conversion_id": "order-1",
    "description": "d",
    "contents": [{"content_id": "1", "content_price": 9.5, "content_group_id": "123"}],
}


def answer(result: ValidationResult) -> tuple[int, list[dict[str, str]], int, list[str]]:
    problems = [p.as_json() for p in result.answered_problems()]
    return result.status, problems, result.count, result.conversion_ids


def assert_same(body: bytes, event_ids: frozenset[str] = EVENTS) -> str | None:
    """Fast verdict sound, answers identical; returns "fast" / "detailed" / None (refused)."""
    detailed = validate_detailed(body, event_ids=event_ids, reject_conversion_ids=REJECT)
    accepted = fastpath.accept(body, event_ids, REJECT, validation.MAX_CONVERSIONS)
    if accepted is not None:
        assert detailed.ok, detailed.problems
        assert accepted == (detailed.count, detailed.conversion_ids)
    full = validate_body(body, event_ids=event_ids, reject_conversion_ids=REJECT)
    assert answer(full) == answer(detailed)
    assert full.problems == detailed.problems
    assert full.conversions == detailed.conversions
    if accepted is not None:
        return "fast"
    return "detailed" if detailed.ok else None


def body_of(items: list[Any]) -> bytes:
    return orjson.dumps({"conversions": items})


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(conversions(), min_size=1, max_size=6))
def test_generated_bodies_get_the_detailed_answer(items: list[dict[str, Any]]) -> None:
    assert_same(body_of(items))


@settings(max_examples=300, deadline=None)
@given(conversions(), st.integers(0, 499))
def test_one_bad_conversion_among_good_ones(bad: dict[str, Any], where: int) -> None:
    items = [VALID] * 500
    items[where] = bad
    assert_same(body_of(items))


def test_valid_traffic_takes_the_fast_path() -> None:
    assert assert_same(body_of([VALID] * 500)) == "fast"
    minimal = {k: VALID[k] for k in ("conversion_time", "event_id", "identifiers")}
    assert assert_same(body_of([minimal, VALID])) == "fast"


@pytest.mark.parametrize("preset", PRESETS + EXTRA_PRESETS)
def test_sample_generator_conversions(preset: str) -> None:
    """Real transform output (valid and degraded events): the fast path takes it all."""
    event_ids = accepted_event_ids(ROUTE.pixel_id, [ROUTE.event_id])
    gen = SampleGenerator(seed=11, presets=[preset], invalid_share=0.3, now=lambda: NOW)
    transformer = make(TransformSettings(preset=preset))
    payloads = []
    for _ in range(600):
        result = transformer.transform(gen.event().value)
        if isinstance(result, Conversion):
            payloads.append(result.payload)
    assert payloads
    for start in range(0, len(payloads), 500):
        body = b'{"conversions":[' + b",".join(payloads[start : start + 500]) + b"]}"
        assert assert_same(body, event_ids) == "fast"


IDS = '{"conversions":[{V,"identifiers":['


# Where msgspec and orjson could read the same text differently.
@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        # duplicate keys: the last one counts, for both parsers
        ('{"conversions":[{V,"value":"bad","value":1}]}', "fast"),
        ('{"conversions":[{V,"value":1,"value":"bad"}]}', None),
        ('{"conversions":[],"conversions":[{V}]}', "detailed"),  # msgspec: [] too short
        # integers orjson reads as floats: number_items 1e+23 is not an integer
        ('{"conversions":[{V,"number_items":100000000000000000000000}]}', None),
        ('{"conversions":[{V,"number_items":18446744073709551615}]}', "detailed"),
        ('{"conversions":[{V,"value":100000000000000000000000}]}', "fast"),  # a number still
        ('{"conversions":[{V,"number_items":true}]}', None),
        ('{"conversions":[{V,"number_items":2.0}]}', None),
        ('{"conversions":[{V,"value":1e400}]}', None),
        ('{"conversions":[{V,"value":-0}]}', "fast"),
        ('{"conversions":[{V,"value":1E5}]}', "fast"),
        ('{"conversions":[{V,"description":"\\ud800"}]}', None),
        ('{"conversions":[{V,"description":"\\ud83d\\ude00"}]}', "fast"),
        ('{"conversions":[{V,"description":"a\tb"}]}', None),
        ('{"conversions":[{V,"description":"\\u0000"}]}', "fast"),
        ('{"conversions":[{V,"description":null}]}', None),
        ('{"conversions":[{V,"identifiers":[{}]}]}', None),
        ('{"conversions":[{V,"identifiers":[{"twclid":"x"}, { }]}]}', None),
        ('{"conversions":[{V,"identifiers":[{"twclid":"x","twclid":""}]}]}', None),
        ('{"conversions":[{V,"identifiers":[{"ip_address":"1.2.3.4"}]}]}', None),
        (
            '{"conversions":[{V,"identifiers":[{"ip_address":"1.2.3.4"},{"user_agent":"u"}]}]}',
            "fast",
        ),
        (
            '{"conversions":[{V,"identifiers":[{"ip_address":"1.2.3.4\\n5.6.7.8"},{"twclid":"t"}]}]}',
            None,
        ),
        ('{"conversions":[{V,"identifiers":[{"hashed_email":"' + "\u00e9" * 64 + '"}]}]}', None),
        ('{"conversions":[{V,"identifiers":[{"hashed_email":"' + "0x" + "a" * 62 + '"}]}]}', None),
        ('{"conversions":[{V,"contents":[{}]}]}', "fast"),
        ('{"conversions":[{V,"contents":[{"content_group_id":"\\u0661"}]}]}', None),
        ('{"conversions":[{V,"contents":[{"content_group_id":""}]}]}', None),
        ('{"conversions":[{V,"contents":[{"content_group_id":-1}]}]}', None),
        ('{"conversions":[{V,"contents":[{"content_price":"1\\n2"}]}]}', None),
        ('{"conversions":[{V,"conversion_time":"2022-02-18T01:14:00.603Z\\n"}]}', None),
        ('{"conversions":[{V,"conversion_id":"rejected-id"}]}', None),
        ('{"conversions":[{V,"price_currency":"usd"}]}', None),
        ('{"conversions":[{V,"event_id":"zz999"}]}', None),
        ('{"conversions":[{V}],"extra":1}', None),
        (' {"conversions":[{V}]} ', "fast"),
        ('\ufeff{"conversions":[{V}]}', None),
        ('{"conversions":[{V}]}x', None),
        ('{"conversions":[{V},]}', None),
        ('[{"conversions":[{V}]}]', None),
        ('{"conversions":{V}}', None),
    ],
)
def test_parser_edges(text: str, verdict: str | None) -> None:
    inner = orjson.dumps(VALID).decode()[1:-1]
    body = text.replace("V", inner, 1).encode()
    assert assert_same(body) == verdict


def test_invalid_utf8_and_max_conversions() -> None:
    assert assert_same(b'{"conversions":[{"description":"\xff"}]}') is None
    assert assert_same(body_of([VALID] * 501)) is None


def test_time_regex_is_the_calendar() -> None:
    """The column regex agrees with validation._valid_time on every day of many years."""
    clock = "T23:59:59.999Z"
    for year in (0, 1, 4, 100, 400, 1900, 2000, 2023, 2024, 2100, 2400, 9999):
        for month in range(13 + 1):
            for day in range(33):
                value = f"{year:04d}-{month:02d}-{day:02d}{clock}"
                fast = fastpath.TIME_RE.fullmatch(value) is not None
                assert fast == validation._valid_time(value), value
                if 1 <= month <= 12 and year:
                    real = 1 <= day <= calendar.monthrange(year, month)[1]
                    assert fast == real, value


@settings(max_examples=2000, deadline=None)
@given(
    st.from_regex(re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d\d\dZ", re.ASCII), fullmatch=True)
)
def test_time_regex_on_any_digits(value: str) -> None:
    assert (fastpath.TIME_RE.fullmatch(value) is not None) == validation._valid_time(value)


def test_accept_body_counts_any_json() -> None:
    """Validation off: well-formed JSON is accepted; conversions counted when an array."""
    result = accept_body(body_of([{"conversion_id": "a"}, {"x": 1}, 5, {"conversion_id": 7}]))
    assert result.ok
    assert (result.count, result.conversion_ids) == (4, ["a"])
    assert accept_body(b'{"other": 1}').count == 0
    assert accept_body(b"[1, 2]").ok
    refused = accept_body(b"{")
    assert [p.message for p in refused.problems] == ["Request body is not valid JSON"]
    assert refused.status == 400
