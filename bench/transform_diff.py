"""Differential check of two transform implementations (not a test: a tool for hot-path work).

Every result of ``Transformer.transform`` (payload bytes, rejection reason/field/message,
skip, ``dropped``) and the counters are compared between two source trees, each run in
its own process so that both can be imported under the same module names:

    git archive main | tar -x -C /tmp/old       # the tree to compare against
    PYTHONPATH=.        python bench/transform_diff.py gen --out /tmp/corpus.pickle
    PYTHONPATH=/tmp/old python bench/transform_diff.py run /tmp/corpus.pickle /tmp/old.dig
    PYTHONPATH=.        python bench/transform_diff.py run /tmp/corpus.pickle /tmp/new.dig
    python bench/transform_diff.py compare /tmp/old.dig /tmp/new.dig
    PYTHONPATH=...      python bench/transform_diff.py show /tmp/corpus.pickle CONFIG INDEX

The native fast path against the reference, in one tree (issue 13):

    python bench/transform_diff.py run /tmp/corpus.pickle /tmp/py.dig --engine python
    python bench/transform_diff.py run /tmp/corpus.pickle /tmp/native.dig --engine native
    python bench/transform_diff.py compare /tmp/py.dig /tmp/native.dig

Run by path, so that ``consumer`` comes from PYTHONPATH (the old tree need not have
this file). ``gen`` (hypothesis strategies of tests/) takes ~2 min, ``run`` ~2 min.

The corpus: the sample generator's events of every shape (several seeds, its invalid
and degrading defects, Debezium updates/deletes/tombstones), the same events with a few
values replaced by odd ones (types, blanks, white space, PII, phone and time formats),
and hypothesis-drawn events (each preset's field map, and arbitrary JSON). Each settings
variant (every preset, strict or not, pii_scan on or off, and a few other options) runs
the events of its shape plus the arbitrary ones; ``auto`` runs all of them.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import pickle
import random
import sys
from collections.abc import Callable
from typing import Any

import orjson

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z, as in the tests

# --- corpus --------------------------------------------------------------------------

_HEX = "0123456789abcdef"
ODD_VALUES: list[Any] = [
    None,
    "",
    " ",
    "\t",
    True,
    False,
    0,
    -1,
    1,
    3,
    7,
    10**9,
    10**9 - 1,
    2**63,
    -(2**63),
    1.5,
    -0.0,
    0.0,
    2.0,
    1e20,
    19.99,
    1e15,
    "19.99",
    " 19.99 ",
    "-5.00",
    "1e3",
    "12,50",
    "\uff11\uff12",
    "\u0663",
    "0019.990",
    "1234567890123456",
    "1.12345678901",
    "abc",
    "ZZZ",
    "usd",
    " eur ",
    "EUR",
    "JPY",
    [],
    {},
    ["a"],
    ["jane@example.com", "JOHN@example.org"],
    ["jane@example.com", "jane@example.com"],
    ["+14155550100", "(415) 555-0100"],
    ["x"] * 11,
    [1],
    {"a": 1},
    [{"id": "x"}],
    "JANE.DOE@EXAMPLE.COM",
    " jane@example.com ",
    "a@b",
    "@x.com",
    "x@",
    "a@@b.com",
    "a b@c.com",
    "a\tb@c.com",
    "e" * 64,
    "E" * 64,
    "0123456789abcdef" * 4,
    "0123456789ABCDEF" * 4,
    "g" * 64,
    "+14155550100",
    "+1 415-555-0100",
    "(415) 555-0100",
    "415.555.0100",
    "4155550100",
    "14155550100",
    "1415555010",
    "0155550100",
    "+44 20 7946 0958",
    "020 7946 0958",
    "+0123456789",
    "+123",
    "+1234567890123456",
    "555-1234",
    "+1 (415) 555\u00a00100",
    "+1/415/555/0100",
    "\uff11\uff14\uff11\uff15\uff15\uff15\uff15\uff10\uff11\uff10\uff10",
    "+49 30 123456",
    "030 123456",
    "call 020 7946 0958",
    "Order +1 415 555 0100 please",
    "ask jane@example.com",
    "5600000100007",
    "1000000-1000499",
    "12.5",
    "2026-01-01",
    "2025-12-31T23:00:00Z",
    "2025-12-31T23:00:00+01:00",
    "2025-12-31T23:59:59.999-05:00",
    "2025-12-31 23:00:00+00:00",
    "2025-12-31T23:00:00",
    "2025-12-31T23:00:00.123456+05:30",
    "2025-12-31T23:00:00.1Z",
    "2025-12-31T23:00:00,5Z",
    "20251231T230000Z",
    "2025-12-31T23:00Z",
    "2025-12-31T23:00:00+0100",
    "2025-12-31T23:00:00.123+01:00:30",
    "2025-12-31T23:00:00.999999999Z",
    " 2025-12-31T23:00:00Z ",
    "2026-01-01T00:04:00Z",
    "2026-01-01T00:06:00Z",
    "2025-12-20T00:00:00Z",
    "9999-12-31T23:59:59+00:00",
    "0001-01-01T00:00:00+14:00",
    "sometime last week",
    1_767_225_000,
    1_767_225_000_123,
    1_767_225_000_123_456,
    1_767_225_000.5,
    1_767_225_000_123.7,
    1_767_225_000_123_456.0,
    1_767_300_000,
    1_700_000_000,
    "1767225000",
    "1767225000123",
    " 1767225000123 ",
    "1767225000123456",
    "176722500012345678",
    -5,
    "192.0.2.1",
    " 192.0.2.1 ",
    "01.2.3.4",
    "256.1.1.1",
    "::ffff:192.0.2.1",
    "::FFFF:192.0.2.1",
    "2001:db8::1",
    "2001:DB8:0:0::1",
    "fe80::1%eth0",
    "::1",
    "1.2.3",
    "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0",
    "Mozilla/5.0 call +1 415 555 0100",
    "Mozilla/5.0 jane@example.com",
    "x" * 2049,
    "y" * 600,
    "https://x.example/?a=1&twclid=abc%20d#x",
    "https://x.example/?xtwclid=1&twclid=",
    "https://x.example/p?twclid=q1;x=2",
    "/products?twclid=%E2%82%AC&a",
    "twclid=first",
    "?twclid=jane@example.com",
    "0012",
    " 42 ",
    "\u0664\u0662",
    "42",
    "-42",
    "purchase",
    "Purchase",
    "Order Completed",
    "order_completed",
    "refund",
    "c",
    "r",
    "u",
    "d",
    "t",
    "true",
    "Tm9wZQ==",
    "AJ8=",
    "!!",
    "{order}",
    "id with spaces ",
    "\u00e9\u00e8",
    "\ud7ff",
]
EXTRA_KEYS = [
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
    "ip",
    "user_agent",
    "value",
    "currency",
    "number_items",
    "description",
    "items",
    "id",
    "sku",
    "price",
    "quantity",
    "name",
    "category",
    "group_id",
    "product_id",
    "variant_id",
    "title",
    "item_id",
    "item_name",
    "__op",
    "__deleted",
    "__source_ts_ms",
    "op",
    "after",
    "landing_url",
    "total",
    "total_price",
]


def _positions(node: Any, out: list[tuple[Any, Any]]) -> None:
    if type(node) is dict:
        for key, value in node.items():
            out.append((node, key))
            _positions(value, out)
    elif type(node) is list:
        for index, value in enumerate(node):
            out.append((node, index))
            _positions(value, out)


def _odd(rng: random.Random, current: Any) -> Any:
    roll = rng.random()
    if type(current) is str and roll < 0.25:
        choice = rng.randrange(5)
        if choice == 0:
            return f" {current} "
        if choice == 1:
            return current.upper()
        if choice == 2:
            return current[: rng.randrange(len(current) + 1)]
        if choice == 3:
            return current + rng.choice(["@example.com", " 555-0100", "\u00a0", "."])
        return current.lower()
    if type(current) is list and current and roll < 0.35:
        return current * rng.choice([2, 5])
    if roll < 0.4 and rng.random() < 0.02:
        return [{"id": f"x{n}"} for n in range(1001)]
    return copy.deepcopy(rng.choice(ODD_VALUES))


def mutate(rng: random.Random, doc: Any) -> Any:
    """``doc`` with 1-4 values replaced, removed or added."""
    doc = copy.deepcopy(doc)
    for _ in range(rng.randint(1, 4)):
        spots: list[tuple[Any, Any]] = []
        _positions(doc, spots)
        roll = rng.random()
        if not spots or roll < 0.1:
            containers = [doc] + [c for c, k in spots if type(c[k]) is dict]
            target = rng.choice(containers) if containers else None
            if type(target) is dict:
                target[rng.choice(EXTRA_KEYS)] = _odd(rng, None)
            continue
        container, key = rng.choice(spots)
        if roll < 0.2 and type(container) is dict:
            del container[key]
        else:
            container[key] = _odd(rng, container[key])
    return doc


def _hypothesis_events(count: int, seed: int) -> list[tuple[str, bytes]]:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed
    from hypothesis import strategies as st

    from consumer.transform import Preset
    from tests.unit.transform.test_invariant import SHAPED, preset_events
    from tests.unit.transform.test_properties import shaped_values

    out: list[tuple[str, bytes]] = []
    config = settings(
        max_examples=count,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )

    def collector(preset: Preset) -> Callable[[], None]:
        @hseed(seed)
        @config
        @given(doc=preset_events(preset))
        def collect(doc: dict[str, Any]) -> None:
            out.append((preset.value, orjson.dumps(doc)))

        return collect

    for preset in SHAPED:
        collector(preset)()

    @hseed(seed)
    @config
    @given(doc=shaped_values | st.binary(max_size=40))
    def collect_junk(doc: Any) -> None:
        raw = doc if type(doc) is bytes else orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS)
        out.append(("junk", raw))

    collect_junk()
    return out


def build_corpus(scale: float) -> list[tuple[str, bytes]]:
    """(group, message) pairs; the group is the shape the generator meant."""
    from consumer.samples import (
        DEGRADING_DEFECTS,
        EXTRA_PRESETS,
        PRESETS,
        SampleGenerator,
        debezium_changes,
    )

    corpus: list[tuple[str, bytes]] = []
    per_seed = int(6000 * scale)
    for preset in PRESETS + EXTRA_PRESETS:
        for seed in (1, 2, 3, 42):
            gen = SampleGenerator(seed=seed, presets=[preset], invalid_share=0.2, now=lambda: NOW)
            rng = random.Random(seed * 1000 + len(preset))
            for number in range(per_seed):
                defect = None
                if number % 20 == 0:
                    defect = rng.choice(tuple(DEGRADING_DEFECTS))
                sample = gen.event(defect=defect)
                corpus.append((preset, sample.value))
                if preset == "debezium" and number % 10 == 0:
                    corpus.extend(
                        ("debezium", change or b"")
                        for change in debezium_changes(100_000 + number, int(NOW * 1000) - 5000)
                    )
                if number % 2 == 0:  # half as many again, with odd values
                    try:
                        doc = orjson.loads(sample.value)
                    except orjson.JSONDecodeError:
                        continue
                    corpus.append((preset, orjson.dumps(mutate(rng, doc))))
    corpus.extend(_hypothesis_events(int(3000 * scale), seed=1234))
    return corpus


# --- settings variants ---------------------------------------------------------------


def variants() -> list[tuple[str, tuple[str, ...], Callable[[], Any]]]:
    """(name, corpus groups it runs, factory of its Transformer)."""
    from consumer.transform import (
        DebeziumSettings,
        FieldMapping,
        ItemMapping,
        RouteSettings,
        RoutingSettings,
        Transformer,
        TransformSettings,
    )

    route = RouteSettings(account_id="18ce552mlaq", pixel_id="oka17", event_id="ol288")
    other = RouteSettings(
        account_id="acc2", pixel_id="px2", event_id="ev2", event_ids={"refund": "ev3"}
    )
    plain = RoutingSettings(default=route)
    keyed = RoutingSettings(
        default=route, routes={"eu": other, "42": other}, event_ids={"Purchase": "ev9"}
    )
    keyed_no_default = RoutingSettings(routes={"eu": other}, key_field=["routing_key", "region"])
    custom = FieldMapping(
        order_id=["order.id", "order_id", "id"],
        conversion_id="meta.cid",
        event_time=["event_time", "created_at", "processed_at"],
        event_type="=purchase",
        email=["user.email", "email", "customer.email"],
        phone=["user.phone", "phone", "customer.phone"],
        twclid="user.twclid",
        twclid_url=["landing_site", "page.url"],
        ip=["user.ip", "client_details.browser_ip", "browser_ip"],
        user_agent="user.user_agent",
        value=["value", "total_price"],
        currency="currency",
        number_items="number_items",
        description="description",
        items="items[]",
        item=ItemMapping(
            id=["id", "sku"],
            group_id="meta.group",
            name=["name", "title"],
            price="price",
            category="=Misc",
            quantity="quantity",
        ),
    )
    shopify_items = FieldMapping(items="line_items[]", order_id="name", phone="phones[1]")

    def make(routing: Any = plain, **kwargs: Any) -> Callable[[], Any]:
        return lambda: Transformer(TransformSettings(**kwargs), routing, now=lambda: NOW)

    out: list[tuple[str, tuple[str, ...], Callable[[], Any]]] = []
    shapes = ("canonical", "segment", "ga4", "shopify", "debezium")
    for preset in (*shapes, "auto"):
        groups = (*shapes, "junk") if preset == "auto" else (preset, "junk")
        for strict in (False, True):
            for pii in (True, False):
                out.append(
                    (
                        f"{preset}/strict={strict}/pii={pii}",
                        groups,
                        make(preset=preset, strict=strict, pii_scan=pii),
                    )
                )
    for strict in (False, True):
        for pii in (True, False):
            out.append(
                (
                    f"custom/strict={strict}/pii={pii}",
                    ("canonical", "shopify", "junk"),
                    make(preset="custom", mapping=custom, strict=strict, pii_scan=pii),
                )
            )
    out += [
        (
            "canonical/options",
            ("canonical", "junk"),
            make(
                keyed,
                conversion_id_template="{order_id}-{event_type}-{routing_key}",
                value_format="string",
                send_ipv6=True,
                allow_ip_and_user_agent_only=False,
                default_phone_region="GB",
                description="Shop",
                max_future_s=0,
            ),
        ),
        (
            "canonical/no-default-route",
            ("canonical", "junk"),
            make(keyed_no_default, use_event_conversion_id=False, strict=True),
        ),
        (
            "segment/options",
            ("segment", "junk"),
            make(keyed, value_format="string", default_phone_region="DE", default_currency="EUR"),
        ),
        (
            "ga4/options",
            ("ga4", "junk"),
            make(plain, value_format="string", send_ipv6=True, strict=True, max_age_s=3600),
        ),
        (
            "shopify/overrides",
            ("shopify", "junk"),
            make(plain, preset="shopify", mapping=shopify_items, default_phone_region="FR"),
        ),
        (
            "debezium/options",
            ("debezium", "junk"),
            make(
                plain,
                preset="debezium",
                debezium=DebeziumSettings(updates=True, decimal_scales={"total": 2, "value": 3}),
                value_format="string",
            ),
        ),
    ]
    return out


# --- run and compare -----------------------------------------------------------------


def describe(result: Any) -> bytes:
    """The whole result, types included (a str subclass where a str was is a change)."""
    kind = type(result).__name__
    fields: tuple[Any, ...]
    if kind == "Conversion":
        fields = (result.route, result.conversion_id, result.payload, result.dropped)
    elif kind == "Rejection":
        fields = (result.reason, result.field, result.message)
    else:
        fields = (getattr(result, "reason", None), getattr(result, "field", None))
    parts = [kind, *(repr((type(f).__name__, f)) for f in fields)]
    if kind == "Conversion":
        parts.append(repr([type(x).__name__ for pair in result.dropped for x in pair]))
    return "\x00".join(parts).encode("utf-8", "surrogatepass")


def counters(transformer: Any) -> bytes:
    return repr(
        (
            transformer.dropped_emails,
            transformer.dropped_phones,
            transformer.dropped_ips,
            transformer.dropped_user_agents,
            sorted(transformer.dropped_fields.items()),
            sorted(transformer.skipped.items()),
        )
    ).encode()


def run(corpus_path: str, out_path: str, engine: str | None = None) -> None:
    import consumer
    from consumer.transform import Transformer

    with open(corpus_path, "rb") as handle:
        corpus: list[tuple[str, bytes]] = pickle.load(handle)
    records: dict[str, list[bytes]] = {}
    total = 0
    for name, groups, factory in variants():
        transformer = factory()
        if engine is not None:  # the same settings with transform.engine = ENGINE
            settings = transformer.settings.model_copy(update={"engine": engine})
            transformer = Transformer(settings, transformer.routing, now=lambda: NOW)
        digests: list[bytes] = []
        for index, (group, raw) in enumerate(corpus):
            if group not in groups:
                continue
            try:
                text = describe(transformer.transform(raw))
            except Exception as exc:  # must never happen; recorded so that it compares
                text = f"RAISED {type(exc).__name__}".encode()
            digest = hashlib.blake2b(text, digest_size=12).digest()
            digests.append(index.to_bytes(4, "big") + digest)
            if len(digests) % 1000 == 0:
                digests.append(b"counters" + hashlib.blake2b(counters(transformer)).digest()[:8])
        digests.append(b"counters" + hashlib.blake2b(counters(transformer)).digest()[:8])
        records[name] = digests
        total += len(digests)
    with open(out_path, "wb") as handle:
        pickle.dump({"tree": consumer.__file__, "records": records}, handle)
    print(f"{consumer.__file__}: {len(records)} settings variants, {total} records")


def compare(old_path: str, new_path: str) -> int:
    with open(old_path, "rb") as handle:
        old = pickle.load(handle)
    with open(new_path, "rb") as handle:
        new = pickle.load(handle)
    bad = 0
    compared = 0
    for name, records in old["records"].items():
        other = new["records"].get(name)
        if other is None or len(other) != len(records):
            print(f"{name}: record count differs")
            bad += 1
            continue
        for a, b in zip(records, other, strict=True):
            compared += 1
            if a != b:
                bad += 1
                if bad <= 20:
                    where = int.from_bytes(a[:4], "big") if not a.startswith(b"counters") else a
                    print(f"{name}: differs at corpus index {where!r}")
    events = sum(1 for r in old["records"].values() for d in r if not d.startswith(b"counters"))
    print(
        f"{old['tree']} vs {new['tree']}: {compared} records ({events} transforms), "
        f"{bad} differences"
    )
    return 1 if bad else 0


def show(corpus_path: str, name: str, index: int) -> None:
    with open(corpus_path, "rb") as handle:
        corpus: list[tuple[str, bytes]] = pickle.load(handle)
    factory = {n: f for n, _, f in variants()}[name]
    group, raw = corpus[index]
    print(group, raw[:2000])
    print(factory().transform(raw))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("gen")
    gen.add_argument("--out", required=True)
    gen.add_argument("--scale", type=float, default=1.0)
    runp = sub.add_parser("run")
    runp.add_argument("corpus")
    runp.add_argument("out")
    runp.add_argument(
        "--engine",
        choices=["auto", "native", "python"],
        help="transform.engine of every variant (native vs python: the fast path's check)",
    )
    comp = sub.add_parser("compare")
    comp.add_argument("old")
    comp.add_argument("new")
    showp = sub.add_parser("show")
    showp.add_argument("corpus")
    showp.add_argument("name")
    showp.add_argument("index", type=int)
    args = parser.parse_args()
    if args.command == "gen":
        corpus = build_corpus(args.scale)
        with open(args.out, "wb") as handle:
            pickle.dump(corpus, handle)
        groups: dict[str, int] = {}
        for group, _ in corpus:
            groups[group] = groups.get(group, 0) + 1
        print(f"{len(corpus)} events: {groups}")
        return 0
    if args.command == "run":
        run(args.corpus, args.out, args.engine)
        return 0
    if args.command == "compare":
        return compare(args.old, args.new)
    show(args.corpus, args.name, args.index)
    return 0


if __name__ == "__main__":
    sys.exit(main())
