"""The one-pass fast path and the detailed checks must agree on every conversion."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.sandbox import validation
from consumer.sandbox.validation import accepted_event_ids

EVENTS = accepted_event_ids("oka17", ["ol288"])
REJECT = frozenset({"rejected-id"})
HASH = "e586883b2b4faf78d48300a79e0e15138d664cdf796ffb86e533170a9893eda8"

ANY_JUNK = st.sampled_from([None, True, 0, -1, 1.5, "", "x", [], {}, ["a"], {"a": 1}])


def mostly(valid: list[Any], invalid: list[Any]) -> st.SearchStrategy[Any]:
    """Valid values four times as likely, so whole valid conversions are common."""
    return st.sampled_from(valid * 4 + invalid)


IDENTIFIER_VALUES = {
    "twclid": mostly(["23opevjt88psuo13lu8d020qkn"], ["", 5]),
    "hashed_email": mostly([HASH, HASH.upper()], [HASH[:-1], "a@b.c", None]),
    "hashed_phone_number": mostly([HASH], ["+15551234567", ""]),
    "ip_address": mostly(["8.25.197.25", "1.0.0.0"], ["256.0.0.1", "1.2.3", 7]),
    "user_agent": mostly(["Mozilla/5.0"], ["", None]),
}
identifier_keys = st.lists(
    st.sampled_from(sorted(IDENTIFIER_VALUES) * 6 + ["email"]), min_size=1, max_size=3, unique=True
)
identifier = identifier_keys.flatmap(
    lambda keys: st.fixed_dictionaries({k: IDENTIFIER_VALUES.get(k, st.just("x")) for k in keys})
)
content = st.lists(
    st.sampled_from(
        [
            ("content_id", "sku-1"),
            ("content_group_id", "123"),
            ("content_group_id", 123),
            ("content_price", 9.99),
            ("content_price", "9.99"),
            ("num_items", 2),
            ("content_name", "n"),
        ]
        * 4
        + [
            ("content_id", 1),
            ("content_group_id", "abc"),
            ("content_price", "cheap"),
            ("num_items", 0),
            ("content_type", None),
            ("colour", "red"),
        ]
    ),
    max_size=4,
).map(dict)
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "conversion_time": mostly(
        ["2022-02-18T01:14:00.603Z", "2024-02-29T00:00:00.000Z"],
        ["2023-02-29T00:00:00.000Z", "2022-02-18T01:14:00.603", 5],
    ),
    "event_id": mostly(["ol288", "tw-oka17-ol288"], ["zz999", "", 3]),
    "identifiers": st.lists(identifier, min_size=1, max_size=4) | ANY_JUNK | st.just([]),
    "number_items": mostly([1, 3], [0, -2, 2.0, "3", True]),
    "price_currency": mostly(["USD", "EUR"], ["usd", "XXX", 840]),
    "value": mostly([20, 20.5, "20.00"], ["20,00", "", None, True]),
    "conversion_id": mostly(["order-1"], ["rejected-id", "", 12]),
    "description": mostly(["text"], [5]),
    "contents": st.lists(content, max_size=3) | ANY_JUNK,
    "unknown_field": st.just(1),
}
REQUIRED = {"conversion_time", "event_id", "identifiers"}


@st.composite
def conversions(draw: st.DrawFn) -> dict[str, Any]:
    conversion: dict[str, Any] = {}
    for key, values in FIELDS.items():
        chance = 19 if key in REQUIRED else 1 if key == "unknown_field" else 10
        if draw(st.integers(0, 19)) < chance:
            conversion[key] = draw(values)
    return conversion


@settings(max_examples=3000, deadline=None)
@given(conversions())
def test_fast_path_agrees_with_detailed_checks(conversion: dict[str, Any]) -> None:
    problems: list[validation.Problem] = []
    validation._check_conversion(0, conversion, EVENTS, REJECT, problems)
    assert validation._conversion_ok(conversion, EVENTS, REJECT) == (not problems), problems


def test_strategies_reach_both_outcomes() -> None:
    valid = {
        "conversion_time": "2022-02-18T01:14:00.603Z",
        "event_id": "ol288",
        "identifiers": [{"ip_address": "1.0.0.0", "user_agent": "UA"}],
        "contents": [{"content_group_id": 5}],
    }
    assert validation._conversion_ok(valid, EVENTS, REJECT)
    assert not validation._conversion_ok(
        {**valid, "identifiers": [{"ip_address": "1.0.0.0"}]}, EVENTS, REJECT
    )
