"""``xconv run``: the delivery service."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)


def run(args: argparse.Namespace) -> int:
    settings = load_or_report(args.config)
    if settings is None:
        return 2
    configure_logging(settings.observability.log_level, settings.observability.log_format)
    return asyncio.run(serve(settings))


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
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _stop, engine, sig)
    heartbeat = asyncio.create_task(run_event_loop_heartbeat(health, metrics))
    try:
        report = await engine.run()
    finally:
        heartbeat.cancel()
        await server.stop()
    print_summary(engine)
    code = exit_code(report)
    if report.threads_stuck:
        # A librdkafka call overran its bound: its worker thread may never return, and
        # the interpreter would wait for it at exit. Leave now, loudly, with the code.
        log.error("exiting_without_joining_kafka_threads", exit_code=code)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def exit_code(report: DrainReport) -> int:
    """0 clean, 3 drain timed out, 4 the engine failed."""
    if report.failure is not None:
        return EXIT_ENGINE_FAILED
    return 0 if report.clean else EXIT_DRAIN_TIMEOUT


def _stop(engine: Engine, sig: signal.Signals) -> None:
    log.info("shutdown_requested", signal=sig.name)
    engine.request_stop()


def print_summary(engine: Engine) -> None:
    counts = engine.counts
    sys.stderr.write(
        f"xconv: consumed={counts['consumed']} accepted={counts['accepted']} "
        f"dead_lettered={counts['dead_lettered']}\n"
    )
