"""The transform's policies end to end: real broker, real sandbox over HTTP, ``xconv run``.

- Segment orders whose product ids are not integers (Segment's own spec uses ObjectId
  strings) are all accepted: ``content_group_id`` is left out, nothing is dead-lettered.
- Debezium change events: creates are accepted; updates, deletes and tombstones are
  committed without a conversion and without a dead letter.
- PII: e-mail addresses and phone numbers in every free-text field and id never reach
  the sandbox, a dead-letter header or a log line.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from consumer.samples import SampleGenerator, debezium_changes
from consumer.transform.normalize import hash_email, hash_phone
from tests.fixtures.engine import EngineEnv, EngineProcess, OffsetsProbe, wait_until
from tests.fixtures.sandbox import SandboxHandle

pytestmark = [pytest.mark.kafka, pytest.mark.sandbox]


def produce_raw(env: EngineEnv, messages: Iterable[tuple[bytes | None, bytes]]) -> dict[int, int]:
    """Produce (value, key) pairs as they are (``None`` = a tombstone); end offsets."""
    producer = Producer({"bootstrap.servers": env.bootstrap, "acks": "all", "linger.ms": 10})
    ends: dict[int, int] = {}
    errors: list[str] = []

    def done(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            ends[msg.partition()] = max(ends.get(msg.partition(), 0), msg.offset() + 1)

    for value, key in messages:
        while True:
            try:
                producer.produce(env.topic, value=value, key=key, on_delivery=done)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(60) == 0
    assert not errors, errors[:3]
    return ends


def committed_to(probe: OffsetsProbe, ends: dict[int, int]) -> bool:
    committed = probe.committed()
    return all(committed.get(p, 0) == end for p, end in ends.items())


def accepted(sandbox: SandboxHandle, ids: set[str]) -> bool:
    return ids <= set(sandbox.conversion_ids())


def diagnose(sandbox: SandboxHandle, engine: EngineProcess) -> str:
    return f"sandbox stats: {sandbox.stats()}\nengine log tail:\n{engine.log_tail()}"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_segment_orders_with_non_numeric_product_ids_are_all_accepted(
    engine_env: EngineEnv, sandbox: SandboxHandle
) -> None:
    env = engine_env
    samples = list(SampleGenerator(seed=5, presets=["segment"]).events(400))
    docs = [orjson.loads(s.value) for s in samples]
    products = [p for d in docs for p in d["properties"]["products"]]
    non_numeric = {p["product_id"] for p in products if not p["product_id"].isdigit()}
    assert len(non_numeric) > 100  # the case of the issue, e.g. 507f1f77bc...
    ids = {d["properties"]["order_id"] for d in docs}
    ends = produce_raw(env, ((s.value, s.key) for s in samples))

    engine = env.start(env.config(sandbox, transform={"preset": "segment"}))
    engine.wait_ready()
    wait_until(
        lambda: accepted(sandbox, ids),
        180,
        "every Segment order accepted",
        on_timeout=lambda: diagnose(sandbox, engine),
    )
    probe = env.probe()
    wait_until(lambda: committed_to(probe, ends), 60, "commits at the end offsets")
    assert engine.terminate() == 0, engine.log_tail()

    tail = env.dead_letters()
    assert tail.catch_up() == []  # nothing dead-lettered
    sent = [c for c in sandbox.conversions(limit=10_000) if c["conversion_id"] in ids]
    assert {c["conversion_id"] for c in sent} == ids
    contents = [content for c in sent for content in c.get("contents", [])]
    assert len(contents) == len(products)
    groups = [content["content_group_id"] for content in contents if "content_group_id" in content]
    assert all(g.isdigit() for g in groups)
    assert len(contents) - len(groups) == sum(1 for p in products if not p["product_id"].isdigit())
    assert all(content["content_id"].startswith("SKU-") for content in contents)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_debezium_creates_are_accepted_and_deletes_skipped_and_committed(
    engine_env: EngineEnv, sandbox: SandboxHandle
) -> None:
    env = engine_env
    samples = list(SampleGenerator(seed=9, presets=["debezium"]).events(200))
    messages: list[tuple[bytes | None, bytes]] = []
    ids: set[str] = set()
    skipped = {"update": 0, "delete": 0, "tombstone": 0}
    for sample in samples:
        doc = orjson.loads(sample.value)
        row = doc.get("payload", doc)["after"]
        ids.add(str(row["id"]))
        messages.append((sample.value, sample.key))
        if row["id"] % 3 == 0:  # a third of the orders change later and are deleted
            for kind, value in zip(
                ("update", "delete", "tombstone"),
                debezium_changes(row["id"], row["created_at"]),
                strict=True,
            ):
                messages.append((value, sample.key))
                skipped[kind] += 1
    assert min(skipped.values()) > 30
    ends = produce_raw(env, messages)

    engine = env.start(env.config(sandbox, transform={"preset": "debezium"}))
    engine.wait_ready()
    wait_until(
        lambda: accepted(sandbox, ids),
        180,
        "every created order accepted",
        on_timeout=lambda: diagnose(sandbox, engine),
    )
    probe = env.probe()
    wait_until(lambda: committed_to(probe, ends), 60, "commits at the end offsets")

    def counted() -> bool:  # the engine publishes the transform's counters periodically
        metrics = engine.metrics() or {}
        return all(
            metrics.get(f'xconv_events_skipped_total{{reason="{reason}"}}') == count
            for reason, count in skipped.items()
        )

    wait_until(counted, 30, f"xconv_events_skipped_total to reach {skipped}")
    assert engine.terminate() == 0, engine.log_tail()
    assert env.dead_letters().catch_up() == []  # skipped, not dead-lettered


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_no_address_or_number_reaches_the_sandbox_dead_letters_or_logs(
    engine_env: EngineEnv, sandbox: SandboxHandle
) -> None:
    env = engine_env
    now = SampleGenerator(seed=1).event().value  # a canonical event with a current time
    base = orjson.loads(now)
    pii: list[str] = []
    messages: list[tuple[bytes | None, bytes]] = []
    ids: set[str] = set()
    invalid = 0
    for n in range(120):
        address = f"jane.roe{n}@example.org"
        phone = f"+1 415 555 {n:04d}"
        pii += [address, phone, f"415 555 {n:04d}", f"415555{n:04d}", f"+1415555{n:04d}"]
        doc = dict(base)
        doc["order_id"] = address  # an order id that is an address: hashed, not sent
        doc["description"] = f"gift wrap, call {phone}"
        doc["user"] = {
            "email": f"buyer{n}@example.com",
            "twclid": address,
            "user_agent": f"Mozilla/5.0 (callback {phone})",
            "ip": "203.0.113.7",
        }
        doc["items"] = [
            {
                "id": f"engraved-{address}",
                "name": f"Card for {phone}",
                "category": f"ship to {address}",
                "price": "9.50",
                "quantity": 1,
            }
        ]
        cid = hash_email(address) or ""
        if n % 4 == 3:  # an explicit conversion id that is a phone number
            doc["conversion_id"] = phone
            cid = hash_phone(phone, "US") or ""
        if n % 10 == 0:
            doc["event_time"] = "soon"  # dead-lettered: its headers must be clean too
            invalid += 1
        else:
            ids.add(cid)
        messages.append((orjson.dumps(doc), str(n).encode()))
    # X's error texts echo the values they refuse: make the sandbox refuse one event
    refused = hash_email("jane.roe1@example.org") or ""
    sandbox.set_faults(reject_conversion_ids=[refused])
    ends = produce_raw(env, messages)

    engine = env.start(env.config(sandbox))
    engine.wait_ready()
    wait_until(
        lambda: accepted(sandbox, ids - {refused}),
        180,
        "the clean events accepted",
        on_timeout=lambda: diagnose(sandbox, engine),
    )
    probe = env.probe()
    wait_until(lambda: committed_to(probe, ends), 60, "commits at the end offsets")
    assert engine.terminate() == 0, engine.log_tail()

    tail = env.dead_letters()
    records = tail.catch_up()
    assert len(records) == invalid + 1
    assert {r.headers["reason"] for r in records} >= {"invalid_time"}

    sent = orjson.dumps(sandbox.conversions(limit=10_000)).decode().lower()
    headers = orjson.dumps([r.headers for r in records]).decode().lower()
    logs = (engine.logs() + sandbox.logs()).lower()
    assert '"conversion_id"' in sent
    assert refused in headers  # the refused id, hashed, is what X's error echoes
    for text in pii:
        assert text.lower() not in sent, text
        assert text.lower() not in headers, text
        assert text.lower() not in logs, text


@pytest.mark.timeout(180)
def test_dropped_fields_are_counted_in_the_metric(
    engine_env: EngineEnv, sandbox: SandboxHandle
) -> None:
    env = engine_env
    samples = list(SampleGenerator(seed=6, presets=["segment"]).events(60))
    docs = [orjson.loads(s.value) for s in samples]
    ids = {d["properties"]["order_id"] for d in docs}
    dropped = sum(
        1 for d in docs for p in d["properties"]["products"] if not p["product_id"].isdigit()
    )
    assert dropped > 10
    ends = produce_raw(env, ((s.value, s.key) for s in samples))
    engine = env.start(env.config(sandbox, transform={"preset": "segment"}))
    engine.wait_ready()
    wait_until(
        lambda: accepted(sandbox, ids),
        120,
        "every Segment order accepted",
        on_timeout=lambda: diagnose(sandbox, engine),
    )
    probe = env.probe()
    wait_until(lambda: committed_to(probe, ends), 60, "commits at the end offsets")
    key = 'xconv_fields_dropped_total{field="item.group_id",reason="not_integer"}'
    wait_until(lambda: engine.metric(key) == dropped, 30, "the dropped-field counter")
    assert engine.terminate() == 0, engine.log_tail()
