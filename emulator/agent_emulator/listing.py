"""List filters (the AIP-160 subset Secret Manager documents) and opaque page tokens.

A filter is compiled once per request into a predicate over a *field lookup*: a function that returns a
field's value for one secret or version (a string, a datetime, a list of strings, a string map, or None
when unset). Field names are checked when the filter is compiled, so a typo is refused even when the
list is empty.

    name:prod                         substring of the name
    labels.env=production             label equality ("labels.env:*" = has the label, "labels:env" too)
    state:ENABLED / state=DISABLED    version state (case-insensitive)
    create_time>2024-01-01T00:00:00Z  timestamps compare as times
    NOT, -, AND, OR, parentheses      OR binds tighter than AND, as in AIP-160
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import grpc

from agent_emulator.errors import EmulatorError

FieldLookup = Callable[[str], Any]
Predicate = Callable[[FieldLookup], bool]
T = TypeVar("T")

PAGE_SIZE_CAP = 25000
"""The service caps page_size at 25,000 and uses that when it is 0."""

_COMPARATORS = ("<=", ">=", "!=", "<", ">", "=", ":")
_STOP = set(" \t\r\n()")


def _invalid_filter(text: str, reason: str) -> EmulatorError:
    return EmulatorError(grpc.StatusCode.INVALID_ARGUMENT, f'Invalid filter "{text}": {reason}.')


class _Parser:
    def __init__(self, text: str, known: Callable[[str], bool]) -> None:
        self.text = text
        self.known = known
        self.pos = 0

    def fail(self, reason: str) -> EmulatorError:
        return _invalid_filter(self.text, reason)

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def at_end(self) -> bool:
        self.skip_space()
        return self.pos >= len(self.text)

    def peek_keyword(self, word: str) -> bool:
        self.skip_space()
        end = self.pos + len(word)
        return self.text[self.pos : end] == word and (end >= len(self.text) or self.text[end] in _STOP)

    def word(self) -> str:
        self.skip_space()
        if self.pos < len(self.text) and self.text[self.pos] == '"':
            end = self.text.find('"', self.pos + 1)
            if end < 0:
                raise self.fail("unterminated quoted string")
            value = self.text[self.pos + 1 : end]
            self.pos = end + 1
            return value
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in _STOP:
            self.pos += 1
        if start == self.pos:
            raise self.fail(f"expected a value at position {start}")
        return self.text[start : self.pos]

    def expression(self) -> Predicate:
        parts = [self.sequence()]
        while self.peek_keyword("AND"):
            self.pos += 3
            parts.append(self.sequence())
        return lambda get: all(p(get) for p in parts)

    def sequence(self) -> Predicate:
        parts = [self.factor()]
        while not self.at_end() and self.text[self.pos] != ")" and not self.peek_keyword("AND"):
            parts.append(self.factor())
        return lambda get: all(p(get) for p in parts)

    def factor(self) -> Predicate:
        parts = [self.term()]
        while self.peek_keyword("OR"):
            self.pos += 2
            parts.append(self.term())
        return lambda get: any(p(get) for p in parts)

    def term(self) -> Predicate:
        negate = False
        if self.peek_keyword("NOT"):
            self.pos += 3
            negate = True
        elif not self.at_end() and self.text[self.pos] == "-":
            self.pos += 1
            negate = True
        inner = self.simple()
        return (lambda get: not inner(get)) if negate else inner

    def simple(self) -> Predicate:
        if self.at_end():
            raise self.fail("unexpected end of filter")
        if self.text[self.pos] == "(":
            self.pos += 1
            inner = self.expression()
            if self.at_end() or self.text[self.pos] != ")":
                raise self.fail("missing closing parenthesis")
            self.pos += 1
            return inner
        return self.restriction()

    def restriction(self) -> Predicate:
        self.skip_space()
        start = self.pos
        while (
            self.pos < len(self.text)
            and self.text[self.pos] not in _STOP
            and self.text[self.pos] not in "<>!=:"
        ):
            self.pos += 1
        field = self.text[start : self.pos]
        self.skip_space()
        op = next((c for c in _COMPARATORS if self.text.startswith(c, self.pos)), None)
        if not field:
            raise self.fail(f"expected a field name at position {start}")
        if op is None:
            # A bare word is a global search; the only text worth searching here is the name.
            return _restriction(self.text, "name", ":", field)
        if not self.known(field):
            raise self.fail(f"unknown field [{field}]")
        self.pos += len(op)
        return _restriction(self.text, field, op, self.word())


def _as_time(text: str, value: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise _invalid_filter(text, f"[{value}] is not a timestamp") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _compare(text: str, actual: Any, op: str, expected: str) -> bool:
    if actual is None:
        return op == "!="
    if isinstance(actual, list):
        if op == "!=":
            return all(_compare(text, item, "=", expected) is False for item in actual)
        return any(_compare(text, item, op, expected) for item in actual)
    if isinstance(actual, dict):
        if op != ":":
            raise _invalid_filter(text, "a map can only be tested for a key with ':'")
        return expected == "*" or expected in actual
    if op == ":" and expected == "*":
        return True
    if isinstance(actual, dt.datetime):
        when = _as_time(text, expected)
        return {
            "=": actual == when,
            ":": actual == when,
            "!=": actual != when,
            "<": actual < when,
            "<=": actual <= when,
            ">": actual > when,
            ">=": actual >= when,
        }[op]
    value = str(actual)
    return {
        ":": expected in value,
        "=": value == expected,
        "!=": value != expected,
        "<": value < expected,
        "<=": value <= expected,
        ">": value > expected,
        ">=": value >= expected,
    }[op]


def _restriction(text: str, field: str, op: str, expected: str) -> Predicate:
    if field == "state":
        # Enum values: "state:enabled" means the same as "state:ENABLED".
        expected = expected.upper()
    return lambda get: _compare(text, get(field), op, expected)


def compile_filter(text: str, known: Callable[[str], bool]) -> Predicate:
    """Parse a list filter; an empty filter matches everything. INVALID_ARGUMENT when malformed.

    ``known`` says whether a field name exists for the listed resource.
    """
    if not text.strip():
        return lambda get: True
    parser = _Parser(text, known)
    predicate = parser.expression()
    if not parser.at_end():
        raise parser.fail(f"unexpected [{parser.text[parser.pos :]}]")
    return predicate


def select(
    items: Sequence[T], text: str, known: Callable[[str], bool], lookup: Callable[[T], FieldLookup]
) -> list[T]:
    """The items a filter matches, in their order."""
    predicate = compile_filter(text, known)
    return [item for item in items if predicate(lookup(item))]


def page(
    items: Sequence[T], sort_key: Callable[[T], Any], page_size: int, page_token: str, scope: str
) -> tuple[list[T], str]:
    """One page of ``items`` (already sorted by ``sort_key``) and the token for the next, '' at the end.

    Tokens name the last item returned rather than an offset, so inserts and deletes between pages
    neither repeat nor skip items. A token is bound to ``scope`` (parent + filter): reusing it for another
    listing is INVALID_ARGUMENT, as is a page_size below zero.
    """
    if page_size < 0:
        raise EmulatorError(grpc.StatusCode.INVALID_ARGUMENT, "page_size must not be negative.")
    size = PAGE_SIZE_CAP if page_size == 0 else min(page_size, PAGE_SIZE_CAP)
    fingerprint = hashlib.sha256(scope.encode()).hexdigest()[:16]
    remaining = list(items)
    if page_token:
        after = _decode_token(page_token, fingerprint)
        remaining = [item for item in items if _key(sort_key(item)) > after]
    chosen = remaining[:size]
    if len(remaining) <= size:
        return chosen, ""
    last = _key(sort_key(chosen[-1]))
    token = json.dumps({"s": fingerprint, "a": last}, separators=(",", ":")).encode()
    return chosen, base64.urlsafe_b64encode(token).decode().rstrip("=")


def _key(value: Any) -> Any:
    # JSON turns tuples into lists; compare like with like.
    return list(value) if isinstance(value, tuple) else value


def _decode_token(token: str, fingerprint: str) -> Any:
    invalid = EmulatorError(grpc.StatusCode.INVALID_ARGUMENT, "The page token is invalid.")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        decoded = json.loads(raw)
    except (binascii.Error, ValueError):
        raise invalid from None
    if not isinstance(decoded, dict) or decoded.get("s") != fingerprint or "a" not in decoded:
        raise invalid
    return decoded["a"]
