r"""One key out of a JSON or YAML secret: ``db.primary.password`` of a payload that holds a whole document.

Many secrets are documents (a service account's JSON, a YAML of database settings) while the app wants one
value in a file or a variable. This module takes it out, in four pure steps that ``extract`` chains:
``decode_payload`` (base64, for secrets stored encoded), ``parse_payload``, ``extract_key`` and
``value_bytes`` (how the value is delivered).

Key paths are parsed by ``agent.render.keypath`` (the syntax is documented there).

Mapping keys that are not strings (YAML ``1: x``, ``true: x``) are matched by the text the mapping's JSON
form gives them: ``1``, ``true``, ``false``, ``null``, ``1.5`` (written ``["1.5"]``: ``1.5`` is two
segments), so a segment finds exactly the keys a user sees in the JSON rendering of the mapping. A string
key of that text wins over the non-string one. PyYAML reads YAML 1.1, where ``on``, ``yes`` and ``no`` are
booleans: ``on: x`` is found as ``true``. Python takes ``1`` and ``true`` (``0`` and ``false``) for the
same key, so a mapping with both is refused as having a duplicate key.

Payloads are hostile input: at most ``MAX_PAYLOAD_BYTES``, nesting of at most ``MAX_DEPTH`` lists and
mappings, UTF-8. JSON refuses ``NaN`` and ``Infinity`` (they are not JSON, RFC 8259, and have no value to
deliver) and duplicate keys (which one did the user mean?), as YAML does through ``agent.config.yaml``'s
strict loader. YAML is read by the safe loader only (no ``!!python`` tags); a timestamp stays the text that
was written (a secret file gets ``2024-01-01``, not a reformatted date); aliases may not expand the document
beyond ``MAX_EXPANDED_SIZE``, measured on the composed graph before anything is built, so that a "billion
laughs" payload costs no more than reading its bytes; an alias to its own ancestor (a recursive document) is
refused.

No message names a value, or a key of the payload that the user did not write in the path: errors name the
configured path, the segment that failed and the kind of what was found (``a list``), at most a line number.
PyYAML's own wording is dropped because it quotes the payload (tags, alias names, characters).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Iterator, Mapping
from typing import Any, Literal, NoReturn

import yaml

# The configuration's strict loader: duplicate keys refused, nesting bounded (subclassed for payloads,
# below).
from agent.config.yaml import MAX_DEPTH, StrictLoader
from agent.render.keypath import (
    MAX_KEY_PATH_CHARS,
    MAX_KEY_PATH_SEGMENTS,
    KeyPath,
    format_key_path,
    key_text,
    parse_key_path,
)

Format = Literal["auto", "json", "yaml"]
Decode = Literal["none", "base64"]

MAX_PAYLOAD_BYTES = 1024 * 1024
"""Largest payload parsed (1 MiB); Secret Manager holds at most 64 KiB per version."""
MAX_YAML_BYTES = 64 * 1024
"""Largest YAML payload parsed: Secret Manager's own payload limit (JSON goes up to MAX_PAYLOAD_BYTES)."""
MAX_EXPANDED_SIZE = 4 * MAX_PAYLOAD_BYTES
"""Largest YAML document, aliases expanded, counted as one per node plus the length of every scalar. A YAML
text without aliases stays far below it (each node takes a character or two of source, and no escape makes a
scalar longer than its source), so only aliases can reach it, and rendering the largest accepted document
costs about as much as rendering a plain payload of the largest size."""

__all__ = [
    "MAX_DEPTH",
    "MAX_EXPANDED_SIZE",
    "MAX_KEY_PATH_CHARS",
    "MAX_KEY_PATH_SEGMENTS",
    "MAX_PAYLOAD_BYTES",
    "Decode",
    "ExtractError",
    "Format",
    "KeyPath",
    "decode_payload",
    "extract",
    "extract_key",
    "format_key_path",
    "parse_key_path",
    "parse_payload",
    "value_bytes",
]


class ExtractError(ValueError):
    """Why a key could not be taken from a payload; the message names the key path as configured, never a
    value."""


# --- decoding and parsing --------------------------------------------------------------------------------

_BASE64 = re.compile(rb"[A-Za-z0-9+/]*={0,2}|[A-Za-z0-9_-]*={0,2}")
_ASCII_SPACE = re.compile(rb"[ \t\n\r\v\f]+")


def decode_payload(data: bytes, decode: Decode) -> bytes:
    """``data`` as stored (``none``) or base64-decoded: the standard or the URL-safe alphabet (not mixed),
    padding optional. ASCII whitespace is ignored anywhere, not only around the text, so that the
    line-wrapped output of the ``base64`` tool decodes."""
    if decode == "none":
        return data
    if decode != "base64":
        raise ExtractError(f"unknown decoding {decode!r}: expected 'none' or 'base64'")
    text = _ASCII_SPACE.sub(b"", data)
    unpadded = text.rstrip(b"=")
    padding = len(text) - len(unpadded)
    if not _BASE64.fullmatch(text) or len(unpadded) % 4 == 1 or (padding and len(text) % 4 != 0):
        raise ExtractError("the payload is not valid base64")
    padded = unpadded + b"=" * (-len(unpadded) % 4)
    try:
        return base64.b64decode(padded.replace(b"-", b"+").replace(b"_", b"/"), validate=True)
    except binascii.Error:  # a backstop: the checks above leave nothing it refuses
        raise ExtractError("the payload is not valid base64") from None


def parse_payload(data: bytes, format: Format) -> object:
    """The document in ``data``: JSON, YAML, or (``auto``) JSON when its first non-blank character is ``{``
    or ``[`` and YAML otherwise. ``auto`` insists on a mapping or a list (a password parsed as YAML would be
    a document of one string); an explicit format takes any value. A leading UTF-8 BOM is ignored."""
    if format not in ("auto", "json", "yaml"):
        raise ExtractError(f"unknown payload format {format!r}: expected 'auto', 'json' or 'yaml'")
    if len(data) > MAX_PAYLOAD_BYTES:
        raise ExtractError(f"the payload is larger than {MAX_PAYLOAD_BYTES // (1024 * 1024)} MiB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ExtractError("the payload is not UTF-8 text") from None
    if format == "json" or (format == "auto" and text.lstrip(" \t\r\n")[:1] in ("{", "[")):
        return _parse_json(text)
    if len(data) > MAX_YAML_BYTES:
        # PyYAML parses in pure Python (about 15 s of CPU for a hostile 1 MiB flow list); Secret Manager
        # payloads are at most 64 KiB anyway, so only a .env value could be larger.
        raise ExtractError(f"a YAML payload is at most {MAX_YAML_BYTES // 1024} KiB; store it as JSON")
    document = _parse_yaml(text)
    if format == "auto" and not isinstance(document, dict | list):
        raise ExtractError("the payload is not a JSON or YAML document; set format")
    return document


def _too_deep() -> ExtractError:
    return ExtractError(f"the payload is nested more than {MAX_DEPTH} levels deep")


def _refuse_constant(_name: str) -> NoReturn:
    raise ExtractError("the payload is not valid JSON: NaN and Infinity are not JSON numbers")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        raise ExtractError("the payload has a duplicate key in a JSON object")
    return document


def _parse_json(text: str) -> object:
    try:
        document = json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=_unique_object)
    except ExtractError:
        raise
    except json.JSONDecodeError as error:  # msg is a fixed text of the json module, never the payload
        raise ExtractError(
            f"the payload is not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})"
        ) from None
    except RecursionError:  # nesting deep enough to exhaust the stack; MAX_DEPTH is checked below
        raise _too_deep() from None
    except ValueError:  # an integer of more than 4300 digits (its message is safe, but says little)
        raise ExtractError("the payload has a JSON number of more than 4300 digits") from None
    if _json_depth_exceeds(document):
        raise _too_deep()
    return document


def _json_depth_exceeds(document: object) -> bool:
    """Whether lists and objects nest more than MAX_DEPTH deep (without recursion)."""
    stack: list[tuple[object, int]] = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > MAX_DEPTH:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


class _Refused(Exception):
    """A payload refused by _PayloadLoader's own checks; the reason is safe to show."""


class _PayloadLoader(StrictLoader):
    """The configuration's strict loader for secret payloads: only lists and mappings count as nesting
    (a value in 64 nested mappings is accepted, as in JSON), timestamps stay text, and the composed graph's
    expanded size is bounded before construction."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.ScalarEvent, yaml.AliasEvent):
            return yaml.composer.Composer.compose_node(self, parent, index)
        if self.depth >= MAX_DEPTH:
            raise _Refused(f"the payload is nested more than {MAX_DEPTH} levels deep")
        return super().compose_node(parent, index)


def _construct_text(loader: yaml.SafeLoader, node: yaml.Node) -> str:
    if not isinstance(node, yaml.ScalarNode):
        raise yaml.constructor.ConstructorError(
            None, None, "expected a scalar for a timestamp", node.start_mark
        )
    return str(loader.construct_scalar(node))


_PayloadLoader.add_constructor("tag:yaml.org,2002:timestamp", _construct_text)


def _children(node: yaml.Node) -> Iterator[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield key
            yield value
    elif isinstance(node, yaml.SequenceNode):
        yield from node.value


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a graph whose aliases expand it beyond MAX_EXPANDED_SIZE, or that contains itself. Each node is
    measured once (depth-first, without recursion), so the check costs what the graph's size costs."""
    sizes: dict[int, int] = {}
    ancestors: set[int] = set()  # the nodes being measured: the path from the root to the current node
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, measured = stack.pop()
        key = id(node)
        if measured:
            ancestors.discard(key)
            size = 1 + sum(sizes[id(child)] for child in _children(node))
            if size > MAX_EXPANDED_SIZE:
                raise _Refused(
                    "the payload's YAML aliases expand it beyond "
                    f"{MAX_EXPANDED_SIZE // (1024 * 1024)} MiB (a 'billion laughs' document?)"
                )
            sizes[key] = size
        elif key in sizes:
            continue
        elif key in ancestors:
            raise _Refused("the payload's YAML contains itself through an alias (a recursive document)")
        elif isinstance(node, yaml.ScalarNode):
            sizes[key] = 1 + len(node.value)
        else:
            ancestors.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node))


def _where(error: yaml.MarkedYAMLError) -> str:
    mark = error.problem_mark or error.context_mark
    return f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""


def _unprintable(error: yaml.reader.ReaderError) -> ExtractError:
    return ExtractError(
        "the payload is not valid YAML: a character YAML does not allow (a control character, at "
        f"character {error.position + 1})"
    )


def _parse_yaml(text: str) -> object:
    try:
        loader = _PayloadLoader(text, collect=True)  # its reader checks a whole text at once
    except yaml.reader.ReaderError as error:
        raise _unprintable(error) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node)
        document = loader.construct_document(node)
    except _Refused as error:
        raise ExtractError(str(error)) from None
    except yaml.constructor.ConstructorError as error:
        raise ExtractError(
            "the payload has YAML that the safe loader cannot build: an unknown or unsafe tag (such as "
            "!!python/object), a value that does not fit its tag, or an unhashable key"
            f"{_where(error)}"
        ) from None
    except yaml.MarkedYAMLError as error:
        raise ExtractError(f"the payload is not valid YAML{_where(error)}") from None
    except yaml.reader.ReaderError as error:
        raise _unprintable(error) from None
    except yaml.YAMLError:
        raise ExtractError("the payload is not valid YAML") from None
    except (ValueError, LookupError, AttributeError, OverflowError, TypeError):
        # PyYAML's scalar constructors fail with these on a value that does not fit its explicit tag
        # (`!!int abc`, `!!int ` is an IndexError, `!!float x`) or a number of more than 4300 digits; their
        # text quotes the value.
        raise ExtractError(
            "the payload is not valid YAML: a value cannot be read (a number of more than 4300 "
            "digits, or a value that does not fit its explicit tag such as !!int or !!binary)"
        ) from None
    except RecursionError:  # a backstop: MAX_DEPTH stops nesting long before the stack ends
        raise _too_deep() from None
    finally:
        loader.dispose()
    if loader.duplicates:
        raise ExtractError(f"the payload has a duplicate key (line {loader.duplicates[0].line})")
    return document


# --- extraction ------------------------------------------------------------------------------------------


def data_kind(value: object) -> str | None:
    """What a piece of parsed data is (``a string``, ``a mapping``...), without anything of its content (not
    even a string's length); None for what is not data. Messages about payloads and templates use it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, bytes | bytearray):
        return "binary data"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return None


def _kind(value: object) -> str:
    return data_kind(value) or f"a {type(value).__name__}"


def _key_text(key: object) -> str | None:
    """The text a non-string mapping key has in the mapping's JSON form, or None (no text can match it)."""
    if isinstance(key, bool):
        return "true" if key else "false"
    if key is None:
        return "null"
    if isinstance(key, int):
        return str(key)
    if isinstance(key, float) and math.isfinite(key):
        return repr(key)
    return None


def _lookup(mapping: Mapping[Any, object], text: str) -> tuple[bool, object]:
    try:
        if text in mapping:
            return True, mapping[text]
    except TypeError:  # a mapping whose keys do not compare with str
        pass
    for key, value in mapping.items():
        if not isinstance(key, str) and _key_text(key) == text:
            return True, value
    return False, None


def extract_key(document: object, path: KeyPath) -> object:
    """The value at ``path`` in ``document``; ExtractError naming the path and the failing segment."""
    value = document
    for position, segment in enumerate(path):
        parent = path[:position]
        where = f"under {format_key_path(parent)!r}" if parent else "at the top level"
        holder = repr(format_key_path(parent)) if parent else "the top level"
        if isinstance(value, Mapping):
            found, value = _lookup(value, str(segment))
            if not found:
                raise ExtractError(f"{key_text(path)} not found: {str(segment)!r} is missing {where}")
        elif isinstance(value, list | tuple):
            if not isinstance(segment, int):
                example = format_key_path((*parent, 0))
                raise ExtractError(
                    f"{key_text(path)} not found: {holder} is a list, not a mapping; address its items "
                    f"by index, as in {example!r}"
                )
            if not 0 <= segment < len(value):
                listed = f"the list {holder}" if parent else "the top-level list"
                raise ExtractError(
                    f"{key_text(path)} not found: index {segment} is out of range for {listed}"
                )
            value = value[segment]
        else:
            verb = "is" if parent else "of the payload is"
            raise ExtractError(
                f"{key_text(path)} not found: {holder} {verb} {_kind(value)}, not a mapping or a list"
            )
    return value


def value_bytes(value: object, *, path: KeyPath) -> bytes:
    """How an extracted value is delivered: a string as its UTF-8 text, a boolean as ``true``/``false``, a
    number as its JSON text, a mapping or list as compact JSON (keys in document order, non-ASCII kept),
    YAML ``!!binary`` as its bytes. Null, a number that is not finite (YAML ``.nan``, JSON ``1e999``) and
    text that is not Unicode (a lone surrogate escape such as ``"\ud800"``) have no delivery: ExtractError."""
    if value is None:
        raise ExtractError(f"{key_text(path)} is null")
    if isinstance(value, bytes):
        return value
    if isinstance(value, bool):
        return b"true" if value else b"false"
    if isinstance(value, float) and not math.isfinite(value):
        raise ExtractError(f"{key_text(path)} is not a finite number (NaN or infinity), which has no text")
    if not isinstance(value, str | int | float | Mapping | list | tuple):
        raise ExtractError(f"{key_text(path)} is {_kind(value)}, which has no text to deliver")
    try:
        text = (
            value
            if isinstance(value, str)
            else json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        )
    except (TypeError, ValueError, RecursionError):
        raise ExtractError(
            f"{key_text(path)} holds a value with no JSON form (binary data, a key that is not a string, "
            "number or boolean, or a number that is not finite)"
        ) from None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise ExtractError(
            f"{key_text(path)} holds text that is not Unicode (an unpaired surrogate escape such as \\ud800)"
        ) from None


def extract(data: bytes, path: KeyPath | None, *, format: Format = "auto", decode: Decode = "none") -> bytes:
    """What a secret delivers: ``data`` decoded and, with a ``path``, the value at that path (see
    ``value_bytes``); without a path, the decoded payload unchanged."""
    payload = decode_payload(data, decode)
    if path is None:
        return payload
    return value_bytes(extract_key(parse_payload(payload, format), path), path=path)
