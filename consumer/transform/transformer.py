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


class _Field:
    """A compiled field source: ``get(doc)`` is the hot-path read, ``where(doc)`` the path
    text reported in a rejection (computed only then)."""

    __slots__ = ("alts", "get", "key")

    def __init__(self, source: Source | None) -> None:
        texts = [] if source is None else [source] if isinstance(source, str) else source
        self.alts: _Alts = tuple(
            (text, None, text[1:]) if text.startswith("=") else (text, compile_path(text), None)
            for text in texts
        )
        getters = [_alt_getter(path, const) for _, path, const in self.alts]
        # The single top-level key when that is the whole source (read inline on hot loops).
        self.key: str | None = None
        if len(self.alts) == 1:
            path = self.alts[0][1]
            if path is not None and len(path) == 1 and type(path[0]) is str:
                self.key = path[0]
        if not getters:
            self.get: Callable[[Any], Any] = _absent
        elif len(getters) == 1:
            self.get = getters[0]
        else:
            self.get = _first_of(tuple(getters))

    def __bool__(self) -> bool:
        return bool(self.alts)

    def where(self, doc: Any) -> str | None:
        for text, path, _ in self.alts:
            if path is None or _present(lookup(doc, path)):
                return text
        return self.alts[0][0] if self.alts else None


def _present(value: Any) -> bool:
    return value is not MISSING and value is not None and value != ""


def _absent(doc: Any) -> Any:
    return MISSING


def _first_of(getters: tuple[Callable[[Any], Any], ...]) -> Callable[[Any], Any]:
    def first(doc: Any) -> Any:
        for getter in getters:
            value = getter(doc)
            if value is not MISSING:
                return value
        return MISSING

    return first


def _alt_getter(path: Path | None, const: Any) -> Callable[[Any], Any]:
    """Specialised readers for the common shapes (one or two keys); null and "" read as
    missing so that the next alternative is tried."""
    if path is None:
        return lambda doc: const
    if len(path) == 1 and type(path[0]) is str:
        key = path[0]

        def one(doc: Any) -> Any:
            value = doc.get(key) if type(doc) is dict else None
            return MISSING if value is None or value == "" else value

        return one
    if len(path) == 2 and type(path[0]) is str and type(path[1]) is str:
        outer, inner = path[0], path[1]

        def two(doc: Any) -> Any:
            node = doc.get(outer) if type(doc) is dict else None
            if type(node) is not dict:
                return MISSING
            value = node.get(inner)
            return MISSING if value is None or value == "" else value

        return two
    compiled = path

    def deep(doc: Any) -> Any:
        value = lookup(doc, compiled)
        return MISSING if value is None or value == "" else value

    return deep


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


def _merge(*sources: Source | None) -> list[str] | None:
    texts = [
        t for src in sources if src is not None for t in ([src] if isinstance(src, str) else src)
    ]
    return texts or None


def _reject(reason: ReasonCode, field: str | None, message: str) -> Rejection:
    return Rejection(reason.value, field, message)


class Transformer:
    """Turns producer events into X conversions; one instance per settings.

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
        self._order_id = _Field(mapping.order_id)
        self._conversion_id = _Field(mapping.conversion_id)
        self._event_time = _Field(mapping.event_time)
        self._event_type = _Field(mapping.event_type)
        self._routing_key = _Field(routing.key_field or mapping.routing_key)
        self._email = _Field(_merge(mapping.email, mapping.hashed_email))
        self._phone = _Field(_merge(mapping.phone, mapping.hashed_phone))
        self._twclid = _Field(mapping.twclid)
        self._twclid_url = _Field(mapping.twclid_url)
        self._ip = _Field(mapping.ip)
        self._user_agent = _Field(mapping.user_agent)
        self._value = _Field(mapping.value)
        self._currency = _Field(mapping.currency)
        self._number_items = _Field(mapping.number_items)
        self._description = _Field(mapping.description)
        self._items_text: str | None = None
        self._items_path: Path = ()
        if mapping.items is not None and mapping.items != "[]":
            self._items_text = mapping.items[:-2]
            self._items_path = compile_path(self._items_text)
        item = mapping.item
        self._item_id = _Field(item.id)
        self._item_group = _Field(item.group_id)
        self._item_name = _Field(item.name)
        self._item_price = _Field(item.price)
        self._item_category = _Field(item.category)
        self._item_quantity = _Field(item.quantity)
        self._region = settings.default_phone_region
        self._currency_default = settings.default_currency
        self._max_age_ms = int(settings.max_age_s * 1000)
        self._max_future_ms = int(settings.max_future_s * 1000)
        self._template = settings.conversion_id_template
        self._string_values = settings.value_format == "string"
        self._send_ipv6 = settings.send_ipv6
        self._ip_ua_ok = settings.allow_ip_and_user_agent_only
        self._use_event_cid = settings.use_event_conversion_id
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

        value = self._order_id.get(doc)
        if value is MISSING:
            return _reject(
                ReasonCode.SCHEMA_VIOLATION,
                self._order_id.where(doc),
                "required order id is missing",
            )
        order_id = _as_id(value)
        if order_id is None:
            return _reject(
                ReasonCode.SCHEMA_VIOLATION,
                self._order_id.where(doc),
                "order id must be a non-empty string or integer",
            )

        value = self._event_time.get(doc)
        if value is MISSING:
            return _reject(
                ReasonCode.SCHEMA_VIOLATION,
                self._event_time.where(doc),
                "required event time is missing",
            )
        moment = parse_time_ms(value)
        if isinstance(moment, ReasonCode):
            return _reject(moment, self._event_time.where(doc), _TIME_MESSAGES[moment])
        now_ms = int(self._now() * 1000)
        if moment < now_ms - self._max_age_ms:
            return _reject(
                ReasonCode.TIME_TOO_OLD,
                self._event_time.where(doc),
                "event is older than max_age_s",
            )
        if moment > now_ms + self._max_future_ms:
            return _reject(
                ReasonCode.TIME_IN_FUTURE,
                self._event_time.where(doc),
                "event is after now + max_future_s",
            )

        value = self._event_type.get(doc)
        if value is MISSING:
            event_type = "purchase"
        elif type(value) is str:
            event_type = EVENT_TYPE_ALIASES.get(value, value)
        else:
            return _reject(
                ReasonCode.SCHEMA_VIOLATION,
                self._event_type.where(doc),
                "event type must be a string",
            )

        # --- route
        table = self._default_table
        if self._tables:
            value = self._routing_key.get(doc)
            if value is not MISSING:
                key = _as_id(value)
                if key is None:
                    return _reject(
                        ReasonCode.SCHEMA_VIOLATION,
                        self._routing_key.where(doc),
                        "routing key must be a string or integer",
                    )
                table = self._tables.get(key, table)
            if table is None:
                return _reject(
                    ReasonCode.NO_ROUTE,
                    self._routing_key.where(doc),
                    "routing key matches no route and no default route is set",
                )
        elif table is None:
            return _reject(ReasonCode.NO_ROUTE, None, "no route is configured")
        route = table.get(event_type)
        if route is None:
            return _reject(
                ReasonCode.NO_ROUTE,
                self._event_type.where(doc),
                "no event tag is configured for this event type",
            )

        # --- identifiers
        identifiers: list[dict[str, str]] = []
        dropped: list[str] = []
        twclid: str | None = None
        value = self._twclid.get(doc)
        if value is not MISSING:
            if type(value) is not str:
                return _reject(
                    ReasonCode.SCHEMA_VIOLATION, self._twclid.where(doc), "twclid must be a string"
                )
            twclid = value.strip() or None
        if twclid is None and self._twclid_url:
            value = self._twclid_url.get(doc)
            if type(value) is str and "twclid=" in value:
                twclid = _twclid_from_url(value)
        if twclid is not None:
            identifiers.append({"twclid": twclid})

        value = self._email.get(doc)
        if value is not MISSING:
            texts = [value] if type(value) is str else _strings(value)
            if texts is None:
                return _reject(
                    ReasonCode.SCHEMA_VIOLATION,
                    self._email.where(doc),
                    "email must be a string or a list of strings",
                )
            for text in texts:
                hashed = hash_email(text)
                if hashed is None:
                    self.dropped_emails += 1
                    dropped.append("email")
                elif len(texts) == 1 or {"hashed_email": hashed} not in identifiers:
                    identifiers.append({"hashed_email": hashed})

        value = self._phone.get(doc)
        if value is not MISSING:
            texts = [value] if type(value) is str else _strings(value)
            if texts is None:
                return _reject(
                    ReasonCode.SCHEMA_VIOLATION,
                    self._phone.where(doc),
                    "phone must be a string or a list of strings",
                )
            for text in texts:
                hashed = hash_phone(text, self._region)
                if hashed is None:
                    self.dropped_phones += 1
                    dropped.append("phone")
                elif len(texts) == 1 or {"hashed_phone_number": hashed} not in identifiers:
                    identifiers.append({"hashed_phone_number": hashed})

        strong = bool(identifiers)
        device: dict[str, str] = {}
        value = self._ip.get(doc)
        if value is not MISSING:
            if type(value) is not str:
                return _reject(
                    ReasonCode.SCHEMA_VIOLATION, self._ip.where(doc), "ip must be a string"
                )
            address = normalize_ip(value, self._send_ipv6)
            if address is None:
                self.dropped_ips += 1
                dropped.append("ip")
            else:
                device["ip_address"] = address
        value = self._user_agent.get(doc)
        if value is not MISSING:
            if type(value) is not str:
                return _reject(
                    ReasonCode.SCHEMA_VIOLATION,
                    self._user_agent.where(doc),
                    "user agent must be a string",
                )
            agent = value.strip()
            if agent and len(agent) <= MAX_USER_AGENT_LENGTH:
                device["user_agent"] = agent
            else:
                self.dropped_user_agents += 1
                dropped.append("user_agent")
        if not strong and not (len(device) == 2 and self._ip_ua_ok):
            detail = f" ({', '.join(dropped)} dropped as unusable)" if dropped else ""
            return _reject(
                ReasonCode.NO_IDENTIFIER, None, "no usable twclid, email or phone" + detail
            )
        if device:
            identifiers.append(device)

        # --- currency
        value = self._currency.get(doc)
        if value is MISSING:
            currency = self._currency_default
        elif type(value) is str:
            currency = value.strip().upper()
            if currency not in ISO_4217:
                return _reject(
                    ReasonCode.UNKNOWN_CURRENCY,
                    self._currency.where(doc),
                    "currency is not an active ISO 4217 code",
                )
        else:
            return _reject(
                ReasonCode.SCHEMA_VIOLATION, self._currency.where(doc), "currency must be a string"
            )

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
                priced = [] if items else None
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

        # --- value
        amount: tuple[float, str] | None = None
        value = self._value.get(doc)
        if value is not MISSING:
            amount = parse_amount(value)
            if amount is None:
                return _reject(
                    ReasonCode.INVALID_VALUE,
                    self._value.where(doc),
                    "value must be a non-negative decimal number",
                )
        elif priced:
            amount = sum_amounts(priced)

        # --- number of items
        number_items: int | None = None
        value = self._number_items.get(doc)
        if value is not MISSING:
            number_items = parse_count(value)
            if number_items is None:
                return _reject(
                    ReasonCode.INVALID_NUMBER_ITEMS,
                    self._number_items.where(doc),
                    "number_items must be a positive integer",
                )
        elif quantities > 0:
            number_items = quantities

        # --- conversion id
        conversion_id: str | None = None
        if self._use_event_cid:
            value = self._conversion_id.get(doc)
            if value is not MISSING:
                conversion_id = _as_id(value)
                if conversion_id is None:
                    return _reject(
                        ReasonCode.INVALID_CONVERSION_ID,
                        self._conversion_id.where(doc),
                        f"conversion id must be a string of 1 to {MAX_ID_LENGTH} characters",
                    )
        if conversion_id is None:
            if self._template == "{order_id}":
                conversion_id = order_id
            else:
                conversion_id = (
                    self._template.replace("{order_id}", order_id)
                    .replace("{event_type}", event_type)
                    .replace("{routing_key}", _as_id(self._routing_key.get(doc)) or "")
                )
                if len(conversion_id) > MAX_ID_LENGTH:
                    return _reject(
                        ReasonCode.INVALID_CONVERSION_ID,
                        None,
                        f"templated conversion id is longer than {MAX_ID_LENGTH} characters",
                    )

        # --- description
        description = self.settings.description
        value = self._description.get(doc)
        if value is not MISSING:
            if type(value) is not str:
                return _reject(
                    ReasonCode.SCHEMA_VIOLATION,
                    self._description.where(doc),
                    "description must be a string",
                )
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

    def _item_reject(
        self, reason: ReasonCode, index: int, field: _Field | None, element: Any, message: str
    ) -> Rejection:
        suffix = "" if field is None else f".{field.where(element)}"
        return _reject(reason, f"{self._items_text}[{index}]{suffix}", message)

    def _content(
        self, element: Any, index: int
    ) -> tuple[dict[str, Any], str | None, int] | Rejection:
        """One line item -> (contents object, price text or None, quantity)."""
        if type(element) is not dict:
            return self._item_reject(
                ReasonCode.SCHEMA_VIOLATION, index, None, element, "item must be an object"
            )
        content: dict[str, Any] = {}
        key = self._item_id.key
        value = element.get(key) if key is not None else self._item_id.get(element)
        if value is not MISSING and value is not None and value != "":
            text = _as_id(value)
            if text is None:
                return self._item_reject(
                    ReasonCode.SCHEMA_VIOLATION,
                    index,
                    self._item_id,
                    element,
                    "item id must be a non-empty string or integer",
                )
            content["content_id"] = text
        key = self._item_group.key
        value = element.get(key) if key is not None else self._item_group.get(element)
        if value is not MISSING and value is not None and value != "":
            text = _as_id(value)
            if text is None:
                return self._item_reject(
                    ReasonCode.SCHEMA_VIOLATION,
                    index,
                    self._item_group,
                    element,
                    "item group id must be a non-empty string or integer",
                )
            content["content_group_id"] = text
        key = self._item_name.key
        value = element.get(key) if key is not None else self._item_name.get(element)
        if value is not MISSING and value is not None and value != "":
            if type(value) is not str:
                return self._item_reject(
                    ReasonCode.SCHEMA_VIOLATION,
                    index,
                    self._item_name,
                    element,
                    "item name must be a string",
                )
            content["content_name"] = value
        price_text: str | None = None
        key = self._item_price.key
        value = element.get(key) if key is not None else self._item_price.get(element)
        if value is not MISSING and value is not None and value != "":
            amount = parse_amount(value)
            if amount is None:
                return self._item_reject(
                    ReasonCode.INVALID_VALUE,
                    index,
                    self._item_price,
                    element,
                    "item price must be a non-negative decimal number",
                )
            content["content_price"] = amount[0]
            price_text = amount[1]
        key = self._item_category.key
        value = element.get(key) if key is not None else self._item_category.get(element)
        if value is not MISSING and value is not None and value != "":
            if type(value) is not str:
                return self._item_reject(
                    ReasonCode.SCHEMA_VIOLATION,
                    index,
                    self._item_category,
                    element,
                    "item category must be a string",
                )
            content["content_type"] = value
        quantity = 1
        key = self._item_quantity.key
        value = element.get(key) if key is not None else self._item_quantity.get(element)
        if value is not MISSING and value is not None and value != "":
            count = parse_count(value)
            if count is None:
                return self._item_reject(
                    ReasonCode.INVALID_NUMBER_ITEMS,
                    index,
                    self._item_quantity,
                    element,
                    "item quantity must be a positive integer",
                )
            content["num_items"] = quantity = count
        return content, price_text, quantity
