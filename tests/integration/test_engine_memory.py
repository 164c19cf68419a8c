"""Engine v2: memory bounded by ``max_buffered_events`` in every case (issue 9, item 10).

``xconv_events_in_flight`` counts the offset span from the commit watermark to the last
fetched offset, so one stuck event at a partition's head (its account blocked while
another account on the same partition flows) pauses fetching at the bound. On the
engine before issue 9 the other account's events flowed on, every finished offset
behind the stuck head was kept, and the partition was never paused.
"""

from __future__ import annotations

import dataclasses
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import tomli_w

from consumer.samples import SampleEvent, SampleGenerator
from consumer.sandbox.config import demo_account
from tests.fixtures.engine import EngineEnv, wait_until
from tests.fixtures.liveness import GaugeSampler
from tests.fixtures.sandbox import SandboxHandle
from tests.integration.test_engine import all_done, committed_at_end, progress

pytestmark = [pytest.mark.kafka, pytest.mark.sandbox, pytest.mark.slow]

StartSandbox = Callable[..., SandboxHandle]

MAX_BUFFERED = 500  # the settings' minimum
FETCH_BATCH = 50
IN_FLIGHT_BOUND = MAX_BUFFERED + FETCH_BATCH  # one fetch past the mark at most
HOLD_WATCH_S = 10.0  # how long the bound is watched while the head is stuck
OTHER: dict[str, Any] = {
    "account_id": "acctflow",
    "pixel_id": "pxflow",
    "event_ids": ["evflow"],
    "consumer_key": "ckflow",
    "consumer_secret": "csflow",
    "access_token": "atflow",
    "access_token_secret": "atsflow",
}


def routed(events: Iterator[SampleEvent], shop: str) -> Iterator[SampleEvent]:
    """The same events with the canonical preset's routing key set to ``shop``."""
    for event in events:
        doc = orjson.loads(event.value)
        doc["routing_key"] = shop
        yield dataclasses.replace(event, value=orjson.dumps(doc))


def two_account_config(env: EngineEnv, sandbox: SandboxHandle) -> Path:
    """The demo account for shop "blocked", a second one for shop "flow"."""
    path = env.config(
        sandbox,
        kafka={"fetch_batch_size": FETCH_BATCH},
        batching={"max_events": 50, "linger_ms": 20},
        delivery={
            "max_buffered_events": MAX_BUFFERED,
            "resume_ratio": 0.5,
            "probe_initial_s": 0.5,
            "probe_max_s": 2.0,
            # The memory bound of holding a stuck head in place (the park policy, the
            # default, would move it to the parking topic: test_tenant_isolation.py).
            "stuck_policy": "hold",
        },
    )
    data = tomllib.loads(path.read_text())
    data["accounts"].append(
        {
            "account_id": OTHER["account_id"],
            "pixel_id": OTHER["pixel_id"],
            "auth": "oauth1",
            "consumer_key": OTHER["consumer_key"],
            "consumer_secret": OTHER["consumer_secret"],
            "access_token": OTHER["access_token"],
            "access_token_secret": OTHER["access_token_secret"],
        }
    )
    data["routing"] = {
        "routes": {
            "blocked": {
                "account_id": sandbox.account_id,
                "pixel_id": sandbox.pixel_id,
                "event_id": sandbox.event_id,
            },
            "flow": {
                "account_id": OTHER["account_id"],
                "pixel_id": OTHER["pixel_id"],
                "event_id": OTHER["event_ids"][0],
            },
        }
    }
    path.write_text(tomli_w.dumps(data))
    return path


@pytest.mark.timeout(300)
def test_a_stuck_head_pauses_the_partition_at_the_bound(
    engine_env: EngineEnv, start_sandbox: StartSandbox
) -> None:
    env = engine_env
    blocked_id = demo_account().account_id
    sandbox = start_sandbox(
        {
            "accounts": [demo_account().model_dump(), OTHER],
            "faults": {"status_overrides": {blocked_id: 401}},
        }
    )
    gen = SampleGenerator(seed=981)
    # Partition 0: one event of the blocked account at its head, then 2,500 that flow.
    produced = env.produce(routed(gen.events(1), "blocked"), id_prefix="head", partition=0)
    produced.merge(env.produce(routed(gen.events(2500), "flow"), id_prefix="flow", partition=0))
    engine = env.start(two_account_config(env, sandbox))
    with GaugeSampler("xconv_events_in_flight") as in_flight:
        in_flight.watch("engine", engine)
        engine.wait_ready()
        wait_until(
            lambda: engine.metric("xconv_partitions_paused") >= 1,
            90,
            "partition 0 paused behind its stuck head",
            on_timeout=progress(sandbox, engine),
        )
        assert engine.metric("xconv_account_blocked") == 1, progress(sandbox, engine)()
        # The other account flows (the premise), but nothing past the bound is fetched,
        # so nothing past it can be delivered: an invariant, watched for a while.
        watch_until = time.monotonic() + HOLD_WATCH_S
        flowed = 0
        while time.monotonic() < watch_until:
            flowed = len(sandbox.conversion_ids(OTHER["account_id"]))
            consumed = engine.metric("xconv_events_consumed_total")
            assert flowed < IN_FLIGHT_BOUND, progress(sandbox, engine)()
            assert consumed <= IN_FLIGHT_BOUND, (consumed, engine.log_tail())
            time.sleep(0.5)
        assert flowed > 0, progress(sandbox, engine)()
        assert all(offset == 0 for offset in env.probe().committed().values())

        sandbox.set_faults(status_overrides={})
        done = all_done(sandbox, produced, env)
        wait_until(
            done,
            120,
            "delivery once the head's account recovers",
            on_timeout=progress(sandbox, engine),
        )
        wait_until(committed_at_end(env.probe(), produced), 60, "commits at the end offsets")
    assert not in_flight.errors, in_flight.errors
    assert in_flight.samples > 0
    assert in_flight.maximum["engine"] <= IN_FLIGHT_BOUND, in_flight.maximum
    assert engine.terminate() == 0, engine.log_tail()
