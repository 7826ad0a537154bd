r"""Key paths: how configuration names one value inside a JSON or YAML document (``agent.render.keys``).

Key paths (``parse_key_path``), for the keys users write in configuration:

* dotted names and list indexes: ``password``, ``db.primary.password``, ``hosts[0]``, ``a.b[2].c``;
* a key with a dot, a bracket, a quote or a space goes in quoted brackets:
  ``labels["app.kubernetes.io/name"]`` or ``a['x.y'].z``, where a backslash escapes the enclosing quote and a
  backslash (nothing else);
* a JSON Pointer (RFC 6901) when the text starts with ``/``: ``/db/key.with.dots/0``, ``~0`` for ``~`` and
  ``~1`` for ``/``. Its empty segments are keys ``""``, as the RFC says (``/a/`` is key ``""`` under ``a``);
  the dotted form has no empty segment (``a..b`` is refused; ``a[""]`` is the key ``""``).

An index (``[0]``, or a pointer segment of canonical decimal digits, the only way a pointer can address a
list item) is an ``int`` in the path and is decided at lookup: a list item on a list, the key of that text
on a mapping. A name is a ``str`` and addresses mapping keys only: ``hosts.0`` on a list is refused with a
hint to write ``hosts[0]``, never quietly read as an index.
"""

from __future__ import annotations

import re
from typing import NoReturn

from agent.config.values import control_character_problem

KeyPath = tuple[str | int, ...]
MAX_KEY_PATH_CHARS = 1024
"""Longest key path text accepted."""
MAX_KEY_PATH_SEGMENTS = 64
"""Most segments in a key path: as deep as a document may be (``agent.config.yaml.MAX_DEPTH``)."""


_INDEX = re.compile(r"0|[1-9][0-9]*")
_NAME_STOP = frozenset(".[]\"'\\")
"""Characters that end a dotted name (besides whitespace); a key holding one is written in quoted brackets."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_POINTER_ESCAPE = re.compile(r"~(?![01])")


def _is_name_char(char: str) -> bool:
    return char not in _NAME_STOP and not char.isspace() and not _CONTROL.match(char)


def parse_key_path(text: str) -> KeyPath:
    """The path ``text`` addresses (grammar in the module docstring); ValueError naming what is wrong."""
    if not text:
        raise ValueError("a key path must not be empty")
    if len(text) > MAX_KEY_PATH_CHARS:
        raise ValueError(f"a key path is at most {MAX_KEY_PATH_CHARS} characters, this one has {len(text)}")
    if (problem := control_character_problem(text)) is not None:
        raise ValueError(f"key path {text!r} {problem}")
    path = _parse_pointer(text) if text.startswith("/") else _DottedParser(text).parse()
    if len(path) > MAX_KEY_PATH_SEGMENTS:
        raise ValueError(
            f"key path {text!r} has {len(path)} segments; at most {MAX_KEY_PATH_SEGMENTS} are allowed"
        )
    return path


def _parse_pointer(text: str) -> KeyPath:
    path: list[str | int] = []
    for segment in text[1:].split("/"):
        if _POINTER_ESCAPE.search(segment):
            raise ValueError(
                f"JSON pointer {text!r}: '~' must be followed by 0 (for '~') or 1 (for '/') (RFC 6901)"
            )
        if _INDEX.fullmatch(segment):
            path.append(int(segment))
        else:
            path.append(segment.replace("~1", "/").replace("~0", "~"))
    return tuple(path)


class _DottedParser:
    """A one-pass reader of the dotted form; every error names the path and the character position."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.at = 0
        self.path: list[str | int] = []

    def fail(self, reason: str) -> NoReturn:
        raise ValueError(f"key path {self.text!r}: {reason} (at character {self.at + 1})")

    def parse(self) -> KeyPath:
        text = self.text
        if text[0] == ".":
            self.fail("a key path cannot start with '.'")
        self.element()
        while self.at < len(text):
            char = text[self.at]
            if char == ".":
                self.at += 1
                if self.at == len(text):
                    self.fail("a key path cannot end with '.'")
                if text[self.at] == ".":
                    self.fail("empty segment between two dots")
                self.name()
            elif char == "[":
                self.bracket()
            else:
                self.fail("expected '.' or '[' after ']'")
        return tuple(self.path)

    def element(self) -> None:
        if self.text[self.at] == "[":
            self.bracket()
        else:
            self.name()

    def name(self) -> None:
        text, start = self.text, self.at
        while self.at < len(text) and _is_name_char(text[self.at]):
            self.at += 1
        if self.at == start:
            char = text[self.at]
            if char == "[":
                self.fail("'.' must be followed by a key name, not '['")
            if char.isspace():
                self.fail('a key with a space is written in quoted brackets, as in ["my key"]')
            self.fail(f'{char!r} cannot be in a key name; write such a key in quoted brackets, as in ["a.b"]')
        if self.at < len(text) and text[self.at] not in ".[":
            char = text[self.at]
            if char.isspace():
                self.fail('a key with a space is written in quoted brackets, as in ["my key"]')
            self.fail(f'{char!r} cannot be in a key name; write such a key in quoted brackets, as in ["a.b"]')
        self.path.append(text[start : self.at])

    def bracket(self) -> None:
        text = self.text
        self.at += 1  # the '['
        if self.at < len(text) and text[self.at] in "\"'":
            self.path.append(self.quoted(text[self.at]))
        else:
            end = text.find("]", self.at)
            if end < 0:
                self.fail("'[' without a closing ']'")
            index = text[self.at : end]
            if not _INDEX.fullmatch(index):
                self.fail(
                    "brackets hold a list index (0, 1, ... without leading zeros) or a quoted key, "
                    'as in ["a.b"]'
                )
            self.path.append(int(index))
            self.at = end
        if self.at >= len(text) or text[self.at] != "]":
            self.fail("expected ']' after the quoted key")
        self.at += 1

    def quoted(self, quote: str) -> str:
        text = self.text
        self.at += 1  # the opening quote
        chars: list[str] = []
        while self.at < len(text):
            char = text[self.at]
            if char == quote:
                self.at += 1
                return "".join(chars)
            if char == "\\":
                self.at += 1
                if self.at >= len(text) or text[self.at] not in (quote, "\\"):
                    self.fail(f"inside {quote}...{quote} a backslash escapes only {quote} and a backslash")
                char = text[self.at]
            chars.append(char)
            self.at += 1
        self.fail(f"a quoted key without its closing {quote}")


def _escape_control(match: re.Match[str]) -> str:
    return f"\\x{ord(match[0]):02x}"


def format_key_path(path: KeyPath) -> str:
    """The canonical text of ``path`` (dotted names, ``[n]`` indexes, ``["..."]`` for other keys): what
    messages show, and ``parse_key_path`` reads it back to ``path``. A path no text can give (a control
    character in a key, a negative index) is still shown, with the control characters escaped, but does not
    parse; the empty path (the whole document) is ``""``."""
    parts: list[str] = []
    for position, segment in enumerate(path):
        if isinstance(segment, int):
            parts.append(f"[{int(segment)}]")
        elif segment and all(map(_is_name_char, segment)) and not (position == 0 and segment[0] == "/"):
            parts.append(segment if position == 0 else f".{segment}")
        else:
            escaped = segment.replace("\\", "\\\\").replace('"', '\\"')
            parts.append(f'["{_CONTROL.sub(_escape_control, escaped)}"]')
    return "".join(parts)


def key_text(path: KeyPath) -> str:
    """The subject of a message about ``path``: ``key 'db.password'``, or the empty path's whole document."""
    return f"key {format_key_path(path)!r}" if path else "the whole document"
