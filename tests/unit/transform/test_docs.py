"""docs/transform.md is checked against the code: preset tables, drop reasons, settings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from consumer.transform import DropReason, Preset, SkipReason, TransformSettings
from consumer.transform.config import DebeziumSettings, FieldMapping, Source
from consumer.transform.presets import PRESETS

DOC = (Path(__file__).resolve().parents[3] / "docs" / "transform.md").read_text()
ITEM_FIELDS = ("id", "group_id", "name", "price", "category", "quantity")


def table_after(heading: str) -> list[list[str]]:
    """Rows (cells) of the first table after ``heading``."""
    start = DOC.index(heading)
    rows: list[list[str]] = []
    for line in DOC[start:].splitlines()[1:]:
        if line.startswith("|"):
            if not set(line.strip()) <= set("|- "):  # not the |---|---| line
                rows.append([c.strip() for c in line.strip().strip("|").split(" | ")])
        elif rows:
            break
    return rows[1:]  # without the header row


def sources(source: Source | None) -> list[str] | None:
    if source is None:
        return None
    return [source] if isinstance(source, str) else list(source)


def mapping_rows(mapping: FieldMapping) -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    for name in FieldMapping.model_fields:
        if name == "item":
            continue
        paths = sources(getattr(mapping, name))
        if paths:
            rows[name] = paths
    for name in ITEM_FIELDS:
        paths = sources(getattr(mapping.item, name))
        if paths:
            rows[f"item.{name}"] = paths
    return rows


@pytest.mark.parametrize("preset", [p for p in Preset if p not in (Preset.AUTO, Preset.CUSTOM)])
def test_preset_tables_match_the_field_maps(preset: Preset) -> None:
    documented = {
        row[0]: re.findall(r"`([^`]+)`", row[1]) for row in table_after(f"#### `{preset.value}`")
    }
    assert documented == mapping_rows(PRESETS[preset])
    assert all(len(row) == 3 and row[2] for row in table_after(f"#### `{preset.value}`"))


def test_every_drop_and_skip_reason_is_documented() -> None:
    policy = DOC[DOC.index("## Field policy") :]
    for reason in DropReason:
        assert f"`{reason.value}`" in policy, reason
    for skip in SkipReason:
        assert f"`{skip.value}`" in DOC[DOC.index("## Debezium change events") :], skip


def test_every_setting_is_documented() -> None:
    settings = DOC[DOC.index("## Other `[transform]` settings") :]
    for name in TransformSettings.model_fields:
        if name not in ("preset", "mapping", "debezium"):
            assert f"`{name}`" in settings, name
    for name in DebeziumSettings.model_fields:
        assert f"`debezium.{name}`" in settings, name
