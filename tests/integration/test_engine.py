"""``xconv run`` end to end: the real broker, a real sandbox over HTTP, the real engine.

Every test checks the delivery contract from the outside: each valid event's
conversion_id reaches the sandbox, each invalid one is in the dead-letter topic with
its reason, and a committed offset never passes an event that is not done.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from consumer.samples import SampleGenerator
from tests.fixtures.engine import (
    EngineEnv,
    EngineProcess,
    OffsetsProbe,
    Produced,
    check_commit_invariant,
    wait_until,
)
from tests.fixtures.sandbox import SandboxHandle

pytestmark = [pytest.mark.kafka, pytest.mark.sandbox]

StartSandbox = Callable[..., SandboxHandle]


def all_done(sandbox: SandboxHandle, produced: Produced, env: EngineEnv) -> Callable[[], bool]:
    """Every valid id accepted, every invalid event dead-lettered."""
    tail = env.dead_letters()

    def check() -> bool:
        ids = sandbox.conversion_ids()
        if any(cid not in ids for cid in produced.valid.values()):
            return False
        tail.catch_up()
        return set(produced.invalid) <= set(tail.by_source())

    return check


def committed_at_end(probe: OffsetsProbe, produced: Produced) -> Callable[[], bool]:
    ends = produced.ends

    def check() -> bool:
        committed = probe.committed()
        return all(committed.get(p, 0) == end for p, end in ends.items())

    return check


def progress(sandbox: SandboxHandle, engine: EngineProcess | None = None) -> Callable[[], str]:
    def describe() -> str:
        text = f"sandbox stats: {sandbox.stats()}"
        if engine is not None:
            text += f"\nengine log tail:\n{engine.log_tail()}"
        return text

    return describe


class CommitSampler:
    """Samples the group's committed offsets in a thread and checks each sample.

    For a sample, accepted ids and dead letters are read after it: both only grow, so a
    position below the committed offset that is in neither was committed too early.
    """

    def __init__(self, env: EngineEnv, sandbox: SandboxHandle, produced: Produced) -> None:
        self.env, self.sandbox, self.produced = env, sandbox, produced
        self.probe = env.probe()
        self.tail = env.dead_letters()
        self.samples: list[dict[int, int]] = []
        self.problems: list[str] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CommitSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def sample(self) -> None:
        committed = self.probe.committed()
        ids = self.sandbox.conversion_ids()
        self.tail.catch_up()
        self.samples.append(committed)
        self.problems += check_commit_invariant(
            committed, self.produced, ids, self.tail.by_source()
        )

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except BaseException as exc:
                self.errors.append(exc)
                return
            self._stop.wait(0.1)

    def intermediate(self) -> int:
        """Samples where some partition's commit sat strictly between 0 and its end."""
        ends = self.produced.ends
        return sum(1 for s in self.samples if any(0 < s.get(p, 0) < end for p, end in ends.items()))


# --------------------------------------------------------------------------------------
# 1. everything delivered, invalid events dead-lettered, offsets committed to the end
# --------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_delivers_all_events_and_commits_end_offsets(
    engine_env: EngineEnv, sandbox: SandboxHandle, kafka_broker: Any
) -> None:
    env = engine_env
    produced = env.produce(SampleGenerator(seed=11, invalid_share=0.05).events(3000))
    assert len(produced.invalid) > 50
    assert len(set(p for p, _ in produced.values)) == 6

    engine = env.start(env.config(sandbox))
    engine.wait_ready()
    wait_until(
        all_done(sandbox, produced, env), 180, "delivery", on_timeout=progress(sandbox, engine)
    )
    probe = env.probe()
    wait_until(committed_at_end(probe, produced), 60, "commits at the end offsets")
    assert engine.terminate() == 0, engine.log_tail()

    ids = sandbox.conversion_ids()
    assert set(produced.valid.values()) <= set(ids)
    tail = env.dead_letters()
    tail.catch_up()
    by_source = tail.by_source()
    assert set(by_source) == set(produced.invalid)
    for pos, reason in produced.invalid.items():
        record = by_source[pos][0]
        assert record.headers["reason"] == reason, (pos, record.headers)
        assert record.value == produced.values[pos]
        assert record.key == produced.keys[pos]
        assert record.headers["source"]["topic"] == env.topic

    offsets = kafka_broker.committed_offsets(env.group)  # Kafka's own consumer-groups tool
    ends = produced.ends
    for partition, end in ends.items():
        row = offsets[(env.topic, partition)]
        assert row.committed == end, (partition, row)
        assert row.log_end == end


# --------------------------------------------------------------------------------------
# 2. out-of-order completion never moves the commit past an unfinished batch
# --------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_commit_never_passes_an_unfinished_batch(
    engine_env: EngineEnv, start_sandbox: StartSandbox
) -> None:
    env = engine_env
    sandbox = start_sandbox({"seed": 5, "faults": {"latency_ms": 20, "latency_jitter_ms": 400}})
    produced = env.produce(SampleGenerator(seed=12, invalid_share=0.03).events(2000))
    # Small batches, several in flight with random latency: batches of one partition
    # finish out of order, and the run lasts long enough (~100 batches, 4 at a time)
    # for the sampler to see commits mid-stream.
    config = env.config(
        sandbox,
        account={"max_in_flight": 4},
        batching={"max_events": 20, "linger_ms": 20},
        delivery={"adaptive_concurrency": False, "commit_interval_s": 0.1},
    )
    with CommitSampler(env, sandbox, produced) as sampler:
        engine = env.start(config)
        wait_until(
            all_done(sandbox, produced, env), 180, "delivery", on_timeout=progress(sandbox, engine)
        )
        wait_until(committed_at_end(env.probe(), produced), 60, "commits at the end offsets")
    sampler.sample()  # one last look at the final state
    assert not sampler.errors, sampler.errors
    assert sampler.problems == [], sampler.problems[:20]
    assert sampler.intermediate() > 0, "no sample caught a commit mid-stream"
    assert engine.terminate() == 0, engine.log_tail()


# --------------------------------------------------------------------------------------
# 5. one bad event in a batch of 500: 499 accepted, 1 dead-lettered with X's error
# --------------------------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_one_rejected_event_in_a_full_batch_is_isolated(
    engine_env: EngineEnv, sandbox: SandboxHandle
) -> None:
    env = engine_env
    produced = env.produce(SampleGenerator(seed=13).events(500), partition=0)
    bad_pos = sorted(produced.valid)[237]
    bad_cid = produced.valid[bad_pos]
    sandbox.set_faults(reject_conversion_ids=[bad_cid])
    # One partition, a long linger: the 500 events go out as one full batch.
    config = env.config(sandbox, batching={"max_events": 500, "linger_ms": 5000})
    engine = env.start(config)
    tail = env.dead_letters()

    def isolated() -> bool:
        ids = sandbox.conversion_ids()
        tail.catch_up()
        return len(ids) == 499 and len(tail.records) == 1

    wait_until(isolated, 90, "isolation of the bad event", on_timeout=progress(sandbox, engine))
    wait_until(committed_at_end(env.probe(), produced), 60, "commits at the end offsets")
    assert engine.terminate() == 0, engine.log_tail()

    ids = sandbox.conversion_ids()
    assert bad_cid not in ids
    assert set(ids) == set(produced.valid.values()) - {bad_cid}
    stats = sandbox.stats()
    assert stats["requests_by_status"].get("400", 0) >= 1  # the full batch was rejected
    tail.catch_up()
    assert len(tail.records) == 1
    record = tail.records[0]
    assert record.source == bad_pos
    assert record.value == produced.values[bad_pos]
    headers = record.headers
    assert headers["reason"] == "api_rejected"
    assert headers["attempts"] >= 1
    # X's error, as answered: it names the event by its index in the batch of 500.
    (error,) = headers["errors"]
    assert str(error["parameter"]).startswith(f"conversions[{bad_pos[1]}]"), error
    assert bad_cid in error["message"]
    assert headers["field"] == error["parameter"]


# --------------------------------------------------------------------------------------
# 6. invalid JSON and schema violations are dead-lettered with their reason
# --------------------------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_invalid_json_and_schema_violations_are_dead_lettered(
    engine_env: EngineEnv, sandbox: SandboxHandle
) -> None:
    env = engine_env
    raw: list[tuple[bytes, bytes | None, str | None]] = [
        (b'{"order_id": "A-1", "event_time": ', b"k1", "invalid_json"),
        (b"\xff\xfe not utf-8", b"k2", "invalid_json"),
        (b"", None, "invalid_json"),
        (b"[1, 2, 3]", b"k3", "schema_violation"),
        (b'"just a string"', b"k4", "schema_violation"),
        (b"42", b"k5", "schema_violation"),
    ]
    gen = SampleGenerator(seed=14)
    produced = env.produce([*gen.events(100), *raw, *gen.events(100)])
    engine = env.start(env.config(sandbox))
    wait_until(
        all_done(sandbox, produced, env), 90, "delivery", on_timeout=progress(sandbox, engine)
    )
    wait_until(committed_at_end(env.probe(), produced), 60, "commits at the end offsets")
    assert engine.terminate() == 0, engine.log_tail()

    tail = env.dead_letters()
    tail.catch_up()
    by_source = tail.by_source()
    assert set(by_source) == set(produced.invalid)
    for pos, reason in produced.invalid.items():
        (record,) = by_source[pos]
        assert record.headers["reason"] == reason, (produced.values[pos], record.headers)
        assert record.headers["message"]
        assert (record.value or b"") == produced.values[pos]
        assert record.key == produced.keys[pos]
        assert record.headers["attempts"] == 0
    assert len(sandbox.conversion_ids()) == 200
