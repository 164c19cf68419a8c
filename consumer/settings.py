"""One typed settings object: a TOML or YAML file, overridden by ``XCONV_`` variables.

Environment variables nest with ``__``: ``XCONV_KAFKA__BOOTSTRAP_SERVERS`` overrides
``[kafka] bootstrap_servers``, ``XCONV_ACCOUNTS__0__PIXEL_ID`` the first account's
pixel; a variable that matches no setting is an error (``consumer.settings_env``).
Secret fields accept a literal, ``env:NAME`` or ``file:/path`` (a mounted Kubernetes
Secret), must not be empty, are held as ``SecretStr`` and never printed:
``Settings.redacted()`` is what ``check-config`` shows. Errors name the setting and
never quote a value or a line of the file.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from consumer.errors import ConfigError
from consumer.observability.secrets import is_secret_key, mask_secrets
from consumer.settings_env import (
    DELIMITER,
    EnvOverride,
    apply_overrides,
    env_overrides,
)
from consumer.settings_env import (
    ENV_PREFIX as ENV_PREFIX,  # noqa: PLC0414 - re-exported: callers import it from here
)
from consumer.transform.config import RoutingSettings, TransformSettings

CONFIG_ENV = "XCONV_CONFIG"
SECRET_REFERENCE_PREFIXES = ("env:", "file:")


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


def resolve_non_empty_secret(value: object) -> object:
    """:func:`resolve_secret`, refusing an empty result (a missing key, not a password)."""
    value = resolve_secret(value)
    if isinstance(value, str) and not value.strip():
        raise ValueError("the secret is empty")
    return value


Secret = Annotated[SecretStr, BeforeValidator(resolve_non_empty_secret)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    topics: list[str] = Field(default_factory=lambda: ["purchases"], min_length=1)
    group_id: str = "xconv"
    dead_letter_topic: str = "purchases.dlq"
    parking_topic: str = "purchases.parking"
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
    # shutdown completes within delivery.drain_timeout_s + 4 x call_timeout_s + 5 s.
    call_timeout_s: float = Field(default=5.0, gt=0, le=120)
    # A dead-letter topic that does not exist is retried this long, then the engine stops.
    unknown_topic_grace_s: float = Field(default=60.0, ge=0)
    # librdkafka settings passed as is: ``extra`` to the consumer, ``producer_extra`` to
    # the dead-letter producer (SASL/TLS settings above already reach both).
    extra: dict[str, str] = Field(
        default_factory=dict,
        description="librdkafka settings for the consumer, passed as is; secret ones "
        "(sasl.password, ssl.key.password, ...) accept env:NAME / file:/path and are masked",
    )
    producer_extra: dict[str, str] = Field(
        default_factory=dict,
        description="librdkafka settings for the dead-letter producer, as for extra",
    )

    @field_validator("extra", "producer_extra", mode="after")
    @classmethod
    def _extra_secrets(cls, extra: dict[str, str]) -> dict[str, str]:
        """Secret librdkafka keys: references resolved, empty values refused by name."""
        resolved = dict(extra)
        for key, value in extra.items():
            if is_secret_key(key):
                try:
                    resolved[key] = str(resolve_non_empty_secret(value))
                except ValueError as exc:
                    raise ValueError(f"{key}: {exc}") from None
        return resolved

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL_"):
            if self.sasl_mechanism is None:
                raise ValueError("sasl_mechanism is required with a SASL security_protocol")
            if not self.sasl_username or self.sasl_password is None:
                raise ValueError("sasl_username and sasl_password are required with SASL")
        if self.dead_letter_topic in self.topics:
            raise ValueError("dead_letter_topic must not be one of the consumed topics")
        if self.parking_topic in self.topics or self.parking_topic == self.dead_letter_topic:
            raise ValueError(
                "parking_topic must differ from the consumed topics and the dead-letter topic"
            )
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
    # A full buffer first only stops fetching; it pauses once full for this long.
    pause_grace_s: float = Field(default=5.0, ge=0, le=60)
    drain_timeout_s: float = Field(default=30.0, ge=0)
    revoke_timeout_s: float = Field(default=10.0, ge=0)
    commit_interval_s: float = Field(default=2.0, gt=0)
    retry_base_s: float = Field(default=0.5, gt=0)
    retry_cap_s: float = Field(default=60.0, gt=0)
    on_account_blocked: Literal["hold", "dead_letter"] = "hold"
    # What becomes of a sick account's events while another account is healthy (see
    # consumer.delivery.parking): ``hold`` them in place, ``park`` them on the parking
    # topic, or ``dead_letter`` them (reason ``undeliverable``).
    stuck_policy: Literal["hold", "park", "dead_letter"] = "park"
    park_after_s: float = Field(default=60.0, ge=0)
    parked_max_age_s: float = Field(default=0.0, ge=0)
    # A blocked account (401/403/404) is probed by one request, backing off from
    # probe_initial_s to probe_max_s (with jitter) until the API accepts it.
    probe_initial_s: float = Field(default=15.0, gt=0)
    probe_max_s: float = Field(default=300.0, gt=0)


class ObservabilitySettings(_Section):
    http_host: str = "0.0.0.0"  # noqa: S104 - probes and scrapes come from outside the pod
    http_port: int = Field(default=9464, ge=0, le=65535)
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error", "critical"] = Field(
        default="info",
        description="lowest level written; oauthlib's logger stays at info or above "
        "(its debug lines are signing material)",
    )
    liveness_stale_s: float = Field(default=60.0, gt=0)
    # /readyz fails after this long without a successful call to the broker.
    ready_broker_contact_s: float = Field(default=60.0, gt=0)


class Settings(BaseSettings):
    """Everything ``xconv run`` needs, validated before anything starts."""

    model_config = SettingsConfigDict(
        # Informational (documentation tools read them): the environment is applied by
        # ``load_settings`` through ``consumer.settings_env`` with the same prefix and
        # delimiter, not by pydantic-settings' own source.
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=DELIMITER,
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
        # Only init kwargs: ``load_settings`` merges the environment into the file's data
        # itself (lists by index, unknown variables refused), see ``consumer.settings_env``.
        return (init_settings,)

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
        """The settings as plain data with every secret masked (the shared classifier:
        secret fields, secret keys of ``kafka.extra`` / ``producer_extra``, URL user-info)."""
        masked = mask_secrets(self.model_dump(mode="json"))
        assert isinstance(masked, dict)
        return masked

    def secret_values(self) -> list[str]:
        """Every configured credential, for the log scrub (``KNOWN_SECRETS``)."""
        values: list[str] = []
        kafka = self.kafka
        for secret in (kafka.sasl_password, kafka.ssl_key_password):
            if secret is not None:
                values.append(secret.get_secret_value())
        for extra in (kafka.extra, kafka.producer_extra):
            values.extend(v for k, v in extra.items() if is_secret_key(k))
        url = urlsplit(self.api.base_url)
        # user:password@ -> the password; a bare user-info (a token) -> all of it.
        userinfo = url.password if url.password is not None else url.username
        if userinfo:
            values.append(unquote(userinfo))
        for account in self.accounts:
            for field in (
                account.consumer_key,
                account.consumer_secret,
                account.access_token,
                account.access_token_secret,
                account.pixel_token,
            ):
                if field is not None:
                    values.append(field.get_secret_value())
        return values


_QUOTED = re.compile(r"'([^']*)'|\"([^\"]*)\"")


def _unquote_values(message: str) -> str:
    """Drop quoted text longer than an escaped character (it may be a value); keep the
    parser's own token names such as ``'<stream end>'``."""

    def keep_short(match: re.Match[str]) -> str:
        inner = match.group(1) if match.group(1) is not None else match.group(2)
        token = re.fullmatch(r"<[a-z ]+>", inner) is not None
        return match.group(0) if len(inner) <= 2 or token else "…"

    return _QUOTED.sub(keep_short, message)


_TOML_AT = re.compile(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)\s*$")


def _toml_problem(exc: tomllib.TOMLDecodeError) -> str:
    message = str(exc).splitlines()[0] if str(exc) else "syntax error"
    found = _TOML_AT.search(message)
    what = _unquote_values(message[: found.start()] if found else message)
    if found and found.group(1):
        return f"{what} at line {found.group(1)}, column {found.group(2)}"
    return f"{what} at the end of the file" if found else what


def _yaml_problem(exc: yaml.YAMLError) -> str:
    # str(exc) quotes the offending line of the file (a secret's line, maybe): use only
    # the problem's description and its position.
    if isinstance(exc, yaml.MarkedYAMLError):
        what = _unquote_values(exc.problem or exc.context or "syntax error")
        mark = exc.problem_mark or exc.context_mark
        if mark is not None:
            return f"{what} at line {mark.line + 1}, column {mark.column + 1}"
        return what
    return "syntax error"


def read_config_file(path: Path) -> dict[str, Any]:
    """The file's data; a syntax error names the position, never the file's text."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("config", f"cannot read {path}: {exc.strerror}") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            loaded = yaml.safe_load(text) or {}
        else:
            loaded = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"{path} is not valid TOML: {_toml_problem(exc)}") from None
    except yaml.YAMLError as exc:
        raise ConfigError("config", f"{path} is not valid YAML: {_yaml_problem(exc)}") from None
    if not isinstance(loaded, dict):
        raise ConfigError("config", f"{path} must hold a table/mapping at the top level")
    return loaded


def secret_references(data: object) -> set[str]:
    """Names of the variables that ``env:NAME`` values read (they are not settings)."""
    if isinstance(data, Mapping):
        return set().union(*(secret_references(v) for v in data.values()))
    if isinstance(data, list):
        return set().union(*(secret_references(v) for v in data))
    if isinstance(data, str) and data.startswith("env:"):
        return {data[4:]}
    return set()


@dataclass(frozen=True)
class LoadedSettings:
    """The settings and where their values came from (``check-config`` shows both)."""

    settings: Settings
    file_data: dict[str, Any]
    overrides: list[EnvOverride]
    merged: dict[str, Any]

    def sources(self) -> dict[str, str]:
        """Dotted path of every leaf of ``settings.redacted()`` -> its source.

        ``env XCONV_…`` (the variable that set it), ``file`` or ``default``; a secret
        read through a reference adds it, e.g. ``file (env:X_CONSUMER_KEY)``.
        """
        by_path = {tuple(str(p) for p in o.path): o.name for o in self.overrides}
        out: dict[str, str] = {}
        for path, _ in leaves(self.settings.redacted()):
            source = "default"
            for depth in range(len(path), 0, -1):
                if path[:depth] in by_path:
                    source = f"env {by_path[path[:depth]]}"
                    break
            else:
                if _lookup(self.file_data, path) is not _MISSING:
                    source = "file"
            raw = _lookup(self.merged, path)
            if (
                source != "default"
                and isinstance(raw, str)
                and raw.startswith(SECRET_REFERENCE_PREFIXES)
                and is_secret_key(path[-1])
            ):
                source += f" ({raw})"
            out[dotted(path)] = source
        return out


_MISSING = object()


def dotted(path: tuple[str, ...]) -> str:
    """``kafka.extra."fetch.wait.max.ms"``: segments with a dot are quoted, as in TOML."""
    return ".".join(f'"{p}"' if "." in p else p for p in path)


def _lookup(data: Any, path: tuple[str, ...]) -> Any:
    node = data
    for part in path:
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def leaves(data: Any, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """(path, value) of every leaf: tables and lists of tables are walked, lists of
    scalars and empty tables are leaves."""
    if isinstance(data, dict) and data:
        return [leaf for k, v in data.items() for leaf in leaves(v, (*prefix, str(k)))]
    if isinstance(data, list) and data and all(isinstance(v, dict) for v in data):
        return [leaf for i, v in enumerate(data) for leaf in leaves(v, (*prefix, str(i)))]
    return [(prefix, data)]


def load_settings_with_sources(
    path: Path | str | None = None, environ: Mapping[str, str] | None = None
) -> LoadedSettings:
    """Read the file (``path`` or ``$XCONV_CONFIG``), merge ``XCONV_*`` overrides, validate.

    Raises ``ConfigError`` naming the bad setting(s) as dotted paths, or the variables
    that match no setting.
    """
    environ = os.environ if environ is None else environ
    if path is None and environ.get(CONFIG_ENV):
        path = environ[CONFIG_ENV]
    file_data = read_config_file(Path(path)) if path is not None else {}
    referenced = secret_references(file_data) | secret_references(
        [v for k, v in environ.items() if k.upper().startswith(ENV_PREFIX)]
    )
    overrides = env_overrides(environ, Settings, referenced)
    merged = apply_overrides(file_data, overrides)
    try:
        settings = Settings(**merged)
    except ValidationError as exc:
        errors = exc.errors(include_input=False, include_url=False)
        first = errors[0]
        where = ".".join(str(part) for part in first["loc"]) or "config"
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in errors
        )
        raise ConfigError(where, problems) from None
    return LoadedSettings(settings, file_data, overrides, merged)


def load_settings(
    path: Path | str | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """:func:`load_settings_with_sources`, settings only."""
    return load_settings_with_sources(path, environ).settings
