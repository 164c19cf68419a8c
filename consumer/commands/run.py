"""``xconv run``: the delivery service."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import gc
import logging
import os
import signal
import sys
import threading
from typing import Any

import structlog

from consumer import __version__
from consumer.commands.common import add_config_argument, load_or_report
from consumer.delivery.engine import DrainReport, Engine
from consumer.observability.health import HealthServer, HealthState, run_event_loop_heartbeat
from consumer.observability.logging import configure_logging
from consumer.observability.metrics import Metrics
from consumer.settings import Settings

HELP = "Consume purchase events from Kafka and deliver them to X Web Conversions."

# Exit codes: 0 clean drain, 2 configuration error, 3 drain timed out (work left in flight,
# it will be redelivered to the next owner of its partitions), 4 the engine failed (a
# supervised task raised, a fatal Kafka error, the dead-letter topic refused for good).
EXIT_DRAIN_TIMEOUT = 3
EXIT_ENGINE_FAILED = 4

log = structlog.get_logger("xconv.run")

# Slack on top of drain_timeout_s + 4 x kafka.call_timeout_s before the shutdown watchdog
# ends the process: covers the final commit request, closing the clients, the summary.
SHUTDOWN_MARGIN_S = 5.0

# The cyclic garbage collector's thresholds while the service runs. The defaults
# (700, 10, 10) collect the youngest generation every 700 container allocations, and
# every fetch allocates thousands (the Kafka messages, held until their batch is done,
# are scanned again at every collection until promoted): 0.7-0.9 µs of CPU per event,
# a fifth of the engine's own cost. The service makes few reference cycles.
GC_THRESHOLDS = (50_000, 20, 100)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)


def run(args: argparse.Namespace) -> int:
    settings = load_or_report(args.config)
    if settings is None:
        return 2
    configure_logging(settings.observability.log_level, settings.observability.log_format)
    tune_gc()
    code = asyncio.run(serve(settings))
    leave(code)
    return code


def tune_gc() -> None:
    """Freeze what start-up allocated (never scanned again) and collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def leave(code: int) -> None:
    """End the process once the work is done, without joining librdkafka's threads.

    Every client was closed within its bound; a worker thread still inside a native call
    would hold the interpreter's exit forever (it joins executor threads). Under a
    profiler (``python -m cProfile``) the process ends normally so the stats get written.
    """
    if sys.getprofile() is None:
        exit_now(code)


def shutdown_bound_s(settings: Settings) -> float:
    """The most a shutdown may take from SIGTERM to exit (documented in operations.md)."""
    return settings.delivery.drain_timeout_s + 4 * settings.kafka.call_timeout_s + SHUTDOWN_MARGIN_S


def exit_now(code: int) -> None:
    """Flush what was logged and end the process without waiting for other threads."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


async def serve(settings: Settings) -> int:
    """Run the engine with metrics/health until SIGTERM or SIGINT, then drain."""
    metrics = Metrics()
    metrics.set_version(__version__)
    health = HealthState(
        stale_after_s=settings.observability.liveness_stale_s,
        ready_when_account_blocked=settings.delivery.on_account_blocked == "dead_letter",
        broker_contact_s=settings.observability.ready_broker_contact_s,
    )
    server = HealthServer(
        metrics, health, settings.observability.http_host, settings.observability.http_port
    )
    await server.start()
    engine = Engine(settings, metrics=metrics, health=health)
    loop = asyncio.get_running_loop()
    bound = shutdown_bound_s(settings)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _stop, engine, sig, loop, bound)
    heartbeat = asyncio.create_task(run_event_loop_heartbeat(health, metrics))
    try:
        report = await engine.run()
    finally:
        heartbeat.cancel()
        await server.stop()
    print_summary(engine)
    code = exit_code(report)
    if report.threads_stuck:
        leave_if_stuck(code)
    return code


def leave_if_stuck(code: int) -> None:
    """A librdkafka call overran its bound at close: its worker thread may never return,
    and ``asyncio.run``'s teardown (which joins the executors' threads) and then the
    interpreter's exit would wait for it forever. Leave now, from inside the loop: the
    work is done and the logs are flushed."""
    log.error("exiting_without_joining_kafka_threads", exit_code=code)
    exit_now(code)


def exit_code(report: DrainReport) -> int:
    """0 clean, 3 drain timed out, 4 the engine failed."""
    if report.failure is not None:
        return EXIT_ENGINE_FAILED
    return 0 if report.clean else EXIT_DRAIN_TIMEOUT


def _stop(
    engine: Engine, sig: signal.Signals, loop: asyncio.AbstractEventLoop, bound_s: float
) -> None:
    log.info("shutdown_requested", signal=sig.name, bound_s=bound_s)
    engine.request_stop()
    _arm_shutdown_watchdog(loop, bound_s)


_watchdog: threading.Timer | None = None


def _arm_shutdown_watchdog(loop: asyncio.AbstractEventLoop, bound_s: float) -> None:
    """A thread that ends the process if shutdown overruns its bound, saying where it hung.

    Every wait in the engine is bounded; this is the net under those bounds, so that a
    shutdown can never hang (a hung pod blocks a rolling update and holds partitions).
    """
    global _watchdog  # noqa: PLW0603 - one watchdog per process
    if _watchdog is not None:
        return

    def overrun() -> None:
        log.error("shutdown_overran", bound_s=bound_s, action="exiting with code 3")
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(_log_task_stacks)
        threading.Event().wait(0.5)
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        exit_now(EXIT_DRAIN_TIMEOUT)

    _watchdog = threading.Timer(bound_s, overrun)
    _watchdog.daemon = True
    _watchdog.start()


def _log_task_stacks() -> None:
    """Code locations only (no values): where each asyncio task waits, the whole chain."""
    for task in asyncio.all_tasks():
        log.error("task_stack", task=task.get_name(), frames=await_chain(task.get_coro()))


def await_chain(coro: object) -> list[str]:
    """``file:line function`` of each coroutine a task is suspended in, outermost first."""
    frames: list[str] = []
    node: Any = coro
    for _ in range(64):
        frame = getattr(node, "cr_frame", None) or getattr(node, "gi_frame", None)
        if frame is not None:
            frames.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
        awaited = getattr(node, "cr_await", None) or getattr(node, "gi_yieldfrom", None)
        if awaited is None:
            if node is not coro:
                frames.append(f"awaiting {type(node).__name__}")
            break
        node = awaited
    return frames


def print_summary(engine: Engine) -> None:
    counts = engine.counts
    sys.stderr.write(
        f"xconv: consumed={counts['consumed']} accepted={counts['accepted']} "
        f"dead_lettered={counts['dead_lettered']}\n"
    )
