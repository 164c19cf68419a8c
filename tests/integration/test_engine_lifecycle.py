"""``xconv run`` processes coming and going: kill -9, group rebalances, SIGTERM drains.

At-least-once across all of them: every event is delivered or dead-lettered, and
redeliveries come only from what was not committed yet.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest

from consumer.samples import SampleGenerator
from tests.fixtures.engine import EngineEnv, EngineProcess, Produced, http_status, wait_until
from tests.fixtures.sandbox import SandboxHandle
from tests.integration.test_engine import CommitSampler, all_done, committed_at_end, progress

pytestmark = [pytest.mark.kafka, pytest.mark.sandbox, pytest.mark.slow]

StartSandbox = Callable[..., SandboxHandle]


def accepted_at_least(sandbox: SandboxHandle, n: int) -> Callable[[], bool]:
    return lambda: len(sandbox.conversion_ids()) >= n


def done_positions(
    sandbox: SandboxHandle, produced: Produced, env: EngineEnv
) -> set[tuple[int, int]]:
    ids = sandbox.conversion_ids()
    tail = env.dead_letters()
    tail.catch_up()
    done = {pos for pos, cid in produced.valid.items() if cid in ids}
    return done | set(tail.by_source())


# --------------------------------------------------------------------------------------
# 7. kill -9 mid-stream, restart: at least once, duplicates only from the uncommitted tail
# --------------------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_kill_9_then_restart_delivers_everything_at_least_once(
    engine_env: EngineEnv, start_sandbox: StartSandbox
) -> None:
    env = engine_env
    sandbox = start_sandbox({"faults": {"latency_ms": 80, "latency_jitter_ms": 80}})
    produced = env.produce(SampleGenerator(seed=71, invalid_share=0.03).events(3000))
    slow = env.config(
        sandbox,
        account={"max_in_flight": 3},
        batching={"max_events": 40, "linger_ms": 20},
        delivery={"adaptive_concurrency": False, "commit_interval_s": 0.2},
    )
    first = env.start(slow, name="first")
    wait_until(
        accepted_at_least(sandbox, 800), 120, "some delivery", on_timeout=progress(sandbox, first)
    )
    first.kill()
    probe = env.probe()
    committed_at_kill = probe.committed()
    ends = produced.ends
    uncommitted = sum(end - committed_at_kill.get(p, 0) for p, end in ends.items())
    assert uncommitted > 0, "the kill came after everything was committed"

    sandbox.set_faults(latency_ms=0, latency_jitter_ms=0)
    second = env.start(env.config(sandbox), name="second")
    wait_until(
        all_done(sandbox, produced, env), 180, "delivery", on_timeout=progress(sandbox, second)
    )
    wait_until(committed_at_end(probe, produced), 60, "commits at the end offsets")
    assert second.terminate() == 0, second.log_tail()

    ids = sandbox.conversion_ids()
    assert set(produced.valid.values()) <= set(ids)
    duplicated = [pos for pos, cid in produced.valid.items() if ids[cid] > 1]
    # Only events at or above the offset committed at the kill may come twice.
    early = [pos for pos in duplicated if pos[1] < committed_at_kill.get(pos[0], 0)]
    assert early == [], early[:10]
    assert sum(ids[produced.valid[pos]] - 1 for pos in duplicated) <= uncommitted
    tail = env.dead_letters()
    tail.catch_up()
    for pos, records in tail.by_source().items():
        assert pos in produced.invalid
        if len(records) > 1:
            assert pos[1] >= committed_at_kill.get(pos[0], 0), pos


def b_assigned(engine: EngineProcess) -> bool:
    try:
        status, body = http_status(engine.url + "/readyz")
    except OSError:
        return False
    return status == 200 and bool(orjson.loads(body).get("assigned"))


# --------------------------------------------------------------------------------------
# 8. two consumers in one group, one joining and one leaving mid-stream: nothing lost
# --------------------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_consumers_joining_and_leaving_lose_nothing(
    engine_env: EngineEnv, start_sandbox: StartSandbox
) -> None:
    env = engine_env
    sandbox = start_sandbox({"faults": {"latency_ms": 30, "latency_jitter_ms": 60}})
    gen = SampleGenerator(seed=81, invalid_share=0.03)
    produced = env.produce(gen.events(1000), id_prefix="phase1")
    config = env.config(
        sandbox,
        account={"max_in_flight": 4},
        batching={"max_events": 40, "linger_ms": 20},
        delivery={"adaptive_concurrency": False, "commit_interval_s": 0.2},
    )
    with CommitSampler(env, sandbox, produced) as sampler:
        a = env.start(config, name="a")
        wait_until(accepted_at_least(sandbox, 300), 120, "A delivering", on_timeout=a.log_tail)
        b = env.start(config, name="b")
        b.wait_ready()
        # Only once B owns partitions does new data give it work of its own.
        wait_until(lambda: b_assigned(b), 120, "B assigned partitions", on_timeout=b.log_tail)
        produced.merge(env.produce(gen.events(1000), id_prefix="phase2"))
        wait_until(
            lambda: b.metric("xconv_events_consumed_total") > 0,
            120,
            "B consuming its share",
            on_timeout=b.log_tail,
        )
        produced.merge(env.produce(gen.events(1000), id_prefix="phase3"))
        assert a.terminate() == 0, a.log_tail()  # A leaves: B takes every partition
        wait_until(
            all_done(sandbox, produced, env), 180, "delivery", on_timeout=progress(sandbox, b)
        )
        wait_until(committed_at_end(env.probe(), produced), 90, "commits at the end offsets")
    assert b.terminate() == 0, b.log_tail()
    assert not sampler.errors, sampler.errors
    assert sampler.problems == [], sampler.problems[:20]
    assert set(produced.valid.values()) <= set(sandbox.conversion_ids())
    tail = env.dead_letters()
    tail.catch_up()
    assert set(tail.by_source()) == set(produced.invalid)


# --------------------------------------------------------------------------------------
# 9. SIGTERM during a burst: drain, commit, exit 0
# --------------------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_sigterm_during_a_burst_drains_and_commits(
    engine_env: EngineEnv, start_sandbox: StartSandbox, kafka_broker: object
) -> None:
    env = engine_env
    sandbox = start_sandbox({"faults": {"latency_ms": 100, "latency_jitter_ms": 100}})
    produced = env.produce(SampleGenerator(seed=91, invalid_share=0.03).events(2500))
    config = env.config(
        sandbox,
        account={"max_in_flight": 4},
        batching={"max_events": 50, "linger_ms": 20},
        # A small buffer: most of the burst is still in Kafka when SIGTERM comes.
        delivery={
            "adaptive_concurrency": False,
            "commit_interval_s": 5.0,
            "max_buffered_events": 500,
        },
    )
    engine = env.start(config)
    wait_until(accepted_at_least(sandbox, 300), 120, "a burst", on_timeout=engine.log_tail)
    assert engine.terminate() == 0, engine.log_tail()
    drained = [
        orjson.loads(line)
        for line in engine.logs().splitlines()
        if line.startswith("{") and "engine_drained" in line
    ]
    assert [d["clean"] for d in drained] == [True], drained

    committed = env.probe().committed()
    done = done_positions(sandbox, produced, env)
    assert len(done) < produced.total, "the burst was over before SIGTERM"
    for partition in produced.ends:
        finished = [offset for p, offset in done if p == partition]
        # A clean drain finished everything it had taken and committed all of it:
        # nothing done lies above the committed offset, nothing below is undone.
        expected = max(finished) + 1 if finished else 0
        assert committed.get(partition, 0) == expected, (partition, committed, expected)
        below = {(partition, o) for o in range(expected)}
        assert below <= done, sorted(below - done)[:10]

    # The rest is still in Kafka for the next run.
    sandbox.set_faults(latency_ms=0, latency_jitter_ms=0)
    rest = env.start(env.config(sandbox), name="rest")
    wait_until(all_done(sandbox, produced, env), 180, "delivery", on_timeout=rest.log_tail)
    wait_until(committed_at_end(env.probe(), produced), 60, "commits at the end offsets")
    assert rest.terminate() == 0, rest.log_tail()
