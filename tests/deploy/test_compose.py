"""docker-compose.yml: Compose-spec validity, wiring, and the Kafka healthcheck's behaviour.

There is no Docker engine here, so the file is validated, not run. The broker
healthcheck is proved with the same Kafka tool class, run from our own jars against a
broker that is down, then up, then down again.
"""

from __future__ import annotations

import base64
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from consumer.cli import build_parser
from consumer.sandbox.config import DEMO_ACCOUNT_ID, DEMO_PIXEL_ID, DEMO_PIXEL_TOKEN
from consumer.settings import load_settings
from devtools.kafka import KafkaBroker, run_tool

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
CHECK_JSONSCHEMA = REPO_ROOT / ".venv" / "bin" / "check-jsonschema"
XCONV_SERVICES = ("sandbox", "consumer", "producer")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return data


def _service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    service: dict[str, Any] = compose["services"][name]
    return service


def _option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def _default_of(value: str) -> str:
    """``${NAME:-default}`` -> default (what compose uses when NAME is unset)."""
    match = re.fullmatch(r"\$\{(\w+):-([^}]*)\}", value)
    assert match, value
    return match.group(2)


def _consumer_config_path(compose: dict[str, Any]) -> Path:
    consumer = _service(compose, "consumer")
    config_in_container = _option(consumer["command"], "--config")
    for volume in consumer["volumes"]:
        source, target, *_ = volume.split(":")
        if target == config_in_container:
            return REPO_ROOT / str(source)
    raise AssertionError(f"no volume mounts {config_in_container}")


def test_compose_file_matches_the_compose_specification() -> None:
    result = subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok" in result.stdout


def test_compose_validation_catches_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "docker-compose.yml"
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    bad.write_text(text.replace("stop_grace_period:", "stop_grace_periods:"), encoding="utf-8")
    result = subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.compose-spec", str(bad)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode != 0


def test_services_start_in_dependency_order(compose: dict[str, Any]) -> None:
    expected = {
        "kafka-init": {"kafka": "service_healthy"},
        "consumer": {"kafka-init": "service_completed_successfully", "sandbox": "service_healthy"},
        "producer": {"kafka-init": "service_completed_successfully", "consumer": "service_healthy"},
    }
    for name, deps in expected.items():
        got = {
            dep: spec["condition"] for dep, spec in _service(compose, name)["depends_on"].items()
        }
        assert got == deps, name
    for name in ("kafka", "sandbox", "consumer"):
        assert _service(compose, name)["healthcheck"]["test"][0] == "CMD", name


def test_kafka_is_the_official_image_in_kraft_mode(compose: dict[str, Any]) -> None:
    kafka = _service(compose, "kafka")
    image, tag = kafka["image"].split(":")
    assert image == "apache/kafka"
    assert tag.startswith("4.")
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    # A KRaft cluster id is 16 bytes in URL-safe base64 without padding.
    assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16
    assert _service(compose, "kafka-init")["image"] == kafka["image"]


def test_topic_init_creates_the_consumed_dead_letter_and_parking_topics(
    compose: dict[str, Any],
) -> None:
    config = tomllib.loads(_consumer_config_path(compose).read_text(encoding="utf-8"))
    script = " ".join(_service(compose, "kafka-init")["command"])
    creates = re.findall(r"--create --if-not-exists --topic (\S+) --partitions (\d+)", script)
    created = {topic: int(partitions) for topic, partitions in creates}
    assert created["purchases"] == 6
    kafka = config["kafka"]
    wanted = set(kafka["topics"]) | {kafka["dead_letter_topic"], kafka["parking_topic"]}
    assert wanted == set(created)


def test_xconv_services_run_the_demo_commands(compose: dict[str, Any]) -> None:
    assert _service(compose, "consumer")["command"] == ["run", "--config", "/etc/xconv/config.toml"]
    assert _service(compose, "sandbox")["command"][0] == "sandbox"
    producer = _service(compose, "producer")["command"]
    assert producer[0] == "produce-sample"
    assert float(_option(producer, "--invalid-share")) == 0.05
    for name in XCONV_SERVICES:
        service = _service(compose, name)
        assert service["build"]["context"] == "."
        assert service["read_only"] is True
        assert service["user"] == "10001:10001"
        assert service["cap_drop"] == ["ALL"]
        assert "/tmp" in service["tmpfs"]


@pytest.mark.parametrize("name", XCONV_SERVICES)
def test_xconv_service_commands_parse_with_the_real_cli(compose: dict[str, Any], name: str) -> None:
    args = build_parser().parse_args(_service(compose, name)["command"])
    assert args.command == _service(compose, name)["command"][0]


def test_consumer_config_points_at_the_compose_services(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    consumer = _service(compose, "consumer")
    token = _default_of(consumer["environment"]["XCONV_DEMO_PIXEL_TOKEN"])
    assert token == DEMO_PIXEL_TOKEN, "compose must default to the sandbox's demo token"
    monkeypatch.setenv("XCONV_DEMO_PIXEL_TOKEN", token)
    settings = load_settings(_consumer_config_path(compose))
    assert settings.kafka.bootstrap_servers == "kafka:9092"
    sandbox_cmd = _service(compose, "sandbox")["command"]
    assert settings.api.base_url == f"http://sandbox:{_option(sandbox_cmd, '--port')}"
    assert _option(sandbox_cmd, "--host") == "0.0.0.0"
    account = settings.accounts[0]
    assert (account.account_id, account.pixel_id, account.auth) == (
        DEMO_ACCOUNT_ID,
        DEMO_PIXEL_ID,
        "pixel_token",
    )
    assert account.pixel_token is not None
    assert account.pixel_token.get_secret_value() == DEMO_PIXEL_TOKEN
    producer = _service(compose, "producer")["command"]
    assert _option(producer, "--bootstrap") == settings.kafka.bootstrap_servers
    assert _option(producer, "--topic") in settings.kafka.topics
    # Events the consumer can read: the producer's format is the consumer's preset, or
    # the producer mixes every format and the consumer detects each one.
    preset = _option(producer, "--preset")
    assert (preset, settings.transform.preset) in {("mix", "auto")} or (
        preset == settings.transform.preset
    )
    # Healthcheck and published port follow the metrics port of the config.
    port = settings.observability.http_port
    assert f"{port}:{port}" in consumer["ports"]
    assert f"127.0.0.1:{port}/healthz" in " ".join(consumer["healthcheck"]["test"])


def test_stop_grace_period_outlasts_the_drain(compose: dict[str, Any]) -> None:
    consumer = _service(compose, "consumer")
    grace = consumer["stop_grace_period"]
    match = re.fullmatch(r"(\d+)s", grace)
    assert match, grace
    config = tomllib.loads(_consumer_config_path(compose).read_text(encoding="utf-8"))
    assert int(match.group(1)) > config["delivery"]["drain_timeout_s"]


def _healthcheck_as_tool(compose: dict[str, Any], bootstrap: str) -> tuple[str, list[str]]:
    """The kafka healthcheck as (tool name, args) with its bootstrap pointed at ours."""
    test = _service(compose, "kafka")["healthcheck"]["test"]
    assert test[0] == "CMD"
    script, *args = test[1:]
    assert script.startswith("/opt/kafka/bin/")
    assert script.endswith(".sh")
    tool = Path(script).name.removesuffix(".sh")
    assert _option(args, "--bootstrap-server") == "localhost:9092"
    args[args.index("--bootstrap-server") + 1] = bootstrap
    return tool, args


@pytest.mark.kafka
@pytest.mark.slow
def test_kafka_healthcheck_fails_when_down_and_passes_when_up(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    broker = KafkaBroker(tmp_path / "kafka", heap="256m")
    tool, args = _healthcheck_as_tool(compose, broker.bootstrap)
    assert tool == "kafka-broker-api-versions"

    down = run_tool(tool, *args, timeout=60)
    assert down.returncode != 0, down.stdout

    broker.start()
    try:
        up = run_tool(tool, *args, timeout=60)
        assert up.returncode == 0, up.stderr[-2000:]
        assert broker.bootstrap in up.stdout  # it lists the broker it reached
        assert "ApiVersions" in up.stdout
    finally:
        broker.stop()

    stopped = run_tool(tool, *args, timeout=60)
    assert stopped.returncode != 0, stopped.stdout
