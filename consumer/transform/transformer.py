"""Producer purchase event (bytes) -> one X conversion, or a rejection with a stable reason.

Pure: no I/O, the clock is injected. ``transform`` never raises, whatever the input.

Hot-path notes (bench/transform_bench.py): every field source is compiled once into a
reader closure (``_Field``); line items read their keys straight from the element dict;
amounts go through ``float`` only (``Decimal`` just for the rare sum of item prices),
decimal text with one inline ``fullmatch``; the output dict is built in its final shape for
a single ``orjson.dumps`` and the ``Conversion`` through its slots. A change here is
checked byte for byte against the previous tree with ``bench/transform_diff.py`` (every
preset and settings variant).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import unquote

import orjson

from consumer.iso4217 import ISO_4217
from consumer.observability.redact import contains_contact, is_contact_id
from consumer.transform.config import (
    Preset,
    RouteSettings,
    RoutingSettings,
    Source,
    TransformSettings,
)
from consumer.transform.debezium import unwrap_change
from consumer.transform.detect import AUTO_PRESETS, detect_format
from consumer.transform.native import attach
from consumer.transform.normalize import (
    MAX_AMOUNT,
    amount_number,
    format_time_ms,
    hash_email,
    hash_phone,
    match_decimal,
    normalize_ip,
    parse_amount,
    parse_count,
    parse_time_ms,
    sum_amounts,
)
from consumer.transform.paths import MISSING, Path, compile_path, compile_reader, lookup
from consumer.transform.presets import EVENT_TYPE_ALIASES, effective_mapping
from consumer.transform.types import (
    Conversion,
    Dropped,
    DropReason,
    ReasonCode,
    Rejection,
    Result,
    Route,
    Skip,
    SkipReason,
)

# One alternative of a field source: (path text, compiled path or None, constant).
_Alt = tuple[str, Path | None, Any]
_Alts = tuple[_Alt, ...]
_Getter = Callable[[Any], Any]

MAX_ID_LENGTH: Final = 256
MAX_USER_AGENT_LENGTH: Final = 2048
MAX_IDENTIFIER_VALUES: Final = 10
MAX_ITEMS: Final = 1000
_MAX_COUNT: Final = 1_000_000_000  # parse_count's bound

_TIME_MESSAGES: Final = {
    ReasonCode.INVALID_TIME: "not an ISO 8601 time or epoch seconds/milliseconds/microseconds",
    ReasonCode.NAIVE_TIME: "time has no UTC offset",
}

_loads = orjson.loads
_dumps = orjson.dumps


class _Field:
    """A compiled field source: ``get(doc)`` is the hot-path read (MISSING for absent,
    null or ""), ``where(doc)`` the path text reported in a rejection (computed only then).
    ``key`` is the single top-level key when that is the whole source: hot loops read it
    with ``dict.get`` instead of calling ``get``."""

    __slots__ = ("alts", "get", "key")

    def __init__(self, source: Source | None) -> None:
        texts = [] if source is None else [source] if isinstance(source, str) else source
        self.alts: _Alts = tuple(
            (text, None, text[1:]) if text.startswith("=") else (text, compile_path(text), None)
            for text in texts
        )
        paths = [path for _, path, _ in self.alts]
        self.key: str | None = None
        if len(paths) == 1 and paths[0] is not None and len(paths[0]) == 1:
            step = paths[0][0]
            self.key = step if type(step) is str else None
        self.get: _Getter = _compile_getter(self.alts)

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


def _compile_getter(alts: _Alts) -> _Getter:
    """The cheapest reader for the shape of the source, chosen once."""
    if not alts:
        return _absent
    if len(alts) == 1:
        return _alt_getter(alts[0][1], alts[0][2])
    pairs = [path for _, path, _ in alts if path is not None and len(path) == 2]
    if len(pairs) == len(alts) and all(type(a) is str and type(b) is str for a, b in pairs):
        parents = {str(parent) for parent, _ in pairs}
        if len(parents) == 1:
            # e.g. user.email, user.hashed_email: read the parent once
            return _siblings(parents.pop(), tuple(str(key) for _, key in pairs))
    if all(path is not None and 1 <= len(path) <= 3 for _, path, _ in alts) and all(
        type(step) is str for _, path, _ in alts for step in path or ()
    ):
        # e.g. Segment's context.traits.email, traits.email, properties.email: one
        # loop, no inner calls
        return _first_key_of(tuple(_three_steps(path) for _, path, _ in alts if path))
    return _first_of(tuple(_alt_getter(path, const) for _, path, const in alts))


def _three_steps(path: Path) -> tuple[str, str | None, str | None]:
    keys = [str(step) for step in path]
    return keys[0], keys[1] if len(keys) > 1 else None, keys[2] if len(keys) > 2 else None


def _first_key_of(steps: tuple[tuple[str, str | None, str | None], ...]) -> _Getter:
    """The first present value among paths of one to three keys, each step given as
    (outer, middle or None, inner or None)."""

    def first_key(doc: Any) -> Any:
        if type(doc) is not dict:
            return MISSING
        for outer, middle, inner in steps:
            value = doc.get(outer)
            if middle is not None:
                if type(value) is not dict:
                    continue
                value = value.get(middle)
                if inner is not None:
                    if type(value) is not dict:
                        continue
                    value = value.get(inner)
            if value is not None and value != "":
                return value
        return MISSING

    return first_key


def _first_of(getters: tuple[_Getter, ...]) -> _Getter:
    def first(doc: Any) -> Any:
        for getter in getters:
            value = getter(doc)
            if value is not MISSING:
                return value
        return MISSING

    return first


def _siblings(parent: str, keys: tuple[str, ...]) -> _Getter:
    def first_key(doc: Any) -> Any:
        node = doc.get(parent) if type(doc) is dict else None
        if type(node) is not dict:
            return MISSING
        for key in keys:
            value = node.get(key)
            if value is not None and value != "":
                return value
        return MISSING

    return first_key


def _alt_getter(path: Path | None, const: Any) -> _Getter:
    """Specialised readers for the common shapes (one to three keys); null and "" read as
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
    if len(path) == 3 and all(type(step) is str for step in path):
        first, second, third = str(path[0]), str(path[1]), str(path[2])

        def three(doc: Any) -> Any:
            node = doc.get(first) if type(doc) is dict else None
            node = node.get(second) if type(node) is dict else None
            if type(node) is not dict:
                return MISSING
            value = node.get(third)
            return MISSING if value is None or value == "" else value

        return three
    read = compile_reader(path)

    def deep(doc: Any) -> Any:
        value = read(doc)
        return MISSING if value is None or value == "" else value

    return deep


# Conversion is a frozen dataclass: its generated __init__ sets each slot through
# object.__setattr__ (~0.4 µs a conversion). The slots' own descriptors do the same.
_new_object = object.__new__
_CONVERSION_SLOTS: Final = vars(Conversion)
_set_route = _CONVERSION_SLOTS["route"].__set__
_set_conversion_id = _CONVERSION_SLOTS["conversion_id"].__set__
_set_payload = _CONVERSION_SLOTS["payload"].__set__
_set_dropped = _CONVERSION_SLOTS["dropped"].__set__
assert Conversion.__slots__ == ("route", "conversion_id", "payload", "dropped")


def _conversion(route: Route, conversion_id: str, payload: bytes, dropped: Dropped) -> Conversion:
    """``Conversion(route, conversion_id, payload, dropped)``, built without its __init__."""
    conversion: Conversion = _new_object(Conversion)
    _set_route(conversion, route)
    _set_conversion_id(conversion, conversion_id)
    _set_payload(conversion, payload)
    _set_dropped(conversion, dropped)
    return conversion


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


class _Counts:
    """Drop and skip counters; one instance shared by an ``auto`` transformer's parts."""

    __slots__ = ("emails", "fields", "ips", "phones", "skipped", "user_agents")

    def __init__(self) -> None:
        self.emails = self.phones = self.ips = self.user_agents = 0
        # (field, DropReason) -> optional fields left out of emitted conversions
        self.fields: dict[tuple[str, str], int] = {}
        # SkipReason -> messages skipped (Debezium deletes, tombstones, ...)
        self.skipped: dict[str, int] = {}


# Free text known to hold no contact data, per transformer run (user agents and product
# names repeat; a scan of a user agent costs ~5 µs). Only clean texts are kept.
_MAX_CLEAN_CACHE: Final = 4096
_MAX_CACHED_TEXT: Final = 512
# is_contact_id's own first test, inlined on the hot path: an id with '@' or made only
# of these characters is looked at closer.
_PHONE_CHARS: Final = "0123456789 +-()."


def _hash_id(text: str, region: str) -> str:
    """The SHA-256 form of an id that holds contact data: an e-mail or phone number by
    the identifiers' own rules (so it matches across redeliveries and sources), other
    text hashed as is."""
    if "@" in text:
        hashed = hash_email(text)
        if hashed is not None:
            return hashed
    hashed = hash_phone(text, region) if "@" not in text else None
    return hashed if hashed is not None else _sha256_text(text)


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Transformer:
    """Turns producer events into X conversions; one instance per settings.

    Counters (for metrics) count identifiers dropped because they were unusable:
    ``dropped_emails``, ``dropped_phones``, ``dropped_ips``, ``dropped_user_agents``;
    ``dropped_fields`` counts every optional field left out, by (field, reason), and
    ``skipped`` the messages answered with a ``Skip``, by reason.

    With ``preset = "auto"`` every event's shape is detected (``detect.detect_format``)
    and handed to a transformer of that preset; the parts share settings, routing and
    counters.
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
        self._counts = _Counts()
        self._clean: dict[str, bool] = {}
        self._by_format: dict[Preset, Transformer] = {}
        self._entry: Callable[[dict[str, Any]], Result] = self._convert
        self._tombstone: Skip | None = None
        # The native fast path (``transform.engine``), installed as this instance's
        # ``transform``; None when the reference runs alone (consumer/transform/native.py).
        self.native: Any | None = None
        if settings.preset is Preset.AUTO:
            for preset in AUTO_PRESETS:
                part = Transformer(
                    settings.model_copy(update={"preset": preset, "engine": "python"}),
                    routing,
                    now,
                )
                part._counts = self._counts
                part._clean = self._clean
                self._by_format[preset] = part
            self._entry = self._convert_detected
            self._tombstone = Skip(SkipReason.TOMBSTONE.value)
            self.native = attach(self)
            return
        if settings.preset is Preset.DEBEZIUM:
            self._entry = self._convert_change
            self._tombstone = Skip(SkipReason.TOMBSTONE.value)
            self._debezium = settings.debezium
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
        self._items_read = compile_reader(self._items_path)
        step = self._items_path[0] if len(self._items_path) == 1 else None
        self._items_key: str | None = step if type(step) is str else None
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
        self._description_default = settings.description
        self._template = settings.conversion_id_template
        self._string_values = settings.value_format == "string"
        self._send_ipv6 = settings.send_ipv6
        self._ip_ua_ok = settings.allow_ip_and_user_agent_only
        self._use_event_cid = settings.use_event_conversion_id
        self._tables = {key: self._route_table(r) for key, r in routing.routes.items()}
        self._default_table = (
            self._route_table(routing.default) if routing.default is not None else None
        )

        self._strict = settings.strict
        self._pii = settings.pii_scan
        self.native = attach(self)

    @property
    def dropped_emails(self) -> int:
        return self._counts.emails

    @property
    def dropped_phones(self) -> int:
        return self._counts.phones

    @property
    def dropped_ips(self) -> int:
        return self._counts.ips

    @property
    def dropped_user_agents(self) -> int:
        return self._counts.user_agents

    @property
    def dropped_fields(self) -> Mapping[tuple[str, str], int]:
        """(field, reason) -> optional fields left out of emitted conversions (running
        totals: the engine publishes the increase as ``fields_dropped_total``)."""
        return self._counts.fields

    @property
    def skipped(self) -> Mapping[str, int]:
        """reason -> messages answered with ``Skip`` (running totals)."""
        return self._counts.skipped

    def _route_table(self, route: RouteSettings) -> dict[str, Route]:
        table = {"purchase": Route(route.account_id, route.pixel_id, route.event_id)}
        for event_type, event_id in {**self.routing.event_ids, **route.event_ids}.items():
            table[event_type] = Route(route.account_id, route.pixel_id, event_id)
        return table

    def transform(self, raw: bytes) -> Result:
        """Never raises: any input yields a Conversion, a Rejection or (Debezium) a Skip."""
        if not raw and self._tombstone is not None:
            return self._skip(self._tombstone)
        try:
            doc = _loads(raw)
        except (ValueError, TypeError):
            return _reject(ReasonCode.INVALID_JSON, None, "message is not valid UTF-8 JSON")
        if type(doc) is not dict:
            return _reject(ReasonCode.SCHEMA_VIOLATION, None, "event must be a JSON object")
        try:
            return self._entry(doc)
        except Exception:
            return _reject(ReasonCode.INTERNAL_ERROR, None, "unexpected error in transform")

    def _skip(self, skip: Skip) -> Skip:
        skipped = self._counts.skipped
        skipped[skip.reason] = skipped.get(skip.reason, 0) + 1
        return skip

    def _convert_detected(self, doc: dict[str, Any]) -> Result:
        """``auto``: the preset whose shape the event has converts it."""
        found = detect_format(doc)
        if type(found) is Preset:
            return self._by_format[found]._entry(doc)
        return _reject(ReasonCode.UNKNOWN_FORMAT, None, str(found))

    def _convert_change(self, doc: dict[str, Any]) -> Result:
        """``debezium``: unwrap the change event, skip what is not a new order."""
        change = unwrap_change(doc, self._debezium)
        if type(change) is dict:
            return self._convert(change)
        if type(change) is Skip:
            return self._skip(change)
        return change  # type: ignore[return-value]

    def _is_clean(self, text: str) -> bool:
        """No e-mail address or phone number in ``text`` (cached for repeated texts; the
        callers check the cache first)."""
        if contains_contact(text):
            return False
        if len(text) <= _MAX_CACHED_TEXT:
            if len(self._clean) >= _MAX_CLEAN_CACHE:
                self._clean.clear()
            self._clean[text] = True
        return True

    def _convert(self, doc: dict[str, Any]) -> Conversion | Rejection:
        drops: list[tuple[str, str]] = []
        strict = self._strict
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
        identifiers = self._identifiers(doc, drops)
        if type(identifiers) is Rejection:
            return identifiers

        # --- currency: an unusable one leaves value (and item prices) out with it
        currency: str | None
        value = self._currency.get(doc)
        if value is MISSING:
            currency = self._currency_default
        elif type(value) is str:
            currency = value if value in ISO_4217 else value.strip().upper()
            if currency not in ISO_4217:
                if strict:
                    return _reject(
                        ReasonCode.UNKNOWN_CURRENCY,
                        self._currency.where(doc),
                        "currency is not an active ISO 4217 code",
                    )
                currency = None
                drops.append(("currency", DropReason.UNKNOWN_CURRENCY))
        elif strict:
            return _reject(
                ReasonCode.SCHEMA_VIOLATION, self._currency.where(doc), "currency must be a string"
            )
        else:
            currency = None
            drops.append(("currency", DropReason.INVALID_TYPE))

        # --- line items
        items: Any = None
        contents: list[dict[str, Any]] = []
        quantities = 0
        if self._items_text is not None:
            key = self._items_key
            items = doc.get(key, MISSING) if key is not None else self._items_read(doc)
            if items is not MISSING and items is not None:
                if type(items) is not list or len(items) > MAX_ITEMS:
                    if strict:
                        return _reject(
                            ReasonCode.SCHEMA_VIOLATION,
                            self._items_text,
                            f"items must be a list of at most {MAX_ITEMS} objects",
                        )
                    drops.append(
                        (
                            "items",
                            DropReason.INVALID_TYPE
                            if type(items) is not list
                            else DropReason.TOO_MANY,
                        )
                    )
                    items = None
                else:
                    read = self._contents(items, contents, drops)
                    if type(read) is Rejection:
                        return read
                    quantities = read  # type: ignore[assignment]

        # --- value: the event's, else the exact sum of the items (when all are priced)
        amount: float | str | None = None
        value = self._value.get(doc)
        if value is not MISSING:
            if self._string_values:
                parsed = parse_amount(value)
                amount = None if parsed is None else parsed[1]
            elif type(value) is str and match_decimal(value) is not None:
                amount = float(value)  # amount_number's common case, without the call
            else:
                amount = amount_number(value)
            if amount is None:
                if strict:
                    return _reject(
                        ReasonCode.INVALID_VALUE,
                        self._value.where(doc),
                        "value must be a non-negative decimal number",
                    )
                drops.append(("value", DropReason.INVALID_VALUE))
        elif type(items) is list and items and quantities >= 0:
            total = self._items_total(items)
            if total is not None:
                amount = total[1] if self._string_values else total[0]
        if currency is None:
            if amount is not None:
                drops.append(("value", DropReason.UNKNOWN_CURRENCY))
                amount = None
            for content in contents:
                if content.pop("content_price", None) is not None:
                    drops.append(("item.price", DropReason.UNKNOWN_CURRENCY))

        # --- number of items
        number_items: int | None = None
        value = self._number_items.get(doc)
        if value is not MISSING:
            number_items = parse_count(value)
            if number_items is None:
                if strict:
                    return _reject(
                        ReasonCode.INVALID_NUMBER_ITEMS,
                        self._number_items.where(doc),
                        "number_items must be a positive integer",
                    )
                drops.append(("number_items", DropReason.INVALID_VALUE))
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
        if (
            self._pii
            and not conversion_id.isdigit()  # integer order ids (Shopify's) are no phone
            and ("@" in conversion_id or not conversion_id.strip(_PHONE_CHARS))
            and is_contact_id(conversion_id)
        ):
            conversion_id = _hash_id(conversion_id, self._region)

        # --- description
        description = self._description_default
        value = self._description.get(doc)
        if value is not MISSING:
            if type(value) is not str:
                if strict:
                    return _reject(
                        ReasonCode.SCHEMA_VIOLATION,
                        self._description.where(doc),
                        "description must be a string",
                    )
                drops.append(("description", DropReason.INVALID_TYPE))
            elif self._pii and value not in self._clean and not self._is_clean(value):
                drops.append(("description", DropReason.PII))
            else:
                description = value

        conversion: dict[str, Any] = {
            "conversion_time": format_time_ms(moment),
            "event_id": route.event_id,
            "identifiers": identifiers,
        }
        if amount is not None:
            conversion["value"] = amount
        if currency is not None:
            conversion["price_currency"] = currency
        if number_items is not None:
            conversion["number_items"] = number_items
        conversion["conversion_id"] = conversion_id
        if description:
            conversion["description"] = description
        if contents:
            conversion["contents"] = contents
        if not drops:
            return _conversion(route, conversion_id, _dumps(conversion), ())
        dropped = tuple((name, str(reason)) for name, reason in drops)  # plain text labels
        fields = self._counts.fields
        for drop in dropped:
            fields[drop] = fields.get(drop, 0) + 1
        return _conversion(route, conversion_id, _dumps(conversion), dropped)

    def _identifiers(
        self, doc: dict[str, Any], drops: list[tuple[str, str]]
    ) -> list[dict[str, str]] | Rejection:
        """twclid, hashed e-mails and phones, then ip + user agent in one object."""
        identifiers: list[dict[str, str]] = []
        dropped: list[str] = []
        counts = self._counts
        strict = self._strict
        twclid: str | None = None
        value = self._twclid.get(doc)
        if value is not MISSING:
            if type(value) is str:
                twclid = value.strip() or None
            elif strict:
                return _reject(
                    ReasonCode.SCHEMA_VIOLATION, self._twclid.where(doc), "twclid must be a string"
                )
            else:
                drops.append(("twclid", DropReason.INVALID_TYPE))
                dropped.append("twclid")
        if twclid is None and self._twclid_url:
            value = self._twclid_url.get(doc)
            if type(value) is str and "twclid=" in value:
                twclid = _twclid_from_url(value)
        if twclid is not None:
            if (
                self._pii
                and ("@" in twclid or not twclid.strip(_PHONE_CHARS))
                and is_contact_id(twclid)
            ):
                drops.append(("twclid", DropReason.PII))
                dropped.append("twclid")
            else:
                identifiers.append({"twclid": twclid})

        value = self._email.get(doc)
        if type(value) is str:  # the common case: one address
            hashed = hash_email(value)
            if hashed is None:
                counts.emails += 1
                dropped.append("email")
                drops.append(("email", DropReason.UNUSABLE))
            else:
                identifiers.append({"hashed_email": hashed})
        elif value is not MISSING:
            texts = _strings(value)
            if texts is None:
                if strict:
                    return _reject(
                        ReasonCode.SCHEMA_VIOLATION,
                        self._email.where(doc),
                        "email must be a string or a list of strings",
                    )
                texts = []
                counts.emails += 1
                dropped.append("email")
                drops.append(("email", DropReason.INVALID_TYPE))
            for text in texts:
                hashed = hash_email(text)
                if hashed is None:
                    counts.emails += 1
                    dropped.append("email")
                    drops.append(("email", DropReason.UNUSABLE))
                elif len(texts) == 1 or {"hashed_email": hashed} not in identifiers:
                    identifiers.append({"hashed_email": hashed})

        value = self._phone.get(doc)
        if type(value) is str:
            hashed = hash_phone(value, self._region)
            if hashed is None:
                counts.phones += 1
                dropped.append("phone")
                drops.append(("phone", DropReason.UNUSABLE))
            else:
                identifiers.append({"hashed_phone_number": hashed})
        elif value is not MISSING:
            texts = _strings(value)
            if texts is None:
                if strict:
                    return _reject(
                        ReasonCode.SCHEMA_VIOLATION,
                        self._phone.where(doc),
                        "phone must be a string or a list of strings",
                    )
                texts = []
                counts.phones += 1
                dropped.append("phone")
                drops.append(("phone", DropReason.INVALID_TYPE))
            for text in texts:
                hashed = hash_phone(text, self._region)
                if hashed is None:
                    counts.phones += 1
                    dropped.append("phone")
                    drops.append(("phone", DropReason.UNUSABLE))
                elif len(texts) == 1 or {"hashed_phone_number": hashed} not in identifiers:
                    identifiers.append({"hashed_phone_number": hashed})

        strong = bool(identifiers)
        device: dict[str, str] = {}
        value = self._ip.get(doc)
        if value is not MISSING:
            if type(value) is str:
                address = normalize_ip(value, self._send_ipv6)
                if address is None:
                    counts.ips += 1
                    dropped.append("ip")
                    drops.append(("ip", DropReason.UNUSABLE))
                else:
                    device["ip_address"] = address
            elif strict:
                return _reject(
                    ReasonCode.SCHEMA_VIOLATION, self._ip.where(doc), "ip must be a string"
                )
            else:
                counts.ips += 1
                dropped.append("ip")
                drops.append(("ip", DropReason.INVALID_TYPE))
        value = self._user_agent.get(doc)
        if value is not MISSING:
            if type(value) is str:
                agent = value.strip()
                if not agent or len(agent) > MAX_USER_AGENT_LENGTH:
                    counts.user_agents += 1
                    dropped.append("user_agent")
                    drops.append(("user_agent", DropReason.UNUSABLE))
                elif self._pii and agent not in self._clean and not self._is_clean(agent):
                    dropped.append("user_agent")
                    drops.append(("user_agent", DropReason.PII))
                else:
                    device["user_agent"] = agent
            elif strict:
                return _reject(
                    ReasonCode.SCHEMA_VIOLATION,
                    self._user_agent.where(doc),
                    "user agent must be a string",
                )
            else:
                counts.user_agents += 1
                dropped.append("user_agent")
                drops.append(("user_agent", DropReason.INVALID_TYPE))
        if not strong and not (len(device) == 2 and self._ip_ua_ok):
            detail = f" ({', '.join(dropped)} dropped as unusable)" if dropped else ""
            return _reject(
                ReasonCode.NO_IDENTIFIER, None, "no usable twclid, email or phone" + detail
            )
        if device:
            identifiers.append(device)
        return identifiers

    def _item_reject(
        self, reason: ReasonCode, index: int, field: _Field | None, element: Any, message: str
    ) -> Rejection:
        suffix = "" if field is None else f".{field.where(element)}"
        return _reject(reason, f"{self._items_text}[{index}]{suffix}", message)

    def _contents(
        self, items: list[Any], contents: list[dict[str, Any]], drops: list[tuple[str, str]]
    ) -> int | Rejection:
        """Appends one contents object per line item; the sum of quantities (an item
        without one counts 1), -1 when an item or a quantity was left out (the sum would
        be wrong), or (strict) the first bad item's rejection.

        A field whose source is one key is read with ``element.get(key)``, else with its
        getter; null and "" count as absent either way. An invalid field is left out of
        its content (counted in ``drops``) unless ``strict``.
        """
        id_key, id_get = self._item_id.key, self._item_id.get
        group_key, group_get = self._item_group.key, self._item_group.get
        name_key, name_get = self._item_name.key, self._item_name.get
        price_key, price_get = self._item_price.key, self._item_price.get
        category_key, category_get = self._item_category.key, self._item_category.get
        quantity_key, quantity_get = self._item_quantity.key, self._item_quantity.get
        strict, pii, clean = self._strict, self._pii, self._clean
        quantities = 0
        exact = True
        for index, element in enumerate(items):
            if type(element) is not dict:
                if strict:
                    return self._item_reject(
                        ReasonCode.SCHEMA_VIOLATION, index, None, element, "item must be an object"
                    )
                drops.append(("items", DropReason.INVALID_TYPE))
                exact = False
                continue
            get = element.get
            content: dict[str, Any] = {}

            # Each field: the common type first; "" and null (and MISSING) are absent.
            value = get(id_key) if id_key else id_get(element)
            if type(value) is str and value:
                text = value.strip()
                if not 0 < len(text) <= MAX_ID_LENGTH:
                    if strict:
                        return self._item_reject(
                            ReasonCode.SCHEMA_VIOLATION,
                            index,
                            self._item_id,
                            element,
                            "item id must be a non-empty string or integer",
                        )
                    drops.append(("item.id", DropReason.INVALID_VALUE))
                else:
                    if (
                        pii
                        and ("@" in text or not text.strip(_PHONE_CHARS))
                        and is_contact_id(text)
                    ):
                        text = _hash_id(text, self._region)
                    content["content_id"] = text
            elif type(value) is int:
                content["content_id"] = str(value)
            elif value is not None and value is not MISSING and value != "":
                if strict:
                    return self._item_reject(
                        ReasonCode.SCHEMA_VIOLATION,
                        index,
                        self._item_id,
                        element,
                        "item id must be a non-empty string or integer",
                    )
                drops.append(("item.id", DropReason.INVALID_TYPE))

            # X types content_group_id as an integer: only integer-like values are sent.
            value = get(group_key) if group_key else group_get(element)
            if type(value) is str and value:
                if value.isascii() and value.isdigit() and len(value) <= MAX_ID_LENGTH:
                    content["content_group_id"] = value  # the common case: no strip
                elif (
                    (text := value.strip()).isdigit()
                    and text.isascii()
                    and len(text) <= MAX_ID_LENGTH
                ):
                    content["content_group_id"] = text
                elif strict:
                    return self._item_reject(
                        ReasonCode.SCHEMA_VIOLATION,
                        index,
                        self._item_group,
                        element,
                        "item group id must be a non-negative integer or digit text",
                    )
                else:
                    drops.append(("item.group_id", DropReason.NOT_INTEGER))
            elif type(value) is int and value >= 0:
                content["content_group_id"] = str(value)
            elif value is not None and value is not MISSING and value != "":
                if strict:
                    return self._item_reject(
                        ReasonCode.SCHEMA_VIOLATION,
                        index,
                        self._item_group,
                        element,
                        "item group id must be a non-negative integer or digit text",
                    )
                drops.append(("item.group_id", DropReason.NOT_INTEGER))

            value = get(name_key) if name_key else name_get(element)
            if type(value) is str:
                if value:
                    if pii and value not in clean and not self._is_clean(value):
                        drops.append(("item.name", DropReason.PII))
                    else:
                        content["content_name"] = value
            elif value is not None and value is not MISSING:
                if strict:
                    return self._item_reject(
                        ReasonCode.SCHEMA_VIOLATION,
                        index,
                        self._item_name,
                        element,
                        "item name must be a string",
                    )
                drops.append(("item.name", DropReason.INVALID_TYPE))

            value = get(price_key) if price_key else price_get(element)
            if type(value) is str and match_decimal(value) is not None:
                content["content_price"] = float(value)  # amount_number's common cases
            elif type(value) is float and 0.0 <= value < MAX_AMOUNT:
                content["content_price"] = value
            elif value is not None and value is not MISSING and value != "":
                price = amount_number(value)
                if price is not None:
                    content["content_price"] = price
                elif strict:
                    return self._item_reject(
                        ReasonCode.INVALID_VALUE,
                        index,
                        self._item_price,
                        element,
                        "item price must be a non-negative decimal number",
                    )
                else:
                    drops.append(("item.price", DropReason.INVALID_VALUE))

            value = get(category_key) if category_key else category_get(element)
            if type(value) is str:
                if value:
                    if pii and value not in clean and not self._is_clean(value):
                        drops.append(("item.category", DropReason.PII))
                    else:
                        content["content_type"] = value
            elif value is not None and value is not MISSING:
                if strict:
                    return self._item_reject(
                        ReasonCode.SCHEMA_VIOLATION,
                        index,
                        self._item_category,
                        element,
                        "item category must be a string",
                    )
                drops.append(("item.category", DropReason.INVALID_TYPE))

            value = get(quantity_key) if quantity_key else quantity_get(element)
            if type(value) is int and 0 < value < _MAX_COUNT:
                content["num_items"] = value
                quantities += value
            elif value is not None and value is not MISSING and value != "":
                count = parse_count(value)
                if count is not None:
                    content["num_items"] = count
                    quantities += count
                elif strict:
                    return self._item_reject(
                        ReasonCode.INVALID_NUMBER_ITEMS,
                        index,
                        self._item_quantity,
                        element,
                        "item quantity must be a positive integer",
                    )
                else:
                    drops.append(("item.quantity", DropReason.INVALID_VALUE))
                    exact = False
            else:
                quantities += 1
            if content:
                contents.append(content)
        return quantities if exact else -1

    def _items_total(self, items: list[Any]) -> tuple[float, str] | None:
        """Exact sum of price x quantity when every item has a price (items already
        validated by ``_contents``), else None."""
        parts: list[tuple[str, int]] = []
        for element in items:
            amount = parse_amount(self._item_price.get(element))
            if amount is None:
                return None
            value = self._item_quantity.get(element)
            count = 1 if value is MISSING else parse_count(value)
            if count is None:
                return None
            parts.append((amount[1], count))
        return sum_amounts(parts)
