"""Every engine task is supervised: an unexpected exception ends the engine loudly.

v1 only logged a crashed delivery task: its offsets never finished, its buffer slots
were never released and the probes kept saying 200, a partition held in silence. Here
a task either returns (its outcome was recorded: delivered, dead-lettered, retried or
abandoned on purpose) or its exception becomes the engine's failure: logged with the
task's kind and batch id, counted, liveness fails, the engine stops fetching and exits
non-zero. Nothing commits past the failed task's events, because they never finish.

Like ``asyncio.TaskGroup``, but tasks come and go for the engine's whole life and the
first failure is kept rather than cancelling siblings at once: the engine drains what
it can (bounded), so healthy batches still finish and commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import structlog

log = structlog.get_logger("xconv.engine")


@dataclass(frozen=True, slots=True)
class TaskFailure:
    """What ended the engine: the task's kind, its batch (if any) and the error."""

    kind: str
    batch_id: str | None
    error: BaseException

    def describe(self) -> str:
        return f"{self.kind} task failed: {type(self.error).__name__}: {self.error}"


class Supervisor:
    """Spawns tasks, keeps the set of live ones, reports the first failure once."""

    def __init__(self, on_failure: Callable[[TaskFailure], None]) -> None:
        self._on_failure = on_failure
        self._tasks: set[asyncio.Task[Any]] = set()
        self.failure: TaskFailure | None = None

    def spawn(
        self, coro: Coroutine[Any, Any, Any], kind: str, batch_id: str | None = None
    ) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=f"xconv-{kind}")
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._done(t, kind, batch_id))
        return task

    def _done(self, task: asyncio.Task[Any], kind: str, batch_id: str | None) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            return
        self.fail(TaskFailure(kind, batch_id, error))

    def fail(self, failure: TaskFailure) -> None:
        """Record a failure (the first one wins) and tell the engine."""
        log.error(
            "engine_task_failed",
            task=failure.kind,
            batch_id=failure.batch_id,
            error=f"{type(failure.error).__name__}: {failure.error}",
            exc_info=failure.error,
        )
        if self.failure is None:
            self.failure = failure
        self._on_failure(failure)

    async def wait(self, within_s: float) -> set[asyncio.Task[Any]]:
        """Wait up to ``within_s`` for every live task (new ones included); return the rest."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while self._tasks:
            left = deadline - loop.time()
            if left <= 0:
                break
            await asyncio.wait(set(self._tasks), timeout=left)
        return set(self._tasks)

    async def cancel_all(self) -> None:
        tasks = set(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
