"""List filters (the AIP-160 subset Secret Manager documents) and opaque page tokens.

A filter is compiled once per request into a predicate over a *field lookup*: a function that returns a
field's value for one secret or version (a string, a datetime, a list of strings, a string map, or None
when unset). Field names are checked when the filter is compiled, so a typo is refused even when the
list is empty.

    name:prod                         substring of the name
    labels.env=production             label equality ("labels.env:*" = has the label, "labels:env" too)
    state:ENABLED / state=DISABLED    version state (case-insensitive)
    create_time>2024-01-01T00:00:00Z  timestamps compare as times
    replication.automatic:*           a message field is tested for presence only (":*")
    replication.user_managed.replicas.location:(us-east1 OR us-central1)   a group of values
    NOT, -, AND, OR, parentheses      OR binds tighter than AND, as in AIP-160

A filter is bounded before it costs anything: at most MAX_FILTER_CHARS characters, MAX_DEPTH nested
parentheses and MAX_RESTRICTIONS comparisons; past that it is INVALID_ARGUMENT like any malformed filter.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
from collections.abc import Callable, Collection, Sequence
from typing import Any, TypeVar

import grpc

from agent_emulator.errors import EmulatorError

FieldLookup = Callable[[str], Any]
Predicate = Callable[[FieldLookup], bool]
T = TypeVar("T")

PAGE_SIZE_CAP = 25000
"""The service caps page_size at 25,000 and uses that when it is 0."""

MAX_FILTER_CHARS = 20_000
"""Longest filter accepted (a gRPC request could otherwise carry megabytes of it)."""
MAX_DEPTH = 32
"""Deepest nesting of parentheses accepted (the parser recurses once per level)."""
MAX_RESTRICTIONS = 500
"""Most comparisons in one filter: each is evaluated against every listed item."""

_COMPARATORS = ("<=", ">=", "!=", "<", ">", "=", ":")
_STOP = set(" \t\r\n()")


class MessagePresent:
    """The value a field lookup returns for a set message field (``replication.automatic``): such a
    field can only be tested for presence (``:*``)."""


PRESENT = MessagePresent()


_QUOTED_CHARS = 120
"""How much of a bad filter its error quotes: a whole long one would not fit in gRPC's status metadata."""


def _invalid_filter(text: str, reason: str) -> EmulatorError:
    return EmulatorError(
        grpc.StatusCode.INVALID_ARGUMENT, f'Invalid filter "{_clip(text)}": {_clip(reason)}.'
    )


def _clip(text: str) -> str:
    # Reasons quote parts of the filter too (a field name, the unparsed rest): clip them the same way.
    return text if len(text) <= _QUOTED_CHARS else text[: _QUOTED_CHARS - 3] + "..."


class _Parser:
    def __init__(self, text: str, known: Callable[[str], bool], presence_only: Collection[str]) -> None:
        self.text = text
        self.known = known
        self.presence_only = presence_only
        self.pos = 0
        self.depth = 0
        self.restrictions = 0

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
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise self.fail(f"parentheses nested deeper than {MAX_DEPTH} levels")
            self.pos += 1
            inner = self.expression()
            if self.at_end() or self.text[self.pos] != ")":
                raise self.fail("missing closing parenthesis")
            self.pos += 1
            self.depth -= 1
            return inner
        self.restrictions += 1
        if self.restrictions > MAX_RESTRICTIONS:
            raise self.fail(f"more than {MAX_RESTRICTIONS} comparisons")
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
        self.skip_space()
        if field in self.presence_only:
            if op != ":" or self.word() != "*":
                raise self.fail(f"[{field}] is a message: it can only be tested for presence, {field}:*")
            return _restriction(self.text, field, op, "*")
        if self.pos < len(self.text) and self.text[self.pos] == "(":
            return self.value_group(field, op)
        return _restriction(self.text, field, op, self.word())

    def value_group(self, field: str, op: str) -> Predicate:
        """``field:(a OR b)`` / ``field:(a AND b)``: one comparison per value, as Google documents for
        ``state:(ENABLED OR DISABLED)``; one connective per group, no nesting."""
        self.pos += 1
        values = [self.word()]
        connective = ""
        while not self.at_end() and self.text[self.pos] != ")":
            word = "AND" if self.peek_keyword("AND") else "OR" if self.peek_keyword("OR") else ""
            if not word or (connective and word != connective):
                raise self.fail(f"expected OR or AND between the values of [{field}], at position {self.pos}")
            connective = word
            self.pos += len(word)
            self.restrictions += 1
            if self.restrictions > MAX_RESTRICTIONS:
                raise self.fail(f"more than {MAX_RESTRICTIONS} comparisons")
            values.append(self.word())
        if self.at_end():
            raise self.fail("missing closing parenthesis")
        self.pos += 1
        parts = [_restriction(self.text, field, op, value) for value in values]
        if connective == "AND":
            return lambda get: all(p(get) for p in parts)
        return lambda get: any(p(get) for p in parts)


def _as_time(text: str, value: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise _invalid_filter(text, f"[{value}] is not a timestamp") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _compare(text: str, actual: Any, op: str, expected: str) -> bool:
    if actual is None:
        return op == "!="
    if isinstance(actual, MessagePresent):
        return True  # the parser allows only "field:*" on a message field (presence_only)
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


def compile_filter(
    text: str, known: Callable[[str], bool], presence_only: Collection[str] = frozenset()
) -> Predicate:
    """Parse a list filter; an empty filter matches everything. INVALID_ARGUMENT when malformed.

    ``known`` says whether a field name exists for the listed resource; ``presence_only`` names the
    message fields among them, which only ``field:*`` may test (their lookup returns ``PRESENT`` or None).
    """
    if len(text) > MAX_FILTER_CHARS:
        # Not quoted back: it is too long to be useful in a message.
        raise EmulatorError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"Invalid filter: longer than {MAX_FILTER_CHARS} characters.",
        )
    if not text.strip():
        return lambda get: True
    parser = _Parser(text, known, presence_only)
    predicate = parser.expression()
    if not parser.at_end():
        raise parser.fail(f"unexpected [{parser.text[parser.pos :]}]")
    return predicate


def select(
    items: Sequence[T],
    text: str,
    known: Callable[[str], bool],
    lookup: Callable[[T], FieldLookup],
    presence_only: Collection[str] = frozenset(),
) -> list[T]:
    """The items a filter matches, in their order."""
    predicate = compile_filter(text, known, presence_only)
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
