"""Field maps of the producers we accept out of the box (see docs/transform.md)."""

from __future__ import annotations

from typing import Final

from consumer.transform.config import FieldMapping, ItemMapping, Preset

CANONICAL: Final = FieldMapping(
    order_id="order_id",
    conversion_id="conversion_id",
    event_time="event_time",
    event_type="event_type",
    routing_key="routing_key",
    email="user.email",
    phone="user.phone",
    hashed_email="user.hashed_email",
    hashed_phone="user.hashed_phone",
    twclid="user.twclid",
    ip="user.ip",
    user_agent="user.user_agent",
    value="value",
    currency="currency",
    number_items="number_items",
    description="description",
    items="items[]",
    item=ItemMapping(
        id="id",
        group_id="group_id",
        name="name",
        price="price",
        category="category",
        quantity="quantity",
    ),
)

# Segment ecommerce spec v2, "Order Completed" track call.
SEGMENT: Final = FieldMapping(
    order_id="properties.order_id",
    event_time=["timestamp", "originalTimestamp", "sentAt"],
    event_type="event",
    email=["context.traits.email", "traits.email", "properties.email"],
    phone=["context.traits.phone", "traits.phone", "properties.phone"],
    twclid=["properties.twclid", "context.campaign.twclid"],
    twclid_url=["context.page.url", "context.page.search"],
    ip="context.ip",
    user_agent="context.userAgent",
    value=["properties.total", "properties.revenue", "properties.value"],
    currency="properties.currency",
    items="properties.products[]",
    item=ItemMapping(
        id=["sku", "product_id"],
        group_id="product_id",
        name="name",
        price="price",
        category="category",
        quantity="quantity",
    ),
)

# GA4 Measurement Protocol body with a "purchase" event.
_GA4_EVENT: Final = "events[name=purchase]"
GA4: Final = FieldMapping(
    order_id=f"{_GA4_EVENT}.params.transaction_id",
    event_time=[f"{_GA4_EVENT}.timestamp_micros", "timestamp_micros"],
    event_type=f"{_GA4_EVENT}.name",
    email="user_data.email_address",
    phone="user_data.phone_number",
    hashed_email="user_data.sha256_email_address",
    hashed_phone="user_data.sha256_phone_number",
    twclid=[f"{_GA4_EVENT}.params.twclid", "user_properties.twclid.value"],
    twclid_url=f"{_GA4_EVENT}.params.page_location",
    ip="ip_override",
    user_agent=["user_agent", "device.user_agent"],
    value=f"{_GA4_EVENT}.params.value",
    currency=f"{_GA4_EVENT}.params.currency",
    items=f"{_GA4_EVENT}.params.items[]",
    item=ItemMapping(
        id="item_id",
        group_id="item_group_id",
        name="item_name",
        price="price",
        category="item_category",
        quantity="quantity",
    ),
)

# Shopify orders/create webhook (REST Admin API Order resource).
SHOPIFY: Final = FieldMapping(
    order_id="id",
    event_time=["processed_at", "created_at"],
    event_type="=purchase",
    email=["email", "contact_email", "customer.email"],
    phone=["phone", "customer.phone", "billing_address.phone", "shipping_address.phone"],
    twclid="note_attributes[name=twclid].value",
    twclid_url="landing_site",
    ip=["client_details.browser_ip", "browser_ip"],
    user_agent="client_details.user_agent",
    value="total_price",
    currency="currency",
    items="line_items[]",
    item=ItemMapping(
        id=["sku", "variant_id", "product_id"],
        group_id="product_id",
        name=["title", "name"],
        price="price",
        quantity="quantity",
    ),
)

# Debezium change events of an orders table: the row (``after``, or the flattened row)
# with canonical column names; ``__source_ts_ms`` is the change's commit time
# (consumer/transform/debezium.py), the fallback when the row has no time column.
DEBEZIUM: Final = FieldMapping(
    order_id=["order_id", "id"],
    conversion_id="conversion_id",
    event_time=["event_time", "created_at", "__source_ts_ms"],
    event_type="event_type",
    routing_key="routing_key",
    email=["email", "customer_email"],
    phone=["phone", "customer_phone"],
    hashed_email="hashed_email",
    hashed_phone="hashed_phone",
    twclid="twclid",
    twclid_url="landing_url",
    ip=["ip", "ip_address", "browser_ip"],
    user_agent="user_agent",
    value=["value", "total", "total_price"],
    currency="currency",
    number_items="number_items",
    description="description",
    items="items[]",
    item=CANONICAL.item,
)

PRESETS: Final[dict[Preset, FieldMapping]] = {
    Preset.CANONICAL: CANONICAL,
    Preset.SEGMENT: SEGMENT,
    Preset.GA4: GA4,
    Preset.SHOPIFY: SHOPIFY,
    Preset.CUSTOM: FieldMapping(),
    Preset.DEBEZIUM: DEBEZIUM,
}

# Producer event names that mean a purchase; the event type "purchase" picks the
# route's event_id.
EVENT_TYPE_ALIASES: Final[dict[str, str]] = {
    "Order Completed": "purchase",
    "order completed": "purchase",
    "order_completed": "purchase",
    "purchase": "purchase",
    "Purchase": "purchase",
}


def effective_mapping(preset: Preset, overrides: FieldMapping) -> FieldMapping:
    """The preset's map with every field set in ``overrides`` replacing the preset's."""
    base = PRESETS[preset]
    changes = {
        name: getattr(overrides, name)
        for name in FieldMapping.model_fields
        if name != "item" and name in overrides.model_fields_set
    }
    item_changes = {name: getattr(overrides.item, name) for name in overrides.item.model_fields_set}
    item = base.item.model_copy(update=item_changes)
    return base.model_copy(update={**changes, "item": item})
