r"""Editing one key of a ``.env`` file in place: every other line, comment and blank line stays as it was.

Pure functions over the file's text. The file is split with python-dotenv's own parser
(``dotenv.parser.parse_stream``), whose bindings cover the whole text exactly, so a key's line (even a
multi-line quoted value) is found the way python-dotenv reads it, and everything else is copied verbatim.

Values are written so that ``dotenv_values(path, interpolate=False)`` reads them back exactly:

* a value the env-file writer (``agent.render.envfile.render_value``) can encode is written as it would
  write it: then ``set -a; . FILE`` in a POSIX shell reads it back too;
* any other UTF-8 text without NUL (a carriage return, ``${...}``, a ``'`` with a backtick...) is written in
  double quotes with ``\\``, ``"`` and CR escaped: python-dotenv reads it back exactly, a shell may not.

Refused (``value_problem``): bytes that are not UTF-8 and NUL, which a text file of environment variables
cannot carry. Replacing a binding drops an inline comment on its line (``KEY=old # note``); ``export`` is
kept. The text is handled as python-dotenv reads it (universal newlines), so CRLF line ends become LF.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

from dotenv import dotenv_values
from dotenv.parser import parse_stream

from agent.render.envfile import render_value
from agent.render.envfile import value_problem as env_file_value_problem

_EXPORT = re.compile(r"export[^\S\r\n]+")  # python-dotenv's own prefix pattern


@dataclass(frozen=True)
class Chunk:
    """A piece of the file: one binding (``key`` set) or anything else (comment, blank, invalid line)."""

    text: str
    key: str | None
    value: str | None
    """The value python-dotenv reads (None for ``KEY`` without ``=``, and for non-bindings)."""


def split(text: str) -> list[Chunk]:
    """The file as python-dotenv sees it; ``"".join(c.text for c in split(t)) == t``."""
    chunks = [Chunk(b.original.string, b.key, b.value) for b in parse_stream(io.StringIO(text))]
    if "".join(c.text for c in chunks) != text:  # pragma: no cover - python-dotenv guarantees this
        raise RuntimeError("python-dotenv's parser did not cover the whole file")
    return chunks


def values(text: str) -> dict[str, str]:
    """Key -> value, read by ``dotenv_values(interpolate=False)`` (the last binding of a key wins; a
    ``KEY`` without ``=`` has no value and is left out). Literal, like the agent's dotenv source."""
    parsed = dotenv_values(stream=io.StringIO(text), interpolate=False)
    return {key: value for key, value in parsed.items() if value is not None}


def value_problem(data: bytes) -> str | None:
    """Why ``data`` cannot be a ``.env`` value (naming characters, never the value), or None."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "the value is not UTF-8 text (a .env file holds text; store binary keys encoded, e.g. base64)"
    if "\0" in text:
        return "the value contains a NUL character, which no environment variable can hold"
    return None


def render(key: str, data: bytes) -> str:
    """``KEY=<quoted value>`` (no newline). Raises ValueError (naming the key) for a refused value."""
    problem = value_problem(data)
    if problem is not None:
        raise ValueError(f"{key}: {problem}")
    if env_file_value_problem(data) is None:
        return f"{key}={render_value(key, data)}"
    text = data.decode("utf-8")
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "\\r")
    return f'{key}="{escaped}"'


def set_value(text: str, key: str, data: bytes) -> str:
    """``text`` with ``key`` set to ``data``: its last binding replaced in place (earlier duplicates, which
    python-dotenv ignores, are kept), or a new line appended."""
    line = render(key, data)
    chunks = split(text)
    last = max((i for i, c in enumerate(chunks) if c.key == key), default=None)
    if last is None:
        if text and not text.endswith("\n"):
            text += "\n"
        return f"{text}{line}\n"
    old = chunks[last].text
    body = old.lstrip()
    leading = old[: len(old) - len(body)]  # blank lines python-dotenv attached to this binding
    export = "export " if _EXPORT.match(body) else ""
    ending = "\n" if old.endswith("\n") else ""
    replaced = f"{leading}{export}{line}{ending}"
    return "".join(c.text for c in chunks[:last]) + replaced + "".join(c.text for c in chunks[last + 1 :])


def remove(text: str, key: str) -> str:
    """``text`` without any binding of ``key`` (the blank lines before them stay)."""
    kept = []
    for chunk in split(text):
        if chunk.key == key:
            body = chunk.text.lstrip()
            kept.append(chunk.text[: len(chunk.text) - len(body)])
        else:
            kept.append(chunk.text)
    return "".join(kept)
