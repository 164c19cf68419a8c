"""Sandbox configuration: accounts, rate limits, faults; read from JSON or TOML.

Without a file the sandbox serves one demo account, the one of X's reference page
(account ``18ce552mlaq``, pixel ``oka17``, event tag ``ol288``) with the demo
credentials below. They are published test values, not secrets.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from consumer.errors import ConfigError

DEMO_ACCOUNT_ID = "18ce552mlaq"
DEMO_PIXEL_ID = "oka17"
DEMO_EVENT_ID = "ol288"
DEMO_CONSUMER_KEY = "xconvsandboxdemoconsumerkey"
DEMO_CONSUMER_SECRET = "xconv-sandbox-demo-consumer-secret"  # noqa: S105 - published demo value
DEMO_ACCESS_TOKEN = "1000000000000000001-xconvsandboxdemoaccesstoken"  # noqa: S105
DEMO_ACCESS_TOKEN_SECRET = "xconv-sandbox-demo-access-token-secret"  # noqa: S105
DEMO_PIXEL_TOKEN = "xconv-sandbox-demo-pixel-token"  # noqa: S105

_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token

FAULT_SHARES = ("error_500", "error_503", "error_503_retry_after", "burst_429", "hang", "drop")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RateLimitConfig(_Strict):
    """Per-account budget over a fixed window, as X's 15-minute windows."""

    enabled: bool = True
    send_headers: bool = True
    requests_per_window: int = Field(default=100_000, ge=1)
    events_per_window: int = Field(default=0, ge=0)  # 0 = no events budget
    window_s: float = Field(default=900.0, gt=0)


class AccountConfig(_Strict):
    account_id: str = Field(min_length=1)
    pixel_id: str = Field(min_length=1)
    event_ids: list[str] = Field(min_length=1)
    consumer_key: str = Field(min_length=1)
    consumer_secret: str = Field(min_length=1)
    access_token: str = Field(min_length=1)
    access_token_secret: str = Field(min_length=1)
    pixel_token: str | None = None
    rate_limit: RateLimitConfig = RateLimitConfig()
    status_override: int | None = Field(default=None, ge=100, le=599)


class FaultConfig(_Strict):
    """Shares are probabilities per endpoint request; one draw picks at most one fault."""

    error_500: float = Field(default=0.0, ge=0, le=1)
    error_503: float = Field(default=0.0, ge=0, le=1)
    error_503_retry_after: float = Field(default=0.0, ge=0, le=1)
    retry_after_s: int = Field(default=1, ge=0)
    burst_429: float = Field(default=0.0, ge=0, le=1)
    burst_429_reset_s: int = Field(default=2, ge=0)
    hang: float = Field(default=0.0, ge=0, le=1)
    hang_s: float = Field(default=3600.0, ge=0)
    drop: float = Field(default=0.0, ge=0, le=1)
    latency_ms: float = Field(default=0.0, ge=0)
    latency_jitter_ms: float = Field(default=0.0, ge=0)
    reject_conversion_ids: list[str] = Field(default_factory=list)
    status_overrides: dict[str, int] = Field(default_factory=dict)
    # Status overrides answer with an HTML page (a proxy's or a wrong base URL's answer)
    # instead of X's JSON error body.
    error_page_html: bool = False
    # Set on every endpoint answer of a known pixel, after the rate-limit headers (so they
    # replace them): odd or hostile values such as ``x-rate-limit-remaining: inf``.
    header_overrides: dict[str, str] = Field(default_factory=dict)
    # Accepted answers report ``conversions_processed`` this much below the number sent
    # (never below 0); the conversions are still recorded as accepted.
    processed_shortfall: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _shares_fit(self) -> Self:
        total = sum(getattr(self, name) for name in FAULT_SHARES)
        if total > 1.0 + 1e-9:
            raise ValueError(f"fault shares add up to {total:g}, more than 1")
        for account_id, status in self.status_overrides.items():
            if not 100 <= status <= 599:
                raise ValueError(f"status_overrides[{account_id}] must be an HTTP status")
        for name, value in self.header_overrides.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"header_overrides: {name!r} is not an HTTP header name")
            if any(ch in value for ch in "\r\n\0"):
                raise ValueError(f"header_overrides[{name}] must be one line")
        return self


class SandboxConfig(_Strict):
    accounts: list[AccountConfig] = Field(min_length=1)
    faults: FaultConfig = FaultConfig()
    seed: int = 0
    versions: list[str] = Field(default_factory=lambda: ["11", "12"], min_length=1)
    public_base_url: str | None = None
    timestamp_skew_s: float = Field(default=300.0, gt=0)
    nonce_capacity: int = Field(default=200_000, ge=1)
    recent_conversions: int = Field(default=10_000, ge=0)
    max_body_bytes: int = Field(default=5_000_000, ge=1024)
    # false: no field rules; any well-formed JSON body is accepted and its conversions
    # counted (benchmarks that measure the client's own ceiling).
    validation: bool = True

    @model_validator(mode="after")
    def _unique_routes(self) -> Self:
        seen_pixels: set[str] = set()
        seen_accounts: set[str] = set()
        secrets: dict[tuple[str, str], tuple[str, str]] = {}
        consumer_secrets: dict[str, str] = {}
        for account in self.accounts:
            if account.pixel_id in seen_pixels:
                raise ValueError(f"pixel_id {account.pixel_id} is listed twice")
            if account.account_id in seen_accounts:
                raise ValueError(f"account_id {account.account_id} is listed twice")
            seen_pixels.add(account.pixel_id)
            seen_accounts.add(account.account_id)
            pair = (account.consumer_key, account.access_token)
            secret_pair = (account.consumer_secret, account.access_token_secret)
            if secrets.setdefault(pair, secret_pair) != secret_pair:
                raise ValueError("one consumer key and access token pair has two sets of secrets")
            if (
                consumer_secrets.setdefault(account.consumer_key, account.consumer_secret)
                != account.consumer_secret
            ):
                raise ValueError("one consumer key has two consumer secrets")
        if self.public_base_url is not None and not self.public_base_url.startswith(
            ("http://", "https://")
        ):
            raise ValueError("public_base_url must start with http:// or https://")
        return self


def demo_account() -> AccountConfig:
    return AccountConfig(
        account_id=DEMO_ACCOUNT_ID,
        pixel_id=DEMO_PIXEL_ID,
        event_ids=[DEMO_EVENT_ID],
        consumer_key=DEMO_CONSUMER_KEY,
        consumer_secret=DEMO_CONSUMER_SECRET,
        access_token=DEMO_ACCESS_TOKEN,
        access_token_secret=DEMO_ACCESS_TOKEN_SECRET,
        pixel_token=DEMO_PIXEL_TOKEN,
    )


def demo_config() -> SandboxConfig:
    return SandboxConfig(accounts=[demo_account()])


def parse_config(data: dict[str, Any], *, source: str = "sandbox config") -> SandboxConfig:
    """Validate a decoded config; an empty or missing ``accounts`` gets the demo account."""
    if not data.get("accounts"):
        data = {**data, "accounts": [demo_account().model_dump()]}
    try:
        return SandboxConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "sandbox"
        raise ConfigError(where, f"{first['msg']} ({source})") from exc


def load_config(path: Path) -> SandboxConfig:
    """Read ``.json`` or ``.toml`` (chosen by the file name's suffix)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError("--config", f"cannot read {path}: {exc.strerror}") from exc
    try:
        if path.suffix.lower() == ".toml":
            data: Any = tomllib.loads(raw.decode("utf-8"))
        elif path.suffix.lower() == ".json":
            data = json.loads(raw)
        else:
            raise ConfigError("--config", f"{path}: use a .json or .toml file")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError("--config", f"{path} is not valid: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError("--config", f"{path} must hold an object / table at the top")
    return parse_config(data, source=str(path))
