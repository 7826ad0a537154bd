"""The sandbox templates run in: a locked-down Jinja2 environment, its filters, and one render's budget.

Why a sandbox: a template's text may come from whoever can create a pod (an annotation), so it is hostile
input and this module is a security boundary — for the agent's process (no Python object, file or
environment variable within reach) and for its resources (no template may take more than one render's
budget of steps, time, memory and output). Jinja's ``ImmutableSandboxedEnvironment`` already refuses
``_``-prefixed attributes and the mutation of builtin containers; on top of it:

* **Reach is allowlisted.** A template sees ``secrets`` and the globals ``range`` (bounded), ``dict`` and
  ``namespace``; no loader (``include``, ``import`` and ``extends`` are refused before compiling, as are
  ``self`` and ``autoescape`` blocks). Objects made for templates (``SafeView``) expose only the names they
  list. Methods of strings, bytes, numbers, lists and dicts are reachable only when they cannot make a
  result much larger than their input (``center``, ``zfill``, ``expandtabs``, ``translate``, ``to_bytes``
  are not); ``replace``, ``join`` and ``format`` are replaced by bounded versions. Nothing is callable but
  those methods, the globals, macros and ``loop``.
* **Every step is charged** to the render's ``Budget`` (a context variable): each loop iteration (the AST
  is rewritten so that every ``for`` iterates through ``_iterate``), each call (``call``), each filter and
  test, each comparison, and each element a filter walks over. The deadline is checked every few steps and
  after every operation that can take time, so no template runs much past ``max_seconds``; macro calls
  and recursive loops may nest only ``MAX_NESTING`` deep.
* **Every value is measured as it is made**, before the costly ones are made: ``*``, ``**``, ``+`` and
  ``%`` refuse results beyond the output cap (numbers beyond ``MAX_INT_BITS``), as do ``~`` (rewritten to
  ``_concat``), slices, filters, method calls and every ``{{ }}`` output; everything made is also charged
  to the memory budget, and so is the literal text of every loop or macro body each time it runs (a macro
  writing a megabyte a thousand times into its buffer would otherwise escape the output cap).
* **Only plain data becomes text**: strings, numbers, booleans, null and lists or mappings of those.
  Functions, classes, macros, secret views and binary data are refused rather than written as their
  Python ``repr``.
* **Undefined is strict but chainable** (``StrictChainableUndefined``): ``secrets.cache.value |
  default("none")`` and ``secrets.cache is defined`` work, printing or using it fails.
* **No message quotes a value.** Failures raise ``RenderFault`` whose ``reason`` is our own text; a key is
  named only when it is a literal of the template (``Budget.label``), never when computed, and Jinja's and
  Python's own exception texts (which quote keys and values) are dropped.

Known limit: a PKCS#12 file's key-derivation rounds are checked where they are visible before decryption
(the MAC and each bag's encryption parameters); the parameters of a key bag nested inside an encrypted bag
become visible only to OpenSSL.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import re
import time
import types
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, ClassVar, NoReturn, cast

import markupsafe
import yaml
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.filters import FILTERS as DEFAULT_FILTERS
from jinja2.filters import make_attrgetter
from jinja2.runtime import Context, LoopContext, Macro, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from jinja2.tests import TESTS as DEFAULT_TESTS
from jinja2.utils import Namespace, missing, pass_environment
from jinja2.visitor import NodeTransformer

from agent.render.keys import ExtractError, decode_payload, extract_key, parse_key_path, parse_payload

MAX_RANGE = 100_000
"""Most numbers a ``range()`` may hold (Jinja's own sandbox limit)."""
MAX_ITEMS = 100_000
"""Largest count a filter may be asked for (``batch``, ``slice``)."""
MAX_INT_BITS = 14_000
"""Largest number a template may compute: about 4,200 digits, all of which Python can still write."""
MAX_NESTING = 40
"""Deepest nesting of macro calls and recursive loops."""
MAX_JSON_INDENT = 16
MAX_PKCS12_ITERATIONS = 1_000_000
"""Most key-derivation rounds of one PKCS#12 parameter (OpenSSL uses 2,048; 1,000,000 takes ~0.25 s)."""
_TIME_EVERY = 32
"""Steps between two looks at the clock."""

# --- the budget ------------------------------------------------------------------------------------------


class RenderFault(Exception):
    """A render failed; ``reason`` is our own text, which names no value."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(eq=False)
class Budget:
    """What one render may still spend, and the template's literals (the keys messages may name)."""

    max_output: int
    max_steps: int
    max_memory: int
    max_seconds: float
    literals: frozenset[object] = frozenset()
    steps: int = 0
    memory: int = 0
    nesting: int = 0
    deadline: float = field(init=False)
    cache: dict[object, object] = field(default_factory=dict)
    """Results worth keeping for the rest of the render (PKCS#12 files already read)."""
    _next_look: int = field(default=_TIME_EVERY, repr=False)

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.max_seconds

    def step(self, count: int = 1) -> None:
        """Charge ``count`` steps; every few steps, look at the clock."""
        self.steps += count
        if self.steps > self.max_steps:
            raise RenderFault(
                f"the template takes more than {self.max_steps} steps (loop iterations, calls, filters)"
            )
        if self.steps >= self._next_look:
            self._next_look = self.steps + _TIME_EVERY
            self.check_time()

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise RenderFault(f"the template takes longer than {self.max_seconds:g} s")

    def fits(self, size: int, what: str) -> None:
        """Refuse to make ``what`` of ``size`` characters or items if it could never be output."""
        if size > self.max_output:
            raise RenderFault(f"{what} would be larger than the output limit ({self.max_output} bytes)")

    def allocate(self, size: int) -> None:
        self.memory += size
        if self.memory > self.max_memory:
            mib = self.max_memory // (1024 * 1024)
            raise RenderFault(f"the template builds more than {mib} MiB of values along the way")

    def account(self, value: Any) -> Any:
        """Measure a value just made (size, memory, number of bits), look at the clock, return it."""
        if isinstance(value, str | bytes | bytearray):
            self.fits(len(value), "a value")
            self.allocate(len(value))
        elif isinstance(value, list | tuple | dict | set | frozenset):
            self.fits(len(value), "a list or mapping")
            self.allocate(16 * len(value))
        elif isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
            raise RenderFault(f"a number would have more than {MAX_INT_BITS} bits")
        self.check_time()
        return value

    def enter(self) -> None:
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            raise RenderFault(f"macro calls or recursive loops nest more than {MAX_NESTING} deep")

    def label(self, key: object) -> str | None:
        """How a message may name ``key``: quoted when it is a literal of the template (config, not a
        value), else None. A key marked as computed (``ComputedStr``) is never named, even when it happens
        to equal a literal."""
        if isinstance(key, ComputedStr | ComputedInt | bool) or not isinstance(key, str | int):
            return None
        try:
            if key not in self.literals:
                return None
        except TypeError:
            return None
        text = repr(str(key)) if isinstance(key, str) else str(int(key))
        return text if len(text) <= 120 else text[:116] + "...'"


_BUDGET: ContextVar[Budget | None] = ContextVar("secrets_agent_render_budget", default=None)


@contextlib.contextmanager
def rendering(budget: Budget) -> Iterator[Budget]:
    """Make ``budget`` the one every operation of the current render charges."""
    token = _BUDGET.set(budget)
    try:
        yield budget
    finally:
        _BUDGET.reset(token)


def current() -> Budget:
    """The budget of the render in progress. Outside a render (Jinja folding constants while compiling)
    this fails, so no filter, output or operator ever runs at compile time."""
    budget = _BUDGET.get()
    if budget is None:
        raise RenderFault("no render in progress")
    return budget


# --- what templates are given ----------------------------------------------------------------------------


class SafeView:
    """Base of the objects made for templates: only the names in ``PUBLIC`` are attributes a template may
    read, and the object never becomes text (its ``repr`` names it, never a value)."""

    __slots__ = ()
    PUBLIC: ClassVar[frozenset[str]] = frozenset()

    @property
    def kind(self) -> str:
        """What it is, for messages (``secret 'db'``)."""
        return "a view"

    def missing(self, key: str | None) -> str:
        """The reason for a key or attribute ``key`` (a label, or None when computed) it does not have."""
        return f"{self.kind} has no attribute {key}" if key else f"{self.kind} has no such attribute"

    def not_text(self) -> str:
        return f"{self.kind} is not text"

    def __str__(self) -> str:
        raise RenderFault(self.not_text())

    def __iter__(self) -> Iterator[Any]:
        # without it, Python would iterate through __getitem__(0), __getitem__(1), ...
        raise RenderFault(f"{self.kind} cannot be iterated")


class ComputedStr(str):
    """A key computed at render time (``data[secrets.b.value]``): messages never name it."""

    __slots__ = ()


class ComputedInt(int):
    """An index computed at render time: messages never name it."""

    __slots__ = ()


def kind(value: object) -> str:
    """What ``value`` is, by its type only (never its content, not even a length)."""
    if value is None:
        return "null"
    if isinstance(value, SafeView):
        return value.kind
    if isinstance(value, Undefined):
        return "an undefined value"
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
    if isinstance(value, Macro):
        return "a macro"
    if isinstance(value, LoopContext):
        return "the loop variable"
    if isinstance(value, type):
        return "a class"
    if callable(value):
        return "a function"
    return f"a {type(value).__name__}"


def undefined_reason(undefined: Undefined) -> str:
    """Why using ``undefined`` fails, in our words."""
    budget = _BUDGET.get()
    name = undefined._undefined_name
    obj = undefined._undefined_obj
    label = budget.label(name) if budget is not None else None
    exception = undefined._undefined_exception
    if isinstance(exception, type) and issubclass(exception, SecurityError):
        what = f"attribute {label}" if label else "a private attribute"
        return f"access to {what} of {kind(obj)} is not allowed in templates"
    if obj is missing:
        if label is not None:
            return f"{label} is undefined here"
        return "an undefined value was used"
    if isinstance(obj, SafeView):
        return obj.missing(label)
    subject = f"key {label}" if label else "a key computed from a value"
    return f"{subject} is missing from {kind(obj)}"


class StrictChainableUndefined(Undefined):
    """``a.b.c`` of a missing ``a`` stays undefined (so ``| default`` and ``is defined`` work), and every
    other use — text, iteration, comparison, arithmetic, a call — fails with ``undefined_reason``."""

    __slots__ = ()

    def _fail_with_undefined_error(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise RenderFault(undefined_reason(self))

    def __getattr__(self, name: str) -> Any:
        if name[:2] == "__" and name[-2:] == "__":
            raise AttributeError(name)
        return self

    def __getitem__(self, key: Any) -> Any:
        return self

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _fail_with_undefined_error
    __div__ = __rdiv__ = __truediv__ = __rtruediv__ = _fail_with_undefined_error
    __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = _fail_with_undefined_error
    __pos__ = __neg__ = __call__ = _fail_with_undefined_error
    __lt__ = __le__ = __gt__ = __ge__ = _fail_with_undefined_error
    __int__ = __float__ = __complex__ = __pow__ = __rpow__ = _fail_with_undefined_error
    __eq__ = __ne__ = __hash__ = __str__ = __len__ = __iter__ = _fail_with_undefined_error
    __bool__ = __contains__ = __format__ = _fail_with_undefined_error

    def __repr__(self) -> str:
        return "Undefined"


def fail_if_undefined(value: object) -> None:
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()


# --- plain data and text ---------------------------------------------------------------------------------

_LEAVES = (str, int, float, bytes, type(None))


def check_plain(value: object, what: str = "") -> None:
    """Refuse anything but strings, numbers, booleans, null, bytes and lists or mappings of those, charging
    a step per few elements walked (iteratively: data may nest as deep as a payload allows)."""
    budget = current()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, _LEAVES) and not isinstance(item, ComputedStr | ComputedInt):
            continue
        fail_if_undefined(item)
        if isinstance(item, list | tuple):
            budget.step(len(item) // 16 + 1)
            stack.extend(item)
        elif isinstance(item, dict):
            budget.step(len(item) // 8 + 1)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, SafeView):
            raise RenderFault(f"{what}{item.not_text()}")
        else:
            raise RenderFault(f"{what}{kind(item)} is not data")


def to_text(value: object) -> str:
    """What ``value`` writes as; only plain data has text (see ``check_plain``)."""
    if type(value) is str:
        return value
    fail_if_undefined(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bool | int | float) or value is None:
        return str(value)
    if isinstance(value, SafeView):
        raise RenderFault(value.not_text())
    if isinstance(value, bytes | bytearray):
        raise RenderFault(
            "binary data cannot be written as text: use b64encode (or .value of a UTF-8 secret)"
        )
    if isinstance(value, list | tuple | dict):
        check_plain(value)
        return str(value)
    raise RenderFault(f"{kind(value)} cannot be written as text")


def _finalize(value: object) -> str:
    """Every ``{{ }}``: plain data only, measured and charged."""
    budget = current()
    text = to_text(value)
    budget.fits(len(text), "an output")
    budget.allocate(len(text))
    budget.check_time()
    return text


# --- the helpers the rewritten AST calls -----------------------------------------------------------------


def _counted(iterator: Iterator[Any], budget: Budget) -> Iterator[Any]:
    for item in iterator:
        budget.step()
        yield item


def _iterate(iterable: object) -> Iterator[Any]:
    """What every ``for`` iterates: one step per item."""
    fail_if_undefined(iterable)
    return _counted(iter(iterable), current())  # type: ignore[call-overload]


def _concat(*parts: object) -> str:
    """``a ~ b``: measured before it is made."""
    budget = current()
    texts = [to_text(part) for part in parts]
    total = sum(map(len, texts))
    budget.fits(total, "a string joined with '~'")
    budget.allocate(total)
    return "".join(texts)


def _computed_key(key: object) -> object:
    """Mark a key computed at render time, so that no message names it."""
    if type(key) is str:
        return ComputedStr(key)
    if type(key) is int:
        return ComputedInt(key)
    return key


def _charge(size: int) -> str:
    """Charge the literal text of a loop or macro body each time the body runs."""
    current().allocate(size)
    return ""


def _measured(value: object) -> object:
    """A slice or a comparison just made: measured, and the clock looked at."""
    return current().account(value)


_HELPERS = (_iterate, _concat, _computed_key, _charge, _measured)


def _range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise RenderFault(f"range() of more than {MAX_RANGE} numbers")
    return numbers


# --- the AST: refusals, literals, rewriting --------------------------------------------------------------


def all_nodes(tree: nodes.Template, limit: int) -> list[nodes.Node] | None:
    """Every node of ``tree`` (walked without recursion: a chain of 50,000 ``+`` is a tree that deep), or
    None when there are more than ``limit``."""
    found: list[nodes.Node] = []
    stack: list[nodes.Node] = [tree]
    while stack:
        node = stack.pop()
        found.append(node)
        if len(found) > limit:
            return None
        stack.extend(node.iter_child_nodes())
    return found


_LOADERS: dict[type[nodes.Node], str] = {
    nodes.Extends: "extends",
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "from ... import",
}


def refusals(all_of_tree: Iterable[nodes.Node]) -> list[tuple[int, str]]:
    """(line, reason) of every construct the sandbox does not run, among a tree's nodes."""
    found: list[tuple[int, str]] = []
    for node in all_of_tree:
        if type(node) in _LOADERS:
            tag = _LOADERS[type(node)]
            found.append(
                (node.lineno, f"{{% {tag} %}} is not available: a template cannot load other templates")
            )
        elif isinstance(node, nodes.ScopedEvalContextModifier | nodes.EvalContextModifier):
            found.append((node.lineno, "{% autoescape %} is not available: outputs are not HTML"))
        elif isinstance(node, nodes.Name) and node.name == "self":
            found.append((node.lineno, "'self' is not available in templates"))
        elif isinstance(node, nodes.Name) and node.name == "secrets" and node.ctx != "load":
            found.append((node.lineno, "'secrets' cannot be assigned or used as a name"))
    return found


def literals(all_of_tree: Iterable[nodes.Node]) -> frozenset[object]:
    """The literal strings and numbers, attribute names and variable names among a tree's nodes: config,
    so a message may name a key among them."""
    found: set[object] = set()
    for node in all_of_tree:
        if isinstance(node, nodes.Const):
            if isinstance(node.value, str | int) and not isinstance(node.value, bool):
                found.add(node.value)
        elif isinstance(node, nodes.Getattr):
            found.add(node.attr)
        elif isinstance(node, nodes.Name):
            found.add(node.name)
    return frozenset(found)


def _helper(name: str, *args: Any, lineno: int) -> nodes.Call:
    call = nodes.Call(nodes.ImportedName(f"{__name__}.{name}"), list(args), [], None, None)
    call.set_lineno(lineno)
    return call


def _literal_weight(body: Iterable[nodes.Node]) -> int:
    """Characters of literal text a body writes each time it runs (nested loops and macros charge their
    own)."""
    total = 0
    stack = list(body)
    while stack:
        node = stack.pop()
        if isinstance(node, nodes.TemplateData):
            total += len(node.data)
        elif isinstance(node, nodes.For):
            stack.extend(node.else_)
        elif not isinstance(node, nodes.Macro | nodes.CallBlock):
            stack.extend(node.iter_child_nodes())
    return total


def _charge_body(body: list[nodes.Node], lineno: int) -> None:
    weight = _literal_weight(body)
    if weight:
        statement = nodes.ExprStmt(_helper("_charge", nodes.Const(weight), lineno=lineno))
        statement.set_lineno(lineno)
        body.insert(0, statement)


class _Bounder(NodeTransformer):
    """Routes loops, ``~``, computed keys, slices and comparisons through the budget's helpers."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _helper("_iterate", node.iter, lineno=node.lineno)
        _charge_body(node.body, node.lineno)
        return node

    def visit_Macro(self, node: nodes.Macro) -> nodes.Node:
        self.generic_visit(node)
        _charge_body(node.body, node.lineno)
        return node

    def visit_CallBlock(self, node: nodes.CallBlock) -> nodes.Node:
        self.generic_visit(node)
        _charge_body(node.body, node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _helper("_concat", *node.nodes, lineno=node.lineno)

    def visit_Getitem(self, node: nodes.Getitem) -> nodes.Node:
        self.generic_visit(node)
        if isinstance(node.arg, nodes.Slice):
            return _helper("_measured", node, lineno=node.lineno)
        if not isinstance(node.arg, nodes.Const):
            node.arg = _helper("_computed_key", node.arg, lineno=node.lineno)
        return node

    def visit_Compare(self, node: nodes.Compare) -> nodes.Node:
        self.generic_visit(node)
        return _helper("_measured", node, lineno=node.lineno)


def bound(tree: nodes.Template) -> nodes.Template:
    """Rewrite ``tree`` in place so that every loop, ``~``, slice and comparison is charged."""
    _Bounder().visit(tree)
    tree.set_environment(ENVIRONMENT)
    return tree


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


def _method_allowed(owner: object, name: str) -> bool:
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


class _Bounded:
    """A bounded stand-in for ``str.replace``, ``str.join`` or ``str.format`` of one string."""

    __slots__ = ("_function", "_owner")

    def __init__(self, function: Callable[..., Any], owner: str | bytes) -> None:
        self._function = function
        self._owner = owner

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._function(self._owner, *args, **kwargs)

    def __repr__(self) -> str:
        return "<bounded method>"


def _replace(text: Any, old: Any, new: Any, count: int = -1) -> Any:
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


def _join(separator: Any, items: Any) -> Any:
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


def _join_text(budget: Budget, separator: str, items: Iterable[Any]) -> str:
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


def _format_method(text: str, *args: Any, **kwargs: Any) -> str:
    formatter = _BoundedFormatter(ENVIRONMENT, current())
    return current().account(formatter.vformat(text, args, kwargs))  # type: ignore[no-any-return]


def _format_map_method(text: str, mapping: Any) -> str:
    formatter = _BoundedFormatter(ENVIRONMENT, current())
    return current().account(formatter.vformat(text, (), mapping))  # type: ignore[no-any-return]


_PRINTF = re.compile(
    r"%(?:\((?P<key>[^()]{0,200})\))?[-#0 +]{0,5}(?P<width>\*|[0-9]{0,7})(?:\.(?P<precision>\*|[0-9]{0,7}))?"
    r"[hlL]?(?P<conversion>[diouxXeEfFgGcrsa%])"
)


def _printf(fmt: str | bytes, args: Any) -> Any:
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
        return _printf(left, right)
    return left % right


_BINOPS: dict[str, Callable[[Any, Any], Any]] = {"*": _multiply, "**": _power, "+": _add, "%": _modulo}


# --- the environment -------------------------------------------------------------------------------------


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with an allowlist of reachable attributes and callables, and the budget
    charged by every call and every intercepted operator."""

    intercepted_binops = frozenset(_BINOPS)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if not super().is_safe_attribute(obj, attr, value):
            return False
        if isinstance(obj, SafeView):
            return attr in type(obj).PUBLIC
        if isinstance(obj, Undefined | Namespace):
            return True
        if isinstance(
            obj,
            type
            | types.ModuleType
            | types.GeneratorType
            | types.FunctionType
            | types.BuiltinFunctionType
            | types.MethodType
            | _Bounded,
        ):
            return False
        if callable(value):
            return _method_allowed(obj, attr)
        return True

    def is_safe_callable(self, obj: Any) -> bool:
        if any(obj is allowed for allowed in (_range, Namespace, dict, *_HELPERS)):
            return True
        if isinstance(obj, Macro | LoopContext | _Bounded):
            return True
        if isinstance(obj, types.BuiltinMethodType | types.MethodType):
            return _method_allowed(obj.__self__, obj.__name__)
        return False

    def wrap_str_format(self, value: Any) -> Callable[..., Any] | None:
        if not isinstance(value, types.BuiltinMethodType):
            return None
        owner = value.__self__
        if not isinstance(owner, str | bytes) or type(owner) not in (str, bytes):
            return None
        name = value.__name__
        if name == "replace":
            return _Bounded(_replace, owner)
        if name == "join":
            return _Bounded(_join, owner)
        if name == "format" and type(owner) is str:
            return _Bounded(_format_method, owner)
        if name == "format_map" and type(owner) is str:
            return _Bounded(_format_map_method, owner)
        return None

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        budget = current()
        budget.step()
        fail_if_undefined(obj)
        if not self.is_safe_callable(obj):
            raise RenderFault(f"{kind(obj)} cannot be called in templates")
        nested = isinstance(obj, Macro | LoopContext)
        if isinstance(obj, LoopContext) and args:
            args = (_iterate(args[0]), *args[1:])
        if nested:
            budget.enter()
        try:
            result = context.call(obj, *args, **kwargs)
        finally:
            if nested:
                budget.nesting -= 1
        return budget.account(result)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = current()
        budget.step()
        return budget.account(_BINOPS[operator](left, right))


# --- filters ---------------------------------------------------------------------------------------------


def _metered(budget: Budget, value: Any) -> Any:
    """A filter's input, charged a step per element (up front when it has a length, else as it is read)."""
    fail_if_undefined(value)
    if isinstance(value, Sized):
        budget.step(len(value) + 1)
        return value
    if isinstance(value, Iterator):
        return _counted(value, budget)
    return value


def _check_arguments(budget: Budget, name: str, arguments: Iterable[Any]) -> None:
    for argument in arguments:
        if isinstance(argument, int) and not isinstance(argument, bool):
            limit = MAX_ITEMS if name in ("batch", "slice") else 100 if name == "round" else budget.max_output
            if abs(argument) > limit:
                raise RenderFault(f"filter {name!r}: a number argument above {limit}")


def _guard(name: str, function: Callable[..., Any], kind_of_input: str) -> Callable[..., Any]:
    """``function`` as a template filter: its arguments checked, its input charged (``text``: made text
    first; ``items``: charged per element), its result measured, its failures in our words."""
    pass_arg = getattr(function, "jinja_pass_arg", None)
    skip = 0 if pass_arg is None else 1

    def guarded(*args: Any, **kwargs: Any) -> Any:
        budget = current()
        budget.step()
        lead, value, rest = args[:skip], args[skip], args[skip + 1 :]
        _check_arguments(budget, name, (*rest, *kwargs.values()))
        if kind_of_input == "text":
            value = to_text(value)
        elif kind_of_input == "items":
            value = _metered(budget, value)
        elif name not in ("default", "d", "attr"):
            fail_if_undefined(value)
        try:
            result = function(*lead, value, *rest, **kwargs)
        except (RenderFault, RecursionError, MemoryError):
            raise
        except Exception as error:
            raise RenderFault(f"filter {name!r} failed ({type(error).__name__})") from None
        if isinstance(result, str) and type(result) is not str:
            result = str.__str__(result)  # Markup from escape, tojson: plain text here
        return budget.account(result)

    if pass_arg is not None:
        guarded.jinja_pass_arg = pass_arg  # type: ignore[attr-defined]
    guarded.__name__ = f"filter_{name}"
    return guarded


def _guard_test(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    pass_arg = getattr(function, "jinja_pass_arg", None)

    def guarded(*args: Any, **kwargs: Any) -> Any:
        current().step()
        try:
            return function(*args, **kwargs)
        except (RenderFault, RecursionError, MemoryError):
            raise
        except Exception as error:
            raise RenderFault(f"test {name!r} failed ({type(error).__name__})") from None

    if pass_arg is not None:
        guarded.jinja_pass_arg = pass_arg  # type: ignore[attr-defined]
    return guarded


def _center(value: str, width: int = 80) -> str:
    return value.center(width)


def _indent(value: str, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    indention = width if isinstance(width, str) else " " * width
    current().fits(len(value) + (value.count("\n") + 1) * len(indention), "the indented text")
    function = DEFAULT_FILTERS["indent"]
    return function(value, width, first, blank)  # type: ignore[no-any-return]


@pass_environment
def _wordwrap(environment: Any, value: str, width: int = 79, *args: Any, **kwargs: Any) -> str:
    budget = current()
    wrap = kwargs.get("wrapstring") if len(args) < 2 else args[1]
    separator = to_text(wrap) if wrap is not None else "\n"
    budget.fits(len(value) + (len(value) // 2 + value.count("\n") + 1) * len(separator), "the wrapped text")
    budget.step(len(value) // 16)
    return DEFAULT_FILTERS["wordwrap"](environment, value, width, *args, **kwargs)  # type: ignore[no-any-return]


def _format(value: str, *args: Any, **kwargs: Any) -> str:
    if args and kwargs:
        raise RenderFault("filter 'format': positional or named arguments, not both")
    return _printf(value, kwargs or args)  # type: ignore[no-any-return]


def _replace_filter(value: str, old: Any, new: Any, count: int | None = None) -> str:
    return _replace(value, to_text(old), to_text(new), -1 if count is None else count)  # type: ignore[no-any-return]


@pass_environment
def _join_filter(environment: Any, value: Any, d: Any = "", attribute: str | int | None = None) -> str:
    if attribute is not None:
        value = map(make_attrgetter(environment, attribute), value)
    return _join_text(current(), to_text(d), value)


def _list(value: Any) -> list[Any]:
    return list(value)


@pass_environment
def _sum(environment: Any, iterable: Any, attribute: str | int | None = None, start: Any = 0) -> Any:
    if isinstance(start, bool) or not isinstance(start, int | float):
        raise RenderFault("filter 'sum' adds numbers: its start must be a number")
    if attribute is not None:
        iterable = map(make_attrgetter(environment, attribute), iterable)
    total = start
    for item in iterable:
        if isinstance(item, bool) or not isinstance(item, int | float):
            raise RenderFault(f"filter 'sum' adds numbers, not {kind(item)}")
        total = current().account(total + item)
    return total


def _escape(value: str) -> str:
    return str(markupsafe.escape(value))


def _identity(value: str) -> str:
    return value


def _round(value: Any, precision: int = 0, method: str = "common") -> float:
    function = DEFAULT_FILTERS["round"]
    return function(value, precision, method)  # type: ignore[no-any-return]


def _urlencode(value: Any) -> str:
    check_plain(value, "filter 'urlencode': ")
    return DEFAULT_FILTERS["urlencode"](value)  # type: ignore[no-any-return]


def _b64encode(value: Any, urlsafe: bool = False) -> str:
    data = value if isinstance(value, bytes) else to_text(value).encode("utf-8")
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    return encode(data).decode("ascii")


def _b64decode_bytes(value: Any) -> bytes:
    data = value if isinstance(value, bytes) else to_text(value).encode("utf-8")
    try:
        return decode_payload(data, "base64")
    except ExtractError:
        raise RenderFault("b64decode: the text is not valid base64") from None


def _b64decode(value: Any) -> str:
    try:
        return _b64decode_bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        raise RenderFault("b64decode: the decoded data is not UTF-8 text; use b64decode_bytes") from None


def _payload_bytes(value: Any, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    try:
        return to_text(value).encode("utf-8")
    except UnicodeEncodeError:
        raise RenderFault(f"{what}: the text is not valid Unicode") from None


def _parse(value: Any, form: str) -> object:
    what = f"from_{form}"
    data = _payload_bytes(value, what)
    current().allocate(8 * len(data))
    try:
        return parse_payload(data, form)  # type: ignore[arg-type]
    except ExtractError as error:
        raise RenderFault(f"{what}: {error}") from None


def _from_json(value: Any) -> object:
    return _parse(value, "json")


def _from_yaml(value: Any) -> object:
    return _parse(value, "yaml")


def _not_json(value: object) -> NoReturn:
    fail_if_undefined(value)
    if isinstance(value, bytes | bytearray):
        raise RenderFault("to_json: binary data has no JSON form; b64encode it first")
    if isinstance(value, SafeView):
        raise RenderFault(f"to_json: {value.not_text()}")
    raise RenderFault(f"to_json: {kind(value)} has no JSON form")


def dumps(
    value: object,
    *,
    indent: int | str | None = None,
    sort_keys: bool = False,
    separators: tuple[str, str] | None = None,
) -> str:
    """JSON of plain data, written piece by piece and stopped at the output cap (a YAML document whose
    aliases share one list a thousand times is small in memory and enormous as JSON)."""
    budget = current()
    if indent is not None and (
        isinstance(indent, bool)
        or not isinstance(indent, int | str)
        or (isinstance(indent, int) and not 0 <= indent <= MAX_JSON_INDENT)
        or (isinstance(indent, str) and len(indent) > MAX_JSON_INDENT)
    ):
        raise RenderFault(f"to_json: indent is at most {MAX_JSON_INDENT} spaces")
    encoder = json.JSONEncoder(
        ensure_ascii=False,
        allow_nan=False,
        sort_keys=bool(sort_keys),
        indent=indent,
        separators=separators,
        default=_not_json,
    )
    pieces: list[str] = []
    total = 0
    try:
        for count, piece in enumerate(encoder.iterencode(value)):
            total += len(piece)
            budget.fits(total, "the JSON")
            if count % 1024 == 1023:
                budget.step()
            pieces.append(piece)
    except ValueError:
        raise RenderFault("to_json: NaN and infinity have no JSON form") from None
    except TypeError:
        raise RenderFault("to_json: a mapping key that is not a string, number, boolean or null") from None
    return "".join(pieces)


def _to_json(value: Any, indent: int | str | None = None, sort_keys: bool = False) -> str:
    return dumps(value, indent=indent, sort_keys=sort_keys, separators=None if indent else (",", ":"))


def _policy_dumps(value: object, **kwargs: Any) -> str:
    """``tojson``'s dumps (the policy): bounded, with Jinja's spacing."""
    return dumps(value, indent=kwargs.get("indent"), sort_keys=bool(kwargs.get("sort_keys")))


class _BoundedWriter:
    """A text stream that refuses to grow past the output cap."""

    def __init__(self, budget: Budget, what: str) -> None:
        self._budget = budget
        self._what = what
        self._parts: list[str] = []
        self._total = 0

    def write(self, text: str) -> None:
        self._total += len(text)
        self._budget.fits(self._total, self._what)
        self._parts.append(text)

    def text(self) -> str:
        return "".join(self._parts)


def _to_yaml(value: Any) -> str:
    budget = current()
    check_plain(value, "to_yaml: ")
    writer = _BoundedWriter(budget, "the YAML")
    try:
        yaml.safe_dump(value, writer, default_flow_style=False, sort_keys=False, allow_unicode=True)
    except yaml.YAMLError:
        raise RenderFault("to_yaml: the value has no YAML form") from None
    return writer.text()


def _urlquote(value: Any, safe: Any = "") -> str:
    return urllib.parse.quote(to_text(value), safe=to_text(safe))


def _key_filter(value: Any, path: Any) -> object:
    budget = current()
    if not isinstance(path, str):
        raise RenderFault("filter 'key': the key path must be text")
    literal = budget.label(path) is not None
    try:
        parsed = parse_key_path(str(path))
    except ValueError as error:
        raise RenderFault(
            f"filter 'key': {error}" if literal else "filter 'key': an invalid key path"
        ) from None
    document = value
    if isinstance(value, str | bytes):
        data = _payload_bytes(value, "filter 'key'")
        budget.allocate(8 * len(data))
        try:
            document = parse_payload(data, "auto")
        except ExtractError as error:
            raise RenderFault(f"filter 'key': {error}") from None
    elif isinstance(value, SafeView):
        raise RenderFault(f"filter 'key': {value.kind} is not a document; use .data or .value")
    try:
        return extract_key(document, parsed)
    except ExtractError as error:
        if literal:
            raise RenderFault(f"filter 'key': {error}") from None
        raise RenderFault(
            "filter 'key': a key path computed from a value does not match the document"
        ) from None


# PEM: a linear scan (a regex with a lazy body would be quadratic on BEGIN lines without an END).
_PEM_BEGIN = re.compile(r"-----BEGIN ([A-Z0-9][A-Z0-9 ]{0,62})-----")
_PRIVATE_KEY_LABELS = frozenset({"PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "ENCRYPTED PRIVATE KEY"})


def _pem_text(value: Any, what: str) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8").replace("\r\n", "\n")
        except UnicodeDecodeError:
            raise RenderFault(f"{what}: the data is not PEM text") from None
    return to_text(value).replace("\r\n", "\n")


def _pem_blocks(text: str, what: str) -> list[tuple[str, str]]:
    blocks: list[tuple[str, str]] = []
    position = 0
    while (begin := _PEM_BEGIN.search(text, position)) is not None:
        current().step()
        label = begin[1]
        end_line = f"-----END {label}-----"
        end = text.find(end_line, begin.end())
        if end < 0 or "-----" in text[begin.end() : end]:
            raise RenderFault(f"{what}: a PEM block without its END line")
        position = end + len(end_line)
        blocks.append((label, text[begin.start() : position] + "\n"))
    return blocks


def _pem_certificates(value: Any) -> list[str]:
    what = "filter 'pem_certificates'"
    found = [block for label, block in _pem_blocks(_pem_text(value, what), what) if label == "CERTIFICATE"]
    if not found:
        raise RenderFault(f"{what}: no CERTIFICATE block")
    return found


def _pem_private_key(value: Any) -> str:
    what = "filter 'pem_private_key'"
    found = [
        block for label, block in _pem_blocks(_pem_text(value, what), what) if label in _PRIVATE_KEY_LABELS
    ]
    if len(found) != 1:
        raise RenderFault(f"{what}: {'no' if not found else 'more than one'} private key block")
    return found[0]


def _der_elements(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    """(tag, content start, content end) of the DER elements filling data[start:end]; ValueError if they
    do not."""
    elements: list[tuple[int, int, int]] = []
    position = start
    while position < end:
        if end - position < 2 or data[position] & 0x1F == 0x1F:
            raise ValueError("not DER")
        tag, length = data[position], data[position + 1]
        position += 2
        if length & 0x80:
            width = length & 0x7F
            if not 0 < width <= 4 or position + width > end:
                raise ValueError("not DER")
            length = int.from_bytes(data[position : position + width], "big")
            position += width
        if position + length > end:
            raise ValueError("not DER")
        elements.append((tag, position, position + length))
        position += length
    return elements


def _check_pkcs12_rounds(data: bytes) -> None:
    """Refuse a PKCS#12 file whose key derivation would take too long: every visible iteration count (the
    MAC's ``SEQUENCE {DigestInfo, salt, iterations}`` and every PBE or PBKDF2 ``SEQUENCE {salt,
    iterations, ...}``), found by walking its DER, nested OCTET STRINGs included."""
    stack = [(0, len(data), 0)]
    visited = total = 0
    while stack:
        start, end, depth = stack.pop()
        try:
            elements = _der_elements(data, start, end)
        except ValueError:
            continue
        tags = [tag for tag, _, _ in elements]
        counts = []
        if tags[:2] == [0x04, 0x02]:
            counts.append(elements[1])
        if tags[:3] == [0x30, 0x04, 0x02]:
            counts.append(elements[2])
        for _, begin, finish in counts:
            rounds = int.from_bytes(data[begin:finish], "big", signed=True)
            total += rounds
            if finish - begin > 4 or rounds > MAX_PKCS12_ITERATIONS or total > 3 * MAX_PKCS12_ITERATIONS:
                raise RenderFault(
                    f"pkcs12: the data asks for more than {MAX_PKCS12_ITERATIONS} key-derivation rounds"
                )
        for tag, begin, finish in elements:
            visited += 1
            if visited > 50_000 or depth > 32:
                raise RenderFault("pkcs12: the data nests too deeply or holds too many elements")
            if tag & 0x20 or (tag == 0x04 and finish > begin and data[begin] == 0x30):
                stack.append((begin, finish, depth + 1))


_Pkcs12 = tuple[Any, Any, list[Any]]


def _pkcs12(value: Any, password: Any) -> _Pkcs12:
    budget = current()
    if isinstance(value, bytes):
        data = value
    else:
        try:
            data = decode_payload(to_text(value).encode("utf-8"), "base64")
        except ExtractError:
            raise RenderFault("pkcs12: the text is not base64 of PKCS#12 data") from None
    secret = (
        None if password is None else password if isinstance(password, bytes) else to_text(password).encode()
    )
    cache_key = ("pkcs12", data, secret)
    cached = budget.cache.get(cache_key)
    if cached is not None:
        return cached  # type: ignore[return-value]
    _check_pkcs12_rounds(data)
    from cryptography.hazmat.primitives.serialization import pkcs12  # only templates reading PKCS#12 pay

    try:
        key, certificate, others = pkcs12.load_key_and_certificates(data, secret)
    except Exception:
        raise RenderFault("pkcs12: cannot read the PKCS#12 data (a wrong password, or not PKCS#12)") from None
    budget.check_time()
    result: _Pkcs12 = (key, certificate, list(others))
    budget.cache[cache_key] = result
    return result


def _pkcs12_certificates(value: Any, password: Any = None) -> list[str]:
    _, certificate, others = _pkcs12(value, password)
    found = ([certificate] if certificate is not None else []) + others
    if not found:
        raise RenderFault("pkcs12: the PKCS#12 data holds no certificate")
    from cryptography.hazmat.primitives import serialization

    return [item.public_bytes(serialization.Encoding.PEM).decode("ascii") for item in found]


def _pkcs12_private_key(value: Any, password: Any = None) -> str:
    key, _, _ = _pkcs12(value, password)
    if key is None:
        raise RenderFault("pkcs12: the PKCS#12 data holds no private key")
    from cryptography.hazmat.primitives import serialization

    pem: bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem.decode("ascii")


_TEXT_FILTERS = [
    "capitalize",
    "lower",
    "upper",
    "title",
    "trim",
    "striptags",
    "wordcount",
    "truncate",
    "center",
    "indent",
    "wordwrap",
    "format",
    "replace",
    "string",
    "safe",
    "escape",
    "e",
    "forceescape",
]
_ITEM_FILTERS = [
    "batch",
    "dictsort",
    "groupby",
    "join",
    "last",
    "list",
    "map",
    "max",
    "min",
    "reject",
    "rejectattr",
    "reverse",
    "select",
    "selectattr",
    "slice",
    "sort",
    "sum",
    "unique",
    "tojson",
]
_REMOVED_FILTERS = frozenset({"pprint", "random", "urlize", "xmlattr"})
"""Object reprs (pprint), nondeterminism (random: every render would differ), HTML (urlize, xmlattr)."""

_OWN_FILTERS: dict[str, Callable[..., Any]] = {
    "center": _center,
    "indent": _indent,
    "wordwrap": _wordwrap,
    "format": _format,
    "replace": _replace_filter,
    "join": _join_filter,
    "list": _list,
    "sum": _sum,
    "string": _identity,
    "safe": _identity,
    "escape": _escape,
    "e": _escape,
    "forceescape": _escape,
    "round": _round,
    "urlencode": _urlencode,
    "b64encode": _b64encode,
    "b64decode": _b64decode,
    "b64decode_bytes": _b64decode_bytes,
    "from_json": _from_json,
    "to_json": _to_json,
    "from_yaml": _from_yaml,
    "to_yaml": _to_yaml,
    "urlquote": _urlquote,
    "key": _key_filter,
    "pem_certificates": _pem_certificates,
    "pem_private_key": _pem_private_key,
    "pkcs12_certificates": _pkcs12_certificates,
    "pkcs12_private_key": _pkcs12_private_key,
}


def _filters() -> dict[str, Callable[..., Any]]:
    merged = {name: f for name, f in DEFAULT_FILTERS.items() if name not in _REMOVED_FILTERS}
    merged.update(_OWN_FILTERS)
    return {
        name: _guard(
            name, function, "text" if name in _TEXT_FILTERS else "items" if name in _ITEM_FILTERS else ""
        )
        for name, function in merged.items()
    }


def _make_environment() -> _Sandbox:
    env = _Sandbox(
        undefined=StrictChainableUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        finalize=_finalize,
        cache_size=0,
        auto_reload=False,
    )
    env.globals.clear()
    env.globals.update({"range": _range, "dict": dict, "namespace": Namespace})
    env.filters = _filters()
    env.tests = {
        name: _guard_test(name, cast(Callable[..., Any], test)) for name, test in DEFAULT_TESTS.items()
    }
    env.policies["json.dumps_function"] = _policy_dumps
    env.policies["json.dumps_kwargs"] = {"sort_keys": True}
    return env


ENVIRONMENT = _make_environment()
"""The one environment every template is compiled in (stateless between renders: the budget is not in
it)."""

__all__ = [
    "ENVIRONMENT",
    "MAX_INT_BITS",
    "MAX_ITEMS",
    "MAX_NESTING",
    "MAX_RANGE",
    "Budget",
    "ComputedInt",
    "ComputedStr",
    "RenderFault",
    "SafeView",
    "StrictChainableUndefined",
    "all_nodes",
    "bound",
    "check_plain",
    "current",
    "dumps",
    "kind",
    "literals",
    "refusals",
    "rendering",
    "to_text",
    "undefined_reason",
]
