"""The Kafka source: consume, pause/resume, rebalance callbacks, commits, contact.

A thin edge over ``confluent_kafka.aio.AIOConsumer`` (injected through a factory, so
the engine's state machines run against an in-memory fake in unit tests):

- Every call that can block has a bound (``kafka.call_timeout_s``; a fetch gets its
  poll time plus room for a rebalance callback). A call that overruns raises
  ``KafkaCallTimeout``; a consume that overruns ends the engine loudly.
- Commits are asynchronous requests issued one at a time through one lock, and only
  ever move forward (the offset tracker hands out a partition's watermark once and
  takes it back when the broker refuses it); librdkafka keeps them in order, and
  ``on_commit`` reports the broker's answer. Nothing ever waits on a synchronous
  commit, so a rebalance can no longer hold the consumer handle (v1's SIGTERM hang).
- The paused state is one flag, applied to the library's own ``assignment()``; after
  every rebalance the partitions just assigned get that state too (a pause does not
  survive a partition moving, and a stale one may survive a revoke and re-assign).
- A *hold* pauses one partition and seeks it back to an offset until the engine
  releases it (a parking partition whose head waits for its account). Holds are kept
  here, with the pause flag: resuming after back-pressure leaves held partitions paused,
  and a revoke drops their holds. A message skipped because of a hold is never taken,
  so the watermark cannot pass it; a failed seek raises (the engine stops loudly).
- ``last_contact`` is when the broker last answered anything (a fetch with messages, a
  commit, a metadata request); readiness fails when it gets too old.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import structlog
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from consumer.errors import XConvError
from consumer.observability.metrics import Metrics

log = structlog.get_logger("xconv.engine")

TP = tuple[str, int]
T = TypeVar("T")


class KafkaCallTimeout(XConvError):
    """A librdkafka call did not return within its bound."""


class ConsumerLike(Protocol):
    """The part of ``AIOConsumer`` the source uses (a fake implements it in tests)."""

    async def subscribe(self, topics: list[str], **kwargs: Any) -> Any: ...
    async def consume(self, *args: Any, **kwargs: Any) -> list[Any]: ...
    async def commit(self, *args: Any, **kwargs: Any) -> Any: ...
    async def pause(self, partitions: list[TopicPartition]) -> Any: ...
    async def seek(self, partition: TopicPartition) -> Any: ...
    async def resume(self, partitions: list[TopicPartition]) -> Any: ...
    async def assignment(self) -> list[TopicPartition]: ...
    async def list_topics(self, *args: Any, **kwargs: Any) -> Any: ...
    async def get_watermark_offsets(self, *args: Any, **kwargs: Any) -> Any: ...
    async def close(self) -> Any: ...


class SourceListener(Protocol):
    """What the engine does when the group changes or the consumer fails."""

    async def on_assigned(self, tps: list[TP]) -> None: ...
    async def on_revoking(self, tps: list[TP]) -> None: ...
    def on_lost(self, tps: list[TP]) -> None: ...
    def on_commit_result(self, tp: TP, offset: int, ok: bool) -> None: ...
    def on_fatal(self, error: str) -> None: ...


ConsumerFactory = Callable[[dict[str, Any]], ConsumerLike]


@dataclass(slots=True)
class Hold:
    """A partition paused at ``offset`` until ``until`` (monotonic), for ``account``."""

    offset: int
    until: float
    account: str
    first_failure: float  # epoch seconds, of the event at ``offset``
    applied: bool = False


def tps_of(partitions: Sequence[TopicPartition]) -> list[TP]:
    return [(p.topic, p.partition) for p in partitions]


class KafkaSource:
    """Owns the consumer handle; the engine owns what the messages mean."""

    def __init__(
        self,
        factory: ConsumerFactory,
        config: dict[str, Any],
        topics: Sequence[str],
        listener: SourceListener,
        *,
        metrics: Metrics,
        call_timeout_s: float,
        callback_allowance_s: float,
        clock: Callable[[], float],
    ) -> None:
        self._factory = factory
        self._config = dict(config)
        self._topics = list(topics)
        self._listener = listener
        self._metrics = metrics
        self.call_timeout_s = call_timeout_s
        # A fetch may run a rebalance callback (which waits, bounded, for batches).
        self._consume_bound_s = callback_allowance_s + 2 * call_timeout_s
        self._clock = clock
        self._consumer: ConsumerLike | None = None
        self._commit_lock = asyncio.Lock()
        self._newly_assigned: list[TP] = []
        self._rebalanced = False
        self.paused = False
        self.holds: dict[TP, Hold] = {}
        self.last_contact = clock()
        self.close_timed_out = False

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        conf = dict(self._config)
        conf["error_cb"] = self._on_error
        conf["on_commit"] = self._on_commit
        self._consumer = self._factory(conf)
        await self._bounded(
            self._consumer.subscribe(
                self._topics,
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            ),
            "subscribe",
        )

    async def close(self) -> None:
        """Leave the group (its final revoke commits through the engine); bounded."""
        if self._consumer is None:
            return
        consumer, self._consumer = self._consumer, None
        try:
            await self._bounded(consumer.close(), "close", grace=False)
        except KafkaCallTimeout:
            self.close_timed_out = True
        except KafkaException as exc:
            log.warning("kafka_close_failed", error=_err_name(exc))

    # -- fetching --------------------------------------------------------------------

    async def fetch(self, max_messages: int, wait_s: float) -> list[Any]:
        """Up to ``max_messages`` messages; serves rebalance callbacks meanwhile."""
        consumer = self._require()
        messages = await self._bounded(
            consumer.consume(num_messages=max(1, max_messages), timeout=wait_s),
            "consume",
            bound=wait_s + self._consume_bound_s,
        )
        if messages:
            self.last_contact = self._clock()
        if self._rebalanced:
            self._rebalanced = False
            await self._sync_after_rebalance()
        return list(messages)

    async def set_paused(self, paused: bool) -> int:
        """Pause or resume every partition of the current assignment; return their count."""
        consumer = self._require()
        parts = await self._bounded(consumer.assignment(), "assignment")
        if parts:
            if paused:
                await self._bounded(consumer.pause(parts), "pause")
            else:
                free = [p for p in parts if (p.topic, p.partition) not in self.holds]
                if free:
                    await self._bounded(consumer.resume(free), "resume")
        self.paused = paused
        self._metrics.partitions_paused.set(len(parts) if paused else 0)
        log.info(
            "partitions_paused" if paused else "partitions_resumed",
            count=len(parts),
        )
        return len(parts)

    def hold(self, tp: TP, offset: int, until: float, account: str, first_failure: float) -> None:
        """Hold ``tp`` back from ``offset``: applied (pause, seek) by ``apply_holds``."""
        self.holds[tp] = Hold(offset, until, account, first_failure)

    async def apply_holds(self) -> None:
        """Pause and seek back every hold not applied yet; a failed seek raises."""
        pending = [(tp, h) for tp, h in self.holds.items() if not h.applied]
        if not pending:
            return
        consumer = self._require()
        await self._bounded(
            consumer.pause([TopicPartition(t, p) for (t, p), _ in pending]), "pause"
        )
        for (t, p), hold in pending:
            await self._bounded(consumer.seek(TopicPartition(t, p, hold.offset)), "seek")
            hold.applied = True
            log.info(
                "partition_held",
                partition=f"{t}[{p}]",
                offset=hold.offset,
                account=hold.account,
                for_s=round(max(0.0, hold.until - self._clock()), 1),
            )

    async def release(self, tps: Sequence[TP]) -> None:
        """End these holds; the partitions resume unless back-pressure pauses them all."""
        released = [tp for tp in tps if self.holds.pop(tp, None) is not None]
        if released and not self.paused:
            parts = [TopicPartition(t, p) for t, p in released]
            await self._bounded(self._require().resume(parts), "resume")

    async def _sync_after_rebalance(self) -> None:
        """Give partitions just assigned the paused state; recount what is paused."""
        new, self._newly_assigned = self._newly_assigned, []
        consumer = self._require()
        parts = [TopicPartition(t, p) for t, p in new]
        if parts and self.paused:
            await self._bounded(consumer.pause(parts), "pause")
        elif parts:
            # A pause flag may outlive a revoke: a re-assigned partition starts clean.
            await self._bounded(consumer.resume(parts), "resume")
        if self.paused:
            assigned = await self._bounded(consumer.assignment(), "assignment")
            self._metrics.partitions_paused.set(len(assigned))

    # -- commits ---------------------------------------------------------------------

    async def commit(self, marks: dict[TP, int]) -> bool:
        """Ask the broker to store ``marks`` (asynchronously); False if it could not ask."""
        if not marks or self._consumer is None:
            return False
        offsets = [TopicPartition(t, p, off) for (t, p), off in marks.items()]
        async with self._commit_lock:
            try:
                await self._bounded(
                    self._consumer.commit(offsets=offsets, asynchronous=True), "commit"
                )
            except (KafkaException, KafkaCallTimeout) as exc:
                self._metrics.commits_total.labels(outcome="failed").inc()
                log.warning("commit_failed", error=_err_name(exc), partitions=len(marks))
                return False
        return True

    async def _on_commit(self, err: Any, partitions: list[TopicPartition]) -> None:
        ok_any = False
        for p in partitions:
            ok = err is None and p.error is None
            ok_any = ok_any or ok
            self._listener.on_commit_result((p.topic, p.partition), p.offset, ok)
        if err is not None and not partitions:
            log.warning("commit_failed", error=_err_name(err))
        self._metrics.commits_total.labels(outcome="ok" if ok_any else "failed").inc()
        if ok_any:
            self.last_contact = self._clock()
        elif err is not None:
            log.warning("commit_refused", error=_err_name(err), partitions=len(partitions))

    # -- broker contact and lag ------------------------------------------------------

    async def check_contact(self) -> bool:
        """One metadata request: does the broker answer? Updates ``last_contact``."""
        consumer = self._require()
        try:
            await self._bounded(
                consumer.list_topics(topic=self._topics[0], timeout=self.call_timeout_s),
                "list_topics",
                bound=self.call_timeout_s + 1.0,
            )
        except (KafkaException, KafkaCallTimeout) as exc:
            log.debug("broker_contact_failed", error=_err_name(exc))
            return False
        self.last_contact = self._clock()
        return True

    async def high_watermarks(self, tps: Sequence[TP]) -> dict[TP, int]:
        """Cached high watermarks (from fetch responses) of ``tps``; missing ones skipped."""
        consumer = self._require()
        out: dict[TP, int] = {}
        for tp in tps:
            try:
                _, high = await self._bounded(
                    consumer.get_watermark_offsets(TopicPartition(*tp), timeout=1, cached=True),
                    "get_watermark_offsets",
                )
            except (KafkaException, KafkaCallTimeout):
                continue
            if high >= 0:
                out[tp] = int(high)
        return out

    # -- rebalance callbacks (coroutines run by AIOConsumer on the loop) -------------

    async def _on_assign(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        tps = tps_of(partitions)
        if self.paused and partitions:
            # Before the library starts fetching them: not one message over the bound.
            await self._bounded(self._require().pause(partitions), "pause")
        await self._listener.on_assigned(tps)
        self._newly_assigned.extend(tps)
        self._rebalanced = True
        log.info("partitions_assigned", partitions=[f"{t}[{p}]" for t, p in tps])

    async def _on_revoke(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        tps = tps_of(partitions)
        self._rebalanced = True
        for tp in tps:
            self.holds.pop(tp, None)
        await self._listener.on_revoking(tps)
        log.info("partitions_revoked", partitions=[f"{t}[{p}]" for t, p in tps])

    async def _on_lost(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        tps = tps_of(partitions)
        self._rebalanced = True
        for tp in tps:
            self.holds.pop(tp, None)
        self._listener.on_lost(tps)
        log.warning("partitions_lost", partitions=[f"{t}[{p}]" for t, p in tps])

    async def _on_error(self, err: KafkaError) -> None:
        name = _err_name(err)
        self._metrics.kafka_errors_total.labels(client="consumer", error=name).inc()
        fatal = bool(err.fatal()) if hasattr(err, "fatal") else False
        log.warning("kafka_error", client="consumer", error=name, fatal=fatal)
        if fatal:
            self._listener.on_fatal(f"fatal consumer error {name}")

    # -- helpers ---------------------------------------------------------------------

    def _require(self) -> ConsumerLike:
        if self._consumer is None:
            raise RuntimeError("the Kafka source is not started (or already closed)")
        return self._consumer

    async def _bounded(
        self, call: Awaitable[T], what: str, bound: float | None = None, *, grace: bool = True
    ) -> T:
        """Await ``call`` for at most its bound; never wait for its cancellation.

        A process stall (a paused container, SIGSTOP, a long GC) makes every clock jump,
        so a call that overruns once gets one more bound (``grace``) with a warning before
        it counts as hung. ``asyncio.wait_for`` would then wait until the call finished
        cancelling, which a worker thread stuck inside librdkafka never does: the task is
        cancelled and left behind instead (the process exits without joining threads).
        An abandoned fetch is never followed by another one: its failure stops the engine,
        so no message it might still return can be skipped.
        """
        limit = self.call_timeout_s if bound is None else bound
        task = asyncio.ensure_future(call)
        done, _ = await asyncio.wait({task}, timeout=limit)
        if not done and grace:
            log.warning("kafka_call_slow", call=what, bound_s=round(limit, 1))
            done, _ = await asyncio.wait({task}, timeout=limit)
        if task in done:
            return task.result()
        task.cancel()
        task.add_done_callback(_consume_outcome)
        total = limit * (2 if grace else 1)
        log.error("kafka_call_timed_out", call=what, bound_s=round(total, 1))
        raise KafkaCallTimeout(f"{what} did not return within {total:.1f}s")


def _consume_outcome(task: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned call's outcome so asyncio does not report it as lost."""
    if not task.cancelled():
        task.exception()


def _err_name(exc: object) -> str:
    """A stable, PII-free name for a Kafka error (never the message's payload)."""
    err: Any = exc.args[0] if isinstance(exc, KafkaException) and exc.args else exc
    name = getattr(err, "name", None)
    if callable(name):
        with contextlib.suppress(Exception):
            return str(name())
    return type(exc).__name__
