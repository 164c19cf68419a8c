"""Field paths into a producer's JSON: ``a.b``, ``a[0].b``, ``events[name=purchase].params``.

Paths are compiled once at start-up into tuples of steps so that a lookup on the hot path
is a short loop of dict/list accesses.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

Step = str | int | tuple[str, str]
Path = tuple[Step, ...]

MISSING: Final[Any] = object()

_TOKEN = re.compile(r"([^.\[\]=]+)|\[(\d+)\]|\[([^=\[\]]+)=([^\[\]]*)\]|(\.)")


class PathError(ValueError):
    """A path in the settings does not follow the grammar."""


def compile_path(text: str) -> Path:
    """``"events[name=purchase].params.value"`` -> ``("events", ("name", "purchase"), ...)``."""
    if not text:
        raise PathError("empty field path")
    steps: list[Step] = []
    pos = 0
    expect_name = True  # after a dot a name must follow
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise PathError(f"bad field path {text!r} at position {pos}")
        name, index, fkey, fvalue, dot = match.groups()
        if dot:
            if expect_name:
                raise PathError(f"bad field path {text!r}: empty segment")
            expect_name = True
        elif name is not None:
            if not expect_name:
                raise PathError(f"bad field path {text!r}: missing dot before {name!r}")
            steps.append(name)
            expect_name = False
        elif index is not None:
            steps.append(int(index))
            expect_name = False
        else:
            steps.append((fkey, fvalue))
            expect_name = False
        pos = match.end()
    if expect_name:
        raise PathError(f"bad field path {text!r}: ends with a dot")
    return tuple(steps)


def lookup(doc: Any, path: Path) -> Any:
    """The value at ``path`` or ``MISSING``; never raises on any JSON value."""
    node = doc
    for step in path:
        if type(step) is str:
            if type(node) is not dict:
                return MISSING
            node = node.get(step, MISSING)
            if node is MISSING:
                return MISSING
        elif type(step) is int:
            if type(node) is not list or step >= len(node):
                return MISSING
            node = node[step]
        else:
            if type(node) is not list:
                return MISSING
            key, want = step  # type: ignore[misc,str-unpack]
            for element in node:
                if type(element) is dict and str(element.get(key)) == want:
                    node = element
                    break
            else:
                return MISSING
    return node


def compile_reader(path: Path) -> Callable[[Any], Any]:
    """A function equal to ``lambda doc: lookup(doc, path)``, specialised once for the
    shape of the GA4 preset's paths (a key, a ``[key=value]`` filter, then keys): the
    generic loop tells each step's kind apart on every call, seven times per GA4 event."""
    if (
        len(path) >= 2
        and type(path[0]) is str
        and type(path[1]) is tuple
        and all(type(step) is str for step in path[2:])
    ):
        outer = path[0]
        fkey, want = path[1]
        rest = tuple(str(step) for step in path[2:])

        def filtered(doc: Any) -> Any:
            node = doc.get(outer, MISSING) if type(doc) is dict else MISSING
            if type(node) is not list:
                return MISSING
            for element in node:
                if type(element) is dict and str(element.get(fkey)) == want:
                    node = element
                    break
            else:
                return MISSING
            for key in rest:
                if type(node) is not dict:
                    return MISSING
                node = node.get(key, MISSING)
                if node is MISSING:
                    return MISSING
            return node

        return filtered
    return lambda doc: lookup(doc, path)
