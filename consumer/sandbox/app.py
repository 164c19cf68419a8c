"""aiohttp handlers: thin glue between HTTP and the pure parts (auth, validation, limits, faults).

Order of checks on the endpoint, documented in docs/sandbox.md: route and version,
pixel (404), per-account status override, injected fault, authentication (401), request
budget (429), content type and body rules (400 / 404), events budget (429), accepted (200).
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Final

import orjson
import structlog
from aiohttp import web
from pydantic import ValidationError

from consumer.sandbox.auth import Authenticator
from consumer.sandbox.config import AccountConfig, FaultConfig, SandboxConfig
from consumer.sandbox.faults import FaultInjector, FaultKind, html_error_page, processed_count
from consumer.sandbox.ratelimit import FixedWindowLimiter
from consumer.sandbox.state import SandboxState
from consumer.sandbox.validation import (
    INVALID,
    Problem,
    accept_body,
    accepted_event_ids,
    validate_body,
)

log = structlog.get_logger("xconv.sandbox")

ENDPOINT: Final = "/{version}/measurement/conversions/{pixel_id}"
NOT_AUTHENTICATED: Final = "This request is not properly authenticated"
DROPPED: Final = 0  # pseudo status in stats for answers never sent
DROPPED_STATUS: Final = 499

# Status -> (code, message) used by status overrides and faults.
_STATUS_ERRORS: Final[dict[int, tuple[str, str]]] = {
    400: ("INVALID_PARAMETER", "Invalid request"),
    401: ("UNAUTHORIZED_ACCESS", NOT_AUTHENTICATED),
    403: (
        "UNAUTHORIZED_CLIENT_APPLICATION",
        "The client application making this request does not have access to Twitter Ads API",
    ),
    404: ("NOT_FOUND", "The requested resource could not be found or you do not have access"),
    429: ("TOO_MANY_REQUESTS", "Rate limit exceeded"),
    500: ("INTERNAL_ERROR", "Internal error"),
    503: ("SERVICE_UNAVAILABLE", "Service unavailable due to request timeout"),
}

# Reason phrases for the HTML error pages of ``error_page_html``.
_STATUS_REASONS: Final[dict[int, str]] = {
    401: "Authorization Required",
    403: "Forbidden",
    404: "Not Found",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Temporarily Unavailable",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_body(errors: list[dict[str, str]], params: dict[str, Any]) -> bytes:
    return orjson.dumps({"errors": errors, "request": {"params": params}})


def error_response(
    status: int,
    code: str,
    message: str,
    params: dict[str, Any],
    *,
    parameter: str = "",
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = error_body([{"code": code, "message": message, "parameter": parameter}], params)
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")


class Sandbox:
    """The sandbox's state and handlers; one instance per server."""

    def __init__(
        self,
        config: SandboxConfig,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._clock = clock
        self.accounts_by_pixel: dict[str, AccountConfig] = {a.pixel_id: a for a in config.accounts}
        self.event_ids = {
            a.account_id: accepted_event_ids(a.pixel_id, a.event_ids) for a in config.accounts
        }
        self.limiters = {
            a.account_id: FixedWindowLimiter(a.rate_limit, clock) for a in config.accounts
        }
        self.auth = Authenticator(
            config.accounts,
            skew_s=config.timestamp_skew_s,
            nonce_capacity=config.nonce_capacity,
            clock=clock,
        )
        overrides = {
            a.account_id: a.status_override
            for a in config.accounts
            if a.status_override is not None
        }
        self.initial_faults = config.faults.model_copy(
            update={"status_overrides": {**overrides, **config.faults.status_overrides}}
        )
        self.faults = FaultInjector(self.initial_faults, config.seed)
        self.state = SandboxState(config.recent_conversions)
        self.versions = frozenset(config.versions)
        self.stopping = False

    # ---------------------------------------------------------------- app
    def build_app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.config.max_body_bytes, middlewares=[self._errors_middleware]
        )
        app.router.add_post(ENDPOINT, self.conversions)
        app.router.add_get("/_sandbox/health", self.health)
        app.router.add_get("/_sandbox/stats", self.stats)
        app.router.add_get("/_sandbox/conversion-ids", self.conversion_ids)
        app.router.add_get("/_sandbox/conversions", self.recent_conversions)
        app.router.add_post("/_sandbox/reset", self.reset)
        app.router.add_get("/_sandbox/faults", self.get_faults)
        app.router.add_post("/_sandbox/faults", self.set_faults)
        return app

    @web.middleware
    async def _errors_middleware(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        """Every answer in X's error format: unknown routes, oversize bodies, crashes."""
        try:
            return await handler(request)
        except _Dropped:
            return web.Response(status=DROPPED_STATUS)  # written nowhere: transport is gone
        except web.HTTPException as exc:
            if exc.status in (404, 405):
                return error_response(404, "ROUTE_NOT_FOUND", "Sorry, that page does not exist", {})
            if exc.status < 400:
                raise
            code, message = _STATUS_ERRORS.get(exc.status, ("INVALID_PARAMETER", exc.reason))
            return error_response(exc.status, code, message, {})
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("sandbox handler failed", path=request.path)
            return error_response(500, "INTERNAL_ERROR", "Internal error", {})

    # ---------------------------------------------------------------- endpoint
    def _rate_headers(
        self, account: AccountConfig, decision_headers: dict[str, str] | None
    ) -> dict[str, str] | None:
        settings = account.rate_limit
        if not (settings.enabled and settings.send_headers):
            return None
        if decision_headers is not None:
            return decision_headers
        return self.limiters[account.account_id].peek().headers()

    def _answer(
        self,
        account: AccountConfig | None,
        response: web.Response,
        rate_headers: dict[str, str] | None,
    ) -> web.Response:
        if account is not None:
            headers = self._rate_headers(account, rate_headers)
            if headers:
                response.headers.update(headers)
            overrides = self.faults.settings.header_overrides
            if overrides:
                response.headers.update(overrides)
        self.state.record_status(response.status, account.account_id if account else None)
        return response

    async def conversions(self, request: web.Request) -> web.StreamResponse:
        version = request.match_info["version"]
        pixel_id = request.match_info["pixel_id"]
        if version not in self.versions:
            self.state.record_status(404, None)
            return error_response(404, "ROUTE_NOT_FOUND", "Sorry, that page does not exist", {})
        account = self.accounts_by_pixel.get(pixel_id)
        if account is None:
            self.state.record_status(404, None)
            return error_response(
                404,
                "NOT_FOUND",
                f"pixel_id ({pixel_id[:64]}) does not exist",
                {"pixel_id": pixel_id[:64]},
                parameter="pixel_id",
            )
        account_id = account.account_id
        params = {"account_id": account_id}
        body = await request.read()

        override = self.faults.status_override(account_id)
        if override is not None:
            if self.faults.settings.error_page_html:
                page = html_error_page(override, _STATUS_REASONS.get(override, "Error"))
                html = web.Response(status=override, text=page, content_type="text/html")
                return self._answer(account, html, None)
            code, message = _STATUS_ERRORS.get(override, ("INTERNAL_ERROR", "Forced status"))
            return self._answer(account, error_response(override, code, message, params), None)

        decision = self.faults.decide()
        if decision.latency_s > 0:
            await asyncio.sleep(decision.latency_s)
        if decision.kind is not FaultKind.NONE:
            self.state.faults[decision.kind.value] += 1
            log.debug("sandbox fault", account_id=account_id, fault=decision.kind.value)
            injected = await self._inject(request, account, decision.kind, params)
            if injected is not None:
                return injected

        auth = self._authenticate(request, account)
        if not auth.ok:
            failure = auth.failure.value if auth.failure else "unknown"
            self.state.auth_failures[failure] += 1
            log.debug("sandbox auth failed", account_id=account_id, reason=failure)
            return self._answer(
                account,
                error_response(401, "UNAUTHORIZED_ACCESS", NOT_AUTHENTICATED, params),
                None,
            )
        if account_id not in auth.accounts:
            self.state.auth_failures["no_account_access"] += 1
            return self._answer(
                account,
                error_response(
                    404,
                    "NOT_FOUND",
                    f"User does not have access to account {account_id}",
                    params,
                ),
                None,
            )

        limiter = self.limiters[account_id]
        budget = limiter.acquire_request()
        if not budget.allowed:
            return self._too_many(account, params, budget.headers())

        if request.content_type != "application/json":
            return self._answer(
                account,
                error_response(
                    400,
                    INVALID,
                    "Content-Type must be application/json",
                    params,
                    parameter="Content-Type",
                ),
                budget.headers(),
            )
        if self.config.validation:
            result = validate_body(
                body,
                event_ids=self.event_ids[account_id],
                reject_conversion_ids=self.faults.reject_ids,
            )
        else:
            result = accept_body(body)
        if not result.ok:
            problems = result.answered_problems()
            log.debug(
                "sandbox rejected request",
                account_id=account_id,
                status=result.status,
                problems=len(problems),
            )
            return self._answer(
                account, self._problems(result.status, problems, params), budget.headers()
            )

        count = result.count
        events = limiter.acquire_events(count)
        if not events.allowed:
            return self._too_many(account, params, events.headers())
        self.state.record_batch(
            account_id, account.pixel_id, count, result.conversion_ids, now=self._clock(), body=body
        )
        processed = processed_count(count, self.faults.settings.processed_shortfall)
        if processed < count:
            self.state.faults["partial_200"] += 1
            self.state.conversions_unprocessed += count - processed
        payload = {
            "request": {"params": params},
            "data": {"conversions_processed": processed, "debug_id": str(uuid.uuid4())},
        }
        log.debug("sandbox accepted request", account_id=account_id, conversions=count)
        return self._answer(account, _json(payload), events.headers())

    def _authenticate(self, request: web.Request, account: AccountConfig) -> Any:
        pixel_token = request.headers.get("X-Pixel-Token")
        if pixel_token is not None:
            return self.auth.verify_pixel_token(account.account_id, pixel_token)
        base = self.config.public_base_url
        if base is None:
            base = f"{request.scheme}://{request.host}"
        uri = base.rstrip("/") + request.raw_path
        return self.auth.verify_oauth(request.method, uri, request.headers.get("Authorization"))

    def _too_many(
        self, account: AccountConfig, params: dict[str, Any], headers: dict[str, str]
    ) -> web.Response:
        self.state.account(account.account_id).rate_limited += 1
        code, message = _STATUS_ERRORS[429]
        return self._answer(account, error_response(429, code, message, params), headers)

    @staticmethod
    def _problems(status: int, problems: list[Problem], params: dict[str, Any]) -> web.Response:
        body = error_body([p.as_json() for p in problems], params)
        return web.Response(status=status, body=body, content_type="application/json")

    async def _inject(
        self,
        request: web.Request,
        account: AccountConfig,
        kind: FaultKind,
        params: dict[str, Any],
    ) -> web.StreamResponse | None:
        settings = self.faults.settings
        if kind is FaultKind.ERROR_500:
            code, message = _STATUS_ERRORS[500]
            return self._answer(account, error_response(500, code, message, params), None)
        if kind in (FaultKind.ERROR_503, FaultKind.ERROR_503_RETRY_AFTER):
            code, message = _STATUS_ERRORS[503]
            headers = (
                {"Retry-After": str(settings.retry_after_s)}
                if kind is FaultKind.ERROR_503_RETRY_AFTER
                else None
            )
            response = error_response(503, code, message, params, headers=headers)
            return self._answer(account, response, None)
        if kind is FaultKind.BURST_429:
            self.state.account(account.account_id).rate_limited += 1
            limit = account.rate_limit.requests_per_window
            reset = math.ceil(self._clock() + settings.burst_429_reset_s)
            headers = {
                "x-rate-limit-limit": str(limit),
                "x-rate-limit-remaining": "0",
                "x-rate-limit-reset": str(reset),
            }
            code, message = _STATUS_ERRORS[429]
            response = error_response(429, code, message, params, headers=headers)
            # An injected burst always carries its reset headers, even where headers are off.
            self.state.record_status(429, account.account_id)
            return response
        if kind is FaultKind.HANG:
            await self._hang(request, settings.hang_s)
        self._drop(request, account)
        raise _Dropped

    async def _hang(self, request: web.Request, hang_s: float) -> None:
        """Answer nothing until the client gives up, the time is over or the server stops."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + hang_s
        while not self.stopping:
            transport = request.transport
            remaining = deadline - loop.time()
            if transport is None or transport.is_closing() or remaining <= 0:
                return
            await asyncio.sleep(min(0.05, remaining))

    def _drop(self, request: web.Request, account: AccountConfig) -> None:
        self.state.record_status(DROPPED, account.account_id)
        transport = request.transport
        if transport is not None:
            transport.abort()

    # ---------------------------------------------------------------- admin
    async def health(self, request: web.Request) -> web.Response:
        return _json({"status": "ok", "accounts": len(self.config.accounts)})

    async def stats(self, request: web.Request) -> web.Response:
        return _json(self.state.as_json())

    async def conversion_ids(self, request: web.Request) -> web.Response:
        ids = self.state.conversion_ids(request.query.get("account_id"))
        return _json({"count": len(ids), "conversion_ids": ids})

    async def recent_conversions(self, request: web.Request) -> web.Response:
        try:
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            return error_response(400, INVALID, "limit must be an integer", {}, parameter="limit")
        picked = self.state.recent_conversions(limit, request.query.get("account_id"))
        return _json(
            {
                "conversions": [
                    {
                        "account_id": item.account_id,
                        "pixel_id": item.pixel_id,
                        "received_at": item.received_at,
                        "conversion": item.conversion,
                    }
                    for item in picked
                ]
            }
        )

    async def reset(self, request: web.Request) -> web.Response:
        """Counters, ids, recent conversions, rate windows and faults back to the start."""
        self.state.reset()
        for limiter in self.limiters.values():
            limiter.reset()
        self.faults.configure(self.initial_faults, self.config.seed)
        log.info("sandbox reset")
        return _json({"status": "reset"})

    def _faults_json(self) -> dict[str, Any]:
        return {"seed": self.faults.seed, **self.faults.settings.model_dump()}

    async def get_faults(self, request: web.Request) -> web.Response:
        return _json(self._faults_json())

    async def set_faults(self, request: web.Request) -> web.Response:
        """Partial update: keys given replace the current ones; ``seed`` restarts the draws."""
        try:
            update = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return error_response(400, INVALID, "Request body is not valid JSON", {})
        if not isinstance(update, dict):
            return error_response(400, INVALID, "Send a JSON object of fault settings", {})
        seed = update.pop("seed", None)
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            return error_response(400, INVALID, "seed must be an integer", {}, parameter="seed")
        try:
            settings = FaultConfig.model_validate({**self.faults.settings.model_dump(), **update})
        except ValidationError as exc:
            errors = [
                {
                    "code": INVALID,
                    "message": str(error["msg"]),
                    "parameter": ".".join(str(p) for p in error["loc"]),
                }
                for error in exc.errors()
            ]
            return web.Response(
                status=400, body=error_body(errors, {}), content_type="application/json"
            )
        self.faults.configure(settings, seed)
        log.info("sandbox faults changed", keys=sorted(update), seed_given=seed is not None)
        return _json(self._faults_json())


class _Dropped(Exception):
    """Raised after the connection was aborted: there is nobody left to answer."""
