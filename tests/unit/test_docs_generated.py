"""docs/configuration.md and docs/metrics.md are generated from the code and committed.

They fail here when someone changes a setting or a metric without regenerating, and the
generator itself fails on a setting without a description or a stale description.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from consumer.observability.metrics import (
    DEAD_LETTER_REASON,
    DELIVERY_REASONS,
    LabelValues,
    Metrics,
)
from consumer.settings import AccountSettings, Settings
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
        node: object = Settings()
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
