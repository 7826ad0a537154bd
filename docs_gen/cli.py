"""reference/cli.md, from the real argparse parsers: the program's, and those of the commands that have
their own (``rotate``, ``rotation``, ``webhook``, ``emulator``)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Iterator

from agent import cli
from docs_gen.configuration import anchor as setting_anchor
from docs_gen.markdown import code, docstring, page, table

SOURCE = "the parsers of `agent/cli/`, `agent/rotation/cli.py`, `agent/webhook/cli.py` and the emulator"
WIDTH = 100
"""Usage lines are wrapped at this width whatever the terminal (the page must not depend on it)."""


def _emulator() -> argparse.ArgumentParser:
    # The emulator is its own distribution; the docs describe it as `secrets-agent emulator` runs it.
    from agent_emulator.cli import build_parser

    return build_parser("secrets-agent emulator")


DELEGATED: dict[str, Callable[[], argparse.ArgumentParser]] = {"emulator": _emulator}
"""The commands the program's complete parser (``build_parser(complete=True)``) still lists without their
options: their own parsers. Another such command fails the generation."""

EXIT_CODES = (
    (
        cli.EXIT_OK,
        "success (`init`: every required secret written; `check-config`: the configuration is valid)",
    ),
    (cli.EXIT_FAILURE, "runtime failure: a required secret could not be fetched, a rotation failed, ..."),
    (cli.EXIT_USAGE, "invalid configuration or usage: every problem is printed, each with its path"),
)

_CONFIG_KEY = re.compile(r"key ([a-z_.]+)\)$")


def _formatter(parser: argparse.ArgumentParser) -> argparse.HelpFormatter:
    """The parser's own formatter, at a fixed width."""
    cls = parser.formatter_class
    if isinstance(cls, type) and issubclass(cls, argparse.HelpFormatter):
        return cls(parser.prog, width=WIDTH)
    return argparse.HelpFormatter(parser.prog, width=WIDTH)


def command_anchor(prog: str) -> str:
    """``secrets-agent`` -> ``secrets-agent``; ``secrets-agent rotation status`` -> ``rotation-status``."""
    words = prog.split()
    return "-".join(words[1:]) if len(words) > 1 else words[0]


def _subcommands(
    parser: argparse.ArgumentParser,
) -> argparse._SubParsersAction[argparse.ArgumentParser] | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def parsers() -> Iterator[argparse.ArgumentParser]:
    """The program's parser, then every command's, depth first, in the order ``--help`` lists them."""
    yield from _walk(cli.build_parser(complete=True))


def _walk(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    sub = _subcommands(parser)
    if sub is None:
        return
    for name, child in sub.choices.items():
        if not child._actions:  # listed only: the command has a parser of its own
            if name not in DELEGATED:
                raise LookupError(f"docs_gen: no parser for the command {name!r}: add it to DELEGATED")
            child = DELEGATED[name]()
        yield from _walk(child)


def _codified(text: str) -> str:
    """Flag names, variables and setting paths as reST literals (``docstring`` makes them code)."""
    return re.sub(r"(?<![\w`])(--?[a-zA-Z][a-z-]*|SECRETS_AGENT_[A-Z_]+\*?|\$[A-Z_]+)", r"``\1``", text)


def text_block(text: str) -> str:
    """A description or an epilog: paragraphs as prose, indented lines (examples) as written, in a code
    block; a line such as ``examples:`` before them as a bold title."""
    parts: list[str] = []
    prose: list[str] = []
    example: list[str] = []

    def flush() -> None:
        if prose:
            line = " ".join(prose)
            if example or (line.endswith(":") and len(line) < 40):
                parts.append(f"**{docstring(line[0].upper() + line[1:].rstrip(':'))}**")
            else:
                parts.append(docstring(_codified(line)))
            prose.clear()

    for line in [*text.splitlines(), ""]:
        if line.startswith("  "):
            flush()
            example.append(line[2:])
            continue
        if example:
            parts.append("```text\n" + "\n".join(example) + "\n```")
            example.clear()
        if line.strip():
            prose.append(line.strip())
        else:
            flush()
    flush()
    return "\n\n".join(parts)


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    formatter = _formatter(parser)
    text = formatter._expand_help(action) if action.help else ""
    default = action.default
    if (
        default not in (None, False, [], argparse.SUPPRESS)
        and not isinstance(action, argparse._StoreTrueAction | argparse.BooleanOptionalAction)
        and "default" not in text
    ):
        text = f"{text} (default: {default})" if text else f"default: {default}"
    # Flag names and variables as code; the config flags link their setting's row.
    text = _codified(text)
    dest = action.dest
    if dest.startswith("config:"):
        text = _CONFIG_KEY.sub(lambda m: f"key ``{m.group(1)}``)", text)
        path = dest.removeprefix("config:")
        return docstring(text).replace(
            f"key {code(path)})", f"key [{code(path)}](configuration.md#{setting_anchor(path)}))"
        )
    return docstring(text)


def _value(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    if action.nargs == 0:
        return ""
    shown = _formatter(parser)._format_args(action, action.dest.upper())
    return code(shown)


_COMMON = frozenset({flag.dest for flag in cli.COMMON_FLAGS} | {"secrets"})
"""The configuration flags every command that loads a Config has: shown once, in their own section."""


def _option_rows(
    parser: argparse.ArgumentParser, group: argparse._ArgumentGroup, *, common: bool | None = None
) -> list[list[str]]:
    """The rows of the options of ``group``; ``common`` True: only the shared configuration flags, False:
    all but them, None: all."""
    rows: list[list[str]] = []
    for action in group._group_actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
            continue
        if common is not None and (action.dest in _COMMON) != common:
            continue
        if action.option_strings:
            names = ", ".join(code(option) for option in action.option_strings)
            rows.append([names, _value(parser, action), _help(parser, action)])
        else:
            rows.append([_value(parser, action), "", _help(parser, action)])
    return rows


def _usage(parser: argparse.ArgumentParser) -> str:
    """The usage line, the shared configuration flags folded into one ``[CONFIGURATION FLAGS]``."""
    shown = [action for action in parser._actions if action.dest not in _COMMON]
    formatter = _formatter(parser)
    formatter.add_usage(parser.usage, shown, parser._mutually_exclusive_groups, prefix="")
    usage = formatter.format_help().strip()
    if parser.usage is None and len(shown) < len(parser._actions):
        usage += " [CONFIGURATION FLAGS]"
    return usage


def section(parser: argparse.ArgumentParser) -> str:
    """One command: description, usage, its option groups and its commands."""
    heading = "#" * max(2, len(parser.prog.split()))
    parts = [f"{heading} {code(parser.prog)} {{#{command_anchor(parser.prog)}}}"]
    if parser.description:
        parts.append(text_block(parser.description))
    usage = _usage(parser)
    parts.append(f"```text\n{usage}\n```")
    for group in parser._action_groups:
        title = group.title or "options"
        shared = any(action.dest in _COMMON for action in group._group_actions)
        rows = _option_rows(parser, group, common=False if shared else None)
        if shared:
            more = ", and:" if rows else "."
            parts.append(f"**Configuration**: the [configuration flags](#configuration-flags){more}")
        elif rows:
            parts.append(f"**{docstring(title[0].upper() + title[1:])}**")
        if rows:
            parts.append(table(["Option", "Value", "Description"], rows))
    sub = _subcommands(parser)
    if sub is not None:
        rows = [
            [
                f"[{code(choice.dest)}](#{command_anchor(parser.prog + ' ' + choice.dest)})",
                docstring(_codified(choice.help or "")),
            ]
            for choice in sub._choices_actions
        ]
        parts.append("**Commands**")
        parts.append(table(["Command", "Description"], rows))
    if parser.epilog:
        parts.append(text_block(parser.epilog))
    return "\n\n".join(parts)


_INTRO = """\
Every command of `secrets-agent`, generated from its argument parser (`secrets-agent COMMAND --help` prints
the same). The commands that load the agent's configuration (`init`, `run`, `dev`, `exec`,
`check-config`) take the configuration flags: each sets one setting of the
[configuration](configuration.md), above its `SECRETS_AGENT_*` variable and the file."""


def configuration_flags() -> str:
    """The flags shared by every command that loads a Config, once."""
    init = next(p for p in parsers() if p.prog == "secrets-agent init")
    rows: list[list[str]] = []
    for group in init._action_groups:
        rows += _option_rows(init, group, common=True)
    return "\n\n".join(
        [
            "## Configuration flags {#configuration-flags}",
            "Taken by `init`, `run`, `dev`, `exec` and `check-config`. Each sets one setting of the "
            "[configuration](configuration.md), above its variable and the file; a switch `--x` sets it to "
            "true and `--no-x` to false.",
            table(["Option", "Value", "Description"], rows),
        ]
    )


def render() -> str:
    """The whole page."""
    codes = table(["Code", "Meaning"], [[code(number), docstring(meaning)] for number, meaning in EXIT_CODES])
    sections = [
        _INTRO,
        *(section(parser) for parser in parsers()),
        configuration_flags(),
        "## Exit codes {#exit-codes}",
        codes,
    ]
    return page("Command-line reference", SOURCE, *sections)


def commands() -> list[str]:
    """Every command's ``prog`` (for the tests)."""
    return [parser.prog for parser in parsers()]
