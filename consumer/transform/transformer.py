"""Producer purchase event (bytes) -> one X conversion, or a rejection with a stable reason.

Pure: no I/O, the clock is injected. ``transform`` never raises, whatever the input.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import unquote

import orjson

from consumer.transform.config import RouteSettings, RoutingSettings, Source, TransformSettings
from consumer.transform.currencies import ISO_4217
from consumer.transform.normalize import (
    format_time_ms,
    hash_email,
    hash_phone,
    normalize_ip,
    parse_amount,
    parse_count,
    parse_time_ms,
    sum_amounts,
)
from consumer.transform.paths import MISSING, Path, compile_path, lookup
from consumer.transform.presets import EVENT_TYPE_ALIASES, effective_mapping
from consumer.transform.types import Conversion, ReasonCode, Rejection, Route

# One alternative of a field source: (path text, compiled path or None, constant).
_Alt = tuple[str, Path | None, Any]
_Alts = tuple[_Alt, ...]

MAX_ID_LENGTH: Final = 256
MAX_USER_AGENT_LENGTH: Final = 2048
MAX_IDENTIFIER_VALUES: Final = 10
MAX_ITEMS: Final = 1000

_TIME_MESSAGES: Final = {
    ReasonCode.INVALID_TIME: "not an ISO 8601 time or epoch seconds/milliseconds/microseconds",
    ReasonCode.NAIVE_TIME: "time has no UTC offset",
}

_loads = orjson.loads
_dumps = orjson.dumps


def _compile(source: Source | None) -> _Alts:
    if source is None:
        return ()
    texts = [source] if isinstance(source, str) else source
    return tuple(
        (text, None, text[1:]) if text.startswith("=") else (text, compile_path(text), None)
        for text in texts
    )


def _first(doc: Any, alts: _Alts) -> tuple[Any, str | None]:
    """The first present value that is not null or empty text, with its path text."""
    for text, path, const in alts:
        if path is None:
            return const, text
        value = lookup(doc, path)
        if value is not MISSING and value is not None and value != "":
            return value, text
    return MISSING, (alts[0][0] if alts else None)


def _as_id(value: Any) -> str | None:
    kind = type(value)
    if kind is str:
        text: str = value.strip()
        return text if 0 < len(text) <= MAX_ID_LENGTH else None
    if kind is int:
        return str(value)
    return None


def _strings(value: Any) -> list[str] | None:
    """A string or a short list of strings; None for any other shape."""
    if type(value) is str:
        return [value]
    if (
        type(value) is list
        and len(value) <= MAX_IDENTIFIER_VALUES
        and all(type(v) is str for v in value)
    ):
        return value
    return None


def _twclid_from_url(url: str) -> str | None:
    start = url.find("twclid=")
    while start > 0 and url[start - 1] not in "?&#;":
        start = url.find("twclid=", start + 1)
    if start < 0:
        return None
    start += 7
    end = len(url)
    for sep in "&#;":
        pos = url.find(sep, start)
        if 0 <= pos < end:
            end = pos
    value = unquote(url[start:end]).strip()
    return value or None


def _reject(reason: ReasonCode, field: str | None, message: str) -> Rejection:
    return Rejection(reason.value, field, message)


class Transformer:
    """Turns producer events into X conversions; one instance per settings, not thread-bound.

    Counters (for metrics) count identifiers dropped because they were unusable:
    ``dropped_emails``, ``dropped_phones``, ``dropped_ips``, ``dropped_user_agents``.
    """

    def __init__(
        self,
        settings: TransformSettings,
        routing: RoutingSettings,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.routing = routing
        self._now = now
        mapping = effective_mapping(settings.preset, settings.mapping)
        self._order_id = _compile(mapping.order_id)
        self._conversion_id = _compile(mapping.conversion_id)
        self._event_time = _compile(mapping.event_time)
        self._event_type = _compile(mapping.event_type)
        self._routing_key = _compile(routing.key_field or mapping.routing_key)
        self._email = _compile(mapping.email) + _compile(mapping.hashed_email)
        self._phone = _compile(mapping.phone) + _compile(mapping.hashed_phone)
        self._twclid = _compile(mapping.twclid)
        self._twclid_url = _compile(mapping.twclid_url)
        self._ip = _compile(mapping.ip)
        self._user_agent = _compile(mapping.user_agent)
        self._value = _compile(mapping.value)
        self._currency = _compile(mapping.currency)
        self._number_items = _compile(mapping.number_items)
        self._description = _compile(mapping.description)
        if mapping.items is not None and mapping.items != "[]":
            self._items_text: str | None = mapping.items[:-2]
            self._items_path: Path = compile_path(self._items_text)
        else:
            self._items_text, self._items_path = None, ()
        item = mapping.item
        self._item_fields: tuple[tuple[str, _Alts], ...] = tuple(
            (name, _compile(getattr(item, name)))
            for name in ("id", "group_id", "name", "price", "category", "quantity")
            if getattr(item, name) is not None
        )
        self._region = settings.default_phone_region
        self._currency_default = settings.default_currency
        self._max_age_ms = int(settings.max_age_s * 1000)
        self._max_future_ms = int(settings.max_future_s * 1000)
        self._template = settings.conversion_id_template
        self._string_values = settings.value_format == "string"
        self._tables = {key: self._route_table(r) for key, r in routing.routes.items()}
        self._default_table = (
            self._route_table(routing.default) if routing.default is not None else None
        )
        self.dropped_emails = 0
        self.dropped_phones = 0
        self.dropped_ips = 0
        self.dropped_user_agents = 0

    def _route_table(self, route: RouteSettings) -> dict[str, Route]:
        table = {"purchase": Route(route.account_id, route.pixel_id, route.event_id)}
        for event_type, event_id in {**self.routing.event_ids, **route.event_ids}.items():
            table[event_type] = Route(route.account_id, route.pixel_id, event_id)
        return table

    def transform(self, raw: bytes) -> Conversion | Rejection:
        """Never raises: any input yields a Conversion or a Rejection."""
        try:
            return self._transform(raw)
        except Exception:
            return _reject(ReasonCode.INTERNAL_ERROR, None, "unexpected error in transform")

    def _transform(self, raw: bytes) -> Conversion | Rejection:
        try:
            doc = _loads(raw)
        except (ValueError, TypeError):
            return _reject(ReasonCode.INVALID_JSON, None, "message is not valid UTF-8 JSON")
        if type(doc) is not dict:
            return _reject(ReasonCode.SCHEMA_VIOLATION, None, "event must be a JSON object")

        value, path = _first(doc, self._order_id)
        if value is MISSING:
            return _reject(ReasonCode.SCHEMA_VIOLATION, path, "required order id is missing")
        order_id = _as_id(value)
        if order_id is None:
            return _reject(
                ReasonCode.SCHEMA_VIOLATION, path, "order id must be a non-empty string or integer"
            )

        value, path = _first(doc, self._event_time)
        if value is MISSING:
            return _reject(ReasonCode.SCHEMA_VIOLATION, path, "required event time is missing")
        moment = parse_time_ms(value)
        if isinstance(moment, ReasonCode):
            return _reject(moment, path, _TIME_MESSAGES[moment])
        now_ms = int(self._now() * 1000)
        if moment < now_ms - self._max_age_ms:
            return _reject(ReasonCode.TIME_TOO_OLD, path, "event is older than max_age_s")
        if moment > now_ms + self._max_future_ms:
            return _reject(ReasonCode.TIME_IN_FUTURE, path, "event is after now + max_future_s")

        value, type_path = _first(doc, self._event_type)
        if value is MISSING:
            event_type = "purchase"
        elif type(value) is str:
            event_type = EVENT_TYPE_ALIASES.get(value, value)
        else:
            return _reject(ReasonCode.SCHEMA_VIOLATION, type_path, "event type must be a string")

        # --- route
        table = self._default_table
        if self._tables:
            value, path = _first(doc, self._routing_key)
            if value is not MISSING:
                key = _as_id(value)
                if key is None:
                    return _reject(
                        ReasonCode.SCHEMA_VIOLATION, path, "routing key must be a string or integer"
                    )
                table = self._tables.get(key, table)
            if table is None:
                return _reject(
                    ReasonCode.NO_ROUTE, path, "routing key matches no route and no default is set"
                )
        elif table is None:
            return _reject(ReasonCode.NO_ROUTE, None, "no route is configured")
        route = table.get(event_type)
        if route is None:
            return _reject(ReasonCode.NO_ROUTE, type_path, "no event tag for this event type")

        # --- identifiers
        identifiers: list[dict[str, str]] = []
        strong = False
        dropped: list[str] = []
        value, path = _first(doc, self._twclid)
        twclid: str | None = None
        if value is not MISSING:
            if type(value) is not str:
                return _reject(ReasonCode.SCHEMA_VIOLATION, path, "twclid must be a string")
            twclid = value.strip() or None
        if twclid is None and self._twclid_url:
            value, _ = _first(doc, self._twclid_url)
            if type(value) is str and "twclid=" in value:
                twclid = _twclid_from_url(value)
        if twclid is not None:
            identifiers.append({"twclid": twclid})
            strong = True

        for alts, kind in ((self._email, "email"), (self._phone, "phone")):
            value, path = _first(doc, alts)
            if value is MISSING:
                continue
            texts = _strings(value)
            if texts is None:
                return _reject(
                    ReasonCode.SCHEMA_VIOLATION, path, f"{kind} must be a string or list of strings"
                )
            seen: set[str] = set()
            for text in texts:
                if kind == "email":
                    hashed = hash_email(text)
                    key_name = "hashed_email"
                else:
                    hashed = hash_phone(text, self._region)
                    key_name = "hashed_phone_number"
                if hashed is None:
                    if kind == "email":
                        self.dropped_emails += 1
                    else:
                        self.dropped_phones += 1
                    dropped.append(kind)
                elif hashed not in seen:
                    seen.add(hashed)
                    identifiers.append({key_name: hashed})
                    strong = True

        device: dict[str, str] = {}
        value, path = _first(doc, self._ip)
        if value is not MISSING:
            if type(value) is not str:
                return _reject(ReasonCode.SCHEMA_VIOLATION, path, "ip must be a string")
            address = normalize_ip(value, self.settings.send_ipv6)
            if address is None:
                self.dropped_ips += 1
                dropped.append("ip")
            else:
                device["ip_address"] = address
        value, path = _first(doc, self._user_agent)
        if value is not MISSING:
            if type(value) is not str:
                return _reject(ReasonCode.SCHEMA_VIOLATION, path, "user agent must be a string")
            agent = value.strip()
            if agent and len(agent) <= MAX_USER_AGENT_LENGTH:
                device["user_agent"] = agent
            else:
                self.dropped_user_agents += 1
                dropped.append("user_agent")
        if not strong and not (len(device) == 2 and self.settings.allow_ip_and_user_agent_only):
            detail = f" ({', '.join(dropped)} dropped as unusable)" if dropped else ""
            return _reject(
                ReasonCode.NO_IDENTIFIER,
                None,
                "no usable twclid, email or phone" + detail,
            )
        if device:
            identifiers.append(device)

        # --- currency
        value, path = _first(doc, self._currency)
        if value is MISSING:
            currency = self._currency_default
        elif type(value) is str:
            currency = value.strip().upper()
            if currency not in ISO_4217:
                return _reject(ReasonCode.UNKNOWN_CURRENCY, path, "not an active ISO 4217 code")
        else:
            return _reject(ReasonCode.SCHEMA_VIOLATION, path, "currency must be a string")

        # --- line items
        contents: list[dict[str, Any]] = []
        quantities = 0
        priced: list[tuple[str, int]] | None = None
        if self._items_text is not None:
            items = lookup(doc, self._items_path)
            if items is not MISSING and items is not None:
                if type(items) is not list or len(items) > MAX_ITEMS:
                    return _reject(
                        ReasonCode.SCHEMA_VIOLATION,
                        self._items_text,
                        f"items must be a list of at most {MAX_ITEMS} objects",
                    )
                priced = []
                for index, element in enumerate(items):
                    result = self._content(element, index)
                    if type(result) is Rejection:
                        return result
                    content, price_text, quantity = result  # type: ignore[misc]
                    quantities += quantity
                    if price_text is None:
                        priced = None
                    elif priced is not None:
                        priced.append((price_text, quantity))
                    if content:
                        contents.append(content)
                if not items:
                    priced = None

        # --- value
        amount: tuple[float, str] | None = None
        value, path = _first(doc, self._value)
        if value is not MISSING:
            amount = parse_amount(value)
            if amount is None:
                return _reject(
                    ReasonCode.INVALID_VALUE, path, "value must be a non-negative decimal number"
                )
        elif priced:
            amount = sum_amounts(priced)

        # --- number of items
        number_items: int | None = None
        value, path = _first(doc, self._number_items)
        if value is not MISSING:
            number_items = parse_count(value)
            if number_items is None:
                return _reject(
                    ReasonCode.INVALID_NUMBER_ITEMS, path, "number_items must be a positive integer"
                )
        elif quantities > 0:
            number_items = quantities

        # --- conversion id
        conversion_id: str | None = None
        if self.settings.use_event_conversion_id:
            value, path = _first(doc, self._conversion_id)
            if value is not MISSING:
                conversion_id = _as_id(value)
                if conversion_id is None:
                    return _reject(
                        ReasonCode.INVALID_CONVERSION_ID,
                        path,
                        f"conversion id must be a string of 1 to {MAX_ID_LENGTH} characters",
                    )
        if conversion_id is None:
            if self._template == "{order_id}":
                conversion_id = order_id
            else:
                value, _ = _first(doc, self._routing_key)
                conversion_id = (
                    self._template.replace("{order_id}", order_id)
                    .replace("{event_type}", event_type)
                    .replace("{routing_key}", _as_id(value) or "")
                )
                if len(conversion_id) > MAX_ID_LENGTH:
                    return _reject(
                        ReasonCode.INVALID_CONVERSION_ID,
                        None,
                        f"templated conversion id is longer than {MAX_ID_LENGTH} characters",
                    )

        # --- description
        description = self.settings.description
        value, path = _first(doc, self._description)
        if value is not MISSING:
            if type(value) is not str:
                return _reject(ReasonCode.SCHEMA_VIOLATION, path, "description must be a string")
            description = value

        conversion: dict[str, Any] = {
            "conversion_time": format_time_ms(moment),
            "event_id": route.event_id,
            "identifiers": identifiers,
        }
        if amount is not None:
            conversion["value"] = amount[1] if self._string_values else amount[0]
        conversion["price_currency"] = currency
        if number_items is not None:
            conversion["number_items"] = number_items
        conversion["conversion_id"] = conversion_id
        if description:
            conversion["description"] = description
        if contents:
            conversion["contents"] = contents
        return Conversion(route, conversion_id, _dumps(conversion))

    def _content(
        self, element: Any, index: int
    ) -> tuple[dict[str, Any], str | None, int] | Rejection:
        """One line item -> (contents object, price text or None, quantity)."""
        if type(element) is not dict:
            return _reject(
                ReasonCode.SCHEMA_VIOLATION,
                f"{self._items_text}[{index}]",
                "item must be an object",
            )
        content: dict[str, Any] = {}
        price_text: str | None = None
        quantity = 1
        for name, alts in self._item_fields:
            value, path = _first(element, alts)
            if value is MISSING:
                continue
            if name == "price":
                amount = parse_amount(value)
                if amount is None:
                    return _reject(
                        ReasonCode.INVALID_VALUE,
                        f"{self._items_text}[{index}].{path}",
                        "item price must be a non-negative decimal number",
                    )
                content["content_price"] = amount[0]
                price_text = amount[1]
            elif name == "quantity":
                count = parse_count(value)
                if count is None:
                    return _reject(
                        ReasonCode.INVALID_NUMBER_ITEMS,
                        f"{self._items_text}[{index}].{path}",
                        "item quantity must be a positive integer",
                    )
                content["num_items"] = quantity = count
            else:
                text = _as_id(value) if name in ("id", "group_id") else value
                if type(text) is not str:
                    return _reject(
                        ReasonCode.SCHEMA_VIOLATION,
                        f"{self._items_text}[{index}].{path}",
                        f"item {name} must be a string" + (" or integer" if text is None else ""),
                    )
                content[_CONTENT_KEYS[name]] = text
        return content, price_text, quantity


_CONTENT_KEYS: Final = {
    "id": "content_id",
    "group_id": "content_group_id",
    "name": "content_name",
    "category": "content_type",
}
