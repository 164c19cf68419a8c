"""docs/configuration.md and docs/metrics.md are generated from the code and committed.

They fail here when someone changes a setting or a metric without regenerating, and the
generator itself fails on a setting without a description or a stale description. The
hand-written claims of docs/operations.md that name code facts (defaults, logger names,
label values, the sample log line) are checked against the code too.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import orjson
import pytest
from pydantic import BaseModel

from consumer.errors import ConfigError
from consumer.observability.metrics import (
    DEAD_LETTER_REASON,
    DELIVERY_REASONS,
    IDENTIFIER_KINDS,
    LabelValues,
    Metrics,
)
from consumer.settings import AccountSettings, ObservabilitySettings, Settings, load_settings
from consumer.transform.types import ReasonCode
from devtools import docgen, docgen_descriptions


@pytest.mark.parametrize("path", sorted(docgen.generated()), ids=lambda p: p.name)
def test_committed_file_matches_the_generator(path: Path) -> None:
    want = docgen.generated()[path]
    have = path.read_text(encoding="utf-8") if path.exists() else ""
    diff = "".join(
        list(
            difflib.unified_diff(
                have.splitlines(keepends=True), want.splitlines(keepends=True), "committed", "code"
            )
        )[:40]
    )
    assert have == want, f"{path.name} is stale: run `{docgen.COMMAND}`\n{diff}"


def _documented_keys(text: str) -> set[str]:
    keys: set[str] = set()
    section = ""
    for line in text.splitlines():
        if m := re.match(r"^## `(.+)`$", line):
            section = m.group(1)
        elif section and (m := re.match(r"^\| `([^`]+)` \|", line)):
            keys.add(f"{section}.{m.group(1)}")
    return keys


def test_configuration_reference_lists_every_leaf_setting() -> None:
    """Independent of the generator's walk: every top-level section's keys appear."""
    keys = _documented_keys(docgen.render_configuration())
    for top, field in Settings.model_fields.items():
        model = field.annotation
        section = top
        if top == "accounts":
            model = AccountSettings
            section = "accounts[]"
        assert isinstance(model, type)
        assert issubclass(model, BaseModel)
        for name, sub in model.model_fields.items():
            if docgen._model_of(sub.annotation) is not None:
                assert any(k.startswith(f"{section}.{name}.") for k in keys), name
            elif name != "routes":
                assert f"{section}.{name}" in keys, f"{section}.{name} missing"


def test_every_setting_is_described_and_no_description_is_stale(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(docgen_descriptions.DESCRIPTIONS, "kafka.no_such_key", "gone")
    with pytest.raises(docgen.DocgenError, match=r"kafka\.no_such_key"):
        docgen.render_configuration()
    monkeypatch.delitem(docgen_descriptions.DESCRIPTIONS, "kafka.no_such_key")
    monkeypatch.delitem(docgen_descriptions.DESCRIPTIONS, "kafka.group_id")
    with pytest.raises(docgen.DocgenError, match=r"kafka\.group_id has no description"):
        docgen.render_configuration()
    monkeypatch.setitem(docgen_descriptions.DESCRIPTIONS, "kafka.group_id", "the group")
    # transform.mapping.items has Field(description=...): a second text would be ignored.
    monkeypatch.setitem(docgen_descriptions.DESCRIPTIONS, "transform.mapping.items", "twice")
    with pytest.raises(docgen.DocgenError, match=r"transform\.mapping\.items has Field"):
        docgen.render_configuration()


def test_env_names_follow_the_settings_prefix_and_nesting() -> None:
    docs = {doc.dotted: doc for _, doc in docgen.walk_settings() if doc is not None}
    assert docs["kafka.bootstrap_servers"].env == "`XCONV_KAFKA__BOOTSTRAP_SERVERS`"
    assert docs["transform.mapping.item.price"].env == "`XCONV_TRANSFORM__MAPPING__ITEM__PRICE`"
    assert docs["accounts[].pixel_id"].env.startswith("`XCONV_ACCOUNTS`")
    assert docs["observability.liveness_stale_s"].default == "`60.0`"


def test_documented_env_name_overrides_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """The names the reference prints are the ones pydantic-settings reads."""
    docs = {doc.dotted: doc for _, doc in docgen.walk_settings() if doc is not None}
    for dotted, value, want in (
        ("delivery.drain_timeout_s", "7.5", 7.5),
        ("transform.mapping.item.price", "p", "p"),
        ("kafka.group_id", "g-env", "g-env"),
    ):
        monkeypatch.setenv(docs[dotted].env.strip("`"), value)
        node: object = load_settings()
        for part in dotted.split("."):
            node = getattr(node, part)
        assert node == want, dotted


def test_every_label_of_every_metric_is_declared() -> None:
    metrics = Metrics()
    assert set(metrics.specs) == {
        family.name.removesuffix("_total") + ("_total" if family.type == "counter" else "")
        for family in metrics.registry.collect()
    }
    for spec in metrics.specs.values():
        assert getattr(metrics, spec.attribute)._labelnames == tuple(spec.labels), spec.name
        for label in spec.labels.values():
            assert isinstance(label, LabelValues)
            assert label.meaning


def test_dead_letter_reasons_are_the_transform_codes_and_the_delivery_ones() -> None:
    assert set(DEAD_LETTER_REASON.values) == {c.value for c in ReasonCode} | set(DELIVERY_REASONS)
    assert {"api_rejected", "account_blocked", "unknown_account"} <= set(DELIVERY_REASONS)


def test_label_values_allow_declared_values_and_patterns_only() -> None:
    retries = Metrics().specs["xconv_retries_total"].labels["cause"]
    assert retries.allows("transport")
    assert retries.allows("http_503")
    assert not retries.allows("http_200")
    assert not retries.allows("server")
    assert Metrics().specs["xconv_events_sent_total"].labels["account"].allows("anything")


def test_metrics_reference_shows_declared_values() -> None:
    text = docgen.render_metrics()
    assert "`ip`" in text
    assert "`ip_address`" not in text
    for reason in DELIVERY_REASONS:
        assert f"`{reason}`" in text


# --- hand-written docs checked against the code ---------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
OPERATIONS_MD = ROOT / "docs" / "operations.md"


def _operations() -> str:
    return OPERATIONS_MD.read_text(encoding="utf-8")


def _code_logger_names() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "consumer").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        names |= set(re.findall(r"get_logger\(\"([a-z_.]+)\"\)", text))
        names |= set(re.findall(r"logging\.getLogger\(\"([a-z_.]+)\"\)", text))
    return names


def test_operations_liveness_default_is_the_settings_default() -> None:
    default = ObservabilitySettings().liveness_stale_s
    text = _operations()
    assert f"`observability.liveness_stale_s` ({default:g} s by default)" in text
    assert f'"stale_after_s":{default}' in text
    assert "30 s by default" not in text


def test_operations_logger_names_are_the_code_s() -> None:
    text = _operations()
    listed = re.search(r"`logger` \(the component: (.+?)\), `event`", text, re.DOTALL)
    assert listed is not None
    names = set(re.findall(r"`([a-z_.]+)`", listed.group(1)))
    assert names
    assert names <= _code_logger_names()
    assert {n for n in _code_logger_names() if n.startswith("xconv.")} <= names


def test_operations_sample_log_line_matches_the_engine() -> None:
    text = _operations()
    line = next(raw for raw in text.splitlines() if raw.startswith('{"timestamp"'))
    record = orjson.loads(line)
    assert list(record)[:4] == ["timestamp", "level", "logger", "event"]
    assert record["logger"] in _code_logger_names()
    engine = "\n".join(
        path.read_text(encoding="utf-8") for path in (ROOT / "consumer" / "delivery").glob("*.py")
    )
    assert f'"{record["event"]}"' in engine
    for key in record:
        if key not in ("timestamp", "level", "logger", "event"):
            assert f"{key}=" in engine, key
    assert Metrics().specs["xconv_retries_total"].labels["cause"].allows(record["cause"])


def test_operations_label_values_are_the_declared_ones() -> None:
    text = " ".join(_operations().split())
    kinds = re.search(r"`kind` is an identifier kind \(([^)]*)\)", text)
    assert kinds is not None
    assert tuple(re.findall(r"`([a-z_]+)`", kinds.group(1))) == IDENTIFIER_KINDS
    reasons = re.search(r"or the delivery reasons (.+?)\)", text)
    assert reasons is not None
    assert set(re.findall(r"`([a-z_]+)`", reasons.group(1))) == set(DELIVERY_REASONS)
    causes = re.search(r"`cause` is a retry cause \((.+?)\) and", text)
    assert causes is not None
    cause_spec = Metrics().specs["xconv_retries_total"].labels["cause"]
    quoted = re.findall(r"`([a-z_0-9<>]+)`", causes.group(1))
    assert set(cause_spec.values) <= set(quoted)
    for value in quoted:
        assert cause_spec.allows(value) or value == "http_<status>", value


def _invalid_env_value(type_text: str) -> str | None:
    """A value the setting's type refuses, or None when any string would do."""
    if type_text.startswith(("int", "float")):
        return "not-a-number"
    if type_text.startswith("bool"):
        return "maybe"
    if type_text.startswith('`"'):
        return "no-such-choice"
    return None


def test_every_documented_env_name_reaches_its_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """A value the type refuses, given under the documented name, is refused naming the key.

    A wrong name would be ignored and the load would succeed, so this checks each name.
    """
    monkeypatch.delenv("XCONV_CONFIG", raising=False)
    checked = 0
    for _, doc in docgen.walk_settings():
        if doc is None or "(JSON" in doc.env:
            continue
        value = _invalid_env_value(doc.type)
        if value is None:
            continue
        name = doc.env.strip("`")
        with monkeypatch.context() as env:
            env.setenv(name, value)
            with pytest.raises(ConfigError) as caught:
                load_settings(None)
        assert caught.value.setting == doc.dotted, (name, caught.value)
        checked += 1
    assert checked >= 30  # every int, float, bool and choice key outside lists and tables
