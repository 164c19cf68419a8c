"""The settings object: file + environment, secrets by reference, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer.cli import main
from consumer.delivery.engine import consumer_config, producer_config
from consumer.errors import ConfigError
from consumer.settings import load_settings

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
