"""What a command line asks for (``parse``: an ``Invocation``), and the one runner of each command, which
imports the command's modules only when it runs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from agent.cli.commands import AGENT_COMMANDS, DELEGATED_HELP, PROG, build_parser, delegated_args
from agent.cli.flags import ALL_FLAGS, config_source, load_config_with_flags
from agent.cli.parser import Parser, closest, shown
from agent.core.words import plural
from agent.errors import ConfigError, Problem

if TYPE_CHECKING:
    from agent.config import Config

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


@dataclass(frozen=True)
class Invocation:
    """What the command line asked for, before anything runs: ``main()`` runs it, tests inspect it."""

    command: str
    """The subcommand: init, run, dev, exec, check-config, completion, emulator, rotate, rotation or
    webhook."""
    config: Config | None
    """The validated configuration (None for completion, emulator, rotate, rotation and webhook: they have
    their own options)."""
    argv: tuple[str, ...] = ()
    """``exec``: the command line of the program to run."""
    args: argparse.Namespace = field(default_factory=argparse.Namespace, repr=False, compare=False)
    """The raw parse, for commands that are not configured by a Config."""

    def run(self) -> int:
        """Call the command's one entry point; returns the exit code."""
        return _HANDLERS[self.command](self)


def _needs_config(invocation: Invocation) -> Config:
    assert invocation.config is not None  # the Config commands always load one
    return invocation.config


def _run_init(invocation: Invocation) -> int:
    from agent.app import run_init

    return run_init(_needs_config(invocation))


def _run_agent(invocation: Invocation) -> int:
    from agent.app import run_agent

    return run_agent(_needs_config(invocation))


def _run_dev(invocation: Invocation) -> int:
    from agent.app import run_dev

    return run_dev(_needs_config(invocation))


def _run_exec(invocation: Invocation) -> int:
    from agent.app import run_exec

    return run_exec(_needs_config(invocation), list(invocation.argv))


def _run_check_config(invocation: Invocation) -> int:
    from agent.app import check_config
    from agent.observe.logs import is_terminal

    config = _needs_config(invocation)
    output = invocation.args.output or ("text" if is_terminal(sys.stdout) else "yaml")
    if output == "json":
        import json

        sys.stdout.write(json.dumps(config.to_dict(), indent=2, ensure_ascii=False) + "\n")
        return EXIT_OK
    code = check_config(config, sys.stdout)
    if output == "text":
        source = invocation.args.config_source or "flags and environment only"
        # A YAML comment: the text stays a valid configuration file when copied whole.
        sys.stdout.write(
            f"# OK: a valid configuration ({source}): {plural(len(config.secrets), 'secret')}, "
            f"{plural(len(config.templates), 'template')}\n"
        )
    return code


def _run_completion(invocation: Invocation) -> int:
    import shtab  # only this command loads it

    parser = build_parser(complete=True)
    _complete_paths(parser, {"FILE": shtab.FILE, "DIR": shtab.DIRECTORY})
    sys.stdout.write(shtab.complete(parser, shell=invocation.args.shell))
    return EXIT_OK


def _complete_paths(parser: argparse.ArgumentParser, kinds: Mapping[str, object]) -> None:
    """Mark the options whose value is a file or a directory, for shtab (its ``complete`` attribute)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in {id(p): p for p in action.choices.values()}.values():
                _complete_paths(child, kinds)
        elif isinstance(action.metavar, str) and action.metavar in kinds:
            action.complete = kinds[action.metavar]  # type: ignore[attr-defined]


_HANDLERS: dict[str, Callable[[Invocation], int]] = {
    "init": _run_init,
    "run": _run_agent,
    "dev": _run_dev,
    "exec": _run_exec,
    "check-config": _run_check_config,
    "completion": _run_completion,
    # Commands with their own parsers and options (not a Config): the parser stores its entry point.
    **{command: lambda invocation: int(invocation.args.run(invocation.args)) for command in DELEGATED_HELP},
}


def parse(argv: Sequence[str] | None, env: Mapping[str, str]) -> Invocation:
    """Parse a command line into an Invocation. Usage errors exit 2 (argparse); an invalid configuration
    raises ConfigError with every problem."""
    words = list(sys.argv[1:] if argv is None else argv)
    if words and words[0] in DELEGATED_HELP:
        return Invocation(words[0], None, args=delegated_args(words[0], words[1:]))
    parser = build_parser(words[0] if words and words[0] in AGENT_COMMANDS else None)
    if words and words[0].startswith("-"):
        _check_option_before_command(parser, words[0])
    args = parser.parse_args(words)
    command: str = args.command
    if command == "completion":
        return Invocation(command, None, args=args)
    program: tuple[str, ...] = ()
    if command == "exec":
        program = tuple(args.argv[1:] if args.argv[:1] == ["--"] else args.argv)
        if not program:
            _subparser(parser, "exec").error("a command to run is required: exec [OPTIONS] -- CMD [ARGS...]")
    file: Path | None = args.file
    if command == "check-config":
        if file is not None and args.config_file is not None:
            _subparser(parser, command).error("the configuration file is given twice: as FILE and as -c FILE")
        file = file or args.config_file
        args.config_source = config_source(file, env)
    config = load_config_with_flags(file, args, env)
    something = config.secrets or config.templates or config.select
    if command == "init" and not args.allow_empty and not something:
        raise ConfigError(_nothing_to_fetch(config_source(file, env)))
    return Invocation(command, config, program, args)


def _check_option_before_command(parser: Parser, word: str) -> None:
    """The first word is an option: the program's own (``--help``, ``--version``, or a prefix of one),
    or a usage error that says where a command's option goes."""
    name = word.partition("=")[0]
    if name in ("-", "--") or any(option.startswith(name) for option in parser._option_string_actions):
        return  # argparse's to handle
    if (close := closest(name, parser._option_string_actions)) is not None:
        parser.error(f"unknown option {shown(name)}; did you mean {close}?")
    command_options = {"-c", "--config", "--secret", *(f.flag for f in ALL_FLAGS)}
    for spec in AGENT_COMMANDS.values():
        command_options.update(spec.own_options())
    if name in command_options:
        parser.error(f"{name} is an option of the commands: it goes after one, as in: {PROG} init {name} ...")
    if (close := closest(name, command_options)) is not None:
        parser.error(
            f"unknown option {shown(name)}; did you mean {close}? (after the command, as in: "
            f"{PROG} init {close} ...)"
        )
    parser.error(f"unknown option {shown(name)} (see {PROG} --help)")


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser = action.choices[name]
            return found
    raise LookupError(name)


def _nothing_to_fetch(source: str) -> Problem:
    where = f"{source} lists no secrets and no --secret is given" if source else "no secrets are configured"
    return Problem(
        "init",
        f"nothing to fetch: {where}; list them under `secrets:` in a config file (-c FILE) or pass "
        "--secret NAME=REF (or --allow-empty: succeed with nothing to write)",
    )
