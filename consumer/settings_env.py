"""``XCONV_*`` environment variables -> overrides of the settings file: pure, no I/O.

pydantic-settings reads nested variables but ignores the ones that match no field (a
typo is silently lost) and cannot address one element of a list (``XCONV_ACCOUNTS__0__…``
replaced the whole list and failed). This module maps each variable to a path in the
settings model instead, refuses a variable that matches nothing, naming the closest
valid one (difflib), and merges lists by index.

Forms (segments are separated by ``__`` and compared case-insensitively):

- ``XCONV_<SECTION>__<KEY>``: one value, e.g. ``XCONV_KAFKA__BOOTSTRAP_SERVERS``.
- ``XCONV_ACCOUNTS__<index>__<KEY>``: one key of the ``[[accounts]]`` entry at
  ``index`` (0-based, file order); ``index`` equal to the number of entries adds one.
- A list, table or whole section as JSON, e.g. ``XCONV_KAFKA__TOPICS='["a","b"]'``,
  ``XCONV_KAFKA__EXTRA='{"fetch.wait.max.ms":"100"}'``. A JSON object merges into the
  file's table key by key; a JSON list replaces the file's list.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final, Union, get_args, get_origin

import orjson
from pydantic import BaseModel

from consumer.errors import ConfigError

ENV_PREFIX: Final = "XCONV_"
DELIMITER: Final = "__"

#: ``XCONV_`` variables that are not settings: the config file's path, and the
#: development tools' own knobs (devtools/kafka.py, the test fixtures, the image build).
NON_SETTING_ENV: Final = frozenset(
    {"XCONV_CONFIG", "XCONV_KAFKA_CACHE", "XCONV_KAFKA_VERSION", "XCONV_IMAGE"}
)
#: Prefixes of non-setting variables (the test suite's external-broker settings).
NON_SETTING_PREFIXES: Final = ("XCONV_TEST_",)

# Kubernetes "service links": a Service named xconv (or xconv-…) in the namespace gives
# every pod XCONV_SERVICE_HOST, XCONV_SERVICE_PORT[_NAME], XCONV_PORT=tcp://…,
# XCONV_PORT_9464_TCP[_PROTO|_PORT|_ADDR]. No setting has these shapes; a bare
# ``…_PORT`` only counts when its value is a ``tcp://``-style address, so that a typo
# such as XCONV_OBSERVABILITY_HTTP_PORT=9464 is still refused.
_SERVICE_LINK = re.compile(
    r"^XCONV(?:_[A-Z0-9_]+?)?_(?:SERVICE_HOST|SERVICE_PORT(?:_[A-Z0-9_]+)?|"
    r"PORT_\d+_(?:TCP|UDP|SCTP)(?:_(?:PROTO|PORT|ADDR))?)$"
)
_SERVICE_LINK_PORT = re.compile(r"^XCONV(?:_[A-Z0-9_]+?)?_PORT$")
_SERVICE_LINK_ADDRESS = re.compile(r"^(?:tcp|udp|sctp)://\S+:\d+$")


def is_service_link(name: str, value: str) -> bool:
    """True for the variables Kubernetes sets for a Service whose name starts with xconv."""
    if _SERVICE_LINK.match(name):
        return True
    return bool(_SERVICE_LINK_PORT.match(name) and _SERVICE_LINK_ADDRESS.match(value))


Path = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class EnvOverride:
    """One variable: its name, the settings path it sets and the (decoded) value."""

    name: str
    path: Path
    value: Any


def _unwrap(annotation: Any) -> Any:
    """``Annotated[X, ...]`` -> X; ``X | None`` -> X (the non-None member, if one)."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return _unwrap(members[0])
        models = [m for m in members if _is_model(_unwrap(m))]
        if len(models) == 1:
            return _unwrap(models[0])
    return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _is_structured(annotation: Any) -> bool:
    """Values of these types arrive as JSON: models, lists, dicts."""
    return _is_model(annotation) or get_origin(annotation) in (list, dict, tuple, set)


def _list_item(annotation: Any) -> Any | None:
    if get_origin(annotation) is list:
        return _unwrap(get_args(annotation)[0])
    return None


def _resolve(model: type[BaseModel], segments: list[str]) -> tuple[Path, Any] | None:
    """The settings path of ``segments`` and the annotation found there, or None."""
    path: list[str | int] = []
    annotation: Any = model
    for segment in segments:
        if _is_model(annotation):
            fields = annotation.model_fields
            name = segment.lower()
            if name not in fields:
                return None
            path.append(name)
            annotation = _unwrap(fields[name].annotation)
        elif (item := _list_item(annotation)) is not None and segment.isdigit():
            path.append(int(segment))
            annotation = item
        else:
            return None  # below a scalar, a dict (set it as JSON) or a bad index
    return tuple(path), annotation


def setting_env_names(model: type[BaseModel], index: int = 0) -> Iterator[str]:
    """Every variable name that sets one leaf (lists shown with ``index``)."""

    def walk(annotation: Any, prefix: str) -> Iterator[str]:
        if _is_model(annotation):
            for name, info in annotation.model_fields.items():
                yield from walk(_unwrap(info.annotation), f"{prefix}{DELIMITER}{name.upper()}")
        elif (item := _list_item(annotation)) is not None and _is_model(item):
            yield prefix
            yield from walk(item, f"{prefix}{DELIMITER}{index}")
        else:
            yield prefix

    for name, info in model.model_fields.items():
        yield from walk(_unwrap(info.annotation), ENV_PREFIX + name.upper())


_INDEX = re.compile(r"__(\d+)(?=__|$)")


def closest_setting(name: str, model: type[BaseModel]) -> str | None:
    """The valid variable name nearest to ``name`` (difflib), keeping its list index."""
    found = _INDEX.search(name)
    index = int(found.group(1)) if found else 0
    candidates = list(setting_env_names(model, index))
    matches = difflib.get_close_matches(name.upper(), candidates, n=1, cutoff=0.6)
    return matches[0] if matches else None


def is_setting_candidate(name: str, referenced: Collection[str] = (), value: str = "") -> bool:
    """True for variables that must name a setting: ``XCONV_*`` except the tools' own,
    Kubernetes service links, and those a secret reads through ``env:NAME``."""
    upper = name.upper()
    if not upper.startswith(ENV_PREFIX) or name in referenced:
        return False
    if upper in NON_SETTING_ENV or upper.startswith(NON_SETTING_PREFIXES):
        return False
    return not is_service_link(name, value)


def env_overrides(
    environ: Mapping[str, str], model: type[BaseModel], referenced: Collection[str] = ()
) -> list[EnvOverride]:
    """The overrides the environment asks for, shortest path first (so ``XCONV_KAFKA``
    as JSON applies before ``XCONV_KAFKA__GROUP_ID``).

    Raises ``ConfigError`` naming every variable that matches no setting (with the
    closest valid name) or holds invalid JSON where JSON is needed; values are never
    quoted.
    """
    overrides: list[EnvOverride] = []
    problems: list[str] = []
    for name in sorted(environ):
        if not is_setting_candidate(name, referenced, environ[name]):
            continue
        segments = name[len(ENV_PREFIX) :].split(DELIMITER)
        resolved = _resolve(model, segments) if all(segments) else None
        if resolved is None:
            problems.append(_unknown(name, segments, model))
            continue
        path, annotation = resolved
        value: Any = environ[name]
        if _is_structured(annotation):
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError:
                problems.append(f"{name} must be JSON (a list or an object) for this setting")
                continue
        overrides.append(EnvOverride(name, path, value))
    if problems:
        raise ConfigError("environment", "; ".join(problems))
    overrides.sort(key=lambda o: len(o.path))
    return overrides


def _unknown(name: str, segments: list[str], model: type[BaseModel]) -> str:
    """Why ``name`` matches nothing: below a table (set the table as JSON), or the
    closest valid name."""
    for depth in range(len(segments) - 1, 0, -1):
        found = _resolve(model, segments[:depth])
        if found is not None and get_origin(found[1]) is dict:
            table = ENV_PREFIX + DELIMITER.join(segments[:depth]).upper()
            return (
                f"{name} matches no setting: {_dotted(found[0])} is a table, "
                f"set it as a JSON object in {table}"
            )
    hint = closest_setting(name, model)
    suggestion = f" (did you mean {hint}?)" if hint and hint != name.upper() else ""
    return f"{name} matches no setting{suggestion}"


def _dotted(path: Path) -> str:
    return ".".join(str(p) for p in path)


def _merge(base: Any, value: Any) -> Any:
    """JSON objects merge into tables key by key; anything else replaces."""
    if isinstance(base, dict) and isinstance(value, dict):
        merged = dict(base)
        for key, val in value.items():
            merged[key] = _merge(merged.get(key), val)
        return merged
    return value


def apply_overrides(data: Mapping[str, Any], overrides: list[EnvOverride]) -> dict[str, Any]:
    """A copy of the file's data with the overrides merged in (lists by index)."""
    result: dict[str, Any] = _merge({}, dict(data))
    for override in overrides:
        node: Any = result
        for depth, part in enumerate(override.path[:-1]):
            nxt = override.path[depth + 1]
            container: Any = [] if isinstance(nxt, int) else {}
            node = _child(node, part, container, override)
        _set(node, override.path[-1], override)
    return result


def _child(node: Any, part: str | int, empty: Any, override: EnvOverride) -> Any:
    if isinstance(part, int):
        _check_index(node, part, override)
        if part == len(node):
            node.append(empty)
        if not isinstance(node[part], type(empty)):
            node[part] = empty
        node[part] = _copy(node[part])
        return node[part]
    current = node.get(part)
    node[part] = _copy(current) if isinstance(current, type(empty)) else empty
    return node[part]


def _set(node: Any, part: str | int, override: EnvOverride) -> None:
    if isinstance(part, int):
        _check_index(node, part, override)
        if part == len(node):
            node.append(override.value)
            return
        node[part] = _merge(node[part], override.value)
    else:
        node[part] = _merge(node.get(part), override.value)


def _check_index(node: Any, index: int, override: EnvOverride) -> None:
    if not isinstance(node, list) or index > len(node):
        size = len(node) if isinstance(node, list) else 0
        where = _dotted(override.path[: override.path.index(index)])
        raise ConfigError(
            where,
            f"{override.name}: index {index} is past the end ({where} has {size} "
            f"entries; use index {size} to add one)",
        )


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    return value
