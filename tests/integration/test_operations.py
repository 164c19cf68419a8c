"""Operating the service: no PII in any log line, SASL/SCRAM to Kafka, dead-letter replay."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import phonenumbers
import pytest
import tomli_w

from consumer.samples import SampleGenerator
from tests.fixtures.engine import ROOT, EngineEnv, wait_until
from tests.fixtures.sandbox import SandboxHandle

StartSandbox = Callable[..., SandboxHandle]

pytestmark = [pytest.mark.kafka, pytest.mark.sandbox]


def _pii_of(value: bytes) -> set[str]:
    """Every raw email, phone (as typed and in E.164) and IP address of one event."""
    found: set[str] = set()

    def walk(node: Any, key: str = "") -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, k)
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
        elif isinstance(node, str):
            lowered = key.lower()
            if "email" in lowered and "@" in node:
                found.add(node)
                found.add(node.strip().lower())
            elif "phone" in lowered and not node.startswith("sha"):
                found.add(node)
                try:
                    number = phonenumbers.parse(node, "US")
                    found.add(
                        phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
                    )
                except phonenumbers.NumberParseException:
                    pass
            elif lowered in {"ip", "browser_ip", "ip_address", "ip_override"}:
                found.add(node)

    with contextlib.suppress(orjson.JSONDecodeError):
        walk(orjson.loads(value))
    return {p for p in found if len(p) >= 7}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_no_pii_reaches_any_log_line(engine_env: EngineEnv, start_sandbox: StartSandbox) -> None:
    """PII through the whole pipeline, with every log-producing path exercised, at debug level."""
    env = engine_env
    events = list(
        SampleGenerator(
            seed=21, presets=("canonical", "segment", "ga4", "shopify"), invalid_share=0.1
        ).events(600)
    )
    pii: set[str] = set()
    for event in events:
        pii |= _pii_of(event.value)
    assert len(pii) > 500  # the scan below must have something to find
    env.produce([(e.value, e.key, e.expected_reason) for e in events])
    # The canonical preset's conversion_id is the order id: reject one valid order.
    first = next(e for e in events if e.valid and e.preset == "canonical")
    reject = orjson.loads(first.value)["order_id"]
    sandbox = start_sandbox(
        {"seed": 3, "faults": {"error_500": 0.1, "drop": 0.05, "reject_conversion_ids": [reject]}},
        log_level="debug",
    )
    config = env.config(
        sandbox,
        transform={"preset": "auto"},
        observability={"log_level": "debug", "log_format": "json", "http_host": "127.0.0.1"},
        batching={"max_events": 50, "linger_ms": 20},
    )
    engine = env.start(config)
    tail = env.dead_letters()

    def delivered() -> bool:
        tail.catch_up()
        return len(sandbox.conversion_ids()) + len(tail.records) >= len(events)

    wait_until(delivered, 180, "delivery with faults")
    assert engine.terminate() == 0, engine.log_tail()

    logs = {"engine": engine.logs(), "sandbox": sandbox.logs()}
    assert "batch_retry" in logs["engine"]  # the fault paths did log
    assert "batch_rejected" in logs["engine"]
    for name, text in logs.items():
        leaked = sorted(p for p in pii if p in text)
        assert leaked == [], f"{name} log leaks {len(leaked)} PII values, e.g. {leaked[:3]}"


@pytest.mark.timeout(180)
def test_engine_over_sasl_scram(
    engine_env: EngineEnv, sandbox: SandboxHandle, kafka_sasl_config: dict[str, str]
) -> None:
    """The consumer and the dead-letter producer authenticate with SCRAM-SHA-256."""
    env = engine_env
    produced = env.produce(SampleGenerator(seed=31, invalid_share=0.1).events(200))
    config = env.config(
        sandbox,
        kafka={
            "bootstrap_servers": kafka_sasl_config["bootstrap.servers"],
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-256",
            "sasl_username": kafka_sasl_config["sasl.username"],
            "sasl_password": "env:TEST_SCRAM_PASSWORD",
        },
    )
    os.environ["TEST_SCRAM_PASSWORD"] = kafka_sasl_config["sasl.password"]
    try:
        engine = env.start(config)
    finally:
        del os.environ["TEST_SCRAM_PASSWORD"]
    tail = env.dead_letters()

    def delivered() -> bool:
        ids = sandbox.conversion_ids()
        tail.catch_up()
        return set(produced.valid.values()) <= set(ids) and set(produced.invalid) <= set(
            tail.by_source()
        )

    wait_until(delivered, 120, "delivery over SASL")
    probe = env.probe()
    wait_until(lambda: probe.committed() == produced.ends, 60, "commits over SASL")
    assert engine.terminate() == 0, engine.log_tail()
    assert kafka_sasl_config["sasl.password"] not in engine.logs()


def _rewrite_routing(config: Path, routes: dict[str, dict[str, str]]) -> Path:
    """Route by the event's routing key to ``routes`` only, with no default route."""
    data = tomllib.loads(config.read_text())
    data["routing"] = {"routes": routes}
    config.write_text(tomli_w.dumps(data))
    return config


def _replay(config: Path) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "consumer", "dlq", "replay", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary: dict[str, Any] = orjson.loads(result.stdout.strip().splitlines()[-1])
    return summary


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_dlq_replay_after_fixing_the_routing(engine_env: EngineEnv, sandbox: SandboxHandle) -> None:
    """Events dead-lettered for a missing route are delivered by replay once it is fixed."""
    env = engine_env
    events: list[tuple[bytes, bytes | None, str | None]] = []
    for n, event in enumerate(SampleGenerator(seed=41).events(120)):
        doc = orjson.loads(event.value)
        doc["routing_key"] = "shop-b" if n % 3 == 0 else "shop-a"
        events.append((orjson.dumps(doc), event.key, None))
    env.produce(events)
    expected_b = len(range(0, 120, 3))
    expected_a = 120 - expected_b
    route = {
        "account_id": sandbox.account_id,
        "pixel_id": sandbox.pixel_id,
        "event_id": sandbox.event_id,
    }
    engine = env.start(_rewrite_routing(env.config(sandbox), {"shop-a": route}))
    tail = env.dead_letters()

    def first_pass_done() -> bool:
        tail.catch_up()
        return len(sandbox.conversion_ids()) == expected_a and len(tail.records) == expected_b

    wait_until(first_pass_done, 120, "first pass")
    assert engine.terminate() == 0, engine.log_tail()
    assert {r.headers["reason"] for r in tail.records} == {"no_route"}

    fixed = _rewrite_routing(env.config(sandbox), {"shop-a": route, "shop-b": route})
    summary = _replay(fixed)
    assert summary["replayed"] == expected_b
    assert summary["accepted"] == expected_b
    assert summary["dead_lettered_again"] == 0
    assert len(sandbox.conversion_ids()) == 120

    # A second replay is harmless: X (and the sandbox) de-duplicate by conversion_id.
    again = _replay(fixed)
    assert again["accepted"] == expected_b
    assert len(sandbox.conversion_ids()) == 120
    assert sandbox.stats()["duplicate_conversion_ids"] >= expected_b
