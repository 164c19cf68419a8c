"""Engine v2 under group rebalances (issue 9, items 2 and 7), on the real broker.

Back-pressure is derived from the consumer's own assignment: after members join, leave
or lose their session while an API outage keeps the buffer full, every member keeps its
assigned partitions paused and its buffer bounded. SIGTERM during a rebalance storm
always ends within ``drain_timeout_s + 3 * call_timeout_s``. On the engine before
issue 9 a member whose partitions were all lost forgot that it was paused and fetched
without bound, and a SIGTERM mid-rebalance could hang in a commit without a timeout.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

import pytest

from consumer.samples import SampleGenerator
from tests.fixtures.engine import EngineEnv, EngineProcess, wait_until
from tests.fixtures.liveness import (
    EXIT_SLACK_S,
    GaugeSampler,
    group_members,
    shutdown_bound_s,
    sigterm_and_time,
)
from tests.fixtures.sandbox import SandboxHandle
from tests.integration.test_engine import all_done, committed_at_end, progress

pytestmark = [pytest.mark.kafka, pytest.mark.sandbox, pytest.mark.slow]

StartSandbox = Callable[..., SandboxHandle]

MAX_BUFFERED = 500  # the settings' minimum
FETCH_BATCH = 50
# The gauge counts offsets from the watermark to the last fetched one; a fetch asks for
# at most the room left, so one fetch batch is the most it may pass the mark by.
IN_FLIGHT_BOUND = MAX_BUFFERED + FETCH_BATCH
DRAIN_TIMEOUT_S = 2.0
CALL_TIMEOUT_S = 2.0
EXIT_BOUND_S = shutdown_bound_s(DRAIN_TIMEOUT_S, CALL_TIMEOUT_S) + EXIT_SLACK_S


def member_config(env: EngineEnv, sandbox: SandboxHandle, name: str, **kafka: Any) -> Any:
    return env.config(
        sandbox,
        name=name,
        kafka={
            "client_id": name,
            "fetch_batch_size": FETCH_BATCH,
            "call_timeout_s": CALL_TIMEOUT_S,
            **kafka,
        },
        batching={"max_events": 50, "linger_ms": 20},
        delivery={
            "max_buffered_events": MAX_BUFFERED,
            "resume_ratio": 0.5,
            "drain_timeout_s": DRAIN_TIMEOUT_S,
            "revoke_timeout_s": 1.0,
            "retry_base_s": 0.2,
            "retry_cap_s": 1.0,
        },
    )


class Settled:
    """The group is stable with exactly ``engines`` as members, each owning partitions,
    and each engine's paused gauge equals its assignment as the coordinator reports it."""

    def __init__(self, env: EngineEnv, engines: dict[str, EngineProcess]) -> None:
        self.env, self.engines = env, engines
        self.seen: dict[str, Any] = {}

    def __call__(self) -> bool:
        env = self.env
        state, members = group_members(env.bootstrap, env.group, env.topic)
        paused: dict[str, float] = {}
        self.seen = {"state": state, "members": members, "paused": paused}
        if state != "STABLE" or set(members) != set(self.engines):
            return False
        if sorted(p for parts in members.values() for p in parts) != list(range(6)):
            return False
        for name, engine in self.engines.items():
            paused[name] = engine.metric("xconv_partitions_paused")
            if not members[name] or paused[name] != len(members[name]):
                return False
        return True

    def describe(self) -> str:
        tails = "\n".join(f"--- {n}:\n{e.log_tail(15)}" for n, e in self.engines.items())
        return f"last view: {self.seen}\n{tails}"


def wait_settled(env: EngineEnv, engines: dict[str, EngineProcess], what: str) -> None:
    check = Settled(env, engines)
    wait_until(check, 90, what, interval=0.3, on_timeout=check.describe)


@pytest.mark.timeout(420)
def test_rebalance_while_paused_keeps_the_buffer_bounded(
    engine_env: EngineEnv, start_sandbox: StartSandbox
) -> None:
    env = engine_env
    sandbox = start_sandbox({"faults": {"error_503": 1.0}})  # an outage throughout
    gen = SampleGenerator(seed=931)
    produced = env.produce(gen.events(3000), id_prefix="before")
    with GaugeSampler("xconv_events_in_flight") as in_flight:
        a = env.start(member_config(env, sandbox, "a", session_timeout_ms=6000), name="a")
        in_flight.watch("a", a)
        a.wait_ready()
        wait_settled(env, {"a": a}, "A alone, all six partitions paused")

        # A member joins while A is paused: both end up paused on what they own.
        b = env.start(member_config(env, sandbox, "b"), name="b")
        in_flight.watch("b", b)
        wait_settled(env, {"a": a, "b": b}, "A and B paused on their assignments")
        produced.merge(env.produce(gen.events(1000), id_prefix="during"))

        # B leaves: its partitions come back to A, revoked while paused and re-assigned.
        end = sigterm_and_time(b, EXIT_BOUND_S)
        assert end.code in (0, 3), (end, b.log_tail())
        wait_settled(env, {"a": a}, "A paused on all six again after B left")

        # C joins; then A loses its session (stopped past session.timeout.ms) and all
        # of its partitions with it, and rejoins.
        c = env.start(member_config(env, sandbox, "c"), name="c")
        in_flight.watch("c", c)
        wait_settled(env, {"a": a, "c": c}, "A and C paused on their assignments")

        def a_dropped() -> bool:
            state, members = group_members(env.bootstrap, env.group, env.topic)
            return state != "UNKNOWN" and bool(members) and "a" not in members

        os.kill(a.popen.pid, signal.SIGSTOP)
        try:
            wait_until(a_dropped, 60, "the coordinator dropping the stopped member A")
        finally:
            os.kill(a.popen.pid, signal.SIGCONT)
        wait_settled(env, {"a": a, "c": c}, "A back after losing its partitions, paused")
        produced.merge(env.produce(gen.events(500), id_prefix="after"))
        wait_settled(env, {"a": a, "c": c}, "A and C still paused with more data in Kafka")

        assert not in_flight.errors, in_flight.errors
        assert in_flight.samples > 0
        assert all(v <= IN_FLIGHT_BOUND for v in in_flight.maximum.values()), in_flight.maximum
        assert sandbox.conversion_ids() == {}  # the premise: nothing got through

        sandbox.set_faults(error_503=0.0)
        recovered = all_done(sandbox, produced, env)
        wait_until(recovered, 240, "recovery", on_timeout=progress(sandbox, a))
        wait_until(committed_at_end(env.probe(), produced), 60, "commits at the end offsets")
    assert set(produced.valid.values()) <= set(sandbox.conversion_ids())
    for engine in (a, c):
        end = sigterm_and_time(engine, EXIT_BOUND_S)
        assert end.code == 0, (end, engine.log_tail())
