"""The Helm chart: lint, render with every CI values file, validate offline, check policy.

helm comes from devtools/install_tools.sh (.tools/bin/helm); without it these tests fail.
"""

from __future__ import annotations

import base64
import copy
import math
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate
import pytest
import yaml

from consumer.settings import load_settings
from tests.deploy.manifests import (
    CHART,
    CI_VALUES,
    HELM,
    Manifest,
    by_kind,
    helm,
    one,
    render,
    validate_all,
    validate_manifest,
)

PASSING_VALUES = [p for p in CI_VALUES if not p.name.startswith("fail-")]
FAILING_VALUES = {
    "fail-both-autoscalers-values.yaml": "mutually exclusive",
    "fail-grace-period-values.yaml": "must be greater than config.delivery.drain_timeout_s",
}
# Pod: the `helm test` hook (helm template renders hooks; helm install does not create it).
BASE_KINDS = {"ServiceAccount", "ConfigMap", "Service", "Deployment", "PodDisruptionBudget", "Pod"}


def _ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


def _rendered(*values: Path, sets: tuple[str, ...] = ()) -> list[Manifest]:
    result = render(*values, sets=sets)
    assert result.returncode == 0, result.stderr
    return result.manifests


def _pod_spec(manifests: list[Manifest]) -> dict[str, Any]:
    spec: dict[str, Any] = one(manifests, "Deployment")["spec"]["template"]["spec"]
    return spec


def _container(manifests: list[Manifest]) -> dict[str, Any]:
    containers = _pod_spec(manifests)["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def _annotations(manifests: list[Manifest]) -> dict[str, str]:
    annotations: dict[str, str] = one(manifests, "Deployment")["spec"]["template"]["metadata"][
        "annotations"
    ]
    return annotations


def _config_toml(manifests: list[Manifest]) -> str:
    maps = [m for m in by_kind(manifests, "ConfigMap") if "config.toml" in m.get("data", {})]
    assert len(maps) == 1, maps
    text: str = maps[0]["data"]["config.toml"]
    return text


def test_helm_is_installed() -> None:
    assert HELM.is_file(), f"{HELM} missing: run devtools/install_tools.sh"
    result = helm("version", "--short")
    assert result.returncode == 0
    assert result.stdout.startswith("v3.")


def test_ci_values_files_exist() -> None:
    names = {p.name for p in CI_VALUES}
    assert set(FAILING_VALUES) <= names
    assert {
        "existing-secret-values.yaml",
        "servicemonitor-pdb-values.yaml",
        "keda-values.yaml",
        "hpa-values.yaml",
        "alerts-dashboard-values.yaml",
    } <= names


@pytest.mark.parametrize("values", [None, *PASSING_VALUES], ids=["default", *_ids(PASSING_VALUES)])
def test_helm_lint_strict(values: Path | None) -> None:
    args = ["lint", "--strict", str(CHART)] + (["-f", str(values)] if values else [])
    result = helm(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_default_render_kinds_and_validity() -> None:
    manifests = _rendered()
    assert {m["kind"] for m in manifests} == BASE_KINDS
    checked = validate_all(manifests)
    assert len(checked) == len(BASE_KINDS)


@pytest.mark.parametrize("values", PASSING_VALUES, ids=_ids(PASSING_VALUES))
def test_ci_values_render_valid_manifests(values: Path) -> None:
    manifests = _rendered(values)
    kinds = {m["kind"] for m in manifests}
    assert {"ConfigMap", "Deployment", "ServiceAccount"} <= kinds
    assert len(validate_all(manifests)) == len(manifests)


@pytest.mark.parametrize("name", sorted(FAILING_VALUES))
def test_fail_values_are_refused(name: str) -> None:
    result = render(CHART / "ci" / name)
    assert result.returncode != 0
    assert FAILING_VALUES[name] in result.stderr


def test_optional_kinds_follow_their_values() -> None:
    ci = CHART / "ci"
    assert "ServiceMonitor" in {m["kind"] for m in _rendered(ci / "servicemonitor-pdb-values.yaml")}
    keda = _rendered(ci / "keda-values.yaml")
    assert by_kind(keda, "ScaledObject")
    assert not by_kind(keda, "HorizontalPodAutoscaler")
    hpa = _rendered(ci / "hpa-values.yaml")
    assert by_kind(hpa, "HorizontalPodAutoscaler")
    assert not by_kind(hpa, "ScaledObject")
    # An autoscaler owns the replica count: the Deployment must not fight it.
    assert "replicas" not in one(keda, "Deployment")["spec"]
    assert "replicas" not in one(hpa, "Deployment")["spec"]
    assert one(_rendered(), "Deployment")["spec"]["replicas"] == 1
    pdb = one(_rendered(ci / "servicemonitor-pdb-values.yaml"), "PodDisruptionBudget")["spec"]
    assert pdb["minAvailable"] == 2
    assert "maxUnavailable" not in pdb
    assert one(_rendered(), "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    no_pdb = _rendered(sets=("podDisruptionBudget.enabled=false",))
    assert not by_kind(no_pdb, "PodDisruptionBudget")


def test_validation_rejects_bad_manifests() -> None:
    """The offline validators are not rubber stamps."""
    manifests = _rendered(
        CHART / "ci" / "keda-values.yaml", CHART / "ci" / "servicemonitor-pdb-values.yaml"
    )
    deployment = copy.deepcopy(one(manifests, "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_manifest(deployment)
    scaled = copy.deepcopy(one(manifests, "ScaledObject"))
    scaled["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 5000  # KEDA wants strings
    with pytest.raises(jsonschema.ValidationError):
        validate_manifest(scaled)
    monitor = copy.deepcopy(one(manifests, "ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["interval"] = "15 seconds"
    with pytest.raises(jsonschema.ValidationError):
        validate_manifest(monitor)
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        validate_manifest(
            {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
        )


@pytest.mark.parametrize(
    "bad_set",
    ["imag.tag=x", "config.kafak.topics={a}", "keda.offsetResetPolicy=newest", "replicaCount=-1"],
)
def test_values_schema_rejects_typos(bad_set: str) -> None:
    result = render(sets=(bad_set,))
    assert result.returncode != 0
    assert "schema" in result.stderr


def test_security_context_is_hardened_by_default() -> None:
    manifests = _rendered()
    pod = _pod_spec(manifests)
    container = _container(manifests)
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 10001
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    # /tmp is the only writable path: an emptyDir mounted there.
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    assert mounts["/etc/xconv"]["readOnly"] is True
    assert "configMap" in volumes[mounts["/etc/xconv"]["name"]]


def test_container_runs_the_consumer_with_probes_on_the_metrics_port() -> None:
    container = _container(_rendered())
    assert container["args"] == ["run", "--config", "/etc/xconv/config.toml"]
    assert container["ports"] == [{"name": "metrics", "containerPort": 9464, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]
    moved = _rendered(sets=("config.observability.http_port=9999",))
    assert _container(moved)["ports"][0]["containerPort"] == 9999
    assert "http_port = 9999" in _config_toml(moved)


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        ((), 45),
        (("config.delivery.drain_timeout_s=90",), 105),
        (("json:config.delivery.drain_timeout_s=12.5",), 28),
        (("config.delivery.drain_timeout_s=90", "gracePeriodMarginSeconds=5"), 95),
        (("terminationGracePeriodSeconds=31",), 31),
    ],
)
def test_grace_period_outlasts_the_drain(sets: tuple[str, ...], expected: int) -> None:
    manifests = _rendered(sets=sets)
    grace = _pod_spec(manifests)["terminationGracePeriodSeconds"]
    drain = tomllib.loads(_config_toml(manifests))["delivery"]["drain_timeout_s"]
    assert grace == expected
    assert grace > drain


@pytest.mark.parametrize("grace", [10, 30])
def test_grace_period_at_or_below_the_drain_is_refused(grace: int) -> None:
    result = render(sets=(f"terminationGracePeriodSeconds={grace}",))
    assert result.returncode != 0
    assert "must be greater than config.delivery.drain_timeout_s" in result.stderr


def test_config_checksum_rolls_pods_only_when_config_changes() -> None:
    base = _annotations(_rendered())
    assert re.fullmatch(r"[0-9a-f]{64}", base["checksum/config"])
    changed = _annotations(_rendered(sets=("config.batching.max_events=100",)))
    assert changed["checksum/config"] != base["checksum/config"]
    unrelated = _annotations(_rendered(sets=("replicaCount=3",)))
    assert unrelated["checksum/config"] == base["checksum/config"]


def test_chart_secret_is_checksummed_and_injected() -> None:
    values = CHART / "ci" / "chart-secret-values.yaml"
    manifests = _rendered(values)
    secret = one(manifests, "Secret")
    assert set(secret["data"]) == {"X_PIXEL_TOKEN"}
    container = _container(manifests)
    assert container["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
    base = _annotations(manifests)["checksum/secret"]
    rotated = _annotations(_rendered(values, sets=("secret.data.X_PIXEL_TOKEN=rotated",)))
    assert rotated["checksum/secret"] != base
    assert rotated["checksum/config"] == _annotations(manifests)["checksum/config"]


def test_existing_secret_is_referenced_not_rendered() -> None:
    manifests = _rendered(CHART / "ci" / "existing-secret-values.yaml")
    assert not by_kind(manifests, "Secret")
    container = _container(manifests)
    assert {"secretRef": {"name": "xconv-x-credentials"}} in container["envFrom"]
    assert "checksum/secret" not in _annotations(manifests)
    # existingSecret wins over chart-made secret data.
    both = _rendered(
        CHART / "ci" / "existing-secret-values.yaml", sets=("secret.data.X_CONSUMER_KEY=k",)
    )
    assert not by_kind(both, "Secret")


@pytest.mark.parametrize("values", [None, *PASSING_VALUES], ids=["default", *_ids(PASSING_VALUES)])
def test_rendered_config_is_a_valid_xconv_config(
    values: Path | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ConfigMap's TOML loads with xconv's own settings loader (env refs resolved)."""
    text = _config_toml(_rendered(*([values] if values else [])))
    for name in set(re.findall(r'"env:([A-Za-z_][A-Za-z0-9_]*)"', text)):
        monkeypatch.setenv(name, f"test-{name.lower()}")
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    settings = load_settings(path)
    raw = tomllib.loads(text)
    assert settings.kafka.bootstrap_servers == raw["kafka"]["bootstrap_servers"]
    assert settings.delivery.drain_timeout_s == raw["delivery"]["drain_timeout_s"]
    assert len(settings.accounts) == len(raw.get("accounts", []))


def test_whole_numbers_render_as_toml_integers() -> None:
    raw = tomllib.loads(_config_toml(_rendered()))
    assert raw["batching"]["max_request_bytes"] == 4_000_000
    assert isinstance(raw["batching"]["max_request_bytes"], int)
    assert isinstance(raw["delivery"]["resume_ratio"], float)
    assert math.isclose(raw["delivery"]["resume_ratio"], 0.5)


def test_keda_trigger_follows_the_consumer_config() -> None:
    manifests = _rendered(
        CHART / "ci" / "keda-values.yaml",
        sets=("config.kafka.group_id=xconv-eu", "config.kafka.bootstrap_servers=b1:9092\\,b2:9092"),
    )
    trigger = one(manifests, "ScaledObject")["spec"]["triggers"][0]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["consumerGroup"] == "xconv-eu"
    assert meta["bootstrapServers"] == "b1:9092,b2:9092"
    assert meta["topic"] == "purchases"
    assert meta["lagThreshold"] == "5000"
    assert meta["allowIdleConsumers"] == "false"
    assert trigger["authenticationRef"] == {"name": "xconv-kafka-auth"}


def _values_paths(node: Any, prefix: str = "") -> list[str]:
    paths: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            paths.append(path)
            paths.extend(_values_paths(value, path))
    return paths


def _documented_params() -> list[str]:
    text = (CHART / "values.yaml").read_text(encoding="utf-8")
    return re.findall(r"^\s*## @param (\S+) \S", text, flags=re.MULTILINE)


def test_every_value_is_documented() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    params = _documented_params()
    assert len(params) == len(set(params)), "a value is documented twice"
    paths = _values_paths(values)
    for param in params:
        assert param in paths, f"@param {param} documents no value"
    for path in paths:
        documented = any(path == p or path.startswith(p + ".") for p in params)
        container = any(p.startswith(path + ".") for p in params)  # e.g. image -> image.tag
        assert documented or container, f"value {path} has no ## @param"


def test_readme_lists_every_value() -> None:
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    listed = re.findall(r"^\| `([^`]+)` \|", readme, flags=re.MULTILINE)
    assert sorted(listed) == sorted(_documented_params())


def test_values_schema_covers_every_top_level_value() -> None:
    import json

    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert schema["additionalProperties"] is False
    assert set(values) <= set(schema["properties"])
    jsonschema.Draft7Validator(schema).validate(values)


def test_startup_probe_guards_slow_starts() -> None:
    container = _container(_rendered())
    startup = container["startupProbe"]
    assert startup["httpGet"] == {"path": "/healthz", "port": "metrics"}
    # The start-up budget (2 minutes by default) is longer than liveness would allow.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    assert "startupProbe" not in _container(_rendered(sets=("startupProbe.enabled=false",)))


def test_helm_test_pod_checks_the_rendered_config_with_the_deployment_env() -> None:
    manifests = _rendered(CHART / "ci" / "chart-secret-values.yaml")
    pod = one(manifests, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never"
    (container,) = spec["containers"]
    deployment = _container(manifests)
    assert container["image"] == deployment["image"]
    assert container["args"] == ["check-config", "--config", "/etc/xconv/config.toml"]
    assert container["envFrom"] == deployment["envFrom"]
    assert container["securityContext"] == deployment["securityContext"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    config_map = one([m for m in manifests if "config.toml" in m.get("data", {})], "ConfigMap")
    assert volumes[mounts["/etc/xconv"]]["configMap"]["name"] == config_map["metadata"]["name"]
    # Not selected by the Service or the PDB (which select the consumer pods).
    selector = one(manifests, "Service")["spec"]["selector"]
    labels = pod["metadata"]["labels"]
    assert not all(labels.get(k) == v for k, v in selector.items())
    assert not by_kind(_rendered(sets=("helmTest.enabled=false",)), "Pod")


def test_keda_offset_reset_policy_matches_the_consumer() -> None:
    from consumer.delivery.engine import consumer_config
    from consumer.settings import Settings

    trigger = one(_rendered(CHART / "ci" / "keda-values.yaml"), "ScaledObject")["spec"]["triggers"]
    assert (
        trigger[0]["metadata"]["offsetResetPolicy"]
        == consumer_config(Settings())["auto.offset.reset"]
    )


@pytest.mark.timeout(120)
def test_helm_test_pod_command_passes_on_good_config_and_fails_on_a_missing_secret(
    tmp_path: Path,
) -> None:
    """What the hook runs, run here: the Pod's args on the rendered ConfigMap and Secret."""
    manifests = _rendered(CHART / "ci" / "chart-secret-values.yaml")
    (container,) = one(manifests, "Pod")["spec"]["containers"]
    config_dir = tmp_path / "etc-xconv"
    config_dir.mkdir()
    (config_dir / "config.toml").write_text(_config_toml(manifests), encoding="utf-8")
    args = [a.replace("/etc/xconv", str(config_dir)) for a in container["args"]]
    secret_env = {
        k: base64.b64decode(v).decode() for k, v in one(manifests, "Secret")["data"].items()
    }
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("XCONV_")}

    def check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "consumer", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    good = check({**base_env, **secret_env})
    assert good.returncode == 0, good.stderr
    assert "configuration is valid" in good.stderr
    assert secret_env["X_PIXEL_TOKEN"] not in good.stdout + good.stderr
    missing = check(base_env)
    assert missing.returncode == 2
    assert "X_PIXEL_TOKEN" in missing.stdout + missing.stderr
