"""One test per field rule of the endpoint, on the pure validator."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from consumer.sandbox.validation import (
    ValidationResult,
    accepted_event_ids,
    is_dotted_ipv4,
    is_sha256_hex,
    validate_body,
)

EVENTS = accepted_event_ids("oka17", ["ol288"])
HASH = "e586883b2b4faf78d48300a79e0e15138d664cdf796ffb86e533170a9893eda8"

EXAMPLE: dict[str, Any] = {
    "conversion_time": "2022-02-18T01:14:00.603Z",
    "event_id": "ol288",
    "identifiers": [
        {"twclid": "23opevjt88psuo13lu8d020qkn"},
        {"hashed_email": "d360d510a224510f373931ce2d6215a799f5a9c1cef221b0149b6b6b50cced62"},
        {"hashed_phone_number": "1fa6b8d986d9b9cd01bf36951815158bbde9f520c0567c835dfe34783d0a4231"},
        {"ip_address": "1.0.0.0", "user_agent": "Mozilla/5.0"},
    ],
    "value": "20.00",
    "number_items": 3,
    "conversion_id": "23294827",
    "description": "Pet supply purchases",
    "contents": [
        {
            "content_id": "1",
            "content_name": "Blankets",
            "content_type": "Pet supplies",
            "content_price": 100.99,
            "num_items": 1,
            "content_group_id": "123",
        }
    ],
}


def check(*conversions: Any, **kwargs: Any) -> ValidationResult:
    return validate_body(
        orjson.dumps({"conversions": list(conversions)}), event_ids=EVENTS, **kwargs
    )


def with_(**changes: Any) -> dict[str, Any]:
    item = copy.deepcopy(EXAMPLE)
    for key, value in changes.items():
        if value is ...:
            del item[key]
        else:
            item[key] = value
    return item


def params(result: ValidationResult) -> list[tuple[str, str]]:
    return [(p.code, p.parameter) for p in result.answered_problems()]


def test_page_example_is_valid() -> None:
    result = check(EXAMPLE)
    assert result.ok
    assert result.status == 200
    assert result.conversions == [EXAMPLE]


def test_minimal_conversion_is_valid() -> None:
    minimal = {
        "conversion_time": "2024-01-01T00:00:00.000Z",
        "event_id": "ol288",
        "identifiers": [{"twclid": "abc"}],
    }
    assert check(minimal).ok


# --------------------------------------------------------------- body shape


@pytest.mark.parametrize(
    ("body", "parameter"),
    [
        (b"{", ""),
        (b"\xff", ""),
        (b"", ""),
        (b"[]", ""),
        (b'"conversions"', ""),
        (b"{}", "conversions"),
        (b'{"conversions": {}}', "conversions"),
        (b'{"conversions": []}', "conversions"),
        (b'{"conversions": null}', "conversions"),
    ],
)
def test_body_shape(body: bytes, parameter: str) -> None:
    result = validate_body(body, event_ids=EVENTS)
    assert result.status == 400
    assert [p.parameter for p in result.problems] == [parameter]


def test_unknown_top_level_key() -> None:
    result = validate_body(orjson.dumps({"conversions": [EXAMPLE], "extra": 1}), event_ids=EVENTS)
    assert params(result) == [("INVALID_PARAMETER", "extra")]


def test_500_is_the_limit() -> None:
    assert check(*([EXAMPLE] * 500)).ok
    result = check(*([EXAMPLE] * 501))
    assert [p.message for p in result.problems] == ["Conversion count limit is 500"]


def test_conversion_must_be_an_object() -> None:
    assert params(check(EXAMPLE, "x", 3)) == [
        ("INVALID_PARAMETER", "conversions[1]"),
        ("INVALID_PARAMETER", "conversions[2]"),
    ]


# --------------------------------------------------------------- required fields


@pytest.mark.parametrize("field", ["conversion_time", "event_id", "identifiers"])
def test_required_fields(field: str) -> None:
    assert params(check(EXAMPLE, with_(**{field: ...}))) == [
        ("MISSING_PARAMETER", f"conversions[1].{field}")
    ]


def test_unknown_conversion_field() -> None:
    assert params(check(with_(colour="red"))) == [("INVALID_PARAMETER", "conversions[0].colour")]


def test_every_problem_is_listed() -> None:
    bad = with_(conversion_time="yesterday", number_items=0, price_currency="usd", value="abc")
    assert params(check(EXAMPLE, bad)) == [
        ("INVALID_PARAMETER", "conversions[1].conversion_time"),
        ("INVALID_PARAMETER", "conversions[1].number_items"),
        ("INVALID_PARAMETER", "conversions[1].price_currency"),
        ("INVALID_PARAMETER", "conversions[1].value"),
    ]
    assert check(EXAMPLE, bad).conversions == []


# --------------------------------------------------------------- conversion_time


@pytest.mark.parametrize(
    "value",
    ["2022-02-18T01:14:00.603Z", "2024-02-29T23:59:59.999Z", "2023-12-31T00:00:00.000Z"],
)
def test_conversion_time_accepted(value: str) -> None:
    assert check(with_(conversion_time=value)).ok


@pytest.mark.parametrize(
    "value",
    [
        "2022-06-16T01:14:00.603",
        "2022-06-16T01:14:00Z",
        "2022-06-16T01:14:00.60Z",
        "2022-06-16T01:14:00.6034Z",
        "2022-06-16 01:14:00.603Z",
        "2022-06-16T01:14:00.603+00:00",
        "2022-13-16T01:14:00.603Z",
        "2022-06-31T01:14:00.603Z",
        "2023-02-29T01:14:00.603Z",
        "2022-06-16T24:00:00.000Z",
        "2022-06-16T01:60:00.000Z",
        "2022-06-16t01:14:00.603z",
        "\uff12\uff10\uff12\uff12-06-16T01:14:00.603Z",  # full-width digits
        "",
        1655342040,
        None,
    ],
)
def test_conversion_time_rejected(value: Any) -> None:
    result = check(with_(conversion_time=value))
    assert params(result) == [("INVALID_PARAMETER", "conversions[0].conversion_time")]
    assert result.problems[0].message.startswith("Expected Time in yyyy-MM-ddTHH:mm:ss.SSSZ, got")


# --------------------------------------------------------------- event_id


def test_event_id_both_forms() -> None:
    assert check(with_(event_id="ol288"), with_(event_id="tw-oka17-ol288")).ok


@pytest.mark.parametrize("value", ["zz999", "tw-other-ol288", "tw-oka17-zz999", "OL288"])
def test_foreign_event_id_is_404(value: str) -> None:
    result = check(EXAMPLE, with_(event_id=value))
    assert result.status == 404
    assert params(result) == [("NOT_FOUND", "conversions[1].event_id")]
    assert "does not belong to provided account" in result.problems[0].message


def test_field_errors_outrank_foreign_event_id() -> None:
    result = check(with_(event_id="zz999"), with_(number_items=-1))
    assert result.status == 400
    assert params(result) == [("INVALID_PARAMETER", "conversions[1].number_items")]


@pytest.mark.parametrize("value", [288, "", None, ["ol288"]])
def test_event_id_type(value: Any) -> None:
    assert params(check(with_(event_id=value))) == [
        ("INVALID_PARAMETER", "conversions[0].event_id")
    ]


# --------------------------------------------------------------- identifiers


@pytest.mark.parametrize("value", [[], {}, "abc", None])
def test_identifiers_must_be_a_non_empty_array(value: Any) -> None:
    assert params(check(with_(identifiers=value))) == [
        ("INVALID_PARAMETER", "conversions[0].identifiers")
    ]


@pytest.mark.parametrize(
    "identifiers",
    [
        [{"twclid": "x"}],
        [{"hashed_email": HASH}],
        [{"hashed_phone_number": HASH.upper()}],
        [{"ip_address": "8.25.197.25"}, {"user_agent": "UA"}],
        [{"ip_address": "8.25.197.25", "user_agent": "UA"}],
        [{"ip_address": "8.25.197.25"}, {"twclid": "x"}],
        [{"user_agent": "UA", "hashed_email": HASH}],
    ],
)
def test_identifier_combinations_accepted(identifiers: list[dict[str, str]]) -> None:
    assert check(with_(identifiers=identifiers)).ok


@pytest.mark.parametrize(
    "identifiers",
    [
        [{"ip_address": "8.25.197.25"}],
        [{"user_agent": "UA"}],
        [{"user_agent": "A"}, {"user_agent": "B"}],
    ],
)
def test_ip_or_user_agent_alone_rejected(identifiers: list[dict[str, str]]) -> None:
    result = check(with_(identifiers=identifiers))
    assert params(result) == [("INVALID_PARAMETER", "conversions[0].identifiers")]
    assert "must be sent with another identifier" in result.problems[0].message


@pytest.mark.parametrize(
    "value",
    ["abc", HASH[:-1], HASH + "0", "g" * 64, " " + HASH[1:], "test-email@test.com", 123, ""],
)
@pytest.mark.parametrize("field", ["hashed_email", "hashed_phone_number"])
def test_hashed_fields_must_be_sha256_hex(field: str, value: Any) -> None:
    result = check(with_(identifiers=[{"twclid": "x"}, {field: value}]))
    assert params(result) == [("INVALID_PARAMETER", f"conversions[0].identifiers[1].{field}")]
    if isinstance(value, str) and value:
        assert value not in result.problems[0].message  # identifiers are never echoed


@pytest.mark.parametrize(
    "value",
    ["1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "::1", "1.2.3.4 ", "a.b.c.d", "", 16909060],
)
def test_ip_address_dotted_decimal(value: Any) -> None:
    result = check(with_(identifiers=[{"twclid": "x", "ip_address": value}]))
    assert params(result) == [("INVALID_PARAMETER", "conversions[0].identifiers[0].ip_address")]


def test_identifier_object_rules() -> None:
    result = check(with_(identifiers=[{}, "x", {"email": "a"}, {"twclid": 5}]))
    assert params(result) == [
        ("INVALID_PARAMETER", "conversions[0].identifiers[0]"),
        ("INVALID_PARAMETER", "conversions[0].identifiers[1]"),
        ("INVALID_PARAMETER", "conversions[0].identifiers[2].email"),
        ("INVALID_PARAMETER", "conversions[0].identifiers[3].twclid"),
    ]


def test_helpers() -> None:
    assert is_sha256_hex(HASH)
    assert not is_sha256_hex(HASH[:63])
    assert is_dotted_ipv4("255.255.255.255")
    assert not is_dotted_ipv4("255.255.255.256")


# --------------------------------------------------------------- optional fields


@pytest.mark.parametrize("value", [1, 500])
def test_number_items_positive_integer(value: int) -> None:
    assert check(with_(number_items=value)).ok


@pytest.mark.parametrize("value", [0, -1, 1.5, 2.0, "3", True, None])
def test_number_items_rejected(value: Any) -> None:
    assert params(check(with_(number_items=value))) == [
        ("INVALID_PARAMETER", "conversions[0].number_items")
    ]


@pytest.mark.parametrize("value", ["USD", "EUR", "JPY", "CHF", "XOF"])
def test_price_currency_iso_4217(value: str) -> None:
    assert check(with_(price_currency=value)).ok


@pytest.mark.parametrize("value", ["usd", "US", "USDD", "ABC", "XXX", "XTS", 840, None])
def test_price_currency_rejected(value: Any) -> None:
    assert params(check(with_(price_currency=value))) == [
        ("INVALID_PARAMETER", "conversions[0].price_currency")
    ]


@pytest.mark.parametrize("value", [20, 20.5, 0, -3.2, "20.00", "20", "-1.5"])
def test_value_number_or_numeric_string(value: Any) -> None:
    assert check(with_(value=value)).ok


@pytest.mark.parametrize("value", ["20,00", "abc", "", "1e3", " 20", True, None, [20]])
def test_value_rejected(value: Any) -> None:
    assert params(check(with_(value=value))) == [("INVALID_PARAMETER", "conversions[0].value")]


@pytest.mark.parametrize("value", [23294827, "", None])
def test_conversion_id_must_be_a_string(value: Any) -> None:
    assert params(check(with_(conversion_id=value))) == [
        ("INVALID_PARAMETER", "conversions[0].conversion_id")
    ]


def test_description_must_be_a_string() -> None:
    assert params(check(with_(description=5))) == [
        ("INVALID_PARAMETER", "conversions[0].description")
    ]


def test_reject_conversion_ids() -> None:
    batch = [with_(conversion_id=f"o-{i}") for i in range(500)]
    result = check(*batch, reject_conversion_ids=frozenset({"o-137", "o-400"}))
    assert params(result) == [
        ("INVALID_PARAMETER", "conversions[137].conversion_id"),
        ("INVALID_PARAMETER", "conversions[400].conversion_id"),
    ]


# --------------------------------------------------------------- contents


@pytest.mark.parametrize(
    "content",
    [
        {},
        {"content_id": "sku", "content_group_id": 123, "content_price": "9.99", "num_items": 2},
        {"content_price": 5, "content_name": "n", "content_type": "t"},
    ],
)
def test_contents_accepted(content: dict[str, Any]) -> None:
    assert check(with_(contents=[content])).ok
    assert check(with_(contents=[])).ok


@pytest.mark.parametrize(
    ("content", "field"),
    [
        ({"content_id": 1}, "content_id"),
        ({"content_name": None}, "content_name"),
        ({"content_type": ["a"]}, "content_type"),
        ({"content_group_id": "abc"}, "content_group_id"),
        ({"content_group_id": 1.5}, "content_group_id"),
        ({"content_price": "cheap"}, "content_price"),
        ({"num_items": 0}, "num_items"),
        ({"num_items": "1"}, "num_items"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_contents_rejected(content: dict[str, Any], field: str) -> None:
    assert params(check(with_(contents=[{"content_id": "ok"}, content]))) == [
        ("INVALID_PARAMETER", f"conversions[0].contents[1].{field}")
    ]


@pytest.mark.parametrize("contents", [{}, "x", [1]])
def test_contents_shape(contents: Any) -> None:
    expected = (
        "conversions[0].contents"
        if not isinstance(contents, list)
        else "conversions[0].contents[0]"
    )
    assert params(check(with_(contents=contents))) == [("INVALID_PARAMETER", expected)]


def test_problem_json_shape() -> None:
    problem = check(with_(number_items=0)).problems[0]
    assert problem.as_json() == {
        "code": "INVALID_PARAMETER",
        "message": "number_items must be a positive integer",
        "parameter": "conversions[0].number_items",
    }
