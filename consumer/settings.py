"""One typed settings object: a TOML or YAML file, overridden by ``XCONV_`` variables.

Environment variables nest with ``__``: ``XCONV_KAFKA__BOOTSTRAP_SERVERS`` overrides
``[kafka] bootstrap_servers``. Secret fields accept a literal, ``env:NAME`` or
``file:/path`` (a mounted Kubernetes Secret), are held as ``SecretStr`` and never
printed: ``Settings.redacted()`` is what ``check-config`` shows.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from consumer.errors import ConfigError
from consumer.transform.config import RoutingSettings, TransformSettings

ENV_PREFIX = "XCONV_"
CONFIG_ENV = "XCONV_CONFIG"


def resolve_secret(value: object) -> object:
    """Turn ``env:NAME`` / ``file:/path`` references into the secret's value."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if not isinstance(value, str):
        return value
    if value.startswith("env:"):
        name = value[4:]
        if name not in os.environ:
            raise ValueError(f"environment variable {name} is not set")
        return os.environ[name]
    if value.startswith("file:"):
        path = Path(value[5:])
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"cannot read secret file {path}: {exc.strerror}") from None
    return value


Secret = Annotated[SecretStr, BeforeValidator(resolve_secret)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    topics: list[str] = Field(default_factory=lambda: ["purchases"], min_length=1)
    group_id: str = "xconv"
    dead_letter_topic: str = "purchases.dlq"
    client_id: str = "xconv"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: Secret | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: Secret | None = None
    fetch_batch_size: int = Field(default=2000, ge=1, le=100_000)
    session_timeout_ms: int = Field(default=45_000, ge=6_000)
    max_poll_interval_ms: int = Field(default=300_000, ge=10_000)
    # Bound on every librdkafka call that can block (commit, close, pause, metadata):
    # shutdown completes within delivery.drain_timeout_s + 3 x call_timeout_s.
    call_timeout_s: float = Field(default=5.0, gt=0, le=120)
    # A dead-letter topic that does not exist is retried this long, then the engine stops.
    unknown_topic_grace_s: float = Field(default=60.0, ge=0)
    # librdkafka settings passed as is: ``extra`` to the consumer, ``producer_extra`` to
    # the dead-letter producer (SASL/TLS settings above already reach both).
    extra: dict[str, str] = Field(default_factory=dict)
    producer_extra: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL_"):
            if self.sasl_mechanism is None:
                raise ValueError("sasl_mechanism is required with a SASL security_protocol")
            if not self.sasl_username or self.sasl_password is None:
                raise ValueError("sasl_username and sasl_password are required with SASL")
        if self.dead_letter_topic in self.topics:
            raise ValueError("dead_letter_topic must not be one of the consumed topics")
        return self

    def client_config(self) -> dict[str, str]:
        """librdkafka settings shared by the consumer and the producer."""
        conf: dict[str, str] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        optional = {
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
            "ssl.key.password": (
                self.ssl_key_password.get_secret_value() if self.ssl_key_password else None
            ),
        }
        conf.update({k: v for k, v in optional.items() if v})
        return conf


class ApiSettings(_Section):
    base_url: str = "https://ads-api.x.com"
    version: str = "12"
    connect_timeout_s: float = Field(default=5.0, gt=0)
    request_timeout_s: float = Field(default=30.0, gt=0)


class AccountSettings(_Section):
    """One ad account: its pixel, its credentials and its rate budget."""

    account_id: str = Field(min_length=1)
    pixel_id: str = Field(min_length=1)
    auth: Literal["oauth1", "pixel_token"] = "oauth1"
    consumer_key: Secret | None = None
    consumer_secret: Secret | None = None
    access_token: Secret | None = None
    access_token_secret: Secret | None = None
    pixel_token: Secret | None = None
    requests_per_window: int = Field(default=100_000, ge=1)
    events_per_window: int = Field(default=0, ge=0)
    window_s: float = Field(default=900.0, gt=0)
    max_in_flight: int = Field(default=16, ge=1)

    @model_validator(mode="after")
    def _credentials_complete(self) -> AccountSettings:
        if self.auth == "oauth1":
            missing = [
                name
                for name in (
                    "consumer_key",
                    "consumer_secret",
                    "access_token",
                    "access_token_secret",
                )
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(f"auth=oauth1 needs {', '.join(missing)}")
        elif self.pixel_token is None:
            raise ValueError("auth=pixel_token needs pixel_token")
        return self


class BatchingSettings(_Section):
    max_events: int = Field(default=500, ge=1, le=500)
    linger_ms: float = Field(default=50.0, ge=0)
    max_request_bytes: int = Field(default=4_000_000, ge=10_000)


class DeliverySettings(_Section):
    max_in_flight: int = Field(default=64, ge=1)
    # AIMD on top of the rate budget; off by default: random 5xx would shrink the limit.
    adaptive_concurrency: bool = False
    # Events held in memory (consumed, not yet done); about 5 KB each at peak. Reaching
    # it pauses every assigned partition until the count falls to resume_ratio of it.
    max_buffered_events: int = Field(default=20_000, ge=500)
    resume_ratio: float = Field(default=0.5, gt=0, lt=1)
    drain_timeout_s: float = Field(default=30.0, ge=0)
    revoke_timeout_s: float = Field(default=10.0, ge=0)
    commit_interval_s: float = Field(default=2.0, gt=0)
    retry_base_s: float = Field(default=0.5, gt=0)
    retry_cap_s: float = Field(default=60.0, gt=0)
    on_account_blocked: Literal["hold", "dead_letter"] = "hold"
    # A blocked account (401/403/404) is probed by one request, backing off from
    # probe_initial_s to probe_max_s (with jitter) until the API accepts it.
    probe_initial_s: float = Field(default=15.0, gt=0)
    probe_max_s: float = Field(default=300.0, gt=0)


class ObservabilitySettings(_Section):
    http_host: str = "0.0.0.0"  # noqa: S104 - probes and scrapes come from outside the pod
    http_port: int = Field(default=9464, ge=0, le=65535)
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    liveness_stale_s: float = Field(default=60.0, gt=0)
    # /readyz fails after this long without a successful call to the broker.
    ready_broker_contact_s: float = Field(default=60.0, gt=0)


class Settings(BaseSettings):
    """Everything ``xconv run`` needs, validated before anything starts."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    accounts: list[AccountSettings] = Field(default_factory=list)
    transform: TransformSettings = Field(default_factory=TransformSettings)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    batching: BatchingSettings = Field(default_factory=BatchingSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment wins over the file, which arrives as init kwargs.
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _accounts_unique(self) -> Settings:
        seen: set[str] = set()
        for account in self.accounts:
            if account.account_id in seen:
                raise ValueError(f"account {account.account_id} is listed twice")
            seen.add(account.account_id)
        return self

    @model_validator(mode="after")
    def _routes_have_accounts(self) -> Settings:
        if not self.accounts:
            return self  # transform-only use; ``require_accounts`` guards ``run``
        pixels = {a.account_id: a.pixel_id for a in self.accounts}
        routes = dict(self.routing.routes)
        if self.routing.default is not None:
            routes["default"] = self.routing.default
        for name, route in routes.items():
            if route.account_id not in pixels:
                raise ValueError(
                    f"routing route {name!r} sends to account {route.account_id}, "
                    "which is not in [[accounts]]"
                )
            if route.pixel_id != pixels[route.account_id]:
                raise ValueError(
                    f"routing route {name!r} uses pixel {route.pixel_id} but account "
                    f"{route.account_id} has pixel {pixels[route.account_id]}"
                )
        return self

    def require_accounts(self) -> None:
        """``run`` needs somewhere to send: at least one account and one route."""
        if not self.accounts:
            raise ConfigError("accounts", "at least one [[accounts]] entry is required")
        if self.routing.default is None and not self.routing.routes:
            raise ConfigError("routing", "set routing.default or routing.routes")

    def account(self, account_id: str) -> AccountSettings | None:
        return next((a for a in self.accounts if a.account_id == account_id), None)

    def redacted(self) -> dict[str, Any]:
        """The settings as plain data with every secret masked."""
        data: dict[str, Any] = self.model_dump(mode="json")
        return data


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("config", f"cannot read {path}: {exc.strerror}") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            loaded = yaml.safe_load(text) or {}
        else:
            loaded = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError("config", f"{path} is not valid: {exc}") from None
    if not isinstance(loaded, dict):
        raise ConfigError("config", f"{path} must hold a table/mapping at the top level")
    return loaded


def load_settings(path: Path | str | None = None) -> Settings:
    """Read the file (``path`` or ``$XCONV_CONFIG``), apply env overrides, validate.

    Raises ``ConfigError`` naming the first bad setting as a dotted path.
    """
    if path is None and os.environ.get(CONFIG_ENV):
        path = os.environ[CONFIG_ENV]
    data = read_config_file(Path(path)) if path is not None else {}
    try:
        return Settings(**data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "config"
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(where, problems) from None
