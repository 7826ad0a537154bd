"""reference/configuration.md, from the Config schema (``agent.config.schema``) and the CLI's flag table.

Each dataclass of the schema is one block (a section of the YAML file, or one item of a list); each field
is one row: its key path, type (from its parser, else its annotation), default (as ``check-config`` prints
it), its ``SECRETS_AGENT_*`` variable (the loader's rule: the path upper-cased, dots as underscores), its
flag (``agent.cli.ALL_FLAGS``) and its docstring.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import textwrap
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from agent import cli
from agent.config import SECRET_FLAG, schema
from agent.config.schema import ENV_PREFIX, Config, Items, Section, Setting
from docs_gen.markdown import code, docstring, page, table

SOURCE = "`agent/config/schema.py` and the flag table of `agent/cli/flags.py`"

# A field's type as a user writes it, by the function that parses it (its name, or the name of the factory
# that made it: ``_at_least(1)`` is ``_at_least.<locals>.parse``). Choices (Literal annotations) and
# booleans need no entry. A parser missing here fails the generation: say what the new setting takes.
PARSER_TYPES: dict[str, str] = {
    "_optional_service_account": "service account email",
    "_service_account_list": "list of service account emails",
    "_optional_iam_endpoint": "URL",
    "parse_duration": "duration",
    "parse_delay": "duration (0 allowed)",
    "_subscription_ttl": "duration (at least 1 day)",
    "_fraction": "number from 0 to 1",
    "parse_mode": "file mode (octal)",
    "_optional_mode": "file mode (octal)",
    "parse_signal": "signal name",
    "_optional_signal": "signal name",
    "_optional_regex": "regular expression",
    "_optional_url": "URL",
    "_listen_address": "HOST:PORT",
    "_optional_endpoint": "HOST:PORT",
    "_command_line": "command (list, or one string)",
    "_host_list": "list of host names",
    "_name_list": "list of secret names",
    "pubsub_name": "Pub/Sub resource name",
    "optional_project": "project id",
    "_local_name": "name",
    "_env_var_name": "variable name",
    "_optional_env_var_name": "variable name",
    "_reference_text": "secret reference",
    "_key_path": "key path",
    "_optional_key_path": "key path",
    "_relative_file": "path relative to ``output_dir``",
    "_optional_relative_file": "path relative to ``output_dir``",
    "_optional_template_text": "template text",
    "_optional_id_number": "user or group id",
    "_optional_token": "token (16+ characters)",
    "_at_least": "integer, at least {minimum}",
    "_path": "path",
    "_optional_path": "path",
    "_auto_duration": "duration, or ``auto``",
    "_auto_delay": "duration (0 allowed), or ``auto``",
    "_labels": "labels (mapping, or ``KEY=VALUE,KEY=*`` text)",
    "_id_prefix": "secret id prefix",
    "_id_regex": "regular expression (bounded)",
    "_optional_id_regex": "regular expression (bounded)",
    "_optional_location": "location id",
    "_version": "version (``latest``, number or alias)",
    "_replacement": "replacement text (``re.sub``)",
    "_env_prefix": "variable name prefix",
    "_file_prefix": "path prefix relative to ``output_dir``",
    "_optional_key_file_pattern": "path relative to ``output_dir``, with ``{{name}}`` / ``{{env}}``",
    "_optional_key_env_pattern": "variable name, with ``{{name}}`` / ``{{env}}``",
    "_secret_ids": "list of secret ids",
    "_optional_timestamp": "seconds since the epoch",
    "_selection_list": "list of selection names",
}

# What one item of a list is called in the list's row ("list of secrets"); otherwise the item's class name
# without ``Spec``, lower case.
_ITEM_NOUNS: dict[str, str] = {
    "SecretSpec": "secret",
    "SelectSpec": "selection",
    "SelectKeySpec": "key",
    "RewriteRule": "rewrite rule",
}

# What each command-line flag set belongs to (the others are on every command that loads a Config).
_FLAG_COMMANDS = {id(cli.DEV_FLAGS): "dev", id(cli.EXEC_FLAGS): "exec"}

_TOP_LEVEL = "top-level"


@dataclass(frozen=True)
class Row:
    """One setting as the reference shows it."""

    path: str
    """The key path: ``gcp.endpoint``, ``secrets[].keys[].file``."""
    type: str
    default: str
    env: str
    flag: str
    description: str
    credential: bool = False
    listed: bool = False
    """A list of items (``secrets``): its block below carries the anchor."""


@dataclass(frozen=True)
class Block:
    """One dataclass of the schema: a YAML section, the top level, or one item of a list."""

    path: str
    """``""`` for the top level, ``gcp``, ``secrets[]``, ``secrets[].keys[]``."""
    cls: type[Any]
    rows: tuple[Row, ...]


def anchor(path: str) -> str:
    """The id of a setting's row (or of a block): ``gcp.endpoint`` -> ``gcp-endpoint``,
    ``secrets[].keys[].file`` -> ``secrets-keys-file``, the top level -> ``top-level``."""
    return path.replace("[]", "").replace(".", "-") or _TOP_LEVEL


def env_name(path: str) -> str:
    """The variable that sets the setting at ``path`` (``agent.config.loader``'s rule)."""
    return ENV_PREFIX + path.upper().replace(".", "_")


def field_docs(cls: type[Any]) -> dict[str, str]:
    """The docstring written under each field of ``cls`` (attribute docstrings: the source is the only
    place they live)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = next(node for node in tree.body if isinstance(node, ast.ClassDef)).body
    docs: dict[str, str] = {}
    for statement, following in itertools.pairwise(body):
        if (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[statement.target.id] = inspect.cleandoc(following.value.value)
    return docs


def module_docs(module: types.ModuleType) -> dict[str, str]:
    """The docstrings written under the module-level names of ``module``."""
    tree = ast.parse(inspect.getsource(module))
    docs: dict[str, str] = {}
    for statement, following in itertools.pairwise(tree.body):
        target = None
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
            target = statement.targets[0]
        elif isinstance(statement, ast.AnnAssign):
            target = statement.target
        if (
            isinstance(target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[target.id] = inspect.cleandoc(following.value.value)
    return docs


def _parser_name(parse: Callable[[object], object]) -> str:
    return parse.__qualname__.split(".")[0]


def _closure(parse: Callable[[object], object]) -> dict[str, object]:
    cells = getattr(parse, "__closure__", None) or ()
    return dict(zip(parse.__code__.co_freevars, (c.cell_contents for c in cells), strict=True))


def _without_none(annotation: object) -> object:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return annotation


def type_label(cls: type[Any], f: dataclasses.Field[Any], meta: Setting) -> str:
    """What a setting takes, in the words of a configuration file's writer."""
    annotation = _without_none(typing.get_type_hints(cls)[f.name])
    if typing.get_origin(annotation) is Literal:
        return " \\| ".join(code(choice) for choice in typing.get_args(annotation))
    if annotation is bool:
        return "boolean"
    name = _parser_name(meta.parse)
    if name not in PARSER_TYPES:
        raise LookupError(
            f"docs_gen: no type label for the parser {name!r} of {cls.__name__}.{f.name}: "
            "add it to docs_gen.configuration.PARSER_TYPES"
        )
    return docstring(PARSER_TYPES[name].format(**_closure(meta.parse)))


def _shown(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return code("true" if value else "false")
    if isinstance(value, list | tuple):
        return code("[" + ", ".join(str(item) for item in value) + "]")
    if value == "":
        return "see description"
    return code(value)


def default_label(f: dataclasses.Field[Any], meta: Setting | Items) -> str:
    """The default as ``check-config`` prints it (durations in seconds, modes in octal), or ``required``."""
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
        return "required"
    if isinstance(meta, Items):
        return "none"
    if f.default is not dataclasses.MISSING:
        return _shown(meta.dump(f.default))
    assert f.default_factory is not dataclasses.MISSING
    return _shown(meta.dump(f.default_factory()))


def flags_by_path() -> dict[str, str]:
    """Setting path -> how the command line sets it (``--endpoint``, ``--watch / --no-watch`` (exec))."""
    found: dict[str, str] = {}
    for group in (cli.COMMON_FLAGS, cli.DEV_FLAGS, cli.EXEC_FLAGS):
        only = _FLAG_COMMANDS.get(id(group))
        for flag in group:
            if flag.switch:
                shown = f"{code(flag.flag)} / {code('--no-' + flag.flag.removeprefix('--'))}"
            else:
                shown = code(f"{flag.flag} {flag.metavar}")
            found[flag.path] = shown + (f" ({only})" if only else "")
    found["secrets"] = code(f"{SECRET_FLAG} NAME=REF") + " (repeatable)"
    return found


def blocks() -> list[Block]:
    """Every block of the schema, the top level first, then its sections and lists in field order."""
    return list(_blocks(Config, "", layered=True))


def _blocks(cls: type[Any], path: str, *, layered: bool) -> Iterator[Block]:
    docs, flags = field_docs(cls), flags_by_path()
    rows: list[Row] = []
    nested: list[tuple[type[Any], str, bool]] = []
    for f in dataclasses.fields(cls):
        meta = schema._meta(f)
        key_path = f"{path}.{f.name}" if path else f.name
        description = docstring(docs.get(f.name, ""))
        if isinstance(meta, Section):
            assert isinstance(f.default_factory, type)
            nested.append((f.default_factory, key_path, layered))
            continue
        if isinstance(meta, Items):
            item_path = key_path + "[]"
            nested.append((meta.item, item_path, False))
            noun = _ITEM_NOUNS.get(meta.item.__name__, meta.item.__name__.removesuffix("Spec").lower())
            kind = f"list of {noun}s ([below](#{anchor(item_path)}))"
            rows.append(
                Row(
                    key_path,
                    kind,
                    default_label(f, meta),
                    "—",
                    flags.get(key_path, "—"),
                    description,
                    listed=True,
                )
            )
            continue
        env = "—"
        if layered and meta.from_env:
            env = code(env_name(key_path))
            if meta.fallback_env:
                env += f", then {code(meta.fallback_env)}"
        rows.append(
            Row(
                key_path,
                type_label(cls, f, meta),
                default_label(f, meta),
                env,
                flags.get(key_path, "—") if layered else "—",
                description,
                meta.credential,
            )
        )
    yield Block(path, cls, tuple(rows))
    for nested_cls, nested_path, nested_layered in nested:
        yield from _blocks(nested_cls, nested_path, layered=nested_layered)


def _block_title(block: Block) -> str:
    if not block.path:
        return "Top level"
    return code(block.path)


_INTRO = f"""\
Every setting of the agent, generated from the configuration schema. A setting is read, highest first,
from its **flag**, its **environment variable**, the **configuration file**, else its **default**. In the
file, a setting at path `a.b` is the key `b` of the mapping `a`:

```yaml
poll_interval: 5m        # top level
gcp:
  endpoint: 127.0.0.1:8780   # gcp.endpoint
```

Unknown keys and unknown `{ENV_PREFIX}*` variables are errors, with the closest setting as a hint; every
problem is reported at once, each with its path, and the exit code is 2. `secrets-agent check-config FILE`
validates a file and prints it normalised.

Durations are written `30s`, `5m`, `1h30m`, `1500ms` or a number of seconds; defaults are shown as
`check-config` prints them: durations in seconds, file modes in octal. Settings marked **credential**
are printed as `<redacted>` or `<set>` by `check-config`, never quoted in errors, and their variables are
withheld from the commands the agent runs. Items of a list (`secrets[]`, `select[]`, `templates[]`) are
set in the file only (`--secret NAME=REF` adds a secret with its defaults)."""


def _sources() -> str:
    notes = module_docs(schema)
    rows = [
        [code(schema.CONFIG_FILE_ENV), docstring(notes["CONFIG_FILE_ENV"])],
        [code(schema.CONFIG_YAML_ENV), docstring(notes["CONFIG_YAML_ENV"])],
    ]
    return "## Where the file comes from {#file}\n\n" + (
        "The file is the one given with `-c/--config FILE` (`check-config FILE`), else:\n\n"
        + table(["Variable", "Meaning"], rows)
    )


def render() -> str:
    """The whole page."""
    sections = [_INTRO, _sources()]
    for block in blocks():
        header = f"## {_block_title(block)} {{#{anchor(block.path)}}}"
        intro = docstring(inspect.cleandoc(block.cls.__doc__ or ""))
        rows = [
            [
                code(row.path) if row.listed else f'<a id="{anchor(row.path)}"></a>{code(row.path)}',
                row.type,
                row.default,
                row.env,
                row.flag,
                ("**Credential.** " if row.credential else "") + row.description,
            ]
            for row in block.rows
        ]
        sections.append(
            "\n\n".join(
                [header, intro, table(["Key", "Type", "Default", "Environment", "Flag", "Description"], rows)]
            )
        )
    return page("Configuration reference", SOURCE, *sections)


def settings() -> list[str]:
    """Every key path the schema has (for the tests)."""
    return [row.path for block in blocks() for row in block.rows]


__all__ = ["PARSER_TYPES", "Block", "Row", "anchor", "blocks", "env_name", "field_docs", "render", "settings"]
