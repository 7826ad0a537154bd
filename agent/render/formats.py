r"""A whole set of secrets as one file: JSON, YAML, Java properties or dotenv, for apps that read one config.

Each format is written so that its usual reader gives back exactly the entries' strings, whatever they hold:

* ``json``: an object of strings, indented, in the entries' order, non-ASCII kept (``ensure_ascii=False``).
  Any text is fine; control characters and NUL are JSON escapes (``\u0000``).
* ``yaml``: a mapping in which every key and value is a double-quoted scalar, so ``yaml.safe_load`` reads
  strings back, never ``"yes"`` as a boolean, ``"0123"`` as a number or ``"null"`` as None; newlines, NUL
  and the characters YAML reads as line breaks (U+0085, U+2028, U+2029) are escapes, and lines are never
  folded (folding is where quoted scalars lose spaces).
* ``properties``: Java's ``Properties.load`` format, written as ``Properties.store`` does: ASCII only (every
  other character a ``\uXXXX`` escape, astral ones as a surrogate pair, so any of ISO-8859-1 or UTF-8
  readers agree), ``\ = : # !`` and ``\t \n \r \f`` escaped, spaces escaped everywhere in a key and at the
  start of a value. NUL is ``\u0000``.
* ``dotenv``: ``agent.render.envfile``'s file, which python-dotenv and a POSIX shell both read back. Keys must
  be environment variable names, and values it cannot carry (NUL, CR, ``${...}``, some quote mixes; see that
  module) are refused, with its reason. Its lines are sorted by name (the env file is deterministic), and it
  starts with its header comment.

Entries are ``(key, value)``; the keys are unique and the values UTF-8 text (a secret that is binary has no
place in a text file: the secret's own file still carries it). Errors are FormatError, naming the key and
the reason, never the value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Literal

import yaml

from agent.errors import SinkError
from agent.render.envfile import EnvValueError, render_env_file

OutputFormat = Literal["json", "yaml", "properties", "dotenv"]
OUTPUT_FORMATS: tuple[OutputFormat, ...] = ("json", "yaml", "properties", "dotenv")

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""What envfile accepts as a variable name (POSIX: letters, digits and ``_``, not starting with a digit)."""

_NO_FOLDING = 2**31
"""A line width PyYAML never reaches, so that it never folds a quoted scalar."""


class FormatError(ValueError):
    """An entry cannot be written in a format; ``key`` and ``reason`` name why, never the value."""

    def __init__(self, format: str, key: str | None, reason: str) -> None:
        where = f"key {key!r}" if key is not None else "entries"
        super().__init__(f"cannot write the {format} file: {where}: {reason}")
        self.format = format
        self.key = key
        self.reason = reason


def render_format(format: OutputFormat, entries: Sequence[tuple[str, bytes]]) -> bytes:
    """The file holding ``entries`` in ``format`` (see the module docstring); FormatError for a duplicate
    key, a value that is not UTF-8 text or one that the format cannot carry."""
    if format not in OUTPUT_FORMATS:
        raise FormatError(format, None, f"unknown format; expected one of {', '.join(OUTPUT_FORMATS)}")
    texts = _texts(format, entries)
    if format == "json":
        return (json.dumps(texts, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    if format == "yaml":
        return yaml.dump(
            texts,
            Dumper=yaml.SafeDumper,
            default_style='"',
            allow_unicode=True,
            sort_keys=False,
            width=_NO_FOLDING,
            encoding="utf-8",
        )
    if format == "properties":
        lines = (
            f"{_properties_text(key, key=True)}={_properties_text(value, key=False)}\n"
            for key, value in texts.items()
        )
        return "".join(lines).encode("ascii")
    return _dotenv(entries)


def _texts(format: str, entries: Sequence[tuple[str, bytes]]) -> dict[str, str]:
    texts: dict[str, str] = {}
    for key, value in entries:
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            raise FormatError(format, key, "the key is not Unicode text (an unpaired surrogate)") from None
        if key in texts:
            raise FormatError(format, key, "the key is given twice")
        try:
            texts[key] = value.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(format, key, "the value is not UTF-8 text") from None
    return texts


_PROPERTIES_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\f": "\\f"}


def _properties_text(text: str, *, key: bool) -> str:
    """``text`` as Properties.store writes a key or a value (ASCII, see the module docstring)."""
    out: list[str] = []
    for position, char in enumerate(text):
        code = ord(char)
        if char in _PROPERTIES_ESCAPES:
            out.append(_PROPERTIES_ESCAPES[char])
        elif char in "=:#!" or (char == " " and (key or position == 0)):
            out.append(f"\\{char}")
        elif 0x20 <= code <= 0x7E:
            out.append(char)
        elif code > 0xFFFF:  # a surrogate pair, as Java's UTF-16 strings hold it
            code -= 0x10000
            out.append(f"\\u{0xD800 + (code >> 10):04X}\\u{0xDC00 + (code & 0x3FF):04X}")
        else:
            out.append(f"\\u{code:04X}")
    return "".join(out)


def _dotenv(entries: Sequence[tuple[str, bytes]]) -> bytes:
    for key, _value in entries:
        if not _ENV_NAME.fullmatch(key):
            raise FormatError(
                "dotenv",
                key,
                "not an environment variable name (letters, digits and _, not starting with a digit)",
            )
    try:
        return render_env_file([(key, key, value) for key, value in entries])
    except EnvValueError as error:
        raise FormatError("dotenv", error.secret, error.reason) from None
    except SinkError as error:  # a backstop: names and duplicates are checked above; its text names keys only
        raise FormatError("dotenv", None, str(error)) from None
