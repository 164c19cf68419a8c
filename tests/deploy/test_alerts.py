"""The chart's alerting rules and Grafana dashboard, checked with Prometheus's own promtool.

promtool comes from devtools/install_tools.sh (.tools/bin/promtool); without it these tests
fail. The rule file ``helm/xconv/alerts/xconv-rules.yaml`` is the one source: promtool
checks and unit-tests it, the PrometheusRule template renders it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from consumer.observability.metrics import Metrics
from tests.deploy.manifests import CHART, REPO_ROOT, by_kind, one, render, validate_all

PROMTOOL = REPO_ROOT / ".tools" / "bin" / "promtool"
RULES = CHART / "alerts" / "xconv-rules.yaml"
RULE_TESTS = CHART / "tests" / "alerts" / "xconv-rules.test.yaml"
DASHBOARD = CHART / "dashboards" / "xconv.json"
ALERTS_VALUES = CHART / "ci" / "alerts-dashboard-values.yaml"

#: The alerts every deployment should have (issue 11, and issue 12's parked events).
REQUIRED_ALERTS = {
    "XconvParkedEventsAging",
    "XconvConsumerLagGrowing",
    "XconvNoProgress",
    "XconvAccountBlocked",
    "XconvDeadLetterRateHigh",
    "XconvRateLimited",
    "XconvDrainTimedOut",
    "XconvServerHintsCapped",
}
_SERIES_SUFFIXES = ("_bucket", "_sum", "_count", "_created")


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run .tools/bin/promtool; a missing binary is an error, never a reason to skip."""
    assert PROMTOOL.is_file(), f"{PROMTOOL} is missing: run devtools/install_tools.sh"
    return subprocess.run(
        [str(PROMTOOL), *args], capture_output=True, text=True, timeout=120, check=False, cwd=cwd
    )


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _metric_names(expr: str) -> set[str]:
    """xconv metric names an expression reads (series suffixes folded to the metric)."""
    specs = Metrics().specs
    names = set()
    for found in re.findall(r"\bxconv_[a-z0-9_]+", expr):
        bases = [found.removesuffix(s) for s in _SERIES_SUFFIXES if found.endswith(s)]
        names.add(next((b for b in bases if b in specs), found))
    return names


def test_promtool_checks_the_rule_file() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_catch_a_changed_threshold(tmp_path: Path) -> None:
    """The synthetic series are close enough to the thresholds to notice a change."""
    (tmp_path / "alerts").mkdir()
    (tmp_path / "tests" / "alerts").mkdir(parents=True)
    text = RULES.read_text(encoding="utf-8")
    assert "> 0.01" in text
    (tmp_path / "alerts" / RULES.name).write_text(text.replace("> 0.01", "> 0.03"))
    shutil.copy(RULE_TESTS, tmp_path / "tests" / "alerts" / RULE_TESTS.name)
    result = promtool("test", "rules", str(tmp_path / "tests" / "alerts" / RULE_TESTS.name))
    assert result.returncode != 0
    assert "XconvDeadLetterRateHigh" in result.stdout + result.stderr


def test_every_required_alert_exists_and_is_tested() -> None:
    alerts = {rule["alert"] for rule in _rules()}
    assert alerts >= REQUIRED_ALERTS
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    assert tested == alerts, f"alerts without a firing test case: {alerts - tested}"


def test_rules_read_only_metrics_the_code_exports() -> None:
    specs = Metrics().specs
    for rule in _rules():
        names = _metric_names(rule["expr"])
        assert names, rule["alert"]
        assert names <= set(specs), f"{rule['alert']} reads unknown {names - set(specs)}"
    assert "xconv_parking_oldest_age_seconds" in specs  # XconvParkedEventsAging reads it


def test_prometheus_rule_renders_the_rule_file_unchanged() -> None:
    default = render()
    assert default.returncode == 0, default.stderr
    assert not by_kind(default.manifests, "PrometheusRule")  # off by default
    result = render(ALERTS_VALUES)
    assert result.returncode == 0, result.stderr
    rule = one(result.manifests, "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert len(validate_all(result.manifests)) == len(result.manifests)


def _dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return doc


def _queries() -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in _dashboard()["panels"]
        for target in panel["targets"]
    ]


def test_every_dashboard_query_names_an_exported_metric() -> None:
    specs = Metrics().specs
    queries = _queries()
    assert queries
    for title, expr in queries:
        names = _metric_names(expr)
        assert names, f"{title}: {expr} reads no xconv metric"
        assert names <= set(specs), f"{title}: unknown {names - set(specs)}"
    variables = [v for v in _dashboard()["templating"]["list"] if v["type"] == "query"]
    for variable in variables:
        assert _metric_names(variable["definition"]) <= set(specs)


def test_dashboard_queries_parse_as_promql(tmp_path: Path) -> None:
    """Grafana's variables replaced, every query must be valid PromQL for promtool."""
    rules = [
        {
            "record": f"xconv:dashboard_query_{n}",
            "expr": expr.replace("$__rate_interval", "5m").replace("$namespace", ".*"),
        }
        for n, (_, expr) in enumerate(_queries())
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_config_map_ships_the_file() -> None:
    assert not [
        m
        for m in by_kind(render().manifests, "ConfigMap")
        if m["metadata"]["name"].endswith("-dashboard")
    ]  # off by default
    result = render(ALERTS_VALUES)
    assert result.returncode == 0, result.stderr
    (dashboard,) = [
        m
        for m in by_kind(result.manifests, "ConfigMap")
        if m["metadata"]["name"].endswith("-dashboard")
    ]
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "Conversions"}
    assert json.loads(dashboard["data"]["xconv.json"]) == _dashboard()


@pytest.mark.parametrize("panel", _dashboard()["panels"], ids=lambda p: str(p["id"]))
def test_dashboard_panels_use_the_datasource_variable(panel: dict[str, Any]) -> None:
    assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert panel["targets"]


def _exposition_of_every_metric() -> str:
    """``/metrics`` text with one sample of every metric, label values from the declarations."""
    metrics = Metrics()
    for spec in metrics.specs.values():
        metric = getattr(metrics, spec.attribute)
        if spec.labels:
            metric = metric.labels(
                **{k: (v.values[0] if v.values else "x") for k, v in spec.labels.items()}
            )
        if spec.type == "counter":
            metric.inc()
        elif spec.type == "gauge":
            metric.set(1)
        else:
            metric.observe(1)
    return metrics.render().decode()


def _check_metrics(text: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL.is_file(), f"{PROMTOOL} is missing: run devtools/install_tools.sh"
    return subprocess.run(
        [str(PROMTOOL), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_promtool_finds_no_lint_problem_in_the_exposition() -> None:
    text = _exposition_of_every_metric()
    families = re.findall(r"^# TYPE (xconv_\S+) ", text, re.MULTILINE)
    assert {f for f in families if not f.endswith("_created")} == set(Metrics().specs)
    result = _check_metrics(text)
    assert result.returncode == 0, result.stdout + result.stderr
    bad = "# HELP xconv_bad_total x\n# TYPE xconv_bad_total gauge\nxconv_bad_total 1\n"
    assert _check_metrics(bad).returncode != 0  # the linter does lint
