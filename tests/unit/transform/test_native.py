"""The native fast path (native/, ``xconv_native``) against the Python reference.

Every result (payload bytes, route, conversion id, ``dropped``, rejection reason, field
and message, skips) and every counter must be what ``engine = "python"`` answers for
the same message: on the sample generator's events of every preset (valid, invalid and
degrading defects), on the same events with odd values, and on hypothesis-drawn events,
for every preset and the settings variants of ``bench/transform_diff.py``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.transform_diff import NOW, counters, describe, mutate, variants
from consumer.samples import DEGRADING_DEFECTS, EXTRA_PRESETS, PRESETS, SampleGenerator
from consumer.transform import (
    Conversion,
    Preset,
    RouteSettings,
    RoutingSettings,
    Transformer,
    TransformSettings,
)
from consumer.transform import native as native_module
from tests.unit.transform.test_invariant import SHAPED, preset_events
from tests.unit.transform.test_properties import shaped_values

MISSING = "xconv_native is not installed"
ROUTING = RoutingSettings(
    default=RouteSettings(account_id="18ce552mlaq", pixel_id="oka17", event_id="ol288")
)


def _require_native() -> None:
    if native_module.load() is None:
        pytest.fail(
            f"the native package is not installed ({native_module.load_error()}): run `make venv`"
        )


def pair(factory: Callable[[], Transformer]) -> tuple[Transformer, Transformer]:
    """(native, reference) transformers of the same settings."""
    _require_native()
    fast = factory()
    assert fast.native is not None
    reference = Transformer(
        fast.settings.model_copy(update={"engine": "python"}), fast.routing, now=lambda: NOW
    )
    assert reference.native is None
    return fast, reference


def same(fast: Transformer, reference: Transformer, raw: bytes) -> None:
    assert describe(fast.transform(raw)) == describe(reference.transform(raw)), raw
    assert counters(fast) == counters(reference), raw


def sample_corpus(seed: int, per_preset: int) -> list[tuple[str, bytes]]:
    corpus: list[tuple[str, bytes]] = []
    for preset in PRESETS + EXTRA_PRESETS:
        gen = SampleGenerator(seed=seed, presets=[preset], invalid_share=0.2, now=lambda: NOW)
        rng = random.Random(seed)
        for number in range(per_preset):
            defect = rng.choice(tuple(DEGRADING_DEFECTS)) if number % 10 == 0 else None
            value = gen.event(defect=defect).value
            corpus.append((preset, value))
            if number % 2 == 0:
                try:
                    doc = orjson.loads(value)
                except orjson.JSONDecodeError:
                    continue
                corpus.append((preset, orjson.dumps(mutate(rng, doc))))
    return corpus


CORPUS = sample_corpus(seed=7, per_preset=150)


@pytest.mark.parametrize(("name", "groups", "factory"), variants(), ids=[v[0] for v in variants()])
def test_every_settings_variant_answers_as_the_reference(
    name: str, groups: tuple[str, ...], factory: Callable[[], Transformer]
) -> None:
    fast, reference = pair(factory)
    events = [raw for group, raw in CORPUS if group in groups or "auto" in name]
    assert events
    for raw in events:
        same(fast, reference, raw)
    if fast.native is not None and "strict=False" in name and "pii=True" in name:
        stats = fast.native.stats()
        assert stats["native"] > 0  # the fast path did run


@pytest.mark.parametrize("preset", [p.value for p in SHAPED])
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_drawn_events_of_each_preset(preset: str, data: st.DataObject) -> None:
    doc = data.draw(preset_events(Preset(preset)))
    strict = data.draw(st.booleans())
    fast, reference = pair(
        lambda: Transformer(
            TransformSettings(preset=preset, strict=strict), ROUTING, now=lambda: NOW
        )
    )
    same(fast, reference, orjson.dumps(doc))
    odd = mutate(random.Random(data.draw(st.integers(0, 2**32))), doc)
    same(fast, reference, orjson.dumps(odd))


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(doc=shaped_values | st.binary(max_size=60))
def test_arbitrary_json_and_bytes(doc: Any) -> None:
    fast, reference = pair(
        lambda: Transformer(TransformSettings(preset="auto"), ROUTING, now=lambda: NOW)
    )
    raw = doc if type(doc) is bytes else orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS)
    same(fast, reference, raw)


@pytest.mark.parametrize(
    "text",
    [
        '{"x":-0}',
        '{"x":[-0,-0.0,1e400]}',
        '{"a":1,"a":2}',
        '"\\ud800"',
        "\ufeff{}",
        '{"x":123456789012345678901234567890}',
        '{"x":18446744073709551616}',
        '{"order_id":"1","event_time":',
        '{"a":"\\ud83d',
        '{"a":"\\ud83d\\ude00"}',
        "[1,2",
        '{"a":1}}',
        '{"a":1e400',
        "[" * 200,
        "[" * 200 + "]" * 200,
    ],
)
def test_json_edge_cases_go_where_the_reference_goes(text: str) -> None:
    fast, reference = pair(
        lambda: Transformer(TransformSettings(preset="canonical"), ROUTING, now=lambda: NOW)
    )
    base = orjson.loads(
        SampleGenerator(seed=3, presets=["canonical"], invalid_share=0.0, now=lambda: NOW)
        .event()
        .value
    )
    same(fast, reference, text.encode())
    # the same odd JSON inside a valid event, at the value and at an item's price
    body = orjson.dumps(base).decode()
    for target in ('"value":', '"price":', '"quantity":', '"order_id":'):
        if target in body and text.startswith("{"):
            odd = body.replace(target, target + text[5:-1] + ',"_":', 1)
            same(fast, reference, odd.encode())


def test_floats_and_escapes_are_written_as_orjson_writes_them() -> None:
    fast, reference = pair(
        lambda: Transformer(TransformSettings(preset="canonical"), ROUTING, now=lambda: NOW)
    )
    doc = orjson.loads(
        SampleGenerator(seed=5, presets=["canonical"], invalid_share=0.0, now=lambda: NOW)
        .event()
        .value
    )
    rng = random.Random(5)
    for _ in range(400):
        doc["value"] = rng.choice(
            [rng.random() * 10 ** rng.randint(-9, 15), rng.randint(0, 10**15), 1e-5, 1e-6, 0.0]
        )
        doc["items"][0]["price"] = rng.random() * 10 ** rng.randint(-7, 14)
        doc["items"][0]["name"] = "".join(
            rng.choice(['"', "\\", "\x00", "\x1f", "\x7f", "é", "\u2028", "a", "/", "\t"])
            for _ in range(rng.randint(1, 8))
        )
        same(fast, reference, orjson.dumps(doc))
    assert fast.native is not None
    assert fast.native.stats()["native"] > 300


def test_python_engine_and_subclasses_run_the_reference() -> None:
    t = Transformer(TransformSettings(engine="python"), ROUTING)
    assert t.native is None
    assert "transform" not in vars(t)

    class Own(Transformer):
        def transform(self, raw: bytes) -> Any:
            return super().transform(raw)

    assert Own(TransformSettings(), ROUTING).native is None


def test_native_engine_without_the_package_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native_module.state, "loaded", True)
    monkeypatch.setattr(native_module.state, "module", None)
    monkeypatch.setattr(native_module.state, "error", MISSING)
    with pytest.raises(native_module.NativeUnavailable, match="not installed"):
        Transformer(TransformSettings(engine="native"), ROUTING)


def test_auto_falls_back_with_one_log_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(native_module.state, "loaded", True)
    monkeypatch.setattr(native_module.state, "module", None)
    monkeypatch.setattr(native_module.state, "error", MISSING)
    monkeypatch.setattr(native_module.state, "logged", False)
    lines: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(native_module.log, "warning", lambda event, **kw: lines.append((event, kw)))
    first = Transformer(TransformSettings(), ROUTING)
    Transformer(TransformSettings(preset="auto"), ROUTING)
    assert first.native is None
    assert lines == [
        (
            "transform_engine_fallback",
            {"engine": "python", "reason": "xconv_native is not installed"},
        )
    ]
    raw = SampleGenerator(seed=1, presets=["canonical"], invalid_share=0.0).event().value
    assert isinstance(first.transform(raw), Conversion)
