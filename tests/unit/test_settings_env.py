"""XCONV_* variables -> settings paths: unknown names refused with the closest one,
lists merged by index, JSON where a value is structured."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.errors import ConfigError
from consumer.settings import Settings
from consumer.settings_env import (
    EnvOverride,
    apply_overrides,
    closest_setting,
    env_overrides,
    is_setting_candidate,
    setting_env_names,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("XCONV_KAFKA_BOOTSTRAP_SERVERS", "XCONV_KAFKA__BOOTSTRAP_SERVERS"),
        ("XCONV_KAFAK__GROUP_ID", "XCONV_KAFKA__GROUP_ID"),
        ("XCONV_ACCOUNTS__1__PIXELID", "XCONV_ACCOUNTS__1__PIXEL_ID"),
        ("XCONV_OBSERVABILITY__LOGLEVEL", "XCONV_OBSERVABILITY__LOG_LEVEL"),
        ("XCONV_DELIVERY_MAX_IN_FLIGHT", "XCONV_DELIVERY__MAX_IN_FLIGHT"),
    ],
)
def test_unknown_variable_is_an_error_naming_the_closest_setting(name: str, hint: str) -> None:
    with pytest.raises(ConfigError) as info:
        env_overrides({name: "value-never-shown"}, Settings)
    assert info.value.setting == "environment"
    assert f"{name} matches no setting (did you mean {hint}?)" in str(info.value)
    assert "value-never-shown" not in str(info.value)
    assert closest_setting(name, Settings) == hint


@pytest.mark.parametrize(
    ("name", "table", "variable"),
    [
        ("XCONV_KAFKA__EXTRA__FETCH_WAIT_MAX_MS", "kafka.extra", "XCONV_KAFKA__EXTRA"),
        ("XCONV_ROUTING__ROUTES__SHOP__ACCOUNT_ID", "routing.routes", "XCONV_ROUTING__ROUTES"),
    ],
)
def test_a_key_below_a_table_says_to_set_the_table_as_json(
    name: str, table: str, variable: str
) -> None:
    with pytest.raises(ConfigError) as info:
        env_overrides({name: "1"}, Settings)
    assert f"{table} is a table, set it as a JSON object in {variable}" in str(info.value)


def test_every_unknown_variable_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        env_overrides({"XCONV_A_B_C_D_E_F_G": "1", "XCONV_KAFKA__NOPE_NOT_HERE": "2"}, Settings)
    text = str(info.value)
    assert "XCONV_A_B_C_D_E_F_G matches no setting" in text
    assert "XCONV_KAFKA__NOPE_NOT_HERE matches no setting" in text


def test_non_setting_variables_are_left_alone() -> None:
    environ = {
        "XCONV_CONFIG": "/etc/xconv.toml",
        "XCONV_KAFKA_CACHE": "/cache",
        "XCONV_TEST_BOOTSTRAP": "127.0.0.1:9092",
        "XCONV_DEMO_PIXEL_TOKEN": "referenced by a secret",
        "PATH": "/usr/bin",
    }
    assert env_overrides(environ, Settings, referenced={"XCONV_DEMO_PIXEL_TOKEN"}) == []
    assert not is_setting_candidate("XCONV_DEMO_PIXEL_TOKEN", {"XCONV_DEMO_PIXEL_TOKEN"})
    assert is_setting_candidate("XCONV_DEMO_PIXEL_TOKEN")


def test_kubernetes_service_links_are_not_settings() -> None:
    links = {
        "XCONV_SERVICE_HOST": "10.0.0.12",
        "XCONV_SERVICE_PORT": "9464",
        "XCONV_SERVICE_PORT_METRICS": "9464",
        "XCONV_PORT": "tcp://10.0.0.12:9464",
        "XCONV_PORT_9464_TCP": "tcp://10.0.0.12:9464",
        "XCONV_PORT_9464_TCP_PROTO": "tcp",
        "XCONV_PORT_9464_TCP_PORT": "9464",
        "XCONV_PORT_9464_TCP_ADDR": "10.0.0.12",
        "XCONV_SANDBOX_SERVICE_HOST": "10.0.0.13",
        "XCONV_SANDBOX_PORT": "tcp://10.0.0.13:8080",
    }
    assert env_overrides(links, Settings) == []
    # ... but a mistyped port setting is still refused.
    with pytest.raises(ConfigError, match="did you mean XCONV_OBSERVABILITY__HTTP_PORT"):
        env_overrides({"XCONV_OBSERVABILITY_HTTP_PORT": "9464"}, Settings)


def test_values_are_typed_by_the_model() -> None:
    overrides = env_overrides(
        {
            "XCONV_KAFKA__TOPICS": '["a", "b"]',
            "XCONV_KAFKA__EXTRA": '{"fetch.wait.max.ms": "10"}',
            "XCONV_DELIVERY__MAX_IN_FLIGHT": "7",
            "xconv_kafka__group_id": "lower-case-works",
        },
        Settings,
    )
    assert {o.path: o.value for o in overrides} == {
        ("kafka", "topics"): ["a", "b"],
        ("kafka", "extra"): {"fetch.wait.max.ms": "10"},
        ("delivery", "max_in_flight"): "7",
        ("kafka", "group_id"): "lower-case-works",
    }


def test_structured_values_must_be_json_and_are_not_quoted() -> None:
    with pytest.raises(ConfigError) as info:
        env_overrides({"XCONV_KAFKA__TOPICS": "not-json-s3cr3t"}, Settings)
    assert "XCONV_KAFKA__TOPICS must be JSON" in str(info.value)
    assert "s3cr3t" not in str(info.value)


FILE: dict[str, Any] = {
    "kafka": {"extra": {"a": "1"}, "topics": ["t"]},
    "accounts": [
        {"account_id": "a1", "pixel_id": "p1"},
        {"account_id": "a2", "pixel_id": "p2"},
    ],
}


def _apply(environ: dict[str, str]) -> dict[str, object]:
    return apply_overrides(FILE, env_overrides(environ, Settings))


def test_accounts_merge_by_index() -> None:
    merged = _apply(
        {"XCONV_ACCOUNTS__1__PIXEL_ID": "p2-env", "XCONV_ACCOUNTS__2__ACCOUNT_ID": "a3"}
    )
    assert merged["accounts"] == [
        {"account_id": "a1", "pixel_id": "p1"},
        {"account_id": "a2", "pixel_id": "p2-env"},
        {"account_id": "a3"},
    ]
    assert FILE["accounts"][1] == {"account_id": "a2", "pixel_id": "p2"}  # not mutated


def test_an_index_past_the_end_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        _apply({"XCONV_ACCOUNTS__5__PIXEL_ID": "p"})
    assert info.value.setting == "accounts"
    assert "use index 2 to add one" in str(info.value)


def test_json_objects_merge_and_lists_replace() -> None:
    merged = _apply(
        {
            "XCONV_KAFKA__EXTRA": '{"b": "2"}',
            "XCONV_KAFKA__TOPICS": '["u"]',
            "XCONV_ACCOUNTS": '[{"account_id": "only", "pixel_id": "p"}]',
            "XCONV_ACCOUNTS__0__MAX_IN_FLIGHT": "3",
        }
    )
    assert merged["kafka"] == {"extra": {"a": "1", "b": "2"}, "topics": ["u"]}
    assert merged["accounts"] == [{"account_id": "only", "pixel_id": "p", "max_in_flight": "3"}]


def test_overrides_apply_shortest_path_first() -> None:
    overrides = env_overrides(
        {"XCONV_KAFKA__GROUP_ID": "g", "XCONV_KAFKA": '{"group_id": "whole", "client_id": "c"}'},
        Settings,
    )
    assert [o.name for o in overrides] == ["XCONV_KAFKA", "XCONV_KAFKA__GROUP_ID"]
    merged = apply_overrides({}, overrides)
    assert merged == {"kafka": {"group_id": "g", "client_id": "c"}}


def test_every_setting_name_is_accepted() -> None:
    names = list(setting_env_names(Settings))
    assert "XCONV_KAFKA__BOOTSTRAP_SERVERS" in names
    assert "XCONV_ACCOUNTS__0__PIXEL_ID" in names
    assert "XCONV_ROUTING__DEFAULT__EVENT_ID" in names
    for name in names:
        (override,) = env_overrides({name: "null"}, Settings)
        assert isinstance(override, EnvOverride)
        assert closest_setting(name, Settings) == name


@settings(max_examples=200, deadline=None)
@given(suffix=st.from_regex(r"[A-Z][A-Z0-9_]{0,30}", fullmatch=True))
def test_a_variable_is_either_a_setting_or_refused(suffix: str) -> None:
    name = f"XCONV_{suffix}"
    valid = set(setting_env_names(Settings)) | {
        n.replace("__0__", f"__{i}__") for n in setting_env_names(Settings) for i in range(10)
    }
    if not is_setting_candidate(name):
        assert env_overrides({name: "1"}, Settings) == []
    elif name.rstrip("_") == name and name in valid:
        assert len(env_overrides({name: "null"}, Settings)) == 1
    else:
        with pytest.raises(ConfigError, match=re.escape(name)):
            env_overrides({name: "null"}, Settings)


def test_the_repos_own_xconv_variables_are_settings_or_known_non_settings() -> None:
    """devtools, fixtures, compose, chart and CI use XCONV_* names: none may trip the check."""
    sources = [
        *sorted((REPO / "devtools").rglob("*.py")),
        *sorted((REPO / "devtools").rglob("*.sh")),
        *sorted((REPO / "tests" / "fixtures").rglob("*.py")),
        *sorted((REPO / "helm").rglob("*.yaml")),
        *sorted((REPO / "helm").rglob("*.tpl")),
        *sorted((REPO / "deploy").rglob("*")),
        REPO / "Makefile",
        REPO / ".ci" / "run",
        REPO / "docker-compose.yml",
        REPO / "Dockerfile",
    ]
    texts = [p.read_text(encoding="utf-8") for p in sources if p.is_file()]
    names = {n for text in texts for n in re.findall(r"\bXCONV_[A-Z0-9_]*[A-Z0-9]", text)}
    names.discard("XCONV_SECTION__KEY")  # the chart's comments name the form, not a variable
    assert "XCONV_KAFKA_CACHE" in names  # the scan sees the tools' variables
    referenced = {n for text in texts for n in re.findall(r"env:(XCONV_[A-Z0-9_]+)", text)}
    offenders = []
    for name in sorted(names):
        try:
            env_overrides({name: "null"}, Settings, referenced)
        except ConfigError as exc:
            offenders.append(str(exc))
    assert offenders == []
