"""What templates are given, and what of it may become text: views, a strict undefined, plain data.

Why: two rules of the sandbox (``agent.render.sandbox``) need one place that knows what a value is. Only
plain data becomes text — strings, numbers, booleans, null and lists or mappings of those (``check_plain``,
``to_text``); functions, classes, macros, secret views and binary data are refused rather than written as
their Python ``repr``. And no message quotes a value: ``kind`` describes a value by its type only, and
``undefined_reason`` says in our words why an undefined value cannot be used. ``SafeView`` is the base of
the objects made for templates (only their ``PUBLIC`` names are reachable, and they never become text);
``StrictChainableUndefined`` lets ``| default`` and ``is defined`` work on a missing value while every other
use of it fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, NoReturn

from jinja2.exceptions import SecurityError
from jinja2.runtime import LoopContext, Macro, Undefined
from jinja2.utils import missing

from agent.render.budget import ComputedInt, ComputedStr, RenderFault, active, current
from agent.render.keys import data_kind

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


def kind(value: object) -> str:
    """What ``value`` is, by its type only (never its content, not even a length)."""
    if isinstance(value, SafeView):
        return value.kind
    if isinstance(value, Undefined):
        return "an undefined value"
    if (plain := data_kind(value)) is not None:
        return plain
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
    budget = active()
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


__all__ = [
    "SafeView",
    "StrictChainableUndefined",
    "check_plain",
    "fail_if_undefined",
    "kind",
    "to_text",
    "undefined_reason",
]
