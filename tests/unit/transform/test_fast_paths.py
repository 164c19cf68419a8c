"""The transform's hot-path shortcuts equal the general code they stand in for.

bench/transform_diff.py compares a whole tree against an older one (every preset and
settings variant over ~200k events) while the hot path is being worked on; these
properties keep guarding each shortcut afterwards: field readers against ``lookup``,
the slot-built Conversion against its constructor, the cached phone parse against an
uncached one.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.transform import Conversion, Route
from consumer.transform.normalize import _parse_phone, normalize_phone
from consumer.transform.paths import MISSING, compile_path, compile_reader, lookup
from consumer.transform.transformer import _conversion, _Field

KEYS = ["a", "b", "user", "email", "name"]
leaves = (
    st.none()
    | st.just("")
    | st.sampled_from(["purchase", "1", "True", "None"])
    | st.text(max_size=3)
    | st.integers(-2, 2)
    | st.booleans()
)
docs = st.recursive(
    leaves,
    lambda children: (
        st.dictionaries(st.sampled_from(KEYS), children, max_size=4)
        | st.lists(children, max_size=2)
    ),
    max_leaves=12,
)
paths = st.lists(st.sampled_from(KEYS), min_size=1, max_size=3).map(".".join)
# GA4's shape: a key, a [key=value] filter, then keys (and other mixes of steps)
steps = st.sampled_from(KEYS) | st.sampled_from(
    ["[name=purchase]", "[name=1]", "[a=True]", "[b=None]", "[0]", "[1]"]
)
filter_paths = st.builds(
    lambda first, rest: first + "".join(s if s.startswith("[") else f".{s}" for s in rest),
    st.sampled_from(KEYS),
    st.lists(steps, max_size=4),
)
sources = st.lists(paths | filter_paths | st.just("=const"), min_size=1, max_size=4)


def reference(doc: Any, texts: list[str]) -> Any:
    """The documented rule: the first alternative present and neither null nor ""."""
    for text in texts:
        if text.startswith("="):
            return text[1:]
        value = lookup(doc, compile_path(text))
        if value is not MISSING and value is not None and value != "":
            return value
    return MISSING


@given(doc=docs, texts=sources)
def test_field_readers_equal_the_path_lookup(doc: Any, texts: list[str]) -> None:
    source: str | list[str] = texts[0] if len(texts) == 1 else texts
    got = _Field(source).get(doc)
    expected = reference(doc, texts)
    assert got is expected or (type(got) is type(expected) and got == expected)


ROUTE = Route("acc", "px", "ev")


@given(
    conversion_id=st.text(max_size=8),
    payload=st.binary(max_size=8),
    dropped=st.lists(st.tuples(st.text(max_size=4), st.text(max_size=4)), max_size=3).map(tuple),
)
def test_slot_built_conversion_equals_the_constructor(
    conversion_id: str, payload: bytes, dropped: tuple[tuple[str, str], ...]
) -> None:
    built = _conversion(ROUTE, conversion_id, payload, dropped)
    made = Conversion(ROUTE, conversion_id, payload, dropped)
    assert built == made
    assert hash(built) == hash(made)
    assert repr(built) == repr(made)


def test_slot_built_conversion_stays_frozen_and_complete() -> None:
    built = _conversion(ROUTE, "id", b"{}", ())
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.conversion_id = "other"  # type: ignore[misc]
    assert [f.name for f in dataclasses.fields(Conversion)] == list(Conversion.__slots__)


@given(
    raw=st.text(alphabet="0123456789 +-()", min_size=1, max_size=16),
    region=st.sampled_from(["US", "GB", "DE", "FR", "IN", "JP", "ZZ"]),
)
def test_cached_phone_parse_equals_an_uncached_one(raw: str, region: str) -> None:
    first = normalize_phone(raw, region)
    assert normalize_phone(raw, region) == first  # second call from the cache
    if _parse_phone.cache_info().currsize:
        assert _parse_phone(raw, region) == _parse_phone.__wrapped__(raw, region)


def test_phone_cache_is_bounded() -> None:
    assert _parse_phone.cache_info().maxsize == 1024


@given(doc=docs, text=filter_paths)
def test_compiled_reader_equals_the_path_lookup(doc: Any, text: str) -> None:
    path = compile_path(text)
    got, expected = compile_reader(path)(doc), lookup(doc, path)
    assert got is expected or (type(got) is type(expected) and got == expected)
