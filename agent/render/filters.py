"""The filters and tests templates are given: Jinja's builtins made safe, and the project's own.

Why: a filter runs Python over a template's values, so every filter and test is wrapped (``_guard``,
``_guard_test``) to charge a step to the render's budget, check its number arguments, charge its input
per element, measure its result and put its failure in our words (an exception's own text may quote a
value). Jinja's builtins that could grow a value without bound (``center``, ``indent``, ``wordwrap``,
``format``, ``replace``, ``join``, ``sum``) are replaced by bounded versions, and those that write object
reprs, differ at every render or make HTML are removed. The project's own filters are the ones apps need:
``b64encode``, ``b64decode`` and ``b64decode_bytes``; ``from_json``, ``to_json`` (and ``tojson``, both
written by ``dumps`` piece by piece up to the output cap), ``from_yaml`` and ``to_yaml``; ``urlquote``;
``key`` (a key path into a document, as ``agent.render.keys`` reads it); and the PEM and PKCS#12 filters of
``agent.render.pem``. ``template_filters`` and ``template_tests`` are the tables the sandbox environment
(``agent.render.sandbox``) is given.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import Any, NoReturn, cast

import markupsafe
import yaml
from jinja2.filters import FILTERS as DEFAULT_FILTERS
from jinja2.filters import make_attrgetter
from jinja2.tests import TESTS as DEFAULT_TESTS
from jinja2.utils import pass_environment

from agent.render.bounded import counted, join_text, printf, replace_method
from agent.render.budget import Budget, RenderFault, current
from agent.render.keys import ExtractError, decode_payload, extract_key, parse_key_path, parse_payload
from agent.render.pem import pem_certificates, pem_private_key, pkcs12_certificates, pkcs12_private_key
from agent.render.values import SafeView, check_plain, fail_if_undefined, kind, to_text

MAX_ITEMS = 100_000
"""Largest count a filter may be asked for (``batch``, ``slice``)."""
MAX_JSON_INDENT = 16


# --- guarding a filter or a test -------------------------------------------------------------------------


def _metered(budget: Budget, value: Any) -> Any:
    """A filter's input, charged a step per element (up front when it has a length, else as it is read)."""
    fail_if_undefined(value)
    if isinstance(value, Sized):
        budget.step(len(value) + 1)
        return value
    if isinstance(value, Iterator):
        return counted(value, budget)
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


# --- Jinja's builtins, bounded ---------------------------------------------------------------------------


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
    return printf(value, kwargs or args)  # type: ignore[no-any-return]


def _replace_filter(value: str, old: Any, new: Any, count: int | None = None) -> str:
    return replace_method(value, to_text(old), to_text(new), -1 if count is None else count)  # type: ignore[no-any-return]


@pass_environment
def _join_filter(environment: Any, value: Any, d: Any = "", attribute: str | int | None = None) -> str:
    if attribute is not None:
        value = map(make_attrgetter(environment, attribute), value)
    return join_text(current(), to_text(d), value)


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


# --- the project's own -----------------------------------------------------------------------------------


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


def policy_dumps(value: object, **kwargs: Any) -> str:
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


# --- the table -------------------------------------------------------------------------------------------

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
    "pem_certificates": pem_certificates,
    "pem_private_key": pem_private_key,
    "pkcs12_certificates": pkcs12_certificates,
    "pkcs12_private_key": pkcs12_private_key,
}


def template_filters() -> dict[str, Callable[..., Any]]:
    """Jinja's filters (but ``_REMOVED_FILTERS``) and the project's own, each guarded by ``_guard``."""
    merged = {name: f for name, f in DEFAULT_FILTERS.items() if name not in _REMOVED_FILTERS}
    merged.update(_OWN_FILTERS)
    return {
        name: _guard(
            name, function, "text" if name in _TEXT_FILTERS else "items" if name in _ITEM_FILTERS else ""
        )
        for name, function in merged.items()
    }


def template_tests() -> dict[str, Callable[..., Any]]:
    """Jinja's tests, each charging a step and failing in our words."""
    return {name: _guard_test(name, cast(Callable[..., Any], test)) for name, test in DEFAULT_TESTS.items()}


__all__ = ["MAX_ITEMS", "MAX_JSON_INDENT", "dumps", "policy_dumps", "template_filters", "template_tests"]
