"""One template: compiled (and checked) once from configuration, rendered from the secrets it uses.

A template's text may come from whoever can create a pod, so everything here treats it as hostile: it is
compiled in ``agent.render.sandbox``'s environment, after the AST is checked (no ``include``, no ``self``,
no unknown name, filter, test or secret) and rewritten so that every loop, ``~``, slice and comparison
charges the render's budget. A render streams the output and stops at ``max_output``.

What a template sees is only ``secrets``: a mapping of name to a view with ``value`` (the payload, after
``decode``, as UTF-8 text), ``bytes``, ``version`` and ``data`` (the payload parsed as the secret's
``format``, once per render). A secret absent from the inputs (an optional one not fetched) is undefined:
``secrets.cache.value | default("none")`` and ``secrets.cache is defined`` work, ``{{ secrets.cache.value
}}`` fails naming ``cache``.

Every failure is a ``TemplateError`` with the template's name, the line (for a render failure, the innermost
template frame of the traceback, which Jinja rewrites to template lines) and a reason of our own: Jinja's
and Python's exception texts quote keys and values (``'dict object' has no attribute '<value>'``) and are
never passed on. A key is named only when it is a literal of the template.
"""

from __future__ import annotations

import builtins
import difflib
from collections.abc import Collection, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import cast

from jinja2 import Template, nodes
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError
from jinja2.exceptions import TemplateError as JinjaTemplateError

from agent.errors import AgentError
from agent.render.budget import Budget, RenderFault, rendering
from agent.render.keys import Decode, ExtractError, Format, decode_payload, parse_payload
from agent.render.sandbox import ENVIRONMENT, all_nodes, bound, literals, refusals
from agent.render.values import SafeView

MAX_TEMPLATE_BYTES = 256 * 1024
MAX_STEPS = 1_000_000
"""Default step budget of one render: loop iterations, calls, filters, comparisons, elements walked."""
MAX_TEMPLATE_NODES = 25_000
"""Most elements (expressions, tags, text runs) in a template: Jinja's compiler takes about a second for
that many, and a real template has a few hundred."""
_GLOBALS = frozenset({"secrets", "range", "dict", "namespace"})
_MAX_REASON = 300
_MAX_SUGGESTION_CANDIDATES = 1000


class TemplateError(AgentError):
    """A template cannot be compiled or rendered: ``template 'db-url' line 3: <reason>``. The reason is our
    own text (or, for a syntax error, Jinja's text about the template's source, which is configuration);
    it never holds a secret value."""

    def __init__(self, template: str, line: int | None, reason: str) -> None:
        self.template = template
        self.line = line
        self.reason = reason
        where = f"template {template!r}" + (f" line {line}" if line is not None else "")
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class TemplateInput:
    """What a template gets of one secret: its payload as fetched, version, and how to read it."""

    data: bytes = field(repr=False)
    version: str
    format: Format = "auto"
    decode: Decode = "none"


@dataclass(frozen=True)
class CompiledTemplate:
    """A template ready to render. ``uses`` names the secrets it references statically (``secrets.db``,
    ``secrets["db"]``), or is None when it looks secrets up dynamically (it then depends on all)."""

    name: str
    uses: frozenset[str] | None
    _template: Template = field(repr=False, compare=False)
    _literals: frozenset[object] = field(repr=False, compare=False)


# --- what a template sees --------------------------------------------------------------------------------

_UNSET = object()


class _SecretView(SafeView):
    """``secrets.db``: ``value``, ``bytes``, ``version``, ``data``, each made on first use in this render."""

    __slots__ = ("_data", "_input", "_name", "_payload")
    PUBLIC = frozenset({"value", "bytes", "version", "data"})

    def __init__(self, name: str, source: TemplateInput) -> None:
        self._name = name
        self._input = source
        self._payload: builtins.bytes | None = None
        self._data: object = _UNSET

    @property
    def kind(self) -> str:
        return f"secret {self._name!r}"

    @property
    def bytes(self) -> builtins.bytes:
        if self._payload is None:
            try:
                self._payload = decode_payload(self._input.data, self._input.decode)
            except ExtractError as error:
                raise RenderFault(f"secret {self._name!r}: {error}") from None
        return self._payload

    @property
    def value(self) -> str:
        try:
            return self.bytes.decode("utf-8")
        except UnicodeDecodeError:
            raise RenderFault(f"secret {self._name!r} is not UTF-8 text; use .bytes with b64encode") from None

    @property
    def version(self) -> str:
        return self._input.version

    @property
    def data(self) -> object:
        if self._data is _UNSET:
            try:
                self._data = parse_payload(self.bytes, self._input.format)
            except ExtractError as error:
                raise RenderFault(f"secret {self._name!r}: {error}") from None
        return self._data

    def __getitem__(self, key: object) -> object:
        if isinstance(key, str) and key in self.PUBLIC:
            return getattr(self, key)
        raise KeyError

    def missing(self, key: str | None) -> str:
        what = f"attribute {key}" if key else "such attribute"
        return f"secret {self._name!r} has no {what}; it has value, bytes, version and data"

    def not_text(self) -> str:
        return f"secret {self._name!r} is not text: use secrets.{self._name}.value"

    def __repr__(self) -> str:
        return f"<secret {self._name!r}>"


class _Secrets(SafeView):
    """``secrets``: the views by name; iterating gives the names present."""

    __slots__ = ("_views",)

    def __init__(self, inputs: Mapping[str, TemplateInput]) -> None:
        self._views = {name: _SecretView(name, source) for name, source in inputs.items()}

    @property
    def kind(self) -> str:
        return "'secrets'"

    def __getitem__(self, name: object) -> _SecretView:
        try:
            return self._views[name]  # type: ignore[index]
        except (KeyError, TypeError):
            raise KeyError from None

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._views))

    def __len__(self) -> int:
        return len(self._views)

    def __contains__(self, name: object) -> bool:
        return name in self._views

    def missing(self, key: str | None) -> str:
        if key is None:
            return "a secret named by a computed value is not available"
        return f"secret {key} is not available"

    def not_text(self) -> str:
        return "'secrets' is not text: use secrets.NAME.value"

    def __repr__(self) -> str:
        return "<secrets>"


# --- compiling -------------------------------------------------------------------------------------------


def _short(text: str) -> str:
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."


def _suggest(name: str, candidates: Collection[str]) -> str:
    """``; did you mean 'db'?`` for a close name among ``candidates``, bounded in work."""
    if len(name) > 200:
        return ""
    pool = [
        candidate for candidate in sorted(candidates)[:_MAX_SUGGESTION_CANDIDATES] if len(candidate) <= 200
    ]
    close = difflib.get_close_matches(name, pool, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _secret_references(all_of_tree: list[nodes.Node]) -> tuple[list[tuple[str, int]], bool]:
    """(name, line) of each static ``secrets.x`` / ``secrets["x"]``, and whether ``secrets`` is also used
    any other way (looked up with a computed name, iterated, passed whole)."""
    static: list[tuple[str, int]] = []
    total = 0
    for node in all_of_tree:
        if isinstance(node, nodes.Name) and node.name == "secrets" and node.ctx == "load":
            total += 1
        elif isinstance(node, nodes.Getattr) and _is_secrets(node.node):
            static.append((node.attr, node.lineno))
        elif (
            isinstance(node, nodes.Getitem)
            and _is_secrets(node.node)
            and isinstance(node.arg, nodes.Const)
            and isinstance(node.arg.value, str)
        ):
            static.append((node.arg.value, node.lineno))
    static.sort(key=lambda item: item[1])
    return static, total > len(static)


def _is_secrets(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Name) and node.name == "secrets"


def _unknown_names(all_of_tree: list[nodes.Node]) -> list[tuple[int, str]]:
    """Filters and tests Jinja does not have, and names nothing defines (a template's only free name is
    ``secrets``, besides the globals): a typo is found by ``check-config``, not at the first render."""
    found: list[tuple[int, str]] = []
    declared = set(_GLOBALS)
    loaded: dict[str, int] = {}
    for node in all_of_tree:
        if isinstance(node, nodes.Filter | nodes.Test):
            table, what = (
                (ENVIRONMENT.filters, "filter")
                if isinstance(node, nodes.Filter)
                else (ENVIRONMENT.tests, "test")
            )
            if node.name not in table:
                found.append((node.lineno, f"unknown {what} {node.name!r}{_suggest(node.name, table)}"))
        elif isinstance(node, nodes.Name):
            if node.ctx == "load":
                line = loaded.setdefault(node.name, node.lineno)
                loaded[node.name] = min(line, node.lineno)
            else:
                declared.add(node.name)
        elif isinstance(node, nodes.Macro):
            declared.update((node.name, "varargs", "kwargs", "caller"))
        elif isinstance(node, nodes.CallBlock):
            declared.add("caller")
        elif isinstance(node, nodes.For):
            declared.add("loop")
    for name, line in loaded.items():
        if name not in declared:
            found.append(
                (line, f"unknown name {name!r}: a template sees only 'secrets' (and range, dict, namespace)")
            )
    return found


@dataclass
class _Analysis:
    problems: list[TemplateError]
    tree: nodes.Template | None = None
    uses: frozenset[str] | None = None
    literals: frozenset[object] = frozenset()


def _analyze(name: str, text: str, known: Collection[str]) -> _Analysis:
    def problem(line: int | None, reason: str) -> TemplateError:
        return TemplateError(name, line, reason)

    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_TEMPLATE_BYTES:
        return _Analysis([problem(None, f"the template is larger than {MAX_TEMPLATE_BYTES} bytes ({size})")])
    try:
        tree = ENVIRONMENT.parse(text, name=name)
    except TemplateSyntaxError as error:
        return _Analysis([problem(error.lineno, _short(error.message or "syntax error"))])
    except (RecursionError, MemoryError):
        return _Analysis([problem(None, "the template nests too deeply to parse")])
    except Exception as error:  # the lexer's int() of a number of more than 4300 digits, ...
        return _Analysis([problem(None, f"the template cannot be parsed ({type(error).__name__})")])
    all_of_tree = all_nodes(tree, MAX_TEMPLATE_NODES)
    if all_of_tree is None:
        return _Analysis([problem(None, f"the template has more than {MAX_TEMPLATE_NODES} elements")])
    found = refusals(all_of_tree)
    static, dynamic = _secret_references(all_of_tree)
    known_names = frozenset(known)
    reported: set[str] = set()
    for secret, line in static:
        if secret not in known_names and secret not in reported:
            reported.add(secret)
            found.append((line, f"unknown secret {secret!r}{_suggest(secret, known_names)}"))
    found.extend(_unknown_names(all_of_tree))
    found.sort(key=lambda item: item[0])
    uses = None if dynamic else frozenset(secret for secret, _ in static)
    problems = [problem(line, reason) for line, reason in found]
    return _Analysis(problems, tree, uses, literals(all_of_tree))


def _filename(name: str) -> str:
    return f"<secrets-agent template {name}>"


def check_template(name: str, text: str, *, known: Collection[str]) -> list[TemplateError]:
    """Every problem ``compile_template`` would find (for ``check-config``); a syntax error stops the
    search."""
    analysis = _analyze(name, text, known)
    if analysis.problems or analysis.tree is None:
        return analysis.problems
    try:
        _compile(name, analysis.tree)
    except TemplateError as error:
        return [error]
    return []


def _compile(name: str, tree: nodes.Template) -> Template:
    try:
        code = ENVIRONMENT.compile(bound(tree), name=name, filename=_filename(name))
        return ENVIRONMENT.template_class.from_code(ENVIRONMENT, code, ENVIRONMENT.make_globals(None))
    except TemplateSyntaxError as error:
        raise TemplateError(name, error.lineno, _short(error.message or "invalid template")) from None
    except (RecursionError, MemoryError, SyntaxError, ValueError, OverflowError):
        raise TemplateError(
            name, None, "the template nests too deeply or is too complex to compile"
        ) from None


def compile_template(name: str, text: str, *, known: Collection[str]) -> CompiledTemplate:
    """Check and compile ``text``; TemplateError for the first problem (``check_template`` lists all)."""
    analysis = _analyze(name, text, known)
    if analysis.problems or analysis.tree is None:
        raise analysis.problems[0]
    return CompiledTemplate(name, analysis.uses, _compile(name, analysis.tree), analysis.literals)


# --- rendering -------------------------------------------------------------------------------------------

_HINTS: dict[type[BaseException], str] = {
    ZeroDivisionError: "division by zero",
    TypeError: "an operation on a value of the wrong type, such as comparing text with a number",
    ValueError: "a value the operation cannot take",
    OverflowError: "a number too large",
    KeyError: "a missing key",
    IndexError: "an index out of range",
    AttributeError: "a missing attribute",
    UnicodeError: "text that is not valid Unicode",
}


def _reason(error: BaseException) -> str:
    if isinstance(error, RenderFault):
        return error.reason
    if isinstance(error, RecursionError):
        return "recursion is too deep (a macro calling itself?)"
    if isinstance(error, MemoryError):
        return "out of memory"
    if isinstance(error, SecurityError):
        return "the sandbox refused an operation"
    if isinstance(error, UndefinedError):
        return "an undefined value was used"
    if isinstance(error, JinjaTemplateError):
        return f"the template failed ({type(error).__name__})"
    for exception_type, hint in _HINTS.items():
        if isinstance(error, exception_type):
            return f"an expression failed ({type(error).__name__}: {hint})"
    return f"an expression failed ({type(error).__name__})"


def _line_of(traceback: TracebackType | None, filename: str) -> int | None:
    """The innermost template line in a traceback (Jinja rewrites template frames to template lines)."""
    line = None
    while traceback is not None:
        if traceback.tb_frame.f_code.co_filename == filename:
            line = traceback.tb_lineno
        traceback = traceback.tb_next
    return line


def _suspended_line(generator: object, template: Template) -> int | None:
    """The template line a suspended render is at (for a failure found outside it: the output's size)."""
    line = None
    while generator is not None:
        frame = getattr(generator, "gi_frame", None)
        if frame is not None and frame.f_code.co_filename == template.filename:
            line = template.get_corresponding_lineno(frame.f_lineno)
        generator = getattr(generator, "gi_yieldfrom", None)
    return line


def render_template(
    template: CompiledTemplate,
    inputs: Mapping[str, TemplateInput],
    *,
    max_output: int = 1024 * 1024,
    max_seconds: float = 1.0,
    max_steps: int = MAX_STEPS,
    max_memory: int | None = None,
) -> bytes:
    """The UTF-8 output of ``template`` over ``inputs``; TemplateError (with the line) for any failure,
    including a budget exceeded: output past ``max_output`` bytes, more than ``max_seconds``, more than
    ``max_steps`` steps, or more than ``max_memory`` bytes of values built (default: the larger of 64 MiB
    and 16 outputs)."""
    budget = Budget(
        max_output=max_output,
        max_steps=max_steps,
        max_memory=max_memory if max_memory is not None else max(64 * 1024 * 1024, 16 * max_output),
        max_seconds=max_seconds,
        literals=template._literals,
    )
    compiled = template._template
    parts: list[bytes] = []
    size = 0
    failure: TemplateError | None = None
    with rendering(budget):
        stream = cast(Generator[str, None, None], compiled.generate(secrets=_Secrets(inputs)))
        try:
            for chunk in stream:
                try:
                    data = chunk.encode("utf-8")
                except UnicodeEncodeError:
                    failure = TemplateError(
                        template.name,
                        _suspended_line(stream, compiled),
                        "the output has text that is not Unicode (an unpaired surrogate)",
                    )
                    break
                size += len(data)
                if size > max_output:
                    failure = TemplateError(
                        template.name,
                        _suspended_line(stream, compiled),
                        f"the output is larger than {max_output} bytes",
                    )
                    break
                parts.append(data)
        except Exception as error:
            failure = TemplateError(
                template.name, _line_of(error.__traceback__, compiled.filename or ""), _reason(error)
            )
        finally:
            stream.close()
    if failure is not None:
        raise failure
    return b"".join(parts)


__all__ = [
    "MAX_STEPS",
    "MAX_TEMPLATE_BYTES",
    "MAX_TEMPLATE_NODES",
    "CompiledTemplate",
    "TemplateError",
    "TemplateInput",
    "check_template",
    "compile_template",
    "render_template",
]
