"""Settings of the transform and of routing (the ``[transform]`` and ``[routing]`` sections)."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from consumer.transform.paths import PathError, compile_path

# A field source: one path, or several tried in order (the first present, non-null wins).
# A path starting with "=" is a literal constant, e.g. ``event_type = "=purchase"``.
Source = str | list[str]

_TAG_RE = re.compile(r"^(tw-[0-9a-z]+-)?[0-9a-z]+$")


class Preset(StrEnum):
    CANONICAL = "canonical"
    SEGMENT = "segment"
    GA4 = "ga4"
    SHOPIFY = "shopify"
    CUSTOM = "custom"
    # Debezium change events of an orders table (consumer/transform/debezium.py)
    DEBEZIUM = "debezium"
    # canonical, segment, ga4 or shopify, detected per event (consumer/transform/detect.py)
    AUTO = "auto"


def _check_source(value: Source | None) -> Source | None:
    if value is None:
        return None
    paths = [value] if isinstance(value, str) else value
    if not paths:
        raise ValueError("a field source needs at least one path")
    for path in paths:
        if path.startswith("="):
            continue
        try:
            compile_path(path)
        except PathError as exc:
            raise ValueError(str(exc)) from exc
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ItemMapping(_Strict):
    """Paths relative to one element of the ``items`` list."""

    id: Source | None = None
    group_id: Source | None = None
    name: Source | None = None
    price: Source | None = None
    category: Source | None = None
    quantity: Source | None = None

    @field_validator("*")
    @classmethod
    def _paths(cls, value: Source | None) -> Source | None:
        return _check_source(value)


class FieldMapping(_Strict):
    """Where each canonical field is found in the producer's JSON.

    For ``preset = "custom"`` this is the whole mapping; for the other presets any field
    set here replaces the preset's own source for that field.
    """

    order_id: Source | None = None
    conversion_id: Source | None = None
    event_time: Source | None = None
    event_type: Source | None = None
    routing_key: Source | None = None
    email: Source | None = None
    phone: Source | None = None
    hashed_email: Source | None = None
    hashed_phone: Source | None = None
    twclid: Source | None = None
    twclid_url: Source | None = None
    ip: Source | None = None
    user_agent: Source | None = None
    value: Source | None = None
    currency: Source | None = None
    number_items: Source | None = None
    description: Source | None = None
    items: Annotated[str | None, Field(description="list path ending in [], e.g. data.lines[]")] = (
        None
    )
    item: ItemMapping = ItemMapping()

    @field_validator(
        "order_id",
        "conversion_id",
        "event_time",
        "event_type",
        "routing_key",
        "email",
        "phone",
        "hashed_email",
        "hashed_phone",
        "twclid",
        "twclid_url",
        "ip",
        "user_agent",
        "value",
        "currency",
        "number_items",
        "description",
    )
    @classmethod
    def _paths(cls, value: Source | None) -> Source | None:
        return _check_source(value)

    @field_validator("items")
    @classmethod
    def _items(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.endswith("[]"):
            raise ValueError("items must be a list path ending in [] (e.g. data.lines[])")
        if value != "[]":
            try:
                compile_path(value[:-2])
            except PathError as exc:
                raise ValueError(str(exc)) from exc
        return value


class DebeziumSettings(_Strict):
    """How change events of an orders table (``preset = "debezium"``) become events."""

    # Updates ("u") are skipped unless true: an order row changes often after checkout
    # (status, fulfilment), and X de-duplicates only within 48 h.
    updates: bool = False
    # Scale of each base64 ``Decimal`` column when the messages carry no schema
    # (``value.converter.schemas.enable=false`` with decimal.handling.mode=precise).
    decimal_scales: dict[str, Annotated[int, Field(ge=0, le=30)]] = {}


class TransformSettings(_Strict):
    """How a producer's purchase event becomes one X conversion."""

    preset: Preset = Preset.CANONICAL
    mapping: FieldMapping = FieldMapping()
    default_phone_region: str = Field(default="US", pattern=r"^[A-Z]{2}$")
    default_currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    max_age_s: float = Field(default=7 * 86400, gt=0)
    max_future_s: float = Field(default=300, ge=0)
    # Template of the conversion id: {order_id}, {event_type}, {routing_key} are replaced.
    conversion_id_template: str = "{order_id}"
    # An explicit conversion id in the event wins over the template.
    use_event_conversion_id: bool = True
    description: str | None = None
    # "number": JSON number (the reference's documented double); "string": decimal text.
    value_format: Literal["number", "string"] = "number"
    # IPv4-mapped IPv6 is always sent as dotted decimal; other IPv6 is dropped unless true.
    send_ipv6: bool = False
    # X accepts ip_address + user_agent together as identifiers; false requires a
    # twclid, email or phone on every conversion.
    allow_ip_and_user_agent_only: bool = True
    # false: an invalid optional field is left out of the conversion and counted
    # (docs/transform.md, "Field policy"); true: it rejects the whole event.
    strict: bool = False
    # An order or conversion id (or item id) holding an e-mail address or phone number is
    # sent SHA-256 hashed; free text holding one (description, item name or category,
    # twclid, user agent) is left out and counted. false sends such values as they are.
    pii_scan: bool = True
    debezium: DebeziumSettings = DebeziumSettings()
    engine: Literal["auto", "native", "python"] = Field(
        default="auto",
        description="Which implementation transforms events: `native` (the compiled fast "
        "path of the optional `xconv-native` package, byte-identical to the reference; "
        "events it does not handle go to the reference), `python` (the pure-Python "
        "reference only), or `auto` (native when the package imports, else the reference, "
        "with one `transform_engine_fallback` log line).",
    )

    @field_validator("default_phone_region", "default_currency", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("conversion_id_template")
    @classmethod
    def _template(cls, value: str) -> str:
        if "{order_id}" not in value and "{routing_key}" not in value:
            raise ValueError("the template must contain {order_id} to stay unique per order")
        rest = value
        for name in ("{order_id}", "{event_type}", "{routing_key}"):
            rest = rest.replace(name, "")
        if "{" in rest or "}" in rest:
            raise ValueError("only {order_id}, {event_type} and {routing_key} are supported")
        return value

    @model_validator(mode="after")
    def _custom_needs_mapping(self) -> TransformSettings:
        if self.preset is Preset.CUSTOM and (
            self.mapping.order_id is None or self.mapping.event_time is None
        ):
            raise ValueError("preset 'custom' needs mapping.order_id and mapping.event_time")
        if self.preset is Preset.AUTO and self.mapping != FieldMapping():
            raise ValueError(
                "preset 'auto' uses each detected preset's own mapping; "
                "[transform.mapping] would apply to all of them and is not supported"
            )
        return self


class RouteSettings(_Strict):
    """One destination: ad account, pixel (base tag id) and the purchase event tag."""

    account_id: str = Field(min_length=1)
    pixel_id: str = Field(min_length=1, pattern=r"^[0-9a-z]+$")
    event_id: str = Field(min_length=1, pattern=_TAG_RE.pattern)
    # Event tag per event type for this route (overrides RoutingSettings.event_ids).
    event_ids: dict[str, Annotated[str, Field(pattern=_TAG_RE.pattern)]] = {}


class RoutingSettings(_Strict):
    """Which account/pixel/event tag a conversion goes to.

    ``key_field`` (a path in the producer's JSON; defaults to the preset's routing key)
    selects a route in ``routes``; an unknown or missing key falls back to ``default``;
    with neither, the event is rejected with ``no_route``.
    """

    default: RouteSettings | None = None
    key_field: Source | None = None
    routes: dict[str, RouteSettings] = {}
    # Event tag per event type for every route; "purchase" defaults to the route's event_id.
    event_ids: dict[str, Annotated[str, Field(pattern=_TAG_RE.pattern)]] = {}

    @field_validator("key_field")
    @classmethod
    def _key(cls, value: Source | None) -> Source | None:
        return _check_source(value)
