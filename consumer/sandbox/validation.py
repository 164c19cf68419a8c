"""Field rules of X's Web Conversions endpoint: request body bytes in, list of problems out.

Pure and I/O-free so every rule is unit-tested on its own. It sits on the sandbox's hot
path (500 conversions per request, hundreds of requests per second): a body is first
offered to :mod:`consumer.sandbox.fastpath` (msgspec structs and column-wide checks,
no dicts built); only a body it cannot vouch for is parsed with orjson and checked here,
conversion by conversion, with a one-pass check first and the detailed checks, which
build the messages, only once a rule has failed. The checks here are the reference.

Problems never echo identifier values (hashed or not): a raw e-mail sent by mistake as
``hashed_email`` must not travel on into error lists, logs or dead-letter headers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import orjson

from consumer.iso4217 import ISO_4217
from consumer.sandbox import fastpath

MAX_CONVERSIONS: Final = 500

INVALID: Final = "INVALID_PARAMETER"
MISSING: Final = "MISSING_PARAMETER"
NOT_FOUND: Final = "NOT_FOUND"

_TIME_RE: Final = re.compile(
    r"\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d\.\d{3}Z",
    re.ASCII,
)
_SHA256_RE: Final = re.compile(r"[0-9a-fA-F]{64}", re.ASCII)
_OCTET: Final = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4_RE: Final = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}", re.ASCII)
_NUMERIC_RE: Final = re.compile(r"-?\d+(?:\.\d+)?", re.ASCII)
_INTEGER_RE: Final = re.compile(r"\d+", re.ASCII)

_TOP_KEYS: Final = frozenset({"conversions"})
_REQUIRED_KEYS: Final = ("conversion_time", "event_id", "identifiers")
_CONVERSION_KEYS: Final = frozenset(
    {
        "conversion_time",
        "event_id",
        "identifiers",
        "number_items",
        "price_currency",
        "value",
        "conversion_id",
        "description",
        "contents",
    }
)
_HASHED_KEYS: Final = frozenset({"hashed_email", "hashed_phone_number"})
_IDENTIFIER_KEYS: Final = frozenset(
    {"twclid", "hashed_email", "hashed_phone_number", "ip_address", "user_agent"}
)
# Identifiers that may not stand alone: X needs a second identifier beside each of them.
_WEAK_IDENTIFIERS: Final = frozenset({"ip_address", "user_agent"})
_CONTENT_KEYS: Final = frozenset(
    {"content_id", "content_group_id", "content_name", "content_price", "content_type", "num_items"}
)
_CONTENT_STRINGS: Final = ("content_id", "content_name", "content_type")
_SHORT_ECHO: Final = 64


@dataclass(frozen=True, slots=True)
class Problem:
    """One entry of X's ``errors`` list; ``status`` is the HTTP status it calls for."""

    code: str
    message: str
    parameter: str
    status: int = 400

    def as_json(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "parameter": self.parameter}


@dataclass(slots=True)
class ValidationResult:
    """The problems; for an accepted body, its conversions' count and ids.

    ``conversion_ids`` holds the ids of the conversions that have one, in order. The
    parsed ``conversions`` (only meaningful when there is no problem) are parsed from
    ``body`` when first read if the fast path accepted it: it builds no dicts.
    """

    problems: list[Problem] = field(default_factory=list)
    count: int = 0
    conversion_ids: list[str] = field(default_factory=list)
    body: bytes = b""
    parsed: list[dict[str, Any]] | None = None

    @property
    def conversions(self) -> list[dict[str, Any]]:
        if self.problems:
            return []
        if self.parsed is None:
            self.parsed = orjson.loads(self.body)["conversions"] if self.count else []
        return self.parsed

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def status(self) -> int:
        """200 when valid; 400 when any field is wrong; 404 only for foreign event tags.

        A field error outranks a foreign ``event_id``: the 400 lists only the field errors,
        so a client isolating bad events never mistakes a blocked event tag for a bad event.
        """
        if not self.problems:
            return 200
        if any(p.status == 400 for p in self.problems):
            return 400
        return self.problems[0].status

    def answered_problems(self) -> list[Problem]:
        """The problems listed in the answer: those of the status that is answered."""
        status = self.status
        return [p for p in self.problems if p.status == status]


def accepted_event_ids(pixel_id: str, event_ids: Iterable[str]) -> frozenset[str]:
    """Both spellings X accepts for an event tag: bare ``ol288`` and ``tw-oka17-ol288``."""
    forms: set[str] = set()
    for event_id in event_ids:
        forms.add(event_id)
        forms.add(f"tw-{pixel_id}-{event_id}")
    return frozenset(forms)


def _echo(value: object) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return text if len(text) <= _SHORT_ECHO else text[:_SHORT_ECHO] + "..."


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _is_numeric(value: object) -> bool:
    """A double as X reads it: a JSON number or a decimal string such as ``"20.00"``."""
    kind = type(value)
    if kind is float or kind is int:
        return True
    return isinstance(value, str) and _NUMERIC_RE.fullmatch(value) is not None


def _is_positive_int(value: object) -> bool:
    return type(value) is int and value > 0


def _valid_time(value: str) -> bool:
    if _TIME_RE.fullmatch(value) is None:
        return False
    if value[8:10] <= "28":
        return True
    try:  # day 29..31: ask the calendar (leap years, 30-day months)
        datetime(int(value[0:4]), int(value[5:7]), int(value[8:10]))
    except ValueError:
        return False
    return True


def is_sha256_hex(value: str) -> bool:
    return _SHA256_RE.fullmatch(value) is not None


def is_dotted_ipv4(value: str) -> bool:
    return _IPV4_RE.fullmatch(value) is not None


def validate_body(
    body: bytes,
    *,
    event_ids: frozenset[str],
    reject_conversion_ids: frozenset[str] = frozenset(),
    max_conversions: int = MAX_CONVERSIONS,
) -> ValidationResult:
    """Check a request body against every field rule; list every problem found.

    ``event_ids`` holds the accepted spellings of the account's event tags (see
    :func:`accepted_event_ids`); ``reject_conversion_ids`` is the sandbox fault that
    answers chosen conversions as invalid.
    """
    accepted = fastpath.accept(body, event_ids, reject_conversion_ids, max_conversions)
    if accepted is not None:
        count, ids = accepted
        return ValidationResult(count=count, conversion_ids=ids, body=body)
    return validate_detailed(
        body,
        event_ids=event_ids,
        reject_conversion_ids=reject_conversion_ids,
        max_conversions=max_conversions,
    )


def validate_detailed(
    body: bytes,
    *,
    event_ids: frozenset[str],
    reject_conversion_ids: frozenset[str] = frozenset(),
    max_conversions: int = MAX_CONVERSIONS,
) -> ValidationResult:
    """:func:`validate_body` without the fast path: the reference, which names problems."""
    result = ValidationResult(body=body)
    problems = result.problems
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        problems.append(Problem(INVALID, "Request body is not valid JSON", ""))
        return result
    if type(document) is not dict:
        problems.append(
            Problem(INVALID, "Request body must be a JSON object with a conversions array", "")
        )
        return result
    for key in document.keys() - _TOP_KEYS:
        problems.append(Problem(INVALID, f"Unknown parameter {_echo(key)}", _echo(key)))
    conversions = document.get("conversions")
    if conversions is None:
        problems.append(Problem(MISSING, "conversions is required", "conversions"))
        return result
    if type(conversions) is not list:
        problems.append(Problem(INVALID, "conversions must be an array", "conversions"))
        return result
    if not conversions:
        problems.append(Problem(INVALID, "At least one conversion must be provided", "conversions"))
        return result
    if len(conversions) > max_conversions:
        problems.append(
            Problem(INVALID, f"Conversion count limit is {max_conversions}", "conversions")
        )
        return result
    for index, conversion in enumerate(conversions):
        if type(conversion) is not dict:
            problems.append(
                Problem(INVALID, "A conversion must be an object", f"conversions[{index}]")
            )
        elif not _conversion_ok(conversion, event_ids, reject_conversion_ids):
            _check_conversion(index, conversion, event_ids, reject_conversion_ids, problems)
    if not problems:
        result.parsed = conversions
        result.count = len(conversions)
        result.conversion_ids = [c["conversion_id"] for c in conversions if "conversion_id" in c]
    return result


def accept_body(body: bytes) -> ValidationResult:
    """Validation switched off: any well-formed JSON is accepted as it is.

    The conversions counted are the items of ``conversions`` when the body is an object
    with such an array (none otherwise); the ids are the string ``conversion_id``s among
    them. Only a body that is not JSON is refused, with the usual problem.
    """
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ValidationResult([Problem(INVALID, "Request body is not valid JSON", "")])
    conversions = document.get("conversions") if type(document) is dict else None
    if type(conversions) is not list:
        return ValidationResult(parsed=[])
    ids = [
        item["conversion_id"]
        for item in conversions
        if type(item) is dict and type(item.get("conversion_id")) is str
    ]
    return ValidationResult(
        count=len(conversions), conversion_ids=ids, body=body, parsed=conversions
    )


def _conversion_ok(
    conversion: dict[str, Any], event_ids: frozenset[str], reject_ids: frozenset[str]
) -> bool:
    """One pass, no allocation: True when every rule holds. False only means "look closer":
    :func:`_check_conversion` then names the problems (and is the reference for the rules).
    """
    required = 0
    for key, value in conversion.items():
        kind = type(value)
        if key == "identifiers":
            if kind is not list or not value:
                return False
            strong = False
            weak = 0
            for identifier in value:
                if type(identifier) is not dict or not identifier:
                    return False
                for name, item in identifier.items():
                    if type(item) is not str or not item:
                        return False
                    if name in _HASHED_KEYS:
                        if _SHA256_RE.fullmatch(item) is None:
                            return False
                        strong = True
                    elif name == "twclid":
                        strong = True
                    elif name == "ip_address":
                        if _IPV4_RE.fullmatch(item) is None:
                            return False
                        weak |= 1
                    elif name == "user_agent":
                        weak |= 2
                    else:
                        return False
            if not strong and weak != 3:
                return False
            required += 1
        elif key == "conversion_time":
            if kind is not str or _TIME_RE.fullmatch(value) is None:
                return False
            if value[8:10] > "28" and not _valid_time(value):
                return False
            required += 1
        elif key == "event_id":
            if kind is not str or value not in event_ids:
                return False
            required += 1
        elif key == "value":
            if not (kind is float or kind is int or (kind is str and _NUMERIC_RE.fullmatch(value))):
                return False
        elif key == "number_items":
            if kind is not int or value <= 0:
                return False
        elif key == "price_currency":
            if kind is not str or value not in ISO_4217:
                return False
        elif key == "conversion_id":
            if kind is not str or not value or value in reject_ids:
                return False
        elif key == "description":
            if kind is not str:
                return False
        elif key == "contents":
            if kind is not list:
                return False
            for content in value:
                if type(content) is not dict:
                    return False
                for name, item in content.items():
                    item_kind = type(item)
                    if name == "num_items":
                        if item_kind is not int or item <= 0:
                            return False
                    elif name == "content_price":
                        if not (
                            item_kind is float
                            or item_kind is int
                            or (item_kind is str and _NUMERIC_RE.fullmatch(item))
                        ):
                            return False
                    elif name == "content_group_id":
                        if not (
                            (item_kind is int and item >= 0)
                            or (item_kind is str and _INTEGER_RE.fullmatch(item) is not None)
                        ):
                            return False
                    elif item_kind is not str or name not in _CONTENT_KEYS:
                        return False
        else:
            return False
    return required == 3


def _check_conversion(
    index: int,
    conversion: dict[str, Any],
    event_ids: frozenset[str],
    reject_ids: frozenset[str],
    problems: list[Problem],
) -> None:
    """Rules of one conversion object; appends to ``problems``, silent when valid."""
    keys = conversion.keys()
    if not keys <= _CONVERSION_KEYS:
        for key in sorted(keys - _CONVERSION_KEYS):
            problems.append(
                Problem(INVALID, f"Unknown parameter {_echo(key)}", f"conversions[{index}].{key}")
            )
    for key in _REQUIRED_KEYS:
        if key not in conversion:
            problems.append(Problem(MISSING, f"{key} is required", f"conversions[{index}].{key}"))

    time_value = conversion.get("conversion_time")
    if (time_value is not None or "conversion_time" in conversion) and (
        type(time_value) is not str or not _valid_time(time_value)
    ):
        problems.append(
            Problem(
                INVALID,
                "Expected Time in yyyy-MM-ddTHH:mm:ss.SSSZ, "
                f'got "{_echo(time_value)}" for conversion_time',
                f"conversions[{index}].conversion_time",
            )
        )

    event_id = conversion.get("event_id")
    if event_id is not None or "event_id" in conversion:
        if type(event_id) is not str or not event_id:
            problems.append(
                Problem(
                    INVALID,
                    f"event_id must be a non-empty string, got {_type_name(event_id)}",
                    f"conversions[{index}].event_id",
                )
            )
        elif event_id not in event_ids:
            problems.append(
                Problem(
                    NOT_FOUND,
                    f"event_id ({_echo(event_id)}) does not belong to provided account",
                    f"conversions[{index}].event_id",
                    404,
                )
            )

    if "identifiers" in conversion:
        _check_identifiers(index, conversion["identifiers"], problems)

    if "number_items" in conversion and not _is_positive_int(conversion["number_items"]):
        problems.append(
            Problem(
                INVALID,
                "number_items must be a positive integer",
                f"conversions[{index}].number_items",
            )
        )
    if "price_currency" in conversion:
        currency = conversion["price_currency"]
        if type(currency) is not str or currency not in ISO_4217:
            problems.append(
                Problem(
                    INVALID,
                    f"price_currency ({_echo(currency)}) is not an ISO 4217 currency code",
                    f"conversions[{index}].price_currency",
                )
            )
    if "value" in conversion and not _is_numeric(conversion["value"]):
        problems.append(
            Problem(
                INVALID,
                "value must be a number or a numeric string",
                f"conversions[{index}].value",
            )
        )
    if "conversion_id" in conversion:
        conversion_id = conversion["conversion_id"]
        if type(conversion_id) is not str or not conversion_id:
            problems.append(
                Problem(
                    INVALID,
                    "conversion_id must be a non-empty string",
                    f"conversions[{index}].conversion_id",
                )
            )
        elif reject_ids and conversion_id in reject_ids:
            problems.append(
                Problem(
                    INVALID,
                    f"conversion_id ({_echo(conversion_id)}) is rejected "
                    "(sandbox fault reject_conversion_ids)",
                    f"conversions[{index}].conversion_id",
                )
            )
    if "description" in conversion and type(conversion["description"]) is not str:
        problems.append(
            Problem(INVALID, "description must be a string", f"conversions[{index}].description")
        )
    if "contents" in conversion:
        _check_contents(index, conversion["contents"], problems)


def _check_identifiers(index: int, identifiers: object, problems: list[Problem]) -> None:
    if type(identifiers) is not list:
        problems.append(
            Problem(INVALID, "identifiers must be an array", f"conversions[{index}].identifiers")
        )
        return
    if not identifiers:
        problems.append(
            Problem(
                INVALID,
                "At least one user identifier must be provided",
                f"conversions[{index}].identifiers",
            )
        )
        return
    kinds: set[str] = set()
    weak_only = True
    for identifier in identifiers:
        # Happy path: known fields, well-formed values; anything else goes the slow way.
        if type(identifier) is dict and identifier:
            for key, value in identifier.items():
                if type(value) is not str or not value:
                    break
                if key in _HASHED_KEYS:
                    if _SHA256_RE.fullmatch(value) is None:
                        break
                    weak_only = False
                elif key == "ip_address":
                    if _IPV4_RE.fullmatch(value) is None:
                        break
                    kinds.add(key)
                elif key == "user_agent":
                    kinds.add(key)
                elif key == "twclid":
                    weak_only = False
                else:
                    break
            else:
                continue
        _identifier_problems(index, identifiers, problems)
        return
    if weak_only and len(kinds) == 1:
        (alone,) = kinds
        problems.append(
            Problem(
                INVALID,
                f"{alone} must be sent with another identifier "
                "(twclid, hashed_email, hashed_phone_number, ip_address or user_agent)",
                f"conversions[{index}].identifiers",
            )
        )


def _identifier_problems(index: int, identifiers: list[Any], problems: list[Problem]) -> None:
    """Slow path once an identifier looks wrong: name every problem of the list."""
    where = f"conversions[{index}].identifiers"
    kinds: set[str] = set()
    for position, identifier in enumerate(identifiers):
        if type(identifier) is not dict or not identifier:
            problems.append(
                Problem(
                    INVALID,
                    "An identifier must be an object with at least one identifier field",
                    f"{where}[{position}]",
                )
            )
            continue
        for key, value in identifier.items():
            if key not in _IDENTIFIER_KEYS:
                problems.append(
                    Problem(
                        INVALID,
                        f"Unknown identifier {_echo(key)}",
                        f"{where}[{position}].{_echo(key)}",
                    )
                )
                continue
            kinds.add(key)
            if type(value) is not str or not value:
                problems.append(
                    Problem(
                        INVALID, f"{key} must be a non-empty string", f"{where}[{position}].{key}"
                    )
                )
            elif key in _HASHED_KEYS:
                if _SHA256_RE.fullmatch(value) is None:
                    problems.append(
                        Problem(
                            INVALID,
                            f"{key} is not a valid SHA-256 hash",
                            f"{where}[{position}].{key}",
                        )
                    )
            elif key == "ip_address" and _IPV4_RE.fullmatch(value) is None:
                problems.append(
                    Problem(
                        INVALID,
                        "ip_address must be an IPv4 address in dotted-decimal notation",
                        f"{where}[{position}].{key}",
                    )
                )
    if len(kinds) == 1 and kinds <= _WEAK_IDENTIFIERS:
        (alone,) = kinds
        problems.append(
            Problem(
                INVALID,
                f"{alone} must be sent with another identifier "
                "(twclid, hashed_email, hashed_phone_number, ip_address or user_agent)",
                where,
            )
        )


def _content_ok(content: dict[str, Any]) -> bool:
    """Fast yes for a well-formed content object; False sends it to the detailed checks."""
    for key, value in content.items():
        kind = type(value)
        if key == "num_items":
            if kind is not int or value <= 0:
                return False
        elif key == "content_price":
            if not (kind is float or kind is int or (kind is str and _NUMERIC_RE.fullmatch(value))):
                return False
        elif key == "content_group_id":
            if not (
                (kind is int and value >= 0)
                or (kind is str and _INTEGER_RE.fullmatch(value) is not None)
            ):
                return False
        elif key not in _CONTENT_KEYS or kind is not str:
            return False
    return True


def _check_contents(index: int, contents: object, problems: list[Problem]) -> None:
    if type(contents) is not list:
        problems.append(
            Problem(INVALID, "contents must be an array", f"conversions[{index}].contents")
        )
        return
    for position, content in enumerate(contents):
        if type(content) is dict and _content_ok(content):
            continue
        at = f"conversions[{index}].contents[{position}]"
        if type(content) is not dict:
            problems.append(Problem(INVALID, "A content must be an object", at))
            continue
        keys = content.keys()
        if not keys <= _CONTENT_KEYS:
            for key in sorted(keys - _CONTENT_KEYS):
                problems.append(Problem(INVALID, f"Unknown parameter {_echo(key)}", f"{at}.{key}"))
        for key in _CONTENT_STRINGS:
            if key in content and type(content[key]) is not str:
                problems.append(Problem(INVALID, f"{key} must be a string", f"{at}.{key}"))
        if "content_group_id" in content:
            # Documented as integer; the reference page's own example sends "123".
            group = content["content_group_id"]
            if not (
                (type(group) is int and group >= 0)
                or (type(group) is str and _INTEGER_RE.fullmatch(group) is not None)
            ):
                problems.append(
                    Problem(
                        INVALID,
                        "content_group_id must be an integer or a string of digits",
                        f"{at}.content_group_id",
                    )
                )
        if "content_price" in content and not _is_numeric(content["content_price"]):
            problems.append(
                Problem(
                    INVALID,
                    "content_price must be a number or a numeric string",
                    f"{at}.content_price",
                )
            )
        if "num_items" in content and not _is_positive_int(content["num_items"]):
            problems.append(
                Problem(INVALID, "num_items must be a positive integer", f"{at}.num_items")
            )
