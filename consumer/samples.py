"""Seeded generator of realistic purchase events for each preset, with known-bad ones.

Used by ``xconv produce-sample``, the demo, the chaos harness and the tests: each
``SampleEvent`` says whether the transform must accept it and, if not, which reason
code it must give. All people are made up; e-mail domains are the reserved example ones
and IPs come from the documentation ranges.
"""

from __future__ import annotations

import base64
import hashlib
import random
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Final

import orjson
import phonenumbers

PRESETS: Final = ("canonical", "segment", "ga4", "shopify")
# Shapes the generator can also write but "mix" leaves out: Debezium change events of an
# orders table (creates and snapshot reads; ``debezium_changes`` adds deletes etc.).
EXTRA_PRESETS: Final = ("debezium",)

# Defects and the reason code the transform must answer with.
DEFECTS: Final[dict[str, str]] = {
    "malformed_json": "invalid_json",
    "missing_identifiers": "no_identifier",
    "bad_time": "invalid_time",
    "naive_time": "naive_time",
    "old_time": "time_too_old",
}

# Defects of optional fields: the event is still sent, without the field; the
# (field, reason) the transform reports, and the reason code under ``strict = true``.
DEGRADING_DEFECTS: Final[dict[str, tuple[tuple[str, str], str]]] = {
    "unknown_currency": (("currency", "unknown_currency"), "unknown_currency"),
    "negative_value": (("value", "invalid_value"), "invalid_value"),
    "zero_quantity": (("item.quantity", "invalid_value"), "invalid_number_items"),
}

_FIRST: Final = [
    "Ava",
    "Liam",
    "Noah",
    "Emma",
    "Olivia",
    "Mateo",
    "Sofia",
    "Lucas",
    "Mia",
    "Hugo",
    "Lea",
    "Yuki",
    "Aarav",
    "Priya",
    "Chen",
    "Fatima",
    "Omar",
    "Ines",
    "Jonas",
    "Freya",
    "Kofi",
    "Amara",
    "Diego",
    "Lucia",
    "Sven",
    "Anika",
    "Ravi",
    "Mei",
    "Tomas",
    "Zoe",
]
_LAST: Final = [
    "Smith",
    "Garcia",
    "Muller",
    "Rossi",
    "Dubois",
    "Silva",
    "Tanaka",
    "Patel",
    "Kim",
    "Nguyen",
    "Johansson",
    "Kowalski",
    "Okafor",
    "Haddad",
    "Novak",
    "Costa",
    "Jensen",
    "Moreau",
    "Schmidt",
    "Fischer",
    "Lopez",
    "Ito",
    "Singh",
    "Brown",
    "Wilson",
]
_DOMAINS: Final = ("example.com", "example.org", "example.net", "mail.example.com")
_PRODUCTS: Final = (
    ("Merino Wool Blanket", "Home"),
    ("Ceramic Pour-Over Set", "Kitchen"),
    ("Trail Running Shoes", "Footwear"),
    ("Organic Dog Treats", "Pet supplies"),
    ("Noise-Cancelling Headphones", "Electronics"),
    ("Linen Shirt", "Apparel"),
    ("Cast Iron Skillet", "Kitchen"),
    ("Yoga Mat", "Sports"),
    ("Hardcover Notebook", "Stationery"),
    ("Scented Candle", "Home"),
)
_CURRENCIES: Final = ("USD", "USD", "USD", "EUR", "GBP", "CAD", "AUD", "JPY", "BRL", "INR")
_PHONE_REGIONS: Final = ("US", "US", "US", "GB", "DE", "FR", "BR", "IN", "JP", "CA")
_USER_AGENTS: Final = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/127.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Mobile Safari/537.36",
)
_IP_PREFIXES: Final = ("192.0.2.", "198.51.100.", "203.0.113.")
_OFFSETS: Final = (0, -5, -8, 1, 2, 5.5, 9)


@dataclass(frozen=True, slots=True)
class SampleEvent:
    """One produced message; ``expected_reason`` is None for a valid event."""

    preset: str
    key: bytes
    value: bytes
    defect: str | None = None
    expected_reason: str | None = None
    # A degrading defect: the (field, reason) the transform leaves out and reports.
    expected_drop: tuple[str, str] | None = None

    @property
    def valid(self) -> bool:
        """The transform accepts it (perhaps without a broken optional field)."""
        return self.expected_reason is None


@dataclass(slots=True)
class _Item:
    sku: str
    product_id: int
    variant_id: int
    name: str
    category: str
    price: Decimal
    quantity: int


@dataclass(slots=True)
class _Order:
    number: int
    time_ms: int
    offset_h: float
    first: str
    last: str
    email: str | None
    phone: str | None  # as typed by the customer (national, international or E.164)
    phone_e164: str | None
    twclid: str | None
    ip: str
    user_agent: str | None
    currency: str
    items: list[_Item]
    time_override: Any = None
    value_override: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> Decimal:
        return sum((i.price * i.quantity for i in self.items), Decimal(0))

    def iso_time(self) -> str:
        zone = timezone(timedelta(hours=self.offset_h))
        moment = datetime.fromtimestamp(self.time_ms / 1000, tz=UTC).astimezone(zone)
        return moment.isoformat(timespec="milliseconds")


class SampleGenerator:
    """Deterministic for a given seed and clock."""

    def __init__(
        self,
        *,
        seed: int = 0,
        presets: Sequence[str] = ("canonical",),
        invalid_share: float = 0.0,
        now: Callable[[], float] = time.time,
    ) -> None:
        unknown = set(presets) - set(PRESETS) - set(EXTRA_PRESETS)
        if unknown or not presets:
            raise ValueError(
                f"unknown preset(s) {sorted(unknown)}; choose from {PRESETS + EXTRA_PRESETS}"
            )
        if not 0.0 <= invalid_share <= 1.0:
            raise ValueError("invalid_share must be between 0 and 1")
        self._rng = random.Random(seed)
        self._presets = tuple(presets)
        self._invalid_share = invalid_share
        self._now = now
        self._counter = 0
        self._phone_templates: dict[str, str] = {}
        for region in sorted(set(_PHONE_REGIONS)):
            example = phonenumbers.example_number_for_type(
                region, phonenumbers.PhoneNumberType.MOBILE
            )
            assert example is not None, region
            self._phone_templates[region] = phonenumbers.national_significant_number(example)

    def events(self, count: int) -> Iterator[SampleEvent]:
        for _ in range(count):
            yield self.event()

    def event(self, preset: str | None = None, defect: str | None = None) -> SampleEvent:
        """The next event; ``defect`` forces a defect (a key of ``DEFECTS`` or of
        ``DEGRADING_DEFECTS``)."""
        rng = self._rng
        chosen = preset or rng.choice(self._presets)
        if defect is None and rng.random() < self._invalid_share:
            defect = rng.choice(tuple(DEFECTS))
        order = self._order()
        if defect is not None:
            self._spoil(order, defect)
        body = _RENDERERS[chosen](order, rng)
        value = orjson.dumps(body)
        if defect == "malformed_json":
            value = value[: max(1, len(value) // 2)]
        key = str(order.number).encode()
        if defect in DEGRADING_DEFECTS:
            drop = DEGRADING_DEFECTS[defect][0]
            if chosen == "debezium" and defect == "zero_quantity":
                drop = ("number_items", "invalid_value")  # rows carry a count, not items
            return SampleEvent(chosen, key, value, defect, None, drop)
        return SampleEvent(chosen, key, value, defect, DEFECTS[defect] if defect else None)

    def random_defect(self) -> str:
        """One of ``DEFECTS``, drawn from this generator's seeded stream."""
        return self._rng.choice(tuple(DEFECTS))

    # --- building blocks -------------------------------------------------------------

    def _order(self) -> _Order:
        rng = self._rng
        self._counter += 1
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        email = phone = e164 = twclid = None
        roll = rng.random()
        if roll < 0.9:
            email = f"{first}.{last}{rng.randint(1, 999)}@{rng.choice(_DOMAINS)}"
            if rng.random() < 0.2:
                email = f"  {email.upper()} "  # producers do send these
        if roll >= 0.9 or rng.random() < 0.7:
            phone, e164 = self._phone()
        if rng.random() < 0.5:
            twclid = "".join(rng.choice("0123456789abcdefghijklmnopqrstuv") for _ in range(26))
        if rng.random() < 0.1:
            ip = f"2001:db8:{rng.randint(0, 0xFFFF):x}::{rng.randint(1, 0xFFFF):x}"
        else:
            ip = f"{rng.choice(_IP_PREFIXES)}{rng.randint(1, 254)}"
        items = []
        for _ in range(rng.randint(1, 5)):
            name, category = rng.choice(_PRODUCTS)
            product_id = rng.randint(1_000_000, 9_999_999)
            items.append(
                _Item(
                    sku=f"SKU-{product_id % 100000:05d}-{rng.choice('SMLX')}",
                    product_id=product_id,
                    variant_id=product_id * 10 + rng.randint(0, 9),
                    name=name,
                    category=category,
                    price=Decimal(rng.randint(199, 24999)) / 100,
                    quantity=rng.randint(1, 3),
                )
            )
        now_ms = int(self._now() * 1000)
        return _Order(
            number=100_000 + self._counter * 7 + rng.randint(0, 6),
            time_ms=now_ms - rng.randint(1_000, 3_600_000),
            offset_h=rng.choice(_OFFSETS),
            first=first,
            last=last,
            email=email,
            phone=phone,
            phone_e164=e164,
            twclid=twclid,
            ip=ip,
            user_agent=rng.choice(_USER_AGENTS),
            currency=rng.choice(_CURRENCIES),
            items=items,
        )

    def _phone(self) -> tuple[str, str]:
        rng = self._rng
        region = rng.choice(_PHONE_REGIONS)
        template = self._phone_templates[region]
        digits = template[:-4] + f"{rng.randint(0, 9999):04d}"
        number = phonenumbers.parse(digits, region)
        e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        styles = [phonenumbers.PhoneNumberFormat.E164, phonenumbers.PhoneNumberFormat.INTERNATIONAL]
        if region == "US":  # national format parses with the default region US
            styles.append(phonenumbers.PhoneNumberFormat.NATIONAL)
        typed = phonenumbers.format_number(number, rng.choice(styles))
        return typed, e164

    def _spoil(self, order: _Order, defect: str) -> None:
        if defect == "missing_identifiers":
            order.email = order.phone = order.phone_e164 = order.twclid = None
            order.user_agent = None
        elif defect == "bad_time":
            order.time_override = "sometime last week"
        elif defect == "naive_time":
            order.time_override = order.iso_time()[:19]
        elif defect == "old_time":
            order.time_ms -= 30 * 86_400_000
        elif defect == "unknown_currency":
            order.currency = "ZZZ"
        elif defect == "negative_value":
            order.value_override = "-5.00"
        elif defect == "zero_quantity":
            order.items[0].quantity = 0


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _canonical(order: _Order, rng: random.Random) -> dict[str, Any]:
    user: dict[str, Any] = {"ip": order.ip}
    if order.email:
        user["email"] = order.email
    if order.phone:
        user["phone"] = order.phone
    if order.twclid:
        user["twclid"] = order.twclid
    if order.user_agent:
        user["user_agent"] = order.user_agent
    event_time: Any = order.time_override
    if event_time is None:
        event_time = order.iso_time() if rng.random() < 0.7 else order.time_ms
    return {
        "order_id": f"ORD-{order.number}",
        "event_time": event_time,
        "event_type": "purchase",
        "user": user,
        "value": order.value_override or str(order.total),
        "currency": order.currency,
        "description": "Web shop order",
        "items": [
            {
                "id": i.sku,
                "group_id": str(i.product_id),
                "name": i.name,
                "price": str(i.price),
                "category": i.category,
                "quantity": i.quantity,
            }
            for i in order.items
        ],
    }


def _segment(order: _Order, rng: random.Random) -> dict[str, Any]:
    traits: dict[str, Any] = {"firstName": order.first, "lastName": order.last}
    if order.email:
        traits["email"] = order.email
    if order.phone:
        traits["phone"] = order.phone
    page_url = "https://shop.example.com/checkout/thank-you"
    if order.twclid:
        page_url += f"?utm_source=twitter&twclid={order.twclid}"
    context: dict[str, Any] = {
        "ip": order.ip,
        "library": {"name": "analytics.js", "version": "2.11.1"},
        "page": {"url": page_url, "path": "/checkout/thank-you"},
        "traits": traits,
    }
    if order.user_agent:
        context["userAgent"] = order.user_agent
    tax = (order.total * Decimal("0.08")).quantize(Decimal("0.01"))
    total: Any = order.value_override or float(order.total + tax)
    return {
        "type": "track",
        "event": "Order Completed",
        "messageId": str(uuid.UUID(int=rng.getrandbits(128))),
        "anonymousId": str(uuid.UUID(int=rng.getrandbits(128))),
        "userId": f"user-{order.number % 9973}",
        "timestamp": order.time_override or order.iso_time(),
        "context": context,
        "properties": {
            "checkout_id": f"chk_{order.number:x}",
            "order_id": f"{order.number}",
            "affiliation": "Example Store",
            "total": total,
            "revenue": float(order.total),
            "tax": float(tax),
            "shipping": 0,
            "discount": 0,
            "currency": order.currency,
            "products": [
                {
                    # Segment's spec shows ObjectId-like ids; stores also use numeric ones
                    "product_id": f"507f1f77bc{i.product_id:014x}"
                    if i.product_id % 2
                    else str(i.product_id),
                    "sku": i.sku,
                    "category": i.category,
                    "name": i.name,
                    "brand": "Example Brand",
                    "price": float(i.price),
                    "quantity": i.quantity,
                    "position": pos + 1,
                }
                for pos, i in enumerate(order.items)
            ],
        },
    }


def _ga4(order: _Order, rng: random.Random) -> dict[str, Any]:
    user_data: dict[str, Any] = {}
    if order.email:
        user_data["sha256_email_address"] = [_sha(order.email.strip().lower())]
    if order.phone_e164:
        user_data["sha256_phone_number"] = [_sha(order.phone_e164)]
    params: dict[str, Any] = {
        "transaction_id": f"T{order.number}",
        "value": order.value_override or float(order.total),
        "currency": order.currency,
        "tax": 0,
        "shipping": 0,
        "items": [
            {
                "item_id": i.sku,
                "item_name": i.name,
                "item_category": i.category,
                "item_brand": "Example Brand",
                "price": float(i.price),
                "quantity": i.quantity,
            }
            for i in order.items
        ],
    }
    if order.twclid:
        params["twclid"] = order.twclid
    body: dict[str, Any] = {
        "client_id": f"{rng.randint(10**8, 10**9)}.{order.time_ms // 1000}",
        "user_id": f"user-{order.number % 9973}",
        "timestamp_micros": order.time_override or order.time_ms * 1000,
        "ip_override": order.ip,
        "user_data": user_data,
        "events": [{"name": "purchase", "params": params}],
    }
    if order.user_agent:
        body["user_agent"] = order.user_agent
    return body


def _shopify(order: _Order, rng: random.Random) -> dict[str, Any]:
    order_id = 5_600_000_000_000 + order.number
    landing = "/products/sale"
    if order.twclid:
        landing += f"?twclid={order.twclid}&utm_source=x"
    client: dict[str, Any] = {"browser_ip": order.ip, "accept_language": "en-US,en;q=0.9"}
    if order.user_agent:
        client["user_agent"] = order.user_agent
    created = order.time_override or order.iso_time()
    total = order.value_override or str(order.total)
    return {
        "id": order_id,
        "admin_graphql_api_id": f"gid://shopify/Order/{order_id}",
        "name": f"#{order.number}",
        "order_number": order.number,
        "created_at": created,
        "processed_at": created,
        "currency": order.currency,
        "presentment_currency": order.currency,
        "total_price": total,
        "subtotal_price": total,
        "total_tax": "0.00",
        "financial_status": "paid",
        "email": order.email or "",
        "contact_email": order.email,
        "phone": None,
        "landing_site": landing,
        "browser_ip": order.ip,
        "client_details": client,
        "customer": {
            "id": 7_000_000_000_000 + order.number,
            "email": order.email,
            "phone": order.phone,
            "first_name": order.first,
            "last_name": order.last,
        },
        "billing_address": {
            "first_name": order.first,
            "last_name": order.last,
            "phone": order.phone,
            "country_code": "US",
        },
        "line_items": [
            {
                "id": 13_000_000_000_000 + i.variant_id,
                "product_id": i.product_id,
                "variant_id": i.variant_id,
                "sku": i.sku,
                "title": i.name,
                "name": i.name,
                "price": str(i.price),
                "quantity": i.quantity,
                "vendor": "Example Brand",
            }
            for i in order.items
        ],
        "note_attributes": [],
    }


_DECIMAL_FIELD: Final = {
    "type": "bytes",
    "optional": False,
    "name": "org.apache.kafka.connect.data.Decimal",
    "version": 1,
    "parameters": {"scale": "2", "connect.decimal.precision": "12"},
    "field": "total",
}


def _debezium_row(order: _Order) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": order.number,
        "email": order.email,
        "phone": order.phone,
        "twclid": order.twclid,
        "ip": order.ip,
        "user_agent": order.user_agent,
        "total": order.value_override or str(order.total),
        "currency": order.currency,
        "created_at": order.time_override or order.time_ms,
        "number_items": (
            0 if any(i.quantity == 0 for i in order.items) else sum(i.quantity for i in order.items)
        ),
        "status": "paid",
    }
    return row


def _debezium_envelope(row: dict[str, Any] | None, op: str, order: _Order) -> dict[str, Any]:
    return {
        "before": None if op in ("c", "r") else row,
        "after": row if op in ("c", "r", "u") else None,
        "source": {
            "version": "2.7.0.Final",
            "connector": "postgresql",
            "name": "shop",
            "ts_ms": order.time_ms + 5,
            "snapshot": "true" if op == "r" else "false",
            "db": "shop",
            "schema": "public",
            "table": "orders",
        },
        "op": op,
        "ts_ms": order.time_ms + 40,
    }


def _debezium(order: _Order, rng: random.Random) -> dict[str, Any]:
    """A create (or snapshot read) of the orders table; with the JSON converter's schema
    wrapper half of the time, then ``total`` is Debezium's base64 ``Decimal``."""
    row = _debezium_row(order)
    op = "r" if rng.random() < 0.2 else "c"
    if rng.random() < 0.5 or order.value_override is not None:
        return _debezium_envelope(row, op, order)
    unscaled = int(order.total * 100)
    row["total"] = base64.b64encode(
        unscaled.to_bytes((unscaled.bit_length() + 8) // 8, "big", signed=True)
    ).decode()
    value_schema = {
        "type": "struct",
        "optional": True,
        "name": "shop.public.orders.Value",
        "fields": [
            {"type": "int64", "optional": False, "field": "id"},
            _DECIMAL_FIELD,
            {
                "type": "int64",
                "optional": False,
                "name": "io.debezium.time.Timestamp",
                "field": "created_at",
            },
        ],
    }
    schema = {
        "type": "struct",
        "name": "shop.public.orders.Envelope",
        "fields": [
            {**value_schema, "field": "before"},
            {**value_schema, "field": "after"},
            {"type": "string", "optional": False, "field": "op"},
        ],
    }
    return {"schema": schema, "payload": _debezium_envelope(row, op, order)}


def debezium_changes(order_number: int, time_ms: int) -> list[bytes | None]:
    """What else a Debezium topic carries for an order: an update, a delete and its
    tombstone (``None``: a Kafka message without a value). None is a new order."""
    row = {"id": order_number, "email": "buyer@example.com", "total": "1.00", "currency": "USD"}
    source = {"connector": "postgresql", "table": "orders", "ts_ms": time_ms}
    update = {"before": row, "after": {**row, "status": "shipped"}, "source": source, "op": "u"}
    delete = {"before": row, "after": None, "source": source, "op": "d", "ts_ms": time_ms}
    return [orjson.dumps(update), orjson.dumps(delete), None]


_RENDERERS: Final[dict[str, Callable[[_Order, random.Random], dict[str, Any]]]] = {
    "canonical": _canonical,
    "segment": _segment,
    "ga4": _ga4,
    "shopify": _shopify,
    "debezium": _debezium,
}
