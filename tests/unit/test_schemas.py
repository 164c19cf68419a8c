"""The JSON Schemas are valid 2020-12 schemas, their examples validate, bad data does not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator, FormatChecker  # type: ignore[import-untyped]
from referencing import Registry, Resource

from consumer.samples import SampleGenerator
from consumer.transform import (
    Conversion,
    RouteSettings,
    RoutingSettings,
    Transformer,
    TransformSettings,
)

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
NAMES = [
    "purchase-event.schema.json",
    "conversion.schema.json",
    "conversions-request.schema.json",
    "dead-letter-record.schema.json",
]


def load(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS / name).read_text())
    return schema


REGISTRY: Registry[Any] = Registry().with_resources(
    (load(n)["$id"], Resource.from_contents(load(n))) for n in NAMES
)


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(load(name), registry=REGISTRY, format_checker=FormatChecker())


@pytest.mark.parametrize("name", NAMES)
def test_schema_is_valid_and_documented(name: str) -> None:
    schema = load(name)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["examples"]
    for prop in schema["properties"].values():
        assert prop.get("description"), prop


@pytest.mark.parametrize("name", NAMES)
def test_examples_validate(name: str) -> None:
    check = validator(name)
    for example in load(name)["examples"]:
        assert not list(check.iter_errors(example))


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        (
            "conversion.schema.json",
            {
                "conversion_time": "2022-02-18T01:14:00.603",
                "event_id": "ol288",
                "identifiers": [{"twclid": "x"}],
            },
        ),
        (
            "conversion.schema.json",
            {"conversion_time": "2022-02-18T01:14:00.603Z", "event_id": "ol288", "identifiers": []},
        ),
        (
            "conversion.schema.json",
            {
                "conversion_time": "2022-02-18T01:14:00.603Z",
                "event_id": "ol288",
                "identifiers": [{"hashed_email": "abc"}],
            },
        ),
        (
            "conversion.schema.json",
            {
                "conversion_time": "2022-02-18T01:14:00.603Z",
                "event_id": "ol288",
                "identifiers": [{"twclid": "x"}],
                "number_items": 0,
            },
        ),
        ("conversions-request.schema.json", {"conversions": []}),
        ("purchase-event.schema.json", {"order_id": "1", "user": {}}),
        ("dead-letter-record.schema.json", {"xconv.reason": "x"}),
    ],
)
def test_bad_documents_fail(name: str, bad: dict[str, Any]) -> None:
    assert list(validator(name).iter_errors(bad))


def test_request_limit_is_500() -> None:
    one = load("conversion.schema.json")["examples"][0]
    check = validator("conversions-request.schema.json")
    assert not list(check.iter_errors({"conversions": [one] * 500}))
    assert list(check.iter_errors({"conversions": [one] * 501}))


def test_transform_output_validates_as_request_body() -> None:
    now = 1_767_225_600.0
    transformer = Transformer(
        TransformSettings(),
        RoutingSettings(default=RouteSettings(account_id="a1", pixel_id="oka17", event_id="ol288")),
        now=lambda: now,
    )
    gen = SampleGenerator(seed=4, presets=["canonical"], now=lambda: now)
    event_check = validator("purchase-event.schema.json")
    payloads = []
    for sample in gen.events(50):
        assert not list(event_check.iter_errors(orjson.loads(sample.value)))
        result = transformer.transform(sample.value)
        assert isinstance(result, Conversion)
        payloads.append(result.payload)
    body = orjson.loads(b'{"conversions":[' + b",".join(payloads) + b"]}")
    assert not list(validator("conversions-request.schema.json").iter_errors(body))


def test_purchase_event_examples_transform() -> None:
    now = 1_740_834_400.0
    transformer = Transformer(
        TransformSettings(),
        RoutingSettings(default=RouteSettings(account_id="a1", pixel_id="oka17", event_id="ol288")),
        now=lambda: now,
    )
    for example in load("purchase-event.schema.json")["examples"]:
        assert isinstance(transformer.transform(orjson.dumps(example)), Conversion)
