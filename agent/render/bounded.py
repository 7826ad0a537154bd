"""Bounded stand-ins for every operation that can make a value much larger than its input: the operators
``*``, ``**``, ``+`` and ``%``, the methods ``replace``, ``join``, ``format`` and ``format_map``, ``~``,
slices, comparisons, loops and ``range``.

Why: ``{{ 'x' * 10**9 }}`` or ``{{ '{:>999999999}'.format(1) }}`` would exhaust the agent's memory before
any output cap saw the result, so each of these estimates what it would make and refuses it
(``RenderFault``) before making it, then measures what it made against the render's budget
(``agent.render.budget``). The sandbox environment (``agent.render.sandbox``) routes to them: ``BINOPS``
for the operators it intercepts, ``BoundedMethod`` wrapping ``replace_method``, ``join_method``,
``format_method`` and ``format_map_method`` in place of those methods of ``str`` and ``bytes``,
``method_allowed`` for the other methods a template may call (only those that cannot make a result much
larger than their input), and ``bounded_range`` as the ``range`` global. ``HELPERS`` are the functions
the rewritten AST calls: every ``for`` iterates through ``iterate``, ``~`` is ``concat``, a computed key
goes through ``computed_key``, the literal text of a body is charged by ``charge``, and slices and
comparisons are ``measured``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter

from agent.render.budget import MAX_INT_BITS, Budget, ComputedInt, ComputedStr, RenderFault, current
from agent.render.values import check_plain, fail_if_undefined, kind, to_text

MAX_RANGE = 100_000
"""Most numbers a ``range()`` may hold (Jinja's own sandbox limit)."""

# --- the helpers the rewritten AST calls -----------------------------------------------------------------


def counted(iterator: Iterator[Any], budget: Budget) -> Iterator[Any]:
    """The items of ``iterator``, charging ``budget`` a step for each."""
    for item in iterator:
        budget.step()
        yield item


def iterate(iterable: object) -> Iterator[Any]:
    """What every ``for`` iterates: one step per item."""
    fail_if_undefined(iterable)
    return counted(iter(iterable), current())  # type: ignore[call-overload]


def concat(*parts: object) -> str:
    """``a ~ b``: measured before it is made."""
    budget = current()
    texts = [to_text(part) for part in parts]
    total = sum(map(len, texts))
    budget.fits(total, "a string joined with '~'")
    budget.allocate(total)
    return "".join(texts)


def computed_key(key: object) -> object:
    """Mark a key computed at render time, so that no message names it."""
    if type(key) is str:
        return ComputedStr(key)
    if type(key) is int:
        return ComputedInt(key)
    return key


def charge(size: int) -> str:
    """Charge the literal text of a loop or macro body each time the body runs."""
    current().allocate(size)
    return ""


def measured(value: object) -> object:
    """A slice or a comparison just made: measured, and the clock looked at."""
    return current().account(value)


HELPERS = (iterate, concat, computed_key, charge, measured)


def bounded_range(*args: int) -> range:
    """The ``range`` global: at most ``MAX_RANGE`` numbers."""
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise RenderFault(f"range() of more than {MAX_RANGE} numbers")
    return numbers


# --- methods and operators -------------------------------------------------------------------------------

_TEXT_METHODS = frozenset(
    [
        "capitalize",
        "casefold",
        "count",
        "endswith",
        "find",
        "index",
        "isalnum",
        "isalpha",
        "isascii",
        "isdecimal",
        "isdigit",
        "isidentifier",
        "islower",
        "isnumeric",
        "isprintable",
        "isspace",
        "istitle",
        "isupper",
        "lower",
        "lstrip",
        "partition",
        "removeprefix",
        "removesuffix",
        "rfind",
        "rindex",
        "rpartition",
        "rsplit",
        "rstrip",
        "split",
        "splitlines",
        "startswith",
        "strip",
        "swapcase",
        "title",
        "upper",
    ]
)
_STR_METHODS = _TEXT_METHODS | {"encode"}
_BYTES_METHODS = frozenset(name for name in _TEXT_METHODS if hasattr(bytes, name)) | {"decode", "hex"}
_NUMBER_METHODS = frozenset({"bit_length", "bit_count", "is_integer", "as_integer_ratio", "conjugate"})
_SEQUENCE_METHODS = frozenset({"count", "index"})
_DICT_METHODS = frozenset({"get", "items", "keys", "values"})
_LOOP_METHODS = frozenset({"cycle", "changed"})


def method_allowed(owner: object, name: str) -> bool:
    if isinstance(owner, str):
        return name in _STR_METHODS
    if isinstance(owner, bytes):
        return name in _BYTES_METHODS
    if isinstance(owner, int | float):
        return name in _NUMBER_METHODS
    if isinstance(owner, list | tuple):
        return name in _SEQUENCE_METHODS
    if isinstance(owner, dict):
        return name in _DICT_METHODS
    if isinstance(owner, LoopContext):
        return name in _LOOP_METHODS
    return False


class BoundedMethod:
    """A bounded stand-in for ``str.replace``, ``str.join`` or ``str.format`` of one string."""

    __slots__ = ("_function", "_owner")

    def __init__(self, function: Callable[..., Any], owner: str | bytes) -> None:
        self._function = function
        self._owner = owner

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._function(self._owner, *args, **kwargs)

    def __repr__(self) -> str:
        return "<bounded method>"


def replace_method(text: Any, old: Any, new: Any, count: int = -1) -> Any:
    budget = current()
    if not (
        (isinstance(text, str) and isinstance(old, str) and isinstance(new, str))
        or (isinstance(text, bytes) and isinstance(old, bytes) and isinstance(new, bytes))
    ):
        raise RenderFault("replace() takes text (or binary data) of one kind")
    if not isinstance(count, int):
        raise RenderFault("replace(): the count must be a number")
    source: Any = text
    found = source.count(old) if old else len(source) + 1
    if count >= 0:
        found = min(found, count)
    budget.fits(len(source) + found * (len(new) - len(old)), "the result of replace()")
    return budget.account(source.replace(old, new, count))


def join_method(separator: Any, items: Any) -> Any:
    budget = current()
    fail_if_undefined(items)
    parts: list[Any] = []
    total = 0
    for item in items:
        budget.step()
        if type(item) is not type(separator) and not isinstance(item, type(separator)):
            raise RenderFault(f"join() of {kind(separator)} takes items of the same kind, not {kind(item)}")
        total += len(item) + (len(separator) if parts else 0)
        budget.fits(total, "the result of join()")
        parts.append(item)
    return budget.account(separator.join(parts))


def join_text(budget: Budget, separator: str, items: Iterable[Any]) -> str:
    parts: list[str] = []
    total = 0
    for item in items:
        budget.step()
        text = to_text(item)
        total += len(text) + (len(separator) if parts else 0)
        budget.fits(total, "the joined text")
        parts.append(text)
    return separator.join(parts)


_SPEC_NUMBER = re.compile(r"[0-9]+")


def _check_format_value(value: Any) -> None:
    fail_if_undefined(value)
    if not isinstance(value, str | int | float) and value is not None:
        check_plain(value, "format(): ")
        if isinstance(value, bytes | bytearray):
            raise RenderFault("format(): binary data cannot be written as text")


class _BoundedFormatter(SandboxedFormatter):
    """``str.format`` of plain data with widths and precisions within the output cap, measured field by
    field (attribute and item lookups go through the sandbox)."""

    def __init__(self, env: ImmutableSandboxedEnvironment, budget: Budget) -> None:
        super().__init__(env)
        self._budget = budget
        self._total = 0

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        _check_format_value(value)  # before !r or !s makes a repr of it
        return super().convert_field(value, conversion)

    def format_field(self, value: Any, format_spec: str) -> Any:
        self._budget.step()
        _check_format_value(value)
        if len(format_spec) > 64 or any(
            len(number) > 7 or int(number) > self._budget.max_output
            for number in _SPEC_NUMBER.findall(format_spec)
        ):
            raise RenderFault("format(): a width or precision beyond the output limit")
        result = super().format_field(value, format_spec)
        self._total += len(result)
        self._budget.fits(self._total, "the result of format()")
        return result


def format_method(environment: ImmutableSandboxedEnvironment, text: str, /, *args: Any, **kwargs: Any) -> str:
    """``text.format(...)`` in ``environment`` (the sandbox's, bound by ``functools.partial``)."""
    formatter = _BoundedFormatter(environment, current())
    return current().account(formatter.vformat(text, args, kwargs))  # type: ignore[no-any-return]


def format_map_method(environment: ImmutableSandboxedEnvironment, /, text: str, mapping: Any) -> str:
    """``text.format_map(mapping)`` in ``environment``."""
    formatter = _BoundedFormatter(environment, current())
    return current().account(formatter.vformat(text, (), mapping))  # type: ignore[no-any-return]


_PRINTF = re.compile(
    r"%(?:\((?P<key>[^()]{0,200})\))?[-#0 +]{0,5}(?P<width>\*|[0-9]{0,7})(?:\.(?P<precision>\*|[0-9]{0,7}))?"
    r"[hlL]?(?P<conversion>[diouxXeEfFgGcrsa%])"
)


def printf(fmt: str | bytes, args: Any) -> Any:
    """``fmt % args``, estimated before it is made: every conversion's width, precision and argument."""
    budget = current()
    scan = fmt.decode("latin-1") if isinstance(fmt, bytes) else fmt
    mapping = args if isinstance(args, Mapping) else None
    values = list(args) if isinstance(args, tuple) else [args]
    estimate = len(scan)
    position = index = 0
    while (start := scan.find("%", position)) >= 0:
        budget.step()
        match = _PRINTF.match(scan, start)
        if match is None or "*" in (match["width"] or "") + (match["precision"] or ""):
            raise RenderFault("a % format with a conversion, width or precision the sandbox does not allow")
        position = match.end()
        if match["conversion"] == "%":
            continue
        if match["key"] is not None:
            argument = mapping.get(match["key"]) if mapping is not None else None
        else:
            argument = values[index] if index < len(values) else None
            index += 1
        fail_if_undefined(argument)
        check_plain(argument, "a % format: ")
        if match["conversion"] in "sra":
            size = len(argument) if isinstance(argument, str | bytes) else len(repr(argument))
        else:
            size = 5000  # a number of at most MAX_INT_BITS bits, or a float
        estimate += max(int(match["width"] or 0), size + int(match["precision"] or 0))
        budget.fits(estimate, "the result of a % format")
    return budget.account(fmt % args)


def _number_operands(left: object, right: object) -> bool:
    return isinstance(left, int) and isinstance(right, int)


_SEQUENCES = (str, bytes, list, tuple)


def _multiply(left: Any, right: Any) -> Any:
    budget = current()
    if _number_operands(left, right) and left.bit_length() + right.bit_length() > MAX_INT_BITS + 1:
        raise RenderFault(f"a number would have more than {MAX_INT_BITS} bits")
    for sequence, count in ((left, right), (right, left)):
        if isinstance(sequence, _SEQUENCES) and isinstance(count, int) and count > 0:
            budget.fits(len(sequence) * count, "a repeated string or list")
    return left * right


def _power(left: Any, right: Any) -> Any:
    if (
        _number_operands(left, right)
        and right > 0
        and abs(left) > 1
        and (right > MAX_INT_BITS or right * math.log2(abs(left)) > MAX_INT_BITS)
    ):
        raise RenderFault(f"a number would have more than {MAX_INT_BITS} bits")
    return left**right


def _add(left: Any, right: Any) -> Any:
    if isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
        current().fits(len(left) + len(right), "a sum of strings or lists")
    return left + right


def _modulo(left: Any, right: Any) -> Any:
    if isinstance(left, str | bytes):
        return printf(left, right)
    return left % right


BINOPS: dict[str, Callable[[Any, Any], Any]] = {"*": _multiply, "**": _power, "+": _add, "%": _modulo}


__all__ = [
    "BINOPS",
    "HELPERS",
    "MAX_RANGE",
    "BoundedMethod",
    "bounded_range",
    "charge",
    "computed_key",
    "concat",
    "counted",
    "format_map_method",
    "format_method",
    "iterate",
    "join_method",
    "join_text",
    "measured",
    "method_allowed",
    "printf",
    "replace_method",
]
