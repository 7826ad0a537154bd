"""JSON and YAML documents read with limits: every emulator parser (REST bodies, admin bodies, seed, data and
fault files) goes through here, so that no input costs unbounded time or memory or ends in a traceback.

Limits: nesting at most MAX_DEPTH levels, integers at most MAX_INT_DIGITS digits (Python refuses more than
4,300 with a ValueError that used to escape as a 500), YAML aliases at most MAX_YAML_ALIASES (each may
stand for a whole subtree: "billion laughs"). File sizes are the caller's choice (``read_text``).
Errors are :class:`InputError`, whose ``reason`` never quotes the document: it may hold secret values.
"""

from __future__ import annotations

import json
import re
import reprlib
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

MAX_DEPTH = 64
"""Deepest nesting of objects/arrays (mappings/sequences) accepted; real documents use fewer than 10."""
MAX_INT_DIGITS = 40
"""Longest integer literal accepted; int64 and uint64 need at most 20 digits."""
MAX_YAML_ALIASES = 100
"""Most YAML aliases (``*name``) in one document."""

_DECIMAL_INT = re.compile(r"[-+]?[0-9][0-9_]*")
_shown = reprlib.Repr()
_shown.maxstring = 40
_shown.maxother = 40
_shown.maxlevel = 2


def shown(value: object) -> str:
    """A short repr for error messages: bounded in length and in cost, whatever ``value`` holds."""
    return _shown.repr(value)


class InputError(ValueError):
    """A document the emulator refuses; ``reason`` says why without quoting it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _parse_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise InputError(f"a number has more than {MAX_INT_DIGITS} digits")
    return int(digits)


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN/Infinity as bare words; JSON does not.
    raise InputError("NaN and Infinity are not JSON")


def too_deep() -> InputError:
    """The error for a document nested deeper than MAX_DEPTH."""
    return InputError(f"nested deeper than {MAX_DEPTH} levels")


def check_depth(value: Any) -> None:
    """InputError when ``value`` (decoded JSON/YAML) nests deeper than MAX_DEPTH; iterative, so it cannot
    recurse too deep itself, and it visits each container once (a YAML alias is not walked twice)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    seen: set[int] = set()
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, dict | list) or id(item) in seen:
            continue
        if depth > MAX_DEPTH:
            raise too_deep()
        seen.add(id(item))
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children)


def loads_json(text: str) -> Any:
    """``json.loads`` with the limits above. ``json.JSONDecodeError`` (position in ``msg``/``lineno``/
    ``colno``, never the text) for a syntax error, InputError for the rest."""
    try:
        value = json.loads(text, parse_int=_parse_int, parse_constant=_reject_constant)
    except RecursionError:
        raise too_deep() from None
    check_depth(value)
    return value


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` with the limits above. ``yaml.YAMLError`` for a syntax error, InputError for the
    rest. Depth and aliases are counted on the event stream first, so nothing deep is ever built."""
    depth = 0
    aliases = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise too_deep()
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            depth -= 1
        elif isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_YAML_ALIASES:
                raise InputError(f"more than {MAX_YAML_ALIASES} aliases")
        elif isinstance(event, yaml.ScalarEvent) and event.style is None and _long_number(event.value):
            raise InputError(f"a number has more than {MAX_INT_DIGITS} digits")
    try:
        return yaml.safe_load(text)
    except RecursionError:
        raise too_deep() from None
    except ValueError:
        # PyYAML's constructors raise ValueError for values they cannot build (an impossible date such as
        # 2024-13-45); the message is not worth showing, and must not reach the caller as a traceback.
        raise InputError("a value cannot be read (an impossible date or number)") from None


def _long_number(value: str) -> bool:
    # Only what YAML resolves to a decimal int: Python's digit limit applies to those alone.
    return len(value) > MAX_INT_DIGITS and _DECIMAL_INT.fullmatch(value) is not None


def read_text(path: Path, limit: int) -> str:
    """The UTF-8 text of ``path``, at most ``limit`` bytes; OSError/UnicodeDecodeError as ``open`` raises
    them, InputError when larger."""
    with open(path, "rb") as stream:
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise InputError(f"larger than {limit} bytes")
    return data.decode("utf-8")


async def read_body(request: web.Request, limit: int) -> bytes | None:
    """The request body, or None when it is larger than ``limit`` bytes (by its Content-Length, or as it
    arrives when it has none): whatever the application's own limit, no more is ever held in memory."""
    if request.content_length is not None and request.content_length > limit:
        return None
    data = bytearray()
    while chunk := await request.content.read(64 * 1024):
        data += chunk
        if len(data) > limit:
            return None
    return bytes(data)
