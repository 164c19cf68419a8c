"""Liveness and readiness: a pure state machine plus the small HTTP server that reports it.

``HealthState`` holds what the engine tells it (heartbeats, assignment, blocked accounts)
and answers ``live()`` / ``ready()`` for a given monotonic time; it does no I/O, so tests
drive it with a fake clock. ``HealthServer`` serves ``/metrics``, ``/healthz`` and
``/readyz`` over aiohttp. ``run_event_loop_heartbeat`` is the task that proves the event
loop still turns.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Final

import orjson
from aiohttp import web

from consumer.observability.metrics import Metrics

EVENT_LOOP: Final = "event_loop"
CONSUME_LOOP: Final = "consume_loop"

Detail = dict[str, Any]


class HealthState:
    """What the probes report; fed by the engine, read by :class:`HealthServer`.

    - live: every registered component beat at most ``stale_after_s`` ago. A component
      is registered by :meth:`register` (counts as a beat, a start-up grace) or by its
      first :meth:`beat`; :meth:`unregister` it when its loop ends on purpose.
    - live also fails once the engine has failed (a supervised task raised): the
      process is about to exit non-zero, and a restart is the remedy.
    - ready: live, started, not draining, the broker answered within
      ``broker_contact_s``, partitions assigned (or waiting for an assignment as an
      idle group member), and, unless ``ready_when_account_blocked``, no account
      blocked on its credentials or access (401/403/404). A broker outage fails
      readiness only: liveness stays up, because a restart does not fix a broker.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        stale_after_s: float = 30.0,
        ready_when_account_blocked: bool = False,
        broker_contact_s: float = 60.0,
    ) -> None:
        if stale_after_s <= 0:
            raise ValueError("stale_after_s must be positive")
        self._clock = clock
        self.stale_after_s = stale_after_s
        self.ready_when_account_blocked = ready_when_account_blocked
        self._beats: dict[str, float] = {}
        self._started = False
        self._draining = False
        self._assigned = False
        self._waiting = False
        self._blocked: dict[str, str] = {}
        self.broker_contact_s = broker_contact_s
        self._broker_contact: float | None = None
        self._failed: str | None = None

    # --- fed by the engine ------------------------------------------------------------

    def register(self, component: str) -> None:
        """Expect beats from ``component`` from now on; now counts as its first beat."""
        self._beats[component] = self._clock()

    def unregister(self, component: str) -> None:
        """Stop expecting beats (the loop ended on purpose, e.g. during shutdown)."""
        self._beats.pop(component, None)

    def beat(self, component: str) -> None:
        """Record that ``component``'s loop made progress now."""
        self._beats[component] = self._clock()

    def set_started(self, started: bool = True) -> None:
        """The consumer is created and subscribed (set once start-up is complete)."""
        self._started = started

    def set_draining(self, draining: bool = True) -> None:
        """Shutdown has begun: not ready any more, still live while draining."""
        self._draining = draining

    def set_assigned(self, assigned: bool) -> None:
        """Whether this member currently owns at least one partition."""
        self._assigned = assigned

    def set_waiting_for_assignment(self, waiting: bool) -> None:
        """Joined the group and waiting for (or idle without) partitions: a normal state."""
        self._waiting = waiting

    def broker_contact(self, at: float) -> None:
        """The broker last answered at ``at`` (monotonic, the same clock as this state's)."""
        self._broker_contact = at

    def set_failed(self, reason: str) -> None:
        """The engine failed and is stopping: liveness and readiness fail from now on."""
        if self._failed is None:
            self._failed = reason

    def set_account_blocked(self, account: str, reason: str | None) -> None:
        """Mark ``account`` blocked with a PII-free reason (e.g. ``"401"``), or clear it."""
        if reason is None:
            self._blocked.pop(account, None)
        else:
            self._blocked[account] = reason

    @property
    def blocked_accounts(self) -> dict[str, str]:
        """Copy of account id -> reason for every blocked account."""
        return dict(self._blocked)

    # --- read by the probes ----------------------------------------------------------

    def live(self, now: float | None = None) -> tuple[bool, Detail]:
        """(ok, detail): ok when no registered component is stale at ``now``."""
        at = self._clock() if now is None else now
        components: dict[str, Detail] = {}
        stale: list[str] = []
        for name, last in sorted(self._beats.items()):
            age = max(0.0, at - last)
            ok = age <= self.stale_after_s
            components[name] = {"ok": ok, "age_s": round(age, 3)}
            if not ok:
                stale.append(name)
        reasons = [f"stale:{name}" for name in stale]
        if self._failed is not None:
            reasons.append("engine_failed")
        detail: Detail = {
            "status": "ok" if not reasons else "fail",
            "components": components,
            "stale_after_s": self.stale_after_s,
        }
        if self._failed is not None:
            detail["failure"] = self._failed
        if reasons:
            detail["reasons"] = reasons
        return not reasons, detail

    def ready(self, now: float | None = None) -> tuple[bool, Detail]:
        """(ok, detail): live and able to do its job; ``reasons`` lists what is missing."""
        at = self._clock() if now is None else now
        is_live, live_detail = self.live(at)
        reasons: list[str] = list(live_detail.get("reasons", []))
        if not self._started:
            reasons.append("not_started")
        if self._draining:
            reasons.append("draining")
        if not (self._assigned or self._waiting):
            reasons.append("no_assignment")
        contact_age = None if self._broker_contact is None else max(0.0, at - self._broker_contact)
        if self._started and contact_age is not None and contact_age > self.broker_contact_s:
            reasons.append("broker_unreachable")
        if self._blocked and not self.ready_when_account_blocked:
            reasons.extend(f"account_blocked:{acct}" for acct in sorted(self._blocked))
        ok = is_live and not reasons
        detail: Detail = {
            "status": "ok" if ok else "fail",
            "started": self._started,
            "draining": self._draining,
            "assigned": self._assigned,
            "waiting_for_assignment": self._waiting,
            "blocked_accounts": dict(sorted(self._blocked.items())),
            "broker_contact_age_s": None if contact_age is None else round(contact_age, 3),
            "components": live_detail["components"],
        }
        if reasons:
            detail["reasons"] = reasons
        return ok, detail


class HealthServer:
    """aiohttp server for ``/metrics``, ``/healthz`` and ``/readyz``.

    ``port=0`` binds a free port; read the bound one from :attr:`port` after :meth:`start`.
    Access logging is off: probes every few seconds would drown the useful lines.
    """

    def __init__(
        self, metrics: Metrics, health: HealthState, host: str = "127.0.0.1", port: int = 9464
    ) -> None:
        self.metrics = metrics
        self.health = health
        self.host = host
        self._requested_port = port
        self._bound_port: int | None = None
        self._runner: web.AppRunner | None = None

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`), else the configured one."""
        return self._bound_port if self._bound_port is not None else self._requested_port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:9464``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def make_app(self) -> web.Application:
        """The aiohttp application (exposed so it can be mounted or tested in-process)."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        return app

    async def start(self) -> None:
        """Bind and serve; raises ``OSError`` if the port is taken."""
        if self._runner is not None:
            return
        runner = web.AppRunner(self.make_app(), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self._requested_port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        addresses = runner.addresses
        if addresses:
            self._bound_port = int(addresses[0][1])

    async def stop(self) -> None:
        """Close the listener and open connections; safe to call twice."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.render(), headers={"Content-Type": self.metrics.content_type}
        )

    async def _healthz(self, _: web.Request) -> web.Response:
        return _probe_response(*self.health.live())

    async def _readyz(self, _: web.Request) -> web.Response:
        return _probe_response(*self.health.ready())


def _probe_response(ok: bool, detail: Detail) -> web.Response:
    return web.Response(
        status=200 if ok else 503,
        body=orjson.dumps(detail),
        content_type="application/json",
    )


async def run_event_loop_heartbeat(
    health: HealthState,
    metrics: Metrics | None = None,
    *,
    interval_s: float = 1.0,
    component: str = EVENT_LOOP,
) -> None:
    """Beat ``component`` every ``interval_s`` and record how late each wake-up was.

    A blocked event loop both stops the beats (liveness fails after the staleness bound)
    and shows up as lag in ``xconv_event_loop_lag_seconds``. Runs until cancelled.
    """
    loop = asyncio.get_running_loop()
    health.register(component)
    try:
        while True:
            due = loop.time() + interval_s
            await asyncio.sleep(interval_s)
            lag = max(0.0, loop.time() - due)
            if metrics is not None:
                metrics.event_loop_lag_seconds.set(lag)
            health.beat(component)
    finally:
        health.unregister(component)
