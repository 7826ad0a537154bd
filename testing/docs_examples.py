"""Every example in README.md and docs/**/*.md runs: finding the fenced blocks of a page and running or
validating each one, so that a broken example fails the tests (``tests/docs/test_examples.py``).

The convention the pages follow
===============================

A page is a tutorial. Its blocks run in order, top to bottom, in one fresh temporary working directory per
page, with ``secrets-agent`` and ``python`` on ``PATH`` from the virtualenv, a copy of the repository's
``examples/`` directory as ``./examples``, an empty ``$HOME`` and none of the caller's ``SECRETS_AGENT_*``,
``SECRET_MANAGER_EMULATOR_HOST``, ``PUBSUB_EMULATOR_HOST`` or ``GOOGLE_*`` variables. Pages are README.md and
every ``docs/**/*.md`` except ``docs/reference/**`` (generated).

Every fenced block must match one rule below; a block that matches none fails, with its file:line and what
to do. Indented code blocks are refused (use a fence). Fences inside mkdocs-material admonitions
(``!!! note``, ``??? tip``) and content tabs (``=== "Tab"``), indented by 4 spaces, are found like any other.

**title.** A block whose info string has ``title="NAME"`` (mkdocs-material: ```yaml title="agent.yaml"```) is
first written to NAME, relative to the current directory (later blocks can use it), then handled by its
language as below. NAME stays inside the page's temporary directory. ``linenums`` and ``hl_lines`` are
allowed too; any other attribute is an error.

**By language:**

* ``python``, ``py``: run as a script by the virtualenv's python, in the current directory (whose modules it
  can import, e.g. one an earlier block wrote with title=); exit status 0 required. No top-level ``await``
  or ``async with``: wrap it in ``async def main()`` and ``asyncio.run(main())``.
* ``bash``, ``sh``, ``shell``: the whole block is one bash script run with ``set -euo pipefail``; exit
  status 0 required. Its output is not compared.
* ``console``: a terminal session, run in a pseudo-terminal (so the agent prints what a terminal shows:
  text logs, not JSON). Lines starting with ``$ `` are commands (a trailing ``\\`` continues a command on the
  next line); the other lines are the expected output of the command above them. Each expected non-empty
  line must appear in that command's output (whitespace runs compared as one space, ANSI colours ignored,
  any order); ``...`` inside a line matches anything, and a line that is only ``...`` stands for elided
  output. Every command must exit 0, except one directly followed by ``$ echo $?`` (which then shows the
  status; or write ``cmd || echo "exit status $?"``). The commands of one block share one shell.
* ``yaml``, ``yml``: classified and validated. A Kubernetes object (``apiVersion`` and ``kind``; several
  ``---`` documents allowed) -> kubernetes-validate ``--strict`` for the versions tests/k8s uses (custom
  kinds against tests/k8s/schemas). The agent's configuration (the top-level keys of
  ``agent.config.schema.Config``) -> the agent's loader, as ``secrets-agent check-config`` (unknown keys are
  errors; a short reference needs a project: ``GOOGLE_CLOUD_PROJECT=example-project`` is set unless the page
  exported one; relative paths resolve against the current directory). The rotation config (``project``,
  ``topics``, ``subscription``, ``secrets`` of secret id -> ``provider``/``type`` settings) -> its loader,
  and each provider is built from its settings. The emulator's seed (``project`` and ``secrets`` of secret
  id -> a value or ``versions``/``labels``/...) -> its loader. The emulator's faults file (``seed``,
  ``faults``, ``quotas``) -> its loader. Anything else fails.
* ``json`` parsed; ``jsonl`` each non-empty line parsed; ``toml`` by tomllib; ``ini`` by configparser;
  ``dotenv`` by python-dotenv's parser (a line it cannot read fails); ``properties`` by javaproperties.
* ``jinja``, ``jinja2``: compiled in the agent's template sandbox (syntax, filters, what the sandbox refuses;
  the secret names are checked by the configuration that uses the template).
* ``text``, ``mermaid``, ``diff``, ``http``, ``markdown``: not run.
* A fence without a language, or with any other language, fails.

**Markers.** An HTML comment on the line right before the fence (nothing between them), one per block; words
and ``key="value"`` pairs can be combined in one comment:

* ``<!-- example: skip reason="..." -->``: not run; the reason is required and printed in the test summary.
  Skips stay under ``SKIP_BUDGET`` (15 %) of all blocks.
* ``<!-- example: background ready="http://127.0.0.1:PORT/path" -->`` (or ``ready="file:PATH"``): for a
  ``bash``/``console``/``python`` block. Its commands start in the background (output kept for the report);
  the harness waits (``READY_TIMEOUT``, 30 s, or ``timeout=SECONDS``) until the URL answers 200 or the file
  exists, and stops the process group when the page ends, pass or fail. A background ``console`` block's
  expected lines must have appeared by the end of the page.
* ``<!-- example: tested-by="tests/e2e/test_demo.py::test_name" -->``: not run here; that test function
  (``path::function`` or ``path::Class::method``) must exist.
* ``<!-- example: fragment -->``: ``yaml`` that is part of an agent configuration, validated as one (every
  missing setting takes its default). ``fragment under="notify"`` (a dotted path) nests the block at that
  path first (for ``secrets`` and ``templates`` the block is a list of entries); ``fragment of="Pod"`` (or
  ``Deployment``, ``Job``) merges it into a minimal object of that kind, then validates that.
* ``<!-- example: as=rotation-config -->`` (``agent-config``, ``emulator-seed``, ``emulator-faults``,
  ``kubernetes``): say what a ``yaml`` block is when its keys leave it open.
* ``<!-- example: timeout=SECONDS -->``: another limit for a run block than 60 s.
* ``<!-- example: exit=N -->``: a ``bash``/``python`` block that must exit with status N.
* ``<!-- example: env KEY=VALUE ... -->``: extra environment for this block only (``env`` comes last in the
  comment). Prefer blocks that ``export`` what they need.

**State between blocks.** What a ``bash`` or ``console`` block ``export``s, and the directory it ``cd``s to,
carry over to the blocks after it (plain shell variables do not: export them). Background blocks carry
nothing over. What a block starts with ``&`` is stopped when the block ends (its process group): a server
that later blocks use is a background block.

**Page markers**, on a line of their own anywhere in the page (the top is customary):
``<!-- example: needs=pubsub -->`` / ``needs=postgres`` / ``needs=pubsub,postgres``: the page's test gets the
``pubsub``/``postgres`` pytest marker (the Java Pub/Sub emulator, a PostgreSQL server).

A page that runs the Pub/Sub emulator (``gcloud beta emulators pubsub``, ``PUBSUB_EMULATOR_HOST``) or a
PostgreSQL server (``initdb``, ``pg_ctl``) without saying so fails.

**Services.** The harness starts no service: a page starts what it uses (``secrets-agent emulator ...`` in a
background block) and the harness stops it. Before a page runs, every port its servers will use must be
free, else the page fails saying which: ``--...port N`` and ``--...listen HOST:PORT`` flags in its run
blocks, every ``HOST:PORT`` of its background blocks and ready URLs, ``listen: HOST:PORT`` in its yaml, and
the default ports of ``secrets-agent emulator`` (8780, 8781) and ``secrets-agent run``/``dev`` (8730, 8731)
when a background block (or a line ending in ``&``) starts them without the flags (or, for the agent, the
``-c FILE`` settings ``server.listen``/``probes.listen``) that move them. Pages that
start servers should use ports of their own (not the defaults), so that a ``make run`` in another terminal,
or another page, does not get in their way.

**Failures** name the block (file:line), the command, the exit status and the last 40 lines of its output,
and the last lines of every background process. After a run block fails, the page's later run blocks are
not run (they would fail for the same reason); static blocks are still checked.
"""

from __future__ import annotations

import ast
import configparser
import contextlib
import dataclasses
import io
import json
import os
import pty
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from markdown_it import MarkdownIt
from markdown_it.rules_block import StateBlock
from markdown_it.token import Token

REPO: Final = Path(__file__).resolve().parents[1]
EXCLUDED: Final = ("docs/reference",)
"""Directories of generated pages (relative to the repository), not checked here."""
VENV_BIN: Final = Path(sys.prefix) / "bin"

DEFAULT_TIMEOUT: Final = 60.0
READY_TIMEOUT: Final = 30.0
STOP_GRACE: Final = 5.0
OUTPUT_TAIL: Final = 40
SKIP_BUDGET: Final = 0.15
"""Most skipped blocks, as a fraction of all blocks of all pages."""
MAX_OUTPUT: Final = 1 << 20
"""Bytes of a process's output kept (the end of it)."""

PYTHON: Final = frozenset({"python", "py"})
SHELL: Final = frozenset({"bash", "sh", "shell"})
CONSOLE: Final = frozenset({"console"})
YAML: Final = frozenset({"yaml", "yml"})
PARSED: Final = frozenset({"json", "jsonl", "toml", "ini", "dotenv", "properties"})
JINJA: Final = frozenset({"jinja", "jinja2"})
LITERAL: Final = frozenset({"text", "mermaid", "diff", "http", "markdown"})
RUNNABLE: Final = PYTHON | SHELL | CONSOLE
KNOWN: Final = RUNNABLE | YAML | PARSED | JINJA | LITERAL

NEEDS: Final = ("pubsub", "postgres")
"""Page markers ``needs=...``: the pytest markers of pyproject.toml they stand for."""
YAML_KINDS: Final = ("agent-config", "rotation-config", "emulator-seed", "emulator-faults", "kubernetes")
FRAGMENT_KINDS: Final = ("Pod", "Deployment", "Job")
INFO_ATTRIBUTES: Final = ("title", "linenums", "hl_lines")
EXAMPLE_PROJECT: Final = "example-project"

_MARKER = re.compile(r"<!--\s*example:(.*?)-->", re.DOTALL)
_ANSI = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|\][^\x07]*\x07|[@-Z\\-_])")
_DROPPED_ENV = re.compile(
    r"SECRETS_AGENT_\w*|SECRET_MANAGER_EMULATOR_HOST|PUBSUB_EMULATOR_HOST|GOOGLE_\w*|GCLOUD_PROJECT"
    r"|PYTEST_\w*|PYTHONPATH|VIRTUAL_ENV|COV_CORE_\w*"
)
_SHELL_STATE_SKIP = frozenset({"_", "SHLVL", "PWD", "OLDPWD"})


# --------------------------------------------------------------------------------------------------
# Finding the blocks
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Marker:
    """What the ``<!-- example: ... -->`` comment before a block says."""

    skip: str | None = None
    """The reason, when the block is not run."""
    background: bool = False
    ready: str | None = None
    tested_by: str | None = None
    fragment: bool = False
    under: str | None = None
    of: str | None = None
    kind: str | None = None
    """``as=``: what a yaml block is."""
    timeout: float | None = None
    exit: int | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    needs: tuple[str, ...] = ()
    """Page marker: ``needs=pubsub,postgres``."""


@dataclass
class Block:
    """One fenced block of a page."""

    page: str
    """The page's path relative to the repository (``docs/emulator.md``)."""
    line: int
    """1-based line of the opening fence."""
    lang: str
    info: str
    text: str
    title: str | None = None
    marker: Marker = field(default_factory=Marker)
    problems: list[str] = field(default_factory=list)
    """What is wrong with the block as written (before anything runs)."""

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def label(self) -> str:
        return f"{self.where} (```{self.lang or '<no language>'})"


@dataclass
class Page:
    path: Path
    name: str
    blocks: list[Block]
    needs: tuple[str, ...] = ()
    problems: list[str] = field(default_factory=list)
    """Problems of the page outside any block (a marker that is not right before a fence)."""


def pages(root: Path = REPO) -> list[Path]:
    """README.md and every docs/**/*.md but the generated ones, in a stable order."""
    found = [root / "README.md"] if (root / "README.md").is_file() else []
    docs = root / "docs"
    if docs.is_dir():
        for path in sorted(docs.rglob("*.md")):
            relative = path.relative_to(root).as_posix()
            if not any(relative == e or relative.startswith(e + "/") for e in EXCLUDED):
                found.append(path)
    return found


_CONTAINER = re.compile(r"(!!!|\?\?\?\+?)\s+\w|===\+?\s+\"")


def _container_rule(state: StateBlock, start_line: int, end_line: int, silent: bool) -> bool:
    """mkdocs-material's admonitions (``!!! note``), collapsible blocks (``???``) and content tabs
    (``=== "Tab"``): the header line, then content indented by 4 spaces, parsed as nested blocks."""
    if state.sCount[start_line] - state.blkIndent >= 4:
        return False
    start = state.bMarks[start_line] + state.tShift[start_line]
    header = state.src[start : state.eMarks[start_line]]
    if not _CONTAINER.match(header):
        return False
    if silent:
        return True
    next_line = start_line + 1
    while next_line < end_line:
        if not state.isEmpty(next_line) and state.sCount[next_line] < state.blkIndent + 4:
            break
        next_line += 1
    last = next_line
    while last > start_line + 1 and state.isEmpty(last - 1):
        last -= 1
    opening = state.push("container_open", "div", 1)
    opening.map = [start_line, last]
    opening.info = header
    old_indent, old_max = state.blkIndent, state.lineMax
    state.blkIndent += 4
    state.lineMax = last
    state.md.block.tokenize(state, start_line + 1, last)
    state.blkIndent, state.lineMax = old_indent, old_max
    state.push("container_close", "div", -1)
    state.line = last
    return True


def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark")
    md.block.ruler.before(
        "fence",
        "mkdocs_container",
        _container_rule,
        {"alt": ["paragraph", "reference", "blockquote", "list"]},
    )
    return md


def parse_marker(body: str) -> tuple[Marker, list[str]]:
    """``skip reason="..."`` -> Marker, and the problems of the comment (unknown words, missing values)."""
    try:
        words = shlex.split(body)
    except ValueError as error:
        return Marker(), [f'marker `{body.strip()}` cannot be read ({error}): quote values with "..."']
    values: dict[str, Any] = {}
    problems: list[str] = []
    env: dict[str, str] = {}
    in_env = False
    for word in words:
        key, equals, value = word.partition("=")
        if in_env:
            if not equals or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                problems.append(f"`env` takes KEY=VALUE words only (and comes last), got {word!r}")
            else:
                env[key] = value
            continue
        if not equals:
            if word in ("skip", "background", "fragment"):
                values[word] = True
            elif word == "env":
                in_env = True
            else:
                problems.append(f"unknown marker word {word!r}")
            continue
        if key == "reason":
            values["skip_reason"] = value
        elif key in ("ready", "tested-by", "under", "of", "as", "needs"):
            values[key] = value
        elif key in ("timeout", "exit"):
            try:
                values[key] = float(value) if key == "timeout" else int(value)
            except ValueError:
                problems.append(f"{key}={value!r} is not a number")
        else:
            problems.append(f"unknown marker key {key!r}")
    if in_env and not env:
        problems.append("`env` needs KEY=VALUE words after it")
    skip: str | None = None
    if values.get("skip"):
        skip = str(values.get("skip_reason", "")).strip()
        if not skip:
            problems.append('skip needs a reason: <!-- example: skip reason="why it cannot run here" -->')
            skip = "(no reason given)"
    elif "skip_reason" in values:
        problems.append('reason= goes with skip: <!-- example: skip reason="..." -->')
    if values.get("background") and not values.get("ready"):
        problems.append(
            'background needs ready="http://127.0.0.1:PORT/path" (answers 200) or ready="file:PATH" (exists)'
        )
    if values.get("ready") and not values.get("background"):
        problems.append("ready= goes with background")
    ready = values.get("ready")
    if ready and not (ready.startswith(("http://", "https://")) or ready.startswith("file:")):
        problems.append(f"ready={ready!r}: an http:// URL or file:PATH")
    if ("under" in values or "of" in values) and not values.get("fragment"):
        problems.append("under= and of= go with fragment")
    if "under" in values and "of" in values:
        problems.append("fragment takes under= or of=, not both")
    if values.get("of") is not None and values["of"] not in FRAGMENT_KINDS:
        problems.append(f"fragment of={values['of']!r}: one of {', '.join(FRAGMENT_KINDS)}")
    if values.get("as") is not None and values["as"] not in YAML_KINDS:
        problems.append(f"as={values['as']!r}: one of {', '.join(YAML_KINDS)}")
    needs = tuple(n for n in str(values.get("needs", "")).split(",") if n)
    for need in needs:
        if need not in NEEDS:
            problems.append(f"needs={need!r}: one of {', '.join(NEEDS)}")
    timeout = values.get("timeout")
    if timeout is not None and not 0 < timeout <= 600:
        problems.append(f"timeout={timeout:g}: seconds, more than 0 and at most 600")
    exclusive = [w for w in ("skip", "tested-by") if values.get(w)]
    others = set(values) - {"skip", "skip_reason", "tested-by"}
    if exclusive and (others or env or len(exclusive) > 1):
        problems.append(f"{exclusive[0]} stands alone: the block is not run, other words mean nothing")
    marker = Marker(
        skip=skip,
        background=bool(values.get("background")),
        ready=ready,
        tested_by=values.get("tested-by"),
        fragment=bool(values.get("fragment")),
        under=values.get("under"),
        of=values.get("of"),
        kind=values.get("as"),
        timeout=timeout,
        exit=values.get("exit"),
        env=env,
        needs=needs,
    )
    return marker, problems


def _info(info: str) -> tuple[str, dict[str, str], list[str]]:
    """```yaml title="x.yaml"``` -> ("yaml", {"title": "x.yaml"}, problems)."""
    text = info.strip()
    if text.startswith("{"):
        return "", {}, [f'attribute lists ({text}) are not supported: write ```yaml title="NAME"```']
    lang, _, rest = text.partition(" ")
    attributes: dict[str, str] = {}
    problems: list[str] = []
    try:
        words = shlex.split(rest)
    except ValueError as error:
        return lang, {}, [f"info string {text!r} cannot be read: {error}"]
    for word in words:
        key, equals, value = word.partition("=")
        if not equals or key not in INFO_ATTRIBUTES:
            problems.append(f"unknown info-string attribute {word!r} (allowed: {', '.join(INFO_ATTRIBUTES)})")
        else:
            attributes[key] = value
    return lang, attributes, problems


def _title_problem(title: str) -> str | None:
    if not title or title.startswith(("/", "~")) or ".." in Path(title).parts:
        return f'title="{title}": a relative path inside the working directory, without ..'
    return None


def parse_page(path: Path, root: Path = REPO) -> Page:
    """Every fenced block of ``path`` with its marker, and the problems found without running anything."""
    try:
        name = path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        name = path.name
    tokens = _markdown().parse(path.read_text(encoding="utf-8"))
    markers: dict[int, tuple[int, str]] = {}
    """End line (0-based, exclusive) of a marker comment -> (its 1-based line, its body)."""
    page = Page(path=path, name=name, blocks=[])
    fences: list[Token] = []
    for token in _walk(tokens):
        if token.type == "html_block" and token.map is not None:
            found = _MARKER.findall(token.content)
            if len(found) > 1:
                page.problems.append(f"{name}:{token.map[0] + 1}: one example marker per comment")
            if found:
                markers[token.map[1]] = (token.map[0] + 1, found[-1])
        elif token.type == "inline" and "example:" in token.content:
            for child in token.children or []:
                if child.type == "html_inline" and _MARKER.search(child.content) and token.map:
                    page.problems.append(
                        f"{name}:{token.map[0] + 1}: an example marker must be on a line of its own, right "
                        "before the fence (with a blank line before it)"
                    )
        elif token.type in ("fence", "code_block"):
            fences.append(token)
    used: set[int] = set()
    for token in fences:
        assert token.map is not None
        line = token.map[0] + 1
        if token.type == "code_block":
            block = Block(name, line, "", "", token.content)
            block.problems.append(
                "an indented code block: make it a fenced block with a language (```text if it is not run)"
            )
            page.blocks.append(block)
            continue
        lang, attributes, problems = _info(token.info)
        block = Block(name, line, lang, token.info.strip(), token.content, attributes.get("title"))
        block.problems += problems
        if token.map[0] in markers:
            used.add(token.map[0])
            marker_line, body = markers[token.map[0]]
            block.marker, marker_problems = parse_marker(body)
            block.problems += [f"marker on line {marker_line}: {p}" for p in marker_problems]
            if block.marker.needs:
                block.problems.append(
                    f"marker on line {marker_line}: needs= is a page marker: put it on a line of its own, "
                    "not right before a fence"
                )
        _check_block(block, root)
        page.blocks.append(block)
    needs: list[str] = []
    for end, (marker_line, body) in sorted(markers.items()):
        if end in used:
            continue
        marker, problems = parse_marker(body)
        if marker.needs and marker == Marker(needs=marker.needs) and not problems:
            needs += [n for n in marker.needs if n not in needs]
        else:
            page.problems.append(
                f"{name}:{marker_line}: this example marker is not right before a fence (nothing may come "
                "between the comment and the ```), and only needs= stands on its own"
                + (f"; also: {'; '.join(problems)}" if problems else "")
            )
    page.needs = tuple(needs)
    for need, pattern in _NEEDED_BY.items():
        users = [
            b.line
            for b in page.blocks
            if b.lang in RUNNABLE
            and b.marker.skip is None
            and not b.marker.tested_by
            and pattern.search(b.text)
        ]
        if users and need not in page.needs:
            page.problems.append(
                f"{name}:{users[0]}: this page runs {need} (line(s) {', '.join(map(str, users))}): put "
                f"<!-- example: needs={need} --> on a line of its own at the top of the page, so that "
                "`make test-quick` leaves it out"
            )
    return page


_NEEDED_BY: Final = {
    "pubsub": re.compile(r"gcloud\s+beta\s+emulators\s+pubsub|PUBSUB_EMULATOR_HOST"),
    "postgres": re.compile(r"\b(initdb|pg_ctl|pg_ctlcluster|postgres\s+-D)\b"),
}
"""What makes a page need a ``needs=`` marker: starting the Pub/Sub emulator, a PostgreSQL server."""


def _walk(tokens: Sequence[Token]) -> Iterator[Token]:
    for token in tokens:
        yield token
        if token.children and token.type != "inline":
            yield from _walk(token.children)


def _check_block(block: Block, root: Path) -> None:
    """The problems of a block as written: its language, its marker's fit, its title."""
    marker = block.marker
    if marker.skip is not None or marker.tested_by is not None:
        if marker.tested_by is not None:
            problem = missing_test_problem(marker.tested_by, root)
            if problem:
                block.problems.append(problem)
        return
    if not block.lang:
        block.problems.append("a fence without a language: name it (```text if it is not meant to run)")
        return
    if block.lang not in KNOWN:
        block.problems.append(
            f"```{block.lang} is no language the example harness knows: use one of "
            f"{', '.join(sorted(KNOWN))} (```text when it is not run), or "
            '<!-- example: skip reason="..." --> right before the fence'
        )
        return
    if block.title is not None and (problem := _title_problem(block.title)):
        block.problems.append(problem)
    if marker.background and block.lang not in RUNNABLE:
        block.problems.append(f"background is for python, bash and console blocks, not ```{block.lang}")
    if (marker.fragment or marker.kind) and block.lang not in YAML:
        block.problems.append(f"fragment and as= are for yaml blocks, not ```{block.lang}")
    if marker.exit is not None and block.lang not in PYTHON | SHELL:
        block.problems.append(
            "exit= is for python and bash blocks (in a console block, follow the command with `$ echo $?`)"
        )
    if (marker.env or marker.timeout is not None) and block.lang not in RUNNABLE:
        block.problems.append(f"env and timeout= are for blocks that run, not ```{block.lang}")
    if block.lang in CONSOLE:
        _, problems = parse_console(block.text, block.line)
        block.problems += problems
    if block.lang in PYTHON and (problem := python_syntax_problem(block)):
        block.problems.append(problem)


def python_syntax_problem(block: Block) -> str | None:
    """A python block that is no valid script (top-level await above all), or None."""
    try:
        compile(block.text, block.where, "exec", dont_inherit=True)
    except SyntaxError as error:
        hint = ""
        if "outside" in str(error.msg) and ("await" in str(error.msg) or "async" in str(error.msg)):
            hint = (
                ": top-level await does not run as a script. Wrap the code in `async def main(): ...` "
                "and end with `asyncio.run(main())`"
            )
        return f"a SyntaxError on line {block.line + (error.lineno or 0)}: {error.msg}{hint}"
    return None


def missing_test_problem(reference: str, root: Path = REPO) -> str | None:
    """Why ``tests/x.py::test_name`` (or ``::Class::test_name``) names no test function, or None."""
    path_text, _, qualified = reference.partition("::")
    names = qualified.split("::") if qualified else []
    how = 'tested-by="tests/PATH.py::test_function" (or ::TestClass::test_method)'
    if not path_text.startswith("tests/") or not path_text.endswith(".py") or not 1 <= len(names) <= 2:
        return f"tested-by={reference!r}: expected {how}"
    path = root / path_text
    if not path.is_file():
        return f"tested-by={reference!r}: there is no {path_text}"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    scope: list[ast.stmt] = tree.body
    for index, name in enumerate(names):
        last = index == len(names) - 1
        kinds: tuple[type[ast.stmt], ...] = (
            (ast.FunctionDef, ast.AsyncFunctionDef) if last else (ast.ClassDef,)
        )
        found = [node for node in scope if isinstance(node, kinds) and getattr(node, "name", None) == name]
        if not found:
            what = "test function" if last else "class"
            return f"tested-by={reference!r}: {path_text} has no {what} {name!r}"
        if not last:
            scope = found[0].body  # type: ignore[attr-defined]
    if not names[-1].startswith("test"):
        return f"tested-by={reference!r}: {names[-1]!r} is not a test pytest collects (test_...)"
    return None


@dataclass(frozen=True)
class ConsoleCommand:
    line: int
    command: str
    expected: tuple[str, ...]


def parse_console(text: str, fence_line: int) -> tuple[list[ConsoleCommand], list[str]]:
    """``$ cmd`` lines (``\\`` continues one) and the expected output below each."""
    lines = text.splitlines()
    commands: list[tuple[int, list[str], list[str]]] = []
    problems: list[str] = []
    index = 0
    while index < len(lines):
        raw = lines[index]
        if raw == "$" or raw.startswith("$ "):
            start = index
            parts = [raw[2:]]
            while parts[-1].endswith("\\") and index + 1 < len(lines):
                index += 1
                parts.append(lines[index])
            if "\n".join(parts).strip():
                commands.append((fence_line + 1 + start, parts, []))
        elif not commands:
            if raw.strip():
                problems.append(
                    f"line {fence_line + 1 + index}: a console block starts with a `$ ` command (output "
                    "follows the command it belongs to); for a file's content use a block with title=, "
                    "for output alone ```text"
                )
                break
        else:
            commands[-1][2].append(raw)
        index += 1
    if not commands and not problems:
        problems.append("a console block without a `$ ` command: use ```text for output alone")
    return [ConsoleCommand(line, "\n".join(parts), tuple(out)) for line, parts, out in commands], problems


# --------------------------------------------------------------------------------------------------
# Validating the blocks that do not run
# --------------------------------------------------------------------------------------------------

KubernetesCheck = Callable[[Mapping[str, Any]], list[str]]


@dataclass(frozen=True)
class Checks:
    """What the harness validates with that lives outside testing/ (tests/k8s's Kubernetes validation)."""

    kubernetes: KubernetesCheck | None = None
    """Problems of one Kubernetes object (empty: valid)."""


def _agent_keys() -> frozenset[str]:
    from agent.config.schema import Config

    return frozenset(f.name for f in dataclasses.fields(Config))


def _fault_keys() -> frozenset[str]:
    from agent_emulator.fault_config import _TOP_LEVEL_KEYS

    return frozenset(_TOP_LEVEL_KEYS)


def _seed_entry_keys() -> frozenset[str]:
    from agent_emulator.persistence import _SECRET_KEYS

    return frozenset(_SECRET_KEYS)


def classify_yaml(document: object) -> tuple[str | None, str]:
    """Which YAML_KINDS a parsed document is (or None), and why."""
    from agent.rotation.config import TOP_LEVEL_KEYS as ROTATION_KEYS

    if not isinstance(document, dict):
        return None, f"a YAML {type(document).__name__}, not a mapping"
    if "apiVersion" in document and "kind" in document:
        return "kubernetes", "apiVersion and kind"
    keys = {str(k) for k in document}
    # Keys both files take (project, secrets, gcp, fleet) say nothing about which of the two this is.
    shared = _agent_keys() & set(ROTATION_KEYS)
    agent_only = keys & (_agent_keys() - shared)
    rotation_only = keys & (set(ROTATION_KEYS) - shared)
    faults_only = keys & _fault_keys()
    if agent_only and not rotation_only and not faults_only:
        return "agent-config", f"agent settings {sorted(agent_only)}"
    secrets = document.get("secrets")
    if isinstance(secrets, list):
        return "agent-config", "secrets is a list"
    if rotation_only and not faults_only:
        return "rotation-config", f"rotation settings {sorted(rotation_only)}"
    if faults_only and not rotation_only:
        return "emulator-faults", f"emulator fault settings {sorted(faults_only)}"
    if isinstance(secrets, dict) and secrets:
        entries = list(secrets.values())
        rotation = any(isinstance(e, dict) and {"provider", "type"} & set(e) for e in entries)
        seed = any(
            e is None or isinstance(e, str) or (isinstance(e, dict) and set(e) & _seed_entry_keys())
            for e in entries
        )
        if rotation and not seed:
            return "rotation-config", "secrets name providers or types"
        if seed and not rotation:
            return "emulator-seed", "secrets hold values or versions"
        return None, "its secrets look like both a rotation config and an emulator seed"
    if keys <= _agent_keys():
        return "agent-config", "only agent settings"
    # A typo of a setting ("poll_intervall") is still the agent's configuration: its loader says which.
    import difflib

    for kind, known in (
        ("agent-config", _agent_keys()),
        ("rotation-config", set(ROTATION_KEYS)),
        ("emulator-faults", _fault_keys()),
    ):
        if any(difflib.get_close_matches(key, sorted(known), n=1) for key in keys):
            return kind, f"keys close to its settings {sorted(keys)}"
    return None, f"top-level keys {sorted(keys)}"


_SKELETONS: Final[Mapping[str, Mapping[str, Any]]] = {
    "Pod": {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "example"},
        "spec": {"containers": [{"name": "app", "image": "example.com/app:1.0"}]},
    },
    "Deployment": {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "example"},
        "spec": {
            "selector": {"matchLabels": {"app": "example"}},
            "template": {
                "metadata": {"labels": {"app": "example"}},
                "spec": {"containers": [{"name": "app", "image": "example.com/app:1.0"}]},
            },
        },
    },
    "Job": {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "example"},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "app", "image": "example.com/app:1.0"}],
                }
            }
        },
    },
}


def _merged(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


@dataclass
class _Where:
    """Where a block's validation runs: the directory relative paths resolve against, the page's exported
    environment, a scratch directory for files the loaders want."""

    cwd: Path
    env: Mapping[str, str]
    scratch: Path


def validate_static(block: Block, where: _Where, checks: Checks) -> list[str]:
    """The problems of a block that does not run (yaml, json, ...; empty: valid)."""
    lang = block.lang
    text = block.text
    try:
        if lang in YAML:
            return _validate_yaml(block, where, checks)
        if lang == "json":
            json.loads(text)
        elif lang == "jsonl":
            for number, line in enumerate(text.splitlines(), start=block.line + 1):
                if line.strip():
                    try:
                        json.loads(line)
                    except json.JSONDecodeError as error:
                        return [f"line {number}: not JSON: {error}"]
        elif lang == "toml":
            tomllib.loads(text)
        elif lang == "ini":
            configparser.ConfigParser(interpolation=None).read_string(text, source=block.where)
        elif lang == "dotenv":
            from dotenv.parser import parse_stream

            bad = [b.original.line for b in parse_stream(io.StringIO(text)) if b.error]
            if bad:
                return [f"python-dotenv cannot read line(s) {', '.join(str(block.line + n) for n in bad)}"]
        elif lang == "properties":
            import javaproperties

            javaproperties.loads(text)
        elif lang in JINJA:
            return _validate_jinja(block)
    except json.JSONDecodeError as error:
        return [f"not valid JSON: {error}"]
    except tomllib.TOMLDecodeError as error:
        return [f"not valid TOML: {error}"]
    except configparser.Error as error:
        return [f"configparser cannot read it: {error}"]
    except ValueError as error:
        return [f"cannot be parsed: {error}"]
    return []


def _validate_jinja(block: Block) -> list[str]:
    from agent.render.templates import check_template

    name = block.title or f"line {block.line}"
    return [
        str(error)
        for error in check_template(name, block.text, known=())
        if not error.reason.startswith("unknown secret")
    ]


def _validate_yaml(block: Block, where: _Where, checks: Checks) -> list[str]:
    import yaml

    try:
        documents = [d for d in yaml.safe_load_all(block.text) if d is not None]
    except yaml.YAMLError as error:
        return [f"not valid YAML: {error}"]
    if not documents:
        return ["an empty YAML block"]
    marker = block.marker
    if marker.fragment and marker.of is not None:
        if len(documents) != 1 or not isinstance(documents[0], dict):
            return [f"fragment of={marker.of}: one YAML mapping"]
        return _kubernetes(
            _merged(_SKELETONS[marker.of], documents[0]), checks, f"(a {marker.of} around it) "
        )
    if marker.fragment:
        document = documents[0]
        if len(documents) != 1:
            return ["a fragment is one YAML document"]
        if marker.under:
            for key in reversed(marker.under.split(".")):
                document = {key: document}
        elif not isinstance(document, dict):
            return [
                'a fragment that is not a mapping of settings needs under="PATH" (e.g. under="secrets" for '
                "a list of secrets)"
            ]
        return _agent_config(block, document, where, whole=False)
    if all(isinstance(d, dict) and "apiVersion" in d and "kind" in d for d in documents) or (
        marker.kind == "kubernetes"
    ):
        problems: list[str] = []
        for document in documents:
            problems += _kubernetes(document, checks, "")
        return problems
    if len(documents) != 1:
        return ["several YAML documents that are not all Kubernetes objects (apiVersion and kind)"]
    document = documents[0]
    kind, why = (marker.kind, "as=") if marker.kind else classify_yaml(document)
    if kind is None:
        return [
            f"cannot tell what this YAML is ({why}): the harness knows Kubernetes objects (apiVersion + "
            "kind), the agent's configuration, the rotation config, the emulator's seed and faults files. "
            'Part of an agent configuration: <!-- example: fragment --> (under="PATH" to nest it, of="Pod" '
            "for part of a Kubernetes object); keys that leave it open: <!-- example: as=KIND -->; another "
            'tool\'s file: <!-- example: skip reason="..." -->'
        ]
    if kind == "agent-config":
        return _agent_config(block, document, where, whole=True)
    file = _scratch_file(block, where)
    if kind == "rotation-config":
        return [p.replace(str(file), block.where) for p in _rotation_config(file, where)]
    if kind == "emulator-seed":
        return [p.replace(str(file), block.where) for p in _seed(file)]
    if kind == "emulator-faults":
        return _faults(document)
    return _kubernetes(document, checks, "")


def _scratch_file(block: Block, where: _Where) -> Path:
    """The block's file: its title's, or a scratch copy (the loaders read files)."""
    if block.title:
        return where.cwd / block.title
    path = where.scratch / f"line-{block.line}.yaml"
    path.write_text(block.text, encoding="utf-8")
    return path


def _kubernetes(document: Mapping[str, Any], checks: Checks, prefix: str) -> list[str]:
    if checks.kubernetes is None:
        return ["a Kubernetes object, but the harness was given no Kubernetes validator (Checks.kubernetes)"]
    return [f"{prefix}{p}" for p in checks.kubernetes(document)]


def _agent_config(block: Block, document: object, where: _Where, *, whole: bool) -> list[str]:
    """The agent loader's problems. ``whole``: the block is the file (read strictly, as the CLI reads one,
    from its title's file when it has one); else ``document`` is a fragment already put in place."""
    from agent.config import load_yaml
    from agent.config.loader import load_config
    from agent.config.schema import CONFIG_FILE_ENV, CONFIG_YAML_ENV
    from agent.config.yaml import read_yaml_text
    from agent.errors import ConfigError

    env = {"GOOGLE_CLOUD_PROJECT": EXAMPLE_PROJECT}
    env |= {
        k: v
        for k, v in where.env.items()
        if (k.startswith("SECRETS_AGENT_") or k == "GOOGLE_CLOUD_PROJECT")
        and k not in (CONFIG_FILE_ENV, CONFIG_YAML_ENV)
    }
    try:
        with contextlib.chdir(where.cwd):
            if whole and block.title:
                load_config(where.cwd / block.title, env, {})
            elif whole:
                load_config(None, env, {}, document=read_yaml_text(block.text, block.where))
            else:
                duplicates = load_yaml(block.text, block.where).duplicates
                if duplicates:
                    return [
                        f"{d.path}: set on line {d.first_line} and again on line {d.line}" for d in duplicates
                    ]
                if not isinstance(document, dict):
                    return ["the agent's configuration is a mapping of settings"]
                load_config(None, env, {}, document=document)
    except ConfigError as error:
        return ["the agent's loader refuses it (as `secrets-agent check-config` would):"] + [
            f"  {p}" for p in error.problems
        ]
    return []


def _rotation_config(file: Path, where: _Where) -> list[str]:
    from agent.errors import AgentError
    from agent.rotation.config import load_rotation_config
    from agent.rotation.providers.registry import build_provider

    try:
        with contextlib.chdir(where.cwd):
            config = load_rotation_config(file)
            problems = []
            for secret_id, settings in config.secrets.items():
                try:
                    build_provider(settings, config.types.get(secret_id))
                except AgentError as error:
                    problems.append(f"secrets.{secret_id}: {error}")
    except AgentError as error:
        return [f"the rotation config loader refuses it: {error}"]
    return problems


def _seed(file: Path) -> list[str]:
    from agent.errors import ConfigError
    from agent_emulator.persistence import load_seed

    try:
        load_seed(file)
    except ConfigError as error:
        return [f"the emulator's seed loader refuses it: {error}"]
    return []


def _faults(document: object) -> list[str]:
    from agent.errors import ConfigError
    from agent_emulator.fault_config import parse_fault_config

    try:
        parse_fault_config(document)
    except ConfigError as error:
        return [f"the emulator's faults loader refuses it: {error}"]
    return []


# --------------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------------


def _clean(data: bytes) -> str:
    text = data.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    return _ANSI.sub("", text)


def tail(text: str, lines: int = OUTPUT_TAIL) -> str:
    kept = text.rstrip("\n").splitlines()[-lines:]
    return "\n".join(f"  | {line}" for line in kept) if kept else "  | (no output)"


class Process:
    """A command in a session and process group of its own, its output (stdout and stderr together, from a
    pseudo-terminal or a pipe) read by a thread as it comes."""

    def __init__(self, argv: Sequence[str], cwd: Path, env: Mapping[str, str], *, terminal: bool) -> None:
        self._buffer = bytearray()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        if terminal:
            master, slave = pty.openpty()
            try:
                self.popen = subprocess.Popen(
                    list(argv),
                    cwd=cwd,
                    env=dict(env),
                    stdin=subprocess.DEVNULL,
                    stdout=slave,
                    stderr=slave,
                    start_new_session=True,
                )
            except BaseException:
                os.close(master)
                raise
            finally:
                os.close(slave)
            self._fd = master
        else:
            self.popen = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            assert self.popen.stdout is not None
            self._fd = self.popen.stdout.fileno()
        self._reader = threading.Thread(target=self._read, name=f"output of {argv[0]}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([self._fd], [], [], 0.1)
                if not ready:
                    continue
                try:
                    data = os.read(self._fd, 65536)
                except OSError:  # EIO: the terminal's last writer is gone
                    break
                if not data:
                    break
                with self._lock:
                    self._buffer += data
                    if len(self._buffer) > MAX_OUTPUT:
                        del self._buffer[: len(self._buffer) - MAX_OUTPUT]
        finally:
            if self.popen.stdout is not None:
                self.popen.stdout.close()
            else:
                os.close(self._fd)

    @property
    def output(self) -> str:
        with self._lock:
            return _clean(bytes(self._buffer))

    def exit_status(self) -> int | None:
        """The exit status (negative: killed by that signal), or None while it runs. The process is not
        reaped: while it is a zombie its PID stays taken, so signalling its group can never reach another
        process group that got the number since (``stop`` reaps it)."""
        if self.popen.returncode is not None:
            return self.popen.returncode
        try:
            info = os.waitid(os.P_PID, self.popen.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return self.popen.poll()
        if info is None:
            return None
        return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status

    def wait(self, timeout: float) -> int | None:
        """The exit status, or None after ``timeout`` seconds (the process is then still running)."""
        deadline = time.monotonic() + timeout
        delay = 0.002
        while (status := self.exit_status()) is None:
            if time.monotonic() > deadline:
                return None
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        return status

    def stop(self) -> None:
        """SIGTERM to the whole process group (what the command left running with ``&`` too), SIGKILL after
        STOP_GRACE; then the process is reaped and its output complete."""
        group = self.popen.pid
        if self.popen.returncode is None:  # not reaped: the group's number is still ours
            for sig, grace in ((signal.SIGTERM, STOP_GRACE), (signal.SIGKILL, 2.0)):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(group, sig)
                deadline = time.monotonic() + grace
                while _group_alive(group) and time.monotonic() < deadline:
                    time.sleep(0.01)
                if not _group_alive(group):
                    break
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(5.0)
        # Every writer is gone: the reader gets to the end of the output at once.
        self._reader.join(2.0)
        self._stop.set()
        self._reader.join(2.0)


def _group_alive(group: int) -> bool:
    """Whether a process of ``group`` still runs. Zombies do not count: an orphan's zombie waits for PID 1 to
    reap it, which in a container may be never."""
    try:
        os.killpg(group, 0)
    except (ProcessLookupError, PermissionError):
        return False
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[2] == str(group) and fields[0] not in ("Z", "X"):
            return True
    return False


def base_env(home: Path) -> dict[str, str]:
    """The caller's environment without what would make a page depend on the machine, the virtualenv's
    bin first on PATH, an empty HOME."""
    env = {k: v for k, v in os.environ.items() if not _DROPPED_ENV.fullmatch(k)}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', os.defpath)}"
    env["HOME"] = str(home)
    env["NO_COLOR"] = "1"
    env["PAGER"] = "cat"
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("COLUMNS", None)
    return env


_ADDRESS = re.compile(r"(?:127\.0\.0\.1|localhost|0\.0\.0\.0|\[::1?\]):(\d{2,5})(?![\d.])")
_SERVER_FLAG = re.compile(r"--[a-z-]*(?:port|listen)[= ](?:\S*:)?(\d{2,5})(?![\d.])")
_BACKGROUNDED = re.compile(r"(?<!&)&\s*(#.*)?$")
"""A shell line that ends by starting its command in the background (``cmd &``, not ``a && b``)."""


def ports_of(page: Page) -> list[int]:
    """The TCP ports a page's servers will listen on: ``--...port N`` and ``--...listen HOST:PORT`` flags,
    every ``HOST:PORT`` of a background block, ready URLs, yaml ``listen:`` settings, and the defaults of
    ``secrets-agent emulator`` (8780, 8781) and ``secrets-agent run``/``dev`` (8730, 8731) started in the
    background (a background block, or a line ending with ``&``) without the flags that move them."""
    ports: set[int] = set()
    for block in page.blocks:
        if block.marker.skip is not None or block.marker.tested_by or block.problems:
            continue
        if block.lang in YAML:
            ports.update(_listen_settings(block.text))
        if block.lang not in RUNNABLE:
            continue
        text = block.text.replace("\\\n", " ")  # one line per command
        ports.update(int(p) for p in _SERVER_FLAG.findall(text))
        if block.marker.background:
            ports.update(int(p) for p in _ADDRESS.findall(text + " " + (block.marker.ready or "")))
        for line in text.splitlines():
            if not (block.marker.background or _BACKGROUNDED.search(line)):
                continue
            if re.search(r"secrets-agent\s+emulator\b", line):
                ports.update(
                    p for p, flag in ((8780, "--grpc-port"), (8781, "--http-port")) if flag not in line
                )
            if re.search(r"secrets-agent\s+(run|dev)\b", line):
                ports.update(_agent_default_ports(line, page))
    return sorted(p for p in ports if 0 < p < 65536)


def _listen_settings(text: str) -> set[int]:
    """The ports of every ``listen: HOST:PORT`` in a YAML text, at any depth."""
    import yaml

    found: set[int] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "listen" and isinstance(value, str) and (m := re.search(r":(\d{1,5})$", value)):
                    found.add(int(m.group(1)))
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    with contextlib.suppress(yaml.YAMLError):
        for document in yaml.safe_load_all(text):
            walk(document)
    return found


_CONFIG_FLAG = re.compile(r"(?:-c|--config)[= ]\s*(\S+)")


def _agent_default_ports(line: str, page: Page) -> set[int]:
    """The default ports (8730 endpoint, 8731 probes) an agent started by ``line`` listens on: those that no
    flag moves and that its ``-c FILE`` (a titled block of the page, or a file of the repository such as
    examples/demo-agent.yaml) neither moves nor switches off."""
    import yaml

    found = set()
    config: Mapping[str, Any] = {}
    if match := _CONFIG_FLAG.search(line):
        name = match.group(1).strip("'\"")
        text = next((b.text for b in page.blocks if b.title and b.title == name), None)
        if text is None and (REPO / name).is_file():
            text = (REPO / name).read_text(encoding="utf-8")
        with contextlib.suppress(yaml.YAMLError):
            loaded = yaml.safe_load(text or "")
            config = loaded if isinstance(loaded, dict) else {}
    for port, flag, section in ((8730, "--listen", "server"), (8731, "--probes-listen", "probes")):
        settings = config.get(section)
        settings = settings if isinstance(settings, dict) else {}
        if flag not in line and "listen" not in settings and settings.get("enabled", True) is not False:
            found.add(port)
    return found


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))  # whoever listens anywhere on it is in the way
        except OSError:
            return True
    return False


# --------------------------------------------------------------------------------------------------
# Running a page
# --------------------------------------------------------------------------------------------------


@dataclass
class _Background:
    block: Block
    process: Process
    expected: tuple[str, ...] = ()


@dataclass
class PageReport:
    page: str
    failures: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(file:line, reason) of every skipped block."""
    ran: int = 0
    checked: int = 0
    seconds: float = 0.0

    def message(self) -> str:
        return f"{len(self.failures)} example(s) of {self.page} failed:\n\n" + "\n\n".join(self.failures)


class _Session:
    """One page's run: its directories, the environment and directory its blocks leave behind, its
    background processes."""

    def __init__(self, page: Page, base: Path, checks: Checks) -> None:
        self.page = page
        self.checks = checks
        self.base = base
        self.work = base / "work"
        self.harness = base / "harness"
        home = base / "home"
        for directory in (self.work, self.harness, home):
            directory.mkdir(parents=True)
        shutil.copytree(REPO / "examples", self.work / "examples")
        self.env = base_env(home)
        self.cwd = self.work
        self.background: list[_Background] = []
        self.processes: list[Process] = []
        """Every process started for the page (what a block left running with ``&`` goes at its end)."""

    # -- helpers --------------------------------------------------------------------------------

    def _spawn(self, argv: Sequence[str], cwd: Path, env: Mapping[str, str], *, terminal: bool) -> Process:
        process = Process(argv, cwd, env, terminal=terminal)
        self.processes.append(process)
        return process

    def _block_env(self, block: Block) -> dict[str, str]:
        return {**self.env, **block.marker.env}

    def _timeout(self, block: Block) -> float:
        return block.marker.timeout or DEFAULT_TIMEOUT

    def _background_report(self) -> str:
        if not self.background:
            return ""
        parts = ["background processes of this page:"]
        for bg in self.background:
            status = bg.process.exit_status()
            state = "running" if status is None else f"exited with status {status}"
            first = bg.block.text.strip().splitlines()[0] if bg.block.text.strip() else ""
            parts.append(f"  {bg.block.where} `{first}` ({state}), last {OUTPUT_TAIL} lines:")
            parts.append(tail(bg.process.output))
        return "\n".join(parts)

    def failure(self, block: Block, what: str, *, command: str = "", output: str | None = None) -> str:
        parts = [f"{block.label}: {what}"]
        if command:
            lines = command.strip("\n").splitlines()
            shown = [f"    {line}" for line in lines[:25]] + (["    ..."] if len(lines) > 25 else [])
            parts.append("command:\n" + "\n".join(shown))
        if output is not None:
            parts.append(f"last {OUTPUT_TAIL} lines of its output:\n{tail(output)}")
        report = self._background_report()
        if report and output is not None:
            parts.append(report)
        return "\n".join(parts)

    def write_title(self, block: Block) -> str | None:
        if block.title is None:
            return None
        target = (self.cwd / block.title).resolve()
        if not target.is_relative_to(self.base.resolve()):
            return self.failure(block, f'title="{block.title}" leaves the page\'s temporary directory')
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(block.text, encoding="utf-8")
        return None

    def _load_state(self, state: Path) -> None:
        env_file, pwd_file = state.with_suffix(".env"), state.with_suffix(".pwd")
        if env_file.is_file():
            entries = env_file.read_bytes().split(b"\0")
            env = {}
            for entry in entries:
                key, equals, value = entry.decode("utf-8", errors="surrogateescape").partition("=")
                if equals and key not in _SHELL_STATE_SKIP:
                    env[key] = value
            self.env = env
        if pwd_file.is_file():
            cwd = Path(pwd_file.read_text(encoding="utf-8").rstrip("\n"))
            if cwd.is_dir():
                self.cwd = cwd

    def _state_dump(self, state: Path) -> str:
        env, pwd = (shlex.quote(str(state.with_suffix(suffix))) for suffix in (".env", ".pwd"))
        return f"\nenv -0 > {env}; pwd > {pwd}\n"

    # -- the kinds of blocks that run --------------------------------------------------------------

    def run(self, block: Block) -> str | None:
        """Run one block; the failure message, or None."""
        if block.marker.background:
            return self._start_background(block)
        if block.lang in PYTHON:
            argv, env = self._python(block)
            process = self._spawn(argv, self.cwd, env, terminal=False)
            return self._finish(block, process, block.text)
        if block.lang in SHELL:
            return self._shell(block)
        return self._console(block)

    def _python(self, block: Block) -> tuple[list[str], dict[str, str]]:
        """The command and environment of a python block: its file (its title's, or one beside the page's
        working directory), with the current directory importable as it is for `python script.py` there."""
        if block.title:
            script = self.cwd / block.title
        else:
            script = self.harness / f"line-{block.line}.py"
            script.write_text(block.text, encoding="utf-8")
        env = self._block_env(block)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(self.cwd), env.get("PYTHONPATH")) if p)
        return [str(VENV_BIN / "python"), str(script)], env

    def _finish(self, block: Block, process: Process, command: str) -> str | None:
        timeout = self._timeout(block)
        status = process.wait(timeout)
        process.stop()  # and what it left running with &
        if status is None:
            return self.failure(
                block,
                f"still running after {timeout:g} s (stopped): give it timeout=SECONDS, or run it in "
                'the background (<!-- example: background ready="..." -->)',
                command=command,
                output=process.output,
            )
        expected = block.marker.exit if block.marker.exit is not None else 0
        if status != expected:
            return self.failure(
                block,
                f"exited with status {status} (expected {expected})",
                command=command,
                output=process.output,
            )
        return None

    def _shell(self, block: Block) -> str | None:
        state = self.harness / f"line-{block.line}"
        script = state.with_suffix(".sh")
        script.write_text(block.text.rstrip("\n") + "\n" + self._state_dump(state), encoding="utf-8")
        argv = ["bash", "--noprofile", "--norc", "-euo", "pipefail", str(script)]
        process = self._spawn(argv, self.cwd, self._block_env(block), terminal=False)
        failure = self._finish(block, process, block.text)
        if failure is None:
            self._load_state(state)
        return failure

    def _console(self, block: Block) -> str | None:
        commands, _ = parse_console(block.text, block.line)
        nonce = uuid.uuid4().hex
        state = self.harness / f"line-{block.line}"
        lines = ['__example_status() { return "$1"; }']
        for index, command in enumerate(commands):
            lines.append(command.command)
            lines.append(
                f'__example_rc=$?; printf "\\n{nonce} {index} %d\\n" "$__example_rc"; '
                '__example_status "$__example_rc"'
            )
        script = state.with_suffix(".sh")
        script.write_text("\n".join(lines) + self._state_dump(state), encoding="utf-8")
        process = self._spawn(
            ["bash", "--noprofile", "--norc", str(script)], self.cwd, self._block_env(block), terminal=True
        )
        timeout = self._timeout(block)
        status = process.wait(timeout)
        process.stop()  # and what it left running with &
        output = process.output
        pieces = re.split(rf"\n?{nonce} (\d+) (\d+)\n", output)
        # pieces: [out0, i0, rc0, out1, i1, rc1, ..., rest]
        finished = {int(pieces[k]): (int(pieces[k + 1]), pieces[k - 1]) for k in range(1, len(pieces) - 1, 3)}
        for index, command in enumerate(commands):
            if index not in finished:
                rest = pieces[-1]
                what = (
                    f"still running after {timeout:g} s (stopped): give the block timeout=SECONDS, or run it "
                    'in the background (<!-- example: background ready="..." -->)'
                    if status is None
                    else f"the shell ended during this command (exit status {status}: an `exit`?)"
                )
                return self.failure(
                    block, f"line {command.line}: {what}", command="$ " + command.command, output=rest
                )
            rc, out = finished[index]
            following = commands[index + 1].command.strip() if index + 1 < len(commands) else ""
            if rc != 0 and following not in ("echo $?", 'echo "$?"'):
                return self.failure(
                    block,
                    f"line {command.line}: exited with status {rc} (if that is expected, follow it with "
                    '`$ echo $?` and its output, or write `cmd || echo "exit status $?"`)',
                    command="$ " + command.command,
                    output=out,
                )
            missing = missing_lines(command.expected, out)
            if missing:
                return self.failure(
                    block,
                    f"line {command.line}: expected output not found: "
                    + "; ".join(repr(m.strip()) for m in missing),
                    command="$ " + command.command,
                    output=out,
                )
        self._load_state(state)
        return None

    def _start_background(self, block: Block) -> str | None:
        expected: tuple[str, ...] = ()
        if block.lang in PYTHON:
            argv, env = self._python(block)
            process = self._spawn(argv, self.cwd, env, terminal=False)
        elif block.lang in SHELL:
            script = self.harness / f"line-{block.line}.sh"
            script.write_text(block.text, encoding="utf-8")
            argv = ["bash", "--noprofile", "--norc", "-euo", "pipefail", str(script)]
            process = self._spawn(argv, self.cwd, self._block_env(block), terminal=False)
        else:
            commands, _ = parse_console(block.text, block.line)
            expected = tuple(line for command in commands for line in command.expected)
            script = self.harness / f"line-{block.line}.sh"
            script.write_text("\n".join(c.command for c in commands) + "\n", encoding="utf-8")
            argv = ["bash", "--noprofile", "--norc", str(script)]
            process = self._spawn(argv, self.cwd, self._block_env(block), terminal=True)
        self.background.append(_Background(block, process, expected))
        ready = block.marker.ready
        assert ready is not None
        limit = block.marker.timeout or READY_TIMEOUT
        deadline = time.monotonic() + limit
        cwd = self.cwd
        foreign = False
        while True:
            if _is_ready(ready, cwd):
                owners = None if ready.startswith("file:") else _url_listeners(ready)
                if owners is None or owners & _group_members(process.popen.pid):
                    return None
                foreign = True  # another program answers there: not ours, not ready
            status = process.exit_status()
            if status is not None:
                process.stop()
                return self.failure(
                    block,
                    f"exited with status {status} before it was ready ({ready})",
                    command=block.text,
                    output=process.output,
                )
            if time.monotonic() > deadline:
                why = (
                    f"{ready} answers, but from another program than this block's (something else listens "
                    "on that port)"
                    if foreign
                    else f"{ready} did not answer 200 / appear"
                )
                return self.failure(
                    block,
                    f"not ready after {limit:g} s: {why}",
                    command=block.text,
                    output=process.output,
                )
            time.sleep(0.05)

    def finish_background(self) -> list[str]:
        """Check what background console blocks were expected to print; stop every process."""
        failures = []
        for bg in self.background:
            missing = missing_lines(bg.expected, bg.process.output)
            if missing:
                failures.append(
                    self.failure(
                        bg.block,
                        "expected output of this background block not found by the end of the page: "
                        + "; ".join(repr(m.strip()) for m in missing),
                        command=bg.block.text,
                        output=bg.process.output,
                    )
                )
        self.stop_all()
        return failures

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            process.stop()


def _is_ready(ready: str, cwd: Path) -> bool:
    if ready.startswith("file:"):
        return (cwd / ready.removeprefix("file:")).exists()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(ready, timeout=1.0) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _url_listeners(url: str) -> set[int] | None:
    """The PIDs holding a listening TCP socket on the port of ``url`` (from /proc); None when that cannot
    be known (no /proc)."""
    port = urllib.parse.urlsplit(url).port or (443 if url.startswith("https:") else 80)
    inodes: set[str] = set()
    tables = [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]
    if not any(t.is_file() for t in tables):
        return None
    for table in tables:
        with contextlib.suppress(OSError):
            for row in table.read_text().splitlines()[1:]:
                fields = row.split()
                if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    sockets = {f"socket:[{inode}]" for inode in inodes}
    owners: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in sockets:
                        owners.add(int(entry.name))
                        break
    return owners


def _group_members(group: int) -> set[int]:
    """The PIDs of process group ``group`` (from /proc)."""
    members = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if stat[stat.rfind(")") + 2 :].split()[2] == str(group):
                    members.add(int(entry.name))
    return members


def _line_pattern(expected: str) -> re.Pattern[str] | None:
    text = " ".join(expected.split())
    if not text or text == "...":
        return None
    return re.compile(".*".join(re.escape(part) for part in text.split("...")))


def missing_lines(expected: Sequence[str], output: str) -> list[str]:
    """The expected lines (``...`` = anything) that appear in no line of ``output``."""
    lines = [" ".join(line.split()) for line in output.splitlines()]
    missing = []
    for line in expected:
        pattern = _line_pattern(line)
        if pattern is not None and not any(pattern.search(out) for out in lines):
            missing.append(line)
    return missing


def run_page(page: Page, base: Path, checks: Checks) -> PageReport:
    """Run or validate every block of ``page`` in a fresh directory under ``base``."""
    started = time.monotonic()
    report = PageReport(page.name)
    found: list[tuple[int, str]] = [(0, problem) for problem in page.problems]
    for block in page.blocks:
        if block.problems:
            found.append((block.line, f"{block.label}:\n" + "\n".join(f"  {p}" for p in block.problems)))
    busy = [port for port in ports_of(page) if port_in_use(port)]
    if busy:
        found.append(
            (
                0,
                f"{page.name}: port(s) {', '.join(map(str, busy))} already in use on this machine, but "
                "this page's examples start servers there (ports it names: "
                f"{', '.join(map(str, ports_of(page)))}). Stop what listens there (another `make run` or "
                "`secrets-agent emulator`?) and run again.",
            )
        )
        report.failures = [message for _, message in sorted(found, key=lambda item: item[0])]
        report.seconds = time.monotonic() - started
        return report
    session = _Session(page, base, checks)
    stopped_at: Block | None = None
    try:
        for block in page.blocks:
            if block.marker.skip is not None:
                report.skipped.append((block.where, block.marker.skip))
                continue
            if block.problems or block.marker.tested_by is not None:
                continue
            if block.lang in RUNNABLE and stopped_at is not None:
                continue
            failure = session.write_title(block)
            if failure is None and block.lang in LITERAL:
                continue
            if failure is None and block.lang in RUNNABLE:
                report.ran += 1
                failure = session.run(block)
                if failure is not None:
                    stopped_at = block
            elif failure is None:
                report.checked += 1
                where = _Where(session.cwd, session.env, session.harness)
                problems = validate_static(block, where, checks)
                if problems:
                    failure = f"{block.label}:\n" + "\n".join(f"  {p}" for p in problems)
            if failure is not None:
                found.append((block.line, failure))
        found += [(10**9, failure) for failure in session.finish_background()]
    finally:
        session.stop_all()
    if stopped_at is not None:
        later = [
            b
            for b in page.blocks
            if b.lang in RUNNABLE
            and b.line > stopped_at.line
            and not b.problems
            and b.marker.skip is None
            and b.marker.tested_by is None
        ]
        if later:
            found.append(
                (
                    stopped_at.line,
                    f"{page.name}: {len(later)} later run block(s) not run after the failure at line "
                    f"{stopped_at.line} (lines {', '.join(str(b.line) for b in later)})",
                )
            )
    report.failures = [message for _, message in sorted(found, key=lambda item: item[0])]
    report.seconds = time.monotonic() - started
    return report


def skip_share(all_pages: Sequence[Page]) -> tuple[int, int]:
    """(skipped blocks, all blocks) over ``all_pages``."""
    blocks = [b for page in all_pages for b in page.blocks]
    return sum(1 for b in blocks if b.marker.skip is not None), len(blocks)


def needs_of(path: Path) -> tuple[str, ...]:
    """The ``needs=`` page markers of ``path`` (pytest markers), without running anything."""
    return parse_page(path).needs
