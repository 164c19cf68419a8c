"""The optional native fast path (the ``xconv-native`` package, Rust): selection and set-up.

``attach(transformer)`` builds an ``xconv_native.Engine`` from a ``Transformer``'s
compiled mapping and settings, so that ``transformer.transform(raw)`` runs natively and
hands every event the engine is not sure about (Debezium skips, rare rejections, JSON
columns, ...; phone numbers that need ``phonenumbers``' own parse are called back) to
the Python reference,
which stays the definition of the output. See docs/transform.md, "Native fast path".
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final

import structlog

from consumer.iso4217 import ISO_4217
from consumer.observability.redact import contains_contact, is_contact_id
from consumer.transform.config import Preset
from consumer.transform.normalize import hash_email, hash_phone, normalize_ip
from consumer.transform.presets import EVENT_TYPE_ALIASES
from consumer.transform.types import Conversion, Rejection, Route

if TYPE_CHECKING:
    from consumer.transform.transformer import Transformer, _Field

log = structlog.get_logger("xconv.transform")

#: The native package's ABI this module builds engines for (``xconv_native.ABI``).
ABI: Final = 1
MODULE: Final = "xconv_native"


class NativeUnavailable(RuntimeError):
    """``transform.engine = "native"`` but the native package does not import."""


class _State:
    """The import's outcome (tried once per process) and whether the fallback was logged."""

    loaded = False
    module: ModuleType | None = None
    error: str | None = None
    logged = False


state: Final = _State()


def load() -> ModuleType | None:
    """The native module, or None (the reason in ``load_error()``); imported once."""
    if not state.loaded:
        state.loaded = True
        try:
            module = importlib.import_module(MODULE)
        except ImportError as exc:
            state.error = f"{MODULE} is not installed or does not load ({type(exc).__name__})"
        else:
            if getattr(module, "ABI", None) != ABI:
                state.error = f"{MODULE} has ABI {getattr(module, 'ABI', None)}, expected {ABI}"
            else:
                state.module = module
    return state.module


def load_error() -> str | None:
    load()
    return state.error


def _log_fallback(reason: str) -> None:
    """The one log line of ``engine = "auto"`` without the native package (per process)."""
    if not state.logged:
        state.logged = True
        log.warning("transform_engine_fallback", engine="python", reason=reason)


def _alts(field: _Field) -> list[tuple[str, Any, str]]:
    """(kind, constant or path steps, the path text a rejection names) per alternative."""
    return [
        ("const", const, text) if path is None else ("path", list(path), text)
        for text, path, const in field.alts
    ]


def _spec(t: Transformer, route_index: Callable[[Route], int]) -> dict[str, Any]:
    def table(routes: dict[str, Route]) -> dict[str, int]:
        return {event_type: route_index(route) for event_type, route in routes.items()}

    return {
        "order_id": _alts(t._order_id),
        "conversion_id": _alts(t._conversion_id),
        "event_time": _alts(t._event_time),
        "event_type": _alts(t._event_type),
        "routing_key": _alts(t._routing_key),
        "email": _alts(t._email),
        "phone": _alts(t._phone),
        "twclid": _alts(t._twclid),
        "twclid_url": _alts(t._twclid_url),
        "ip": _alts(t._ip),
        "user_agent": _alts(t._user_agent),
        "value": _alts(t._value),
        "currency": _alts(t._currency),
        "number_items": _alts(t._number_items),
        "description": _alts(t._description),
        "items": None if t._items_text is None else list(t._items_path),
        "item_id": _alts(t._item_id),
        "item_group_id": _alts(t._item_group),
        "item_name": _alts(t._item_name),
        "item_price": _alts(t._item_price),
        "item_category": _alts(t._item_category),
        "item_quantity": _alts(t._item_quantity),
        "tables": {key: table(routes) for key, routes in t._tables.items()},
        "default_table": None if t._default_table is None else table(t._default_table),
        "region": t._region,
        "default_currency": t._currency_default,
        "max_age_ms": t._max_age_ms,
        "max_future_ms": t._max_future_ms,
        "description_default": t._description_default,
        "template": t._template,
        "string_values": t._string_values,
        "send_ipv6": t._send_ipv6,
        "ip_ua_ok": t._ip_ua_ok,
        "use_event_cid": t._use_event_cid,
        "strict": t._strict,
        "pii": t._pii,
        "debezium": (
            (t.settings.debezium.updates, list(t.settings.debezium.decimal_scales.items()))
            if t.settings.preset is Preset.DEBEZIUM
            else None
        ),
    }


def build(t: Transformer, module: ModuleType) -> Any:
    """An ``Engine`` equivalent to ``t``."""
    from consumer.transform.transformer import Transformer, _hash_id

    routes: list[Route] = []
    index: dict[int, int] = {}

    def route_index(route: Route) -> int:
        key = id(route)
        if key not in index:
            index[key] = len(routes)
            routes.append(route)
        return index[key]

    auto = t.settings.preset is Preset.AUTO
    parts = [t._by_format[p] for p in t._by_format] if auto else [t]
    cores = [_spec(part, route_index) for part in parts]
    reference = Transformer.transform.__get__(t)
    hooks = {
        "hash_email": hash_email,
        "hash_phone": hash_phone,
        "normalize_ip": normalize_ip,
        "contains_contact": contains_contact,
        "is_contact_id": is_contact_id,
        "hash_id": _hash_id,
        "now": t._now,
    }
    return module.Engine(
        cores,
        auto,
        routes,
        [route.event_id for route in routes],
        reference,
        t._counts,
        Conversion,
        Rejection,
        hooks,
        set(ISO_4217),
        dict(EVENT_TYPE_ALIASES),
    )


def attach(t: Transformer) -> Any | None:
    """Install the native engine as ``t.transform`` per ``t.settings.engine``; the engine,
    or None when the reference runs alone."""
    from consumer.transform.transformer import Transformer

    engine = t.settings.engine
    if engine == "python":
        return None
    if type(t).transform is not Transformer.transform:
        return None  # a subclass with its own transform (e.g. bench/noop_engine.py)
    module = load()
    if module is None:
        if engine == "native":
            raise NativeUnavailable(f"transform.engine is native but {load_error()}")
        _log_fallback(str(load_error()))
        return None
    native = build(t, module)
    t.__dict__["transform"] = native
    return native
