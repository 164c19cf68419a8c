"""Runs the sandbox's aiohttp app on a socket until told to stop."""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Callable

import structlog
from aiohttp import web

from consumer.sandbox.app import Sandbox
from consumer.sandbox.config import SandboxConfig

log = structlog.get_logger("xconv.sandbox")

# Parsing a 500-event body allocates ~12,000 containers that die by reference counting
# when the request ends. With CPython's default gen-0 threshold (700) that triggers
# dozens of pointless collections per request: measured, about a sixth of the sandbox's
# CPU. A higher threshold keeps cyclic collection for real garbage only.
GC_GEN0_THRESHOLD = 50_000


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


async def serve(
    config: SandboxConfig,
    host: str,
    port: int,
    *,
    ready: Callable[[str], None],
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until ``stop`` is set or SIGINT/SIGTERM; ``ready`` gets the real URL once bound."""
    sandbox = Sandbox(config)
    runner = web.AppRunner(
        sandbox.build_app(), access_log=None, handle_signals=False, shutdown_timeout=2.0
    )
    await runner.setup()
    gc.freeze()  # start-up objects live forever: keep them out of every collection
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = int(runner.addresses[0][1])
        url = _url(host, bound_port)
        log.info("sandbox listening", url=url, accounts=len(config.accounts))
        ready(url)
        await stop.wait()
    finally:
        sandbox.stopping = True
        for sig in installed:
            loop.remove_signal_handler(sig)
        await runner.cleanup()
