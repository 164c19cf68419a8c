"""The settings object: file + environment, secrets by reference, clear errors."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from consumer.cli import main
from consumer.delivery.engine import FETCH_QUEUE_BACKOFF_MS, consumer_config, producer_config
from consumer.errors import ConfigError
from consumer.observability.secrets import KNOWN_SECRETS
from consumer.settings import Settings, dotted, leaves, load_settings

BASE = """
[kafka]
bootstrap_servers = "broker:9092"
topics = ["purchases"]

[[accounts]]
account_id = "18ce552mlaq"
pixel_id = "oka17"
auth = "oauth1"
consumer_key = "ck-literal"
consumer_secret = "env:TEST_XCONV_CONSUMER_SECRET"
access_token = "at-literal"
access_token_secret = "file:{secret_file}"

[routing]
default = {{ account_id = "18ce552mlaq", pixel_id = "oka17", event_id = "ol288" }}
"""


@pytest.fixture(autouse=True)
def _forget_registered_secrets() -> Iterator[None]:
    """Loading registers secrets with the process-wide log scrub: undo it per test."""
    yield
    KNOWN_SECRETS.clear()


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    secret_file = tmp_path / "ats"
    secret_file.write_text("token-secret-from-file\n")
    monkeypatch.setenv("TEST_XCONV_CONSUMER_SECRET", "consumer-secret-from-env")
    path = tmp_path / "config.toml"
    path.write_text(BASE.format(secret_file=secret_file))
    return path


def test_file_values_and_secret_references(config_file: Path) -> None:
    settings = load_settings(config_file)
    account = settings.accounts[0]
    assert settings.kafka.bootstrap_servers == "broker:9092"
    assert account.consumer_secret is not None
    assert account.consumer_secret.get_secret_value() == "consumer-secret-from-env"
    assert account.access_token_secret is not None
    assert account.access_token_secret.get_secret_value() == "token-secret-from-file"
    settings.require_accounts()


def test_environment_overrides_the_file(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XCONV_KAFKA__BOOTSTRAP_SERVERS", "other:9093")
    monkeypatch.setenv("XCONV_DELIVERY__MAX_IN_FLIGHT", "7")
    settings = load_settings(config_file)
    assert settings.kafka.bootstrap_servers == "other:9093"
    assert settings.delivery.max_in_flight == 7
    assert settings.kafka.topics == ["purchases"]  # untouched by the override


def test_secrets_never_appear_in_the_redacted_view(config_file: Path) -> None:
    text = str(load_settings(config_file).redacted())
    for secret in (
        "ck-literal",
        "consumer-secret-from-env",
        "at-literal",
        "token-secret-from-file",
    ):
        assert secret not in text


def test_bad_setting_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[batching]\nmax_events = 501\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.setting == "batching.max_events"


def test_missing_env_secret_is_a_config_error(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEST_XCONV_CONSUMER_SECRET")
    with pytest.raises(ConfigError) as info:
        load_settings(config_file)
    assert "TEST_XCONV_CONSUMER_SECRET" in str(info.value)
    assert info.value.setting.startswith("accounts.0")


def test_route_to_unknown_account_is_rejected(config_file: Path) -> None:
    text = config_file.read_text().replace(
        'account_id = "18ce552mlaq", pixel_id', 'account_id = "nope", pixel_id'
    )
    config_file.write_text(text)
    with pytest.raises(ConfigError, match="not in \\[\\[accounts\\]\\]"):
        load_settings(config_file)


def test_sasl_needs_credentials(tmp_path: Path) -> None:
    path = tmp_path / "sasl.toml"
    path.write_text('[kafka]\nsecurity_protocol = "SASL_SSL"\nsasl_mechanism = "SCRAM-SHA-512"\n')
    with pytest.raises(ConfigError, match="sasl_username"):
        load_settings(path)


def test_sasl_settings_reach_librdkafka(tmp_path: Path) -> None:
    path = tmp_path / "sasl.toml"
    path.write_text(
        '[kafka]\nsecurity_protocol = "SASL_SSL"\nsasl_mechanism = "SCRAM-SHA-512"\n'
        'sasl_username = "u"\nsasl_password = "p"\nssl_ca_location = "/etc/ca.pem"\n'
        '[kafka.extra]\n"fetch.wait.max.ms" = "50"\n'
    )
    settings = load_settings(path)
    conf = consumer_config(settings)
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["sasl.password"] == "p"
    assert conf["ssl.ca.location"] == "/etc/ca.pem"
    assert conf["fetch.wait.max.ms"] == "50"
    producer = producer_config(settings)
    assert producer["sasl.password"] == "p"
    assert "fetch.wait.max.ms" not in producer  # consumer-only settings stay there


def test_consumer_fetches_again_soon_after_a_full_prefetch_queue(tmp_path: Path) -> None:
    # librdkafka's 1 s default left the consumer without messages for 0.6 s every
    # ~50,000 events at the 16 MB prefetch cap (BENCHMARKS.md, engine scenario).
    conf = consumer_config(Settings())
    assert conf["queued.max.messages.kbytes"] == 16384
    assert conf["fetch.queue.backoff.ms"] == FETCH_QUEUE_BACKOFF_MS
    assert FETCH_QUEUE_BACKOFF_MS <= 100
    path = tmp_path / "c.toml"
    path.write_text('[kafka.extra]\n"fetch.queue.backoff.ms" = "500"\n')
    assert consumer_config(load_settings(path))["fetch.queue.backoff.ms"] == "500"


def test_yaml_files_are_read(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("kafka:\n  group_id: from-yaml\n")
    assert load_settings(path).kafka.group_id == "from-yaml"


def test_check_config_command(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--config", str(config_file)]) == 0
    out, err = capsys.readouterr()
    assert "configuration is valid" in err
    assert "consumer-secret-from-env" not in out
    assert "broker:9092" in out


def test_check_config_fails_with_the_setting_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[delivery]\nmax_in_flight = 0\n")
    assert main(["check-config", "--config", str(path)]) == 2
    assert "delivery.max_in_flight" in capsys.readouterr().err


# --- secrets: masked everywhere, empty ones refused, parse errors quote nothing ---------

SECRET_FILE = """
[kafka]
bootstrap_servers = "broker:9092"
security_protocol = "SASL_SSL"
sasl_mechanism = "SCRAM-SHA-512"
sasl_username = "svc"
sasl_password = "sasl-pw-literal"
[kafka.extra]
"sasl.oauthbearer.client.secret" = "oauth-client-secret-1"
"ssl.keystore.password" = "env:TEST_XCONV_KEYSTORE"
"fetch.wait.max.ms" = "100"
[kafka.producer_extra]
"ssl.key.password" = "producer-key-pw-2"
[api]
base_url = "https://apiuser:url-pw-3@ads-api.x.com"
[[accounts]]
account_id = "18ce552mlaq"
pixel_id = "oka17"
auth = "pixel_token"
pixel_token = "pixel-token-4"
[routing]
default = { account_id = "18ce552mlaq", pixel_id = "oka17", event_id = "ol288" }
"""
SECRETS_IN_FILE = (
    "sasl-pw-literal",
    "oauth-client-secret-1",
    "keystore-pw-from-env",
    "producer-key-pw-2",
    "url-pw-3",
    "apiuser",
    "pixel-token-4",
)


@pytest.fixture
def secret_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TEST_XCONV_KEYSTORE", "keystore-pw-from-env")
    path = tmp_path / "secrets.toml"
    path.write_text(SECRET_FILE)
    return path


def test_extra_secrets_and_url_userinfo_are_masked(secret_file: Path) -> None:
    settings = load_settings(secret_file)
    shown = settings.redacted()
    assert shown["kafka"]["extra"] == {
        "sasl.oauthbearer.client.secret": "[redacted]",
        "ssl.keystore.password": "[redacted]",
        "fetch.wait.max.ms": "100",
    }
    assert shown["kafka"]["producer_extra"] == {"ssl.key.password": "[redacted]"}
    assert shown["api"]["base_url"] == "https://[secret]@ads-api.x.com"
    # The reference was resolved for librdkafka; the value itself never shows.
    assert settings.kafka.extra["ssl.keystore.password"] == "keystore-pw-from-env"
    assert set(SECRETS_IN_FILE) - {"apiuser"} <= set(settings.secret_values())
    for secret in SECRETS_IN_FILE:
        assert secret not in str(shown)


@pytest.mark.parametrize("flag", [[], ["--json"]])
def test_check_config_output_masks_every_secret(
    secret_file: Path, capsys: pytest.CaptureFixture[str], flag: list[str]
) -> None:
    assert main(["check-config", "--config", str(secret_file), *flag]) == 0
    out, err = capsys.readouterr()
    for secret in SECRETS_IN_FILE:
        assert secret not in out + err
    assert "fetch.wait.max.ms" in out


def test_every_secret_field_is_a_secret_key_for_the_classifier() -> None:
    from pydantic import BaseModel, SecretStr

    from consumer.observability.secrets import is_secret_key
    from consumer.settings import AccountSettings, KafkaSettings, Settings

    def secret_fields(model: type[BaseModel]) -> list[str]:
        return [
            name
            for name, info in model.model_fields.items()
            if SecretStr in _types(info.annotation)
        ]

    names = secret_fields(KafkaSettings) + secret_fields(AccountSettings)
    assert len(names) == 7
    assert all(is_secret_key(name) for name in names)
    assert secret_fields(Settings) == []


def _types(annotation: object) -> set[object]:
    from typing import get_args

    found = {annotation}
    for arg in get_args(annotation):
        found |= _types(arg)
    return found


@pytest.mark.parametrize(
    ("setting", "snippet"),
    [
        ("accounts.0.consumer_key", 'consumer_key = ""'),
        ("accounts.0.consumer_key", 'consumer_key = "   "'),
        ("accounts.0.consumer_key", 'consumer_key = "env:TEST_XCONV_EMPTY"'),
        ("accounts.0.consumer_key", 'consumer_key = "file:{empty_file}"'),
    ],
)
def test_an_empty_secret_is_refused_with_the_setting_named(
    config_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    setting: str,
    snippet: str,
) -> None:
    monkeypatch.setenv("TEST_XCONV_EMPTY", "")
    empty_file = tmp_path / "empty"
    empty_file.write_text("\n")
    text = config_file.read_text().replace(
        'consumer_key = "ck-literal"', snippet.format(empty_file=empty_file)
    )
    config_file.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(config_file)
    assert info.value.setting == setting
    assert "the secret is empty" in str(info.value)


@pytest.mark.parametrize("section", ["extra", "producer_extra"])
def test_an_empty_extra_secret_is_refused_by_name(tmp_path: Path, section: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[kafka.{section}]\n"sasl.password" = ""\n"linger.ms" = ""\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.setting == f"kafka.{section}"
    assert "sasl.password: the secret is empty" in str(info.value)


def test_an_empty_secret_fails_check_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[kafka]\nsasl_password = ""\n')
    assert main(["check-config", "--config", str(path)]) == 2
    assert "kafka.sasl_password" in capsys.readouterr().err


BROKEN_FILES = [
    ("c.yaml", 'kafka:\n  sasl_password: "s3cr3t-on-the-bad-line\n  group_id: x\n'),
    ("c.yaml", "kafka:\n  sasl_password: s3cr3t-on-the-bad-line: {\n"),
    ("c.yaml", "kafka:\n\tsasl_password: s3cr3t-on-the-bad-line\n"),
    ("c.yaml", "accounts:\n- consumer_key: 's3cr3t-on-the-bad-line'\n  x: [1,\n"),
    ("c.toml", '[kafka]\nsasl_password = "s3cr3t-on-the-bad-line\n'),
    ("c.toml", "[kafka]\nsasl_password = s3cr3t-on-the-bad-line\n"),
    ("c.toml", '[kafka]\nsasl_password = "s3cr3t-on-the-bad-line" x\n'),
    ("c.toml", '[kafka]\nsasl_password = "a"\nsasl_password = "s3cr3t-on-the-bad-line"\n'),
    ("c.toml", '[kafka]\nsasl_password = "s3cr3t-on-the-bad-line"\nb = [1,'),
    ("c.yaml", "kafka:\n  sasl_password: s3cr3t-on-the-bad-line\n  b: [1,"),
]


def test_syntax_errors_keep_the_parsers_own_words(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("kafka: [1,")
    with pytest.raises(ConfigError, match="found '<stream end>' at line 1, column 11"):
        load_settings(path)


@pytest.mark.parametrize(("name", "text"), BROKEN_FILES)
def test_syntax_errors_name_the_position_never_the_text(
    tmp_path: Path, name: str, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert "s3cr3t" not in message
    assert re.search(r"at line \d+, column \d+|at the end of the file", message), message
    assert main(["check-config", "--config", str(path)]) == 2
    assert "s3cr3t" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "snippet",
    [
        '[delivery]\nmax_in_flight = "s3cr3t-value"\n',
        '[observability]\nlog_level = "s3cr3t-value"\n',
        '[kafka]\nsecurity_protocol = "s3cr3t-value"\n',
        '[kafka]\ntopics = "s3cr3t-value"\n',
        '[transform]\ndefault_phone_region = "s3cr3t-value"\n',
        '[kafka]\nsasl_password = ["s3cr3t-value"]\n',
        '[api]\nconnect_timeout_s = "s3cr3t-value"\n',
        '[[accounts]]\naccount_id = "a"\npixel_id = "p"\nauth = "s3cr3t-value"\n',
    ],
)
def test_validation_errors_never_quote_the_value(tmp_path: Path, snippet: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(snippet)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert "s3cr3t" not in str(info.value)


def test_log_level_critical_is_accepted(tmp_path: Path) -> None:
    from consumer.observability.logging import parse_level

    path = tmp_path / "c.toml"
    path.write_text('[observability]\nlog_level = "critical"\n')
    level = load_settings(path).observability.log_level
    assert level == "critical"
    assert parse_level(level) == logging.CRITICAL


# --- the environment: accounts by index, unknown names refused, sources shown ----------


def test_accounts_are_overridden_and_added_from_the_environment(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XCONV_ACCOUNTS__0__REQUESTS_PER_WINDOW", "250")
    monkeypatch.setenv("XCONV_ACCOUNTS__0__CONSUMER_KEY", "env:TEST_XCONV_CK")
    monkeypatch.setenv("TEST_XCONV_CK", "ck-from-a-referenced-variable")
    monkeypatch.setenv("XCONV_ACCOUNTS__1__ACCOUNT_ID", "second")
    monkeypatch.setenv("XCONV_ACCOUNTS__1__PIXEL_ID", "pix2")
    monkeypatch.setenv("XCONV_ACCOUNTS__1__AUTH", "pixel_token")
    monkeypatch.setenv("XCONV_ACCOUNTS__1__PIXEL_TOKEN", "pixel-token-from-env")
    settings = load_settings(config_file)
    first, second = settings.accounts
    assert first.account_id == "18ce552mlaq"  # the file's keys stay
    assert first.requests_per_window == 250
    assert first.consumer_key is not None
    assert first.consumer_key.get_secret_value() == "ck-from-a-referenced-variable"
    assert second.pixel_token is not None
    assert second.pixel_token.get_secret_value() == "pixel-token-from-env"


def test_a_mistyped_variable_fails_load_and_check_config(
    config_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XCONV_KAFKA_BOOTSTRAP_SERVERS", "other:9093")
    with pytest.raises(ConfigError, match="did you mean XCONV_KAFKA__BOOTSTRAP_SERVERS"):
        load_settings(config_file)
    assert main(["check-config", "--config", str(config_file)]) == 2
    err = capsys.readouterr().err
    assert "XCONV_KAFKA_BOOTSTRAP_SERVERS matches no setting" in err
    assert "other:9093" not in err


def test_a_variable_read_by_a_secret_reference_is_not_a_setting(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XCONV_MY_SECRET", "from-a-referenced-xconv-variable")
    config_file.write_text(config_file.read_text().replace('"ck-literal"', '"env:XCONV_MY_SECRET"'))
    key = load_settings(config_file).accounts[0].consumer_key
    assert key is not None
    assert key.get_secret_value() == "from-a-referenced-xconv-variable"


def test_check_config_prints_each_value_with_its_source(
    config_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XCONV_KAFKA__GROUP_ID", "from-env")
    monkeypatch.setenv("XCONV_KAFKA__EXTRA", '{"sasl.password": "pw-in-env-json"}')
    assert main(["check-config", "--config", str(config_file)]) == 0
    out = capsys.readouterr().out
    lines = {line.split(" = ")[0]: line for line in out.splitlines()}
    assert lines["kafka.bootstrap_servers"].endswith("# file")
    assert re.search(r'kafka\.bootstrap_servers = "broker:9092" +# file$', out, re.M)
    assert re.search(r'kafka\.group_id = "from-env" +# env XCONV_KAFKA__GROUP_ID$', out, re.M)
    assert re.search(r"delivery\.max_in_flight = 64 +# default$", out, re.M)
    assert re.search(
        r'kafka\.extra\."sasl\.password" = "\[redacted\]" +# env XCONV_KAFKA__EXTRA$', out, re.M
    )
    assert re.search(
        r'accounts\.0\.consumer_secret = "\[redacted\]" +'
        r"# file \(env:TEST_XCONV_CONSUMER_SECRET\)$",
        out,
        re.M,
    )
    for secret in ("pw-in-env-json", "consumer-secret-from-env", "ck-literal"):
        assert secret not in out


def test_check_config_json_lists_a_source_for_every_value(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", "--config", str(config_file), "--json"]) == 0
    body = orjson.loads(capsys.readouterr().out)
    paths = {dotted(path) for path, _ in leaves(body["settings"])}
    assert paths == set(body["sources"])
    assert body["sources"]["accounts.0.account_id"] == "file"
    assert body["sources"]["batching.max_events"] == "default"


def test_loading_registers_the_secrets_with_the_log_scrub(config_file: Path) -> None:
    from consumer.commands.common import load_or_report

    KNOWN_SECRETS.clear()
    assert load_or_report(config_file) is not None
    assert KNOWN_SECRETS.scrub("x consumer-secret-from-env y") == "x [secret] y"


README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_block(after: str, lang: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"```{lang}\n", text.index(after)) + len(lang) + 4
    return text[start : text.index("```", start)]


def test_readme_check_config_sample_matches_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's sample output comes from its own minimal file and one variable."""
    path = tmp_path / "readme.toml"
    path.write_text(_readme_block("A minimal file:", "toml"))
    for name in ("X_CONSUMER_KEY", "X_CONSUMER_SECRET", "X_ACCESS_TOKEN", "X_ACCESS_TOKEN_SECRET"):
        monkeypatch.setenv(name, f"readme-{name.lower()}")
    monkeypatch.setenv("XCONV_KAFKA__GROUP_ID", "xconv-eu")
    assert main(["check-config", "--config", str(path)]) == 0
    shown = {" ".join(line.split()) for line in capsys.readouterr().out.splitlines()}
    sample = _readme_block("with its source:", "")
    for line in sample.strip().splitlines():
        assert " ".join(line.split()) in shown, line


def test_readme_lists_the_exempt_variables() -> None:
    from consumer.settings_env import NON_SETTING_ENV, NON_SETTING_PREFIXES

    text = " ".join(README.read_text(encoding="utf-8").split())
    for name in sorted(NON_SETTING_ENV) + [f"{p}*" for p in NON_SETTING_PREFIXES]:
        assert f"`{name}`" in text, name


def test_no_setting_quotes_a_bad_value_in_its_error() -> None:
    """Every setting, set from the environment to a value it may refuse."""
    from consumer.settings import Settings
    from consumer.settings_env import setting_env_names

    value = "s3cr3t-value-never-echoed"
    messages: dict[str, str] = {}
    for name in setting_env_names(Settings):
        try:
            load_settings(None, {name: value})
        except ConfigError as exc:
            messages[name] = str(exc)
    assert len(messages) > 40  # most settings are not free strings: the check has teeth
    assert {name: m for name, m in messages.items() if "s3cr3t" in m} == {}
