"""The sandbox templates run in: a locked-down Jinja2 environment, and the AST rewrite that makes every
step of a template charge its render's budget.

Why a sandbox: a template's text may come from whoever can create a pod (an annotation), so it is hostile
input and the sandbox is a security boundary — for the agent's process (no Python object, file or
environment variable within reach) and for its resources (no template may take more than one render's
budget of steps, time, memory and output). Jinja's ``ImmutableSandboxedEnvironment`` already refuses
``_``-prefixed attributes and the mutation of builtin containers; on top of it:

* **Reach is allowlisted** (here). A template sees ``secrets`` and the globals ``range`` (bounded),
  ``dict`` and ``namespace``; no loader (``include``, ``import`` and ``extends`` are refused before
  compiling, as are ``self`` and ``autoescape`` blocks). Objects made for templates (``SafeView``) expose
  only the names they list. Methods of strings, bytes, numbers, lists and dicts are reachable only when
  they cannot make a result much larger than their input (``center``, ``zfill``, ``expandtabs``,
  ``translate``, ``to_bytes`` are not); ``replace``, ``join`` and ``format`` are replaced by bounded
  versions (``agent.render.bounded``). Nothing is callable but those methods, the globals, macros and
  ``loop``.
* **Every step is charged** to the render's ``Budget`` (a context variable, ``agent.render.budget``): each
  loop iteration (the AST is rewritten here so that every ``for`` iterates through ``iterate``), each call
  (``call``), each filter and test (``agent.render.filters``), each comparison, and each element a filter
  walks over. The deadline is checked every few steps and after every operation that can take time, so no
  template runs much past ``max_seconds``; macro calls and recursive loops may nest only ``MAX_NESTING``
  deep.
* **Every value is measured as it is made**, before the costly ones are made (``agent.render.bounded``):
  ``*``, ``**``, ``+`` and ``%`` refuse results beyond the output cap (numbers beyond ``MAX_INT_BITS``),
  as do ``~`` (rewritten to ``concat``), slices, filters, method calls and every ``{{ }}`` output;
  everything made is also charged to the memory budget, and so is the literal text of every loop or macro
  body each time it runs (a macro writing a megabyte a thousand times into its buffer would otherwise
  escape the output cap).
* **Only plain data becomes text** (``agent.render.values``): strings, numbers, booleans, null and lists
  or mappings of those. Functions, classes, macros, secret views and binary data are refused rather than
  written as their Python ``repr``.
* **Undefined is strict but chainable** (``StrictChainableUndefined``): ``secrets.cache.value |
  default("none")`` and ``secrets.cache is defined`` work, printing or using it fails.
* **No message quotes a value.** Failures raise ``RenderFault`` whose ``reason`` is our own text; a key is
  named only when it is a literal of the template (``Budget.label``, from ``literals`` here), never when
  computed, and Jinja's and Python's own exception texts (which quote keys and values) are dropped.

PEM and PKCS#12 data are read by ``agent.render.pem``, which also states the one known limit (key
derivation rounds hidden inside an encrypted PKCS#12 bag).
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Iterable
from typing import Any

from jinja2 import nodes
from jinja2.runtime import Context, LoopContext, Macro, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace
from jinja2.visitor import NodeTransformer

from agent.render.bounded import (
    BINOPS,
    HELPERS,
    BoundedMethod,
    bounded_range,
    charge,
    computed_key,
    concat,
    format_map_method,
    format_method,
    iterate,
    join_method,
    measured,
    method_allowed,
    replace_method,
)
from agent.render.budget import RenderFault, current
from agent.render.filters import policy_dumps, template_filters, template_tests
from agent.render.values import SafeView, StrictChainableUndefined, fail_if_undefined, kind, to_text

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


def _helper(function: Callable[..., Any], *args: Any, lineno: int) -> nodes.Call:
    """A call of ``function`` (one of ``agent.render.bounded``'s ``HELPERS``) on ``args``."""
    name = nodes.ImportedName(f"{function.__module__}.{function.__name__}")
    call = nodes.Call(name, list(args), [], None, None)
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
        statement = nodes.ExprStmt(_helper(charge, nodes.Const(weight), lineno=lineno))
        statement.set_lineno(lineno)
        body.insert(0, statement)


class _Bounder(NodeTransformer):
    """Routes loops, ``~``, computed keys, slices and comparisons through the budget's helpers."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _helper(iterate, node.iter, lineno=node.lineno)
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
        return _helper(concat, *node.nodes, lineno=node.lineno)

    def visit_Getitem(self, node: nodes.Getitem) -> nodes.Node:
        self.generic_visit(node)
        if isinstance(node.arg, nodes.Slice):
            return _helper(measured, node, lineno=node.lineno)
        if not isinstance(node.arg, nodes.Const):
            node.arg = _helper(computed_key, node.arg, lineno=node.lineno)
        return node

    def visit_Compare(self, node: nodes.Compare) -> nodes.Node:
        self.generic_visit(node)
        return _helper(measured, node, lineno=node.lineno)


def bound(tree: nodes.Template) -> nodes.Template:
    """Rewrite ``tree`` in place so that every loop, ``~``, slice and comparison is charged."""
    _Bounder().visit(tree)
    tree.set_environment(ENVIRONMENT)
    return tree


# --- the environment -------------------------------------------------------------------------------------


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with an allowlist of reachable attributes and callables, and the budget
    charged by every call and every intercepted operator."""

    intercepted_binops = frozenset(BINOPS)

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
            | BoundedMethod,
        ):
            return False
        if callable(value):
            return method_allowed(obj, attr)
        return True

    def is_safe_callable(self, obj: Any) -> bool:
        if any(obj is allowed for allowed in (bounded_range, Namespace, dict, *HELPERS)):
            return True
        if isinstance(obj, Macro | LoopContext | BoundedMethod):
            return True
        if isinstance(obj, types.BuiltinMethodType | types.MethodType):
            return method_allowed(obj.__self__, obj.__name__)
        return False

    def wrap_str_format(self, value: Any) -> Callable[..., Any] | None:
        if not isinstance(value, types.BuiltinMethodType):
            return None
        owner = value.__self__
        if not isinstance(owner, str | bytes) or type(owner) not in (str, bytes):
            return None
        name = value.__name__
        if name == "replace":
            return BoundedMethod(replace_method, owner)
        if name == "join":
            return BoundedMethod(join_method, owner)
        if name == "format" and type(owner) is str:
            return BoundedMethod(functools.partial(format_method, self), owner)
        if name == "format_map" and type(owner) is str:
            return BoundedMethod(functools.partial(format_map_method, self), owner)
        return None

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        budget = current()
        budget.step()
        fail_if_undefined(obj)
        if not self.is_safe_callable(obj):
            raise RenderFault(f"{kind(obj)} cannot be called in templates")
        nested = isinstance(obj, Macro | LoopContext)
        if isinstance(obj, LoopContext) and args:
            args = (iterate(args[0]), *args[1:])
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
        return budget.account(BINOPS[operator](left, right))


def _finalize(value: object) -> str:
    """Every ``{{ }}``: plain data only, measured and charged."""
    budget = current()
    text = to_text(value)
    budget.fits(len(text), "an output")
    budget.allocate(len(text))
    budget.check_time()
    return text


def _make_environment() -> _Sandbox:
    env = _Sandbox(
        undefined=StrictChainableUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        finalize=_finalize,
        cache_size=0,
        auto_reload=False,
        # Jinja's optimizer folds constants by re-evaluating every subexpression at each level above it:
        # a 400-character filter chain took seconds to compile, 2 KiB two minutes. Off, compiling is linear.
        optimized=False,
    )
    env.globals.clear()
    env.globals.update({"range": bounded_range, "dict": dict, "namespace": Namespace})
    env.filters = template_filters()
    env.tests.clear()
    env.tests.update(template_tests())
    env.policies["json.dumps_function"] = policy_dumps
    env.policies["json.dumps_kwargs"] = {"sort_keys": True}
    return env


ENVIRONMENT = _make_environment()
"""The one environment every template is compiled in (stateless between renders: the budget is not in
it)."""

__all__ = ["ENVIRONMENT", "all_nodes", "bound", "literals", "refusals"]
