r"""The env file: dotenv syntax that reads back exactly through python-dotenv AND a POSIX shell.

One file, two readers with different grammars:

* python-dotenv (``dotenv_values(path)``, with ``interpolate=True`` as users call it, or ``False``) opens
  the file in text mode, so a raw CR becomes a newline. In ``'...'`` it decodes only ``\\`` and ``\'``;
  in ``"..."`` it decodes ``\\ \" \' \a \b \f \n \r \t \v``. With ``interpolate=True`` it then expands
  every ``${NAME}`` and ``${NAME:-default}`` of the decoded value, whatever the quoting.
* ``set -a; . FILE`` in ``sh`` (dash) or bash: ``'...'`` is fully literal and cannot contain ``'``; in
  ``"..."`` a backslash escapes a backslash, ``"``, ``$`` or a backtick, and ``$NAME``, ``${...}``,
  ``$(...)``, backticks and the special parameters (``$1``, ``$@``, ``$$``, ...) are expanded.

Every value gets the first of two encodings that both readers decode to the exact value:

1. **single quotes**, verbatim: a value without ``'``, without two backslashes in a row and not ending
   with a backslash (python-dotenv would decode or swallow those; the shell keeps them);
2. **double quotes**, escaping ``\`` and ``"`` only: a value without a backtick in which every ``$`` is
   followed by the end of the value or by an ASCII character that starts no shell expansion.

Nothing else can help: python-dotenv reads a value as one quoted token, so the shell cannot leave a quote
mid-value, and each form has a character only the shell needs escaped. Values no encoding serves are
refused (``EnvValueError``, naming the reason, never the value), as are values no env var can hold:

* not UTF-8 (the file is text); NUL (no environment variable can hold it); CR (python-dotenv reads it as
  a newline, and POSIX sh has no escape for it);
* ``${...}`` that python-dotenv would interpolate (``interpolate=True`` and ``False`` cannot both read
  it back);
* ``'`` (or ``\\``, or a trailing ``\``) together with a backtick or an expanding ``$``.

The secret's file still carries such a value; only the env file leaves it out (see ``SnapshotSink``).
Sourcing needs a path with a slash (``. ./app.env``): a bare name is searched in ``$PATH``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from agent.errors import SinkError

HEADER = b"# Written by secrets-agent: python-dotenv and `set -a; . FILE` both read it. Do not edit.\n"

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# python-dotenv's interpolation pattern (dotenv/variables.py): it expands any match, in any quoting.
_DOTENV_VARIABLE = re.compile(r"\$\{[^}:]*(?::-[^}]*)?\}")

# After a `$` inside double quotes, these start an expansion in dash or bash: a name, a positional or
# special parameter, `${`, `$(` and bash's old `$[` arithmetic. Anything outside ASCII also counts, because
# bash in a single-byte locale may take a byte >= 0x80 for a letter of a variable name.
_SAFE_AFTER_DOLLAR = frozenset(chr(c) for c in range(0x20, 0x7F)) - frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_{([@*#?-$!`"
) | {"\t", "\n"}

Quoting = Literal["single", "double"]


class EnvValueError(SinkError):
    """A value cannot go into the env file; ``secret`` and ``reason`` name why, never the value."""

    def __init__(self, secret: str, reason: str) -> None:
        super().__init__(f"secret {secret!r} cannot be written to the env file: {reason}")
        self.secret = secret
        self.reason = reason


def _single_quotable(text: str) -> bool:
    return "'" not in text and "\\\\" not in text and not text.endswith("\\")


def _double_quotable(text: str) -> bool:
    if "`" in text:
        return False
    return all(
        index + 1 == len(text) or text[index + 1] in _SAFE_AFTER_DOLLAR
        for index, char in enumerate(text)
        if char == "$"
    )


def value_problem(data: bytes) -> str | None:
    """Why ``data`` cannot be an env file value (a reason naming characters, never the value), or None."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "the value is not UTF-8 text"
    if "\0" in text:
        return "the value contains a NUL character, which no environment variable can hold"
    if "\r" in text:
        return (
            "the value contains a carriage return (CR): python-dotenv reads it as a newline and "
            "POSIX sh has no escape for it"
        )
    if _DOTENV_VARIABLE.search(text):
        return (
            "the value contains '${...}', which python-dotenv expands (interpolate=True) and no quoting "
            "prevents"
        )
    if quoting_for(text) is None:
        return (
            "the value mixes a single quote (or a double or trailing backslash) with a backtick or a '$' "
            "that the shell would expand: no quoting reads back the same in python-dotenv and sh"
        )
    return None


def quoting_for(text: str) -> Quoting | None:
    """The quoting that both readers decode to ``text`` (single preferred: it is the most literal)."""
    if _single_quotable(text):
        return "single"
    if _double_quotable(text):
        return "double"
    return None


def render_value(secret: str, data: bytes) -> str:
    """``data`` as a quoted dotenv/shell word; EnvValueError (naming ``secret``) when impossible."""
    problem = value_problem(data)
    if problem is not None:
        raise EnvValueError(secret, problem)
    text = data.decode("utf-8")
    if quoting_for(text) == "single":
        return f"'{text}'"
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def render_env_file(entries: Sequence[tuple[str, str, bytes]]) -> bytes:
    """The env file for ``(secret name, env var name, value)`` entries: one ``NAME=<quoted>`` line each,
    sorted by variable name so that the same values always give the same bytes.

    Raises EnvValueError for the first value that cannot be encoded (see the module docstring), SinkError
    for an invalid or duplicate variable name. Messages name the secret, never the value.
    """
    lines: dict[str, str] = {}
    owners: dict[str, str] = {}
    for secret, variable, data in entries:
        if not _ENV_NAME.fullmatch(variable):
            raise SinkError(f"secret {secret!r}: {variable!r} is not a valid environment variable name")
        if variable in owners:
            raise SinkError(
                f"secret {secret!r}: environment variable {variable} is also used by "
                f"secret {owners[variable]!r}"
            )
        owners[variable] = secret
        lines[variable] = f"{variable}={render_value(secret, data)}\n"
    return HEADER + "".join(lines[name] for name in sorted(lines)).encode("utf-8")
