"""Command line: parses arguments into a configuration object and calls one entry point. Nothing else.

Exit codes: 0 success, 1 runtime failure, 2 invalid configuration or usage.

The parsers of every command (the delegated ones too) are ``Parser``: argparse with the program's habits.
A mistyped option or command gets the closest real one as a "did you mean" (looked up among the parser's
own few dozen names, never anything the user typed beyond a bounded prefix); an option of another command
says which; and whatever a message quotes of the command line is cut short and has its control characters
escaped.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from gettext import gettext
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from agent.core.words import plural
from agent.errors import AgentError, ConfigError, Problem

if TYPE_CHECKING:
    from agent.config import Config

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

PROG = "secrets-agent"

# --------------------------------------------------------------------------------------------------
# The parser's habits: "did you mean", bounded messages, help with examples
# --------------------------------------------------------------------------------------------------

SHOWN_CHARS = 60
"""At most this much of one word of the command line is quoted in a message (and compared, for a hint)."""
MAX_MESSAGE_CHARS = 500
"""A usage message is cut at this length (argparse quotes values: a value may be huge)."""
_NUMBER = re.compile(r"-\.?[0-9][0-9.eE+-]*")
# argparse reports missing required arguments with this (translated) message; a parser that sees it first
# looks for an unknown option, the likelier mistake ("--tls-cert" for "--tls-cert-file").
_REQUIRED = gettext("the following arguments are required: %s").partition("%s")[0]


def shown(text: str, limit: int = SHOWN_CHARS) -> str:
    """``text`` as a message may quote it: control characters escaped, at most ``limit`` characters."""
    head = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    return head + "..." if len(text) > limit else head


def closest(word: str, known: Iterable[str]) -> str | None:
    """The one of ``known`` (options, commands, choices) closest to ``word``, if any is close enough.

    Leading dashes are left out of the comparison (every long option shares them), and only the first
    ``SHOWN_CHARS`` characters of ``word`` are compared: the cost is bounded by the parser's own names."""
    import difflib  # only a mistyped command line needs it

    cores: dict[str, str] = {}
    for name in sorted(known):
        cores.setdefault(name.lstrip("-"), name)
    found = difflib.get_close_matches(word[:SHOWN_CHARS].lstrip("-"), list(cores), n=1, cutoff=0.6)
    return cores[found[0]] if found else None


class _RequiredMissing(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, except that indented lines of a description or an epilog (the examples) are
    printed as written; the other lines are wrapped into paragraphs as usual."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        lines: list[str] = []
        paragraph: list[str] = []

        def flush() -> None:
            if paragraph:
                lines.append(super(HelpFormatter, self)._fill_text(" ".join(paragraph), width, indent))
                paragraph.clear()

        for line in text.splitlines():
            if line.startswith("  "):
                flush()
                lines.append(indent + line)
            elif not line.strip():
                flush()
                lines.append("")
            else:
                paragraph.append(line)
        flush()
        return "\n".join(lines)


class Parser(argparse.ArgumentParser):
    """The parser of every ``secrets-agent`` command (rotate's, rotation's and the webhook's get it as their
    ``parser_class``): exit 2 with one clear line for a mistyped command line.

    * ``unknown option --ouput-dir; did you mean --output-dir?`` (or the command that has it, from
      ``owners``), reported even when a required option is missing too;
    * ``unknown command 'initt'; did you mean init?``, and ``did you mean`` for any other choice;
    * an unexpected word is quoted cut short, an unknown ``--option=value`` without its value."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self.owners: Mapping[str, str] = {}
        """Options of other commands (``--dotenv`` -> ``dev``), to say whose option a stray one is."""
        self._deferring_required = False

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        words = list(sys.argv[1:] if args is None else args)
        self._deferring_required = True
        try:
            parsed, extras = super().parse_known_args(words, namespace)
        except _RequiredMissing as missing:
            self._deferring_required = False
            self._reject_unknown(self._extras_ignoring_required(words))
            self.error(missing.message)
        finally:
            self._deferring_required = False
        self._reject_unknown(extras)
        return parsed, extras

    def error(self, message: str) -> NoReturn:
        if self._deferring_required and message.startswith(_REQUIRED):
            raise _RequiredMissing(message)
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[:MAX_MESSAGE_CHARS] + "..."
        super().error("".join(c if c.isprintable() else repr(c)[1:-1] for c in message))

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        choices = action.choices
        if choices is None or value in choices:
            return
        names = [str(choice) for choice in choices]
        close = closest(str(value), names) if isinstance(value, str) else None
        hint = f"; did you mean {close}?" if close else f" (choose from {', '.join(names)})"
        if isinstance(action, argparse._SubParsersAction):
            raise argparse.ArgumentError(None, f"unknown command '{shown(str(value))}'{hint}")
        raise argparse.ArgumentError(action, f"invalid choice '{shown(str(value))}'{hint}")

    def unknown_option(self, name: str) -> str:
        """The message for an option this parser does not have."""
        if name in self.owners:
            command = self.prog.rsplit(" ", 1)[-1]
            return f"unknown option {name}: it is an option of {self.owners[name]}, not of {command}"
        if close := closest(name, self._option_string_actions):
            return f"unknown option {shown(name)}; did you mean {close}?"
        return f"unknown option {shown(name)} (see {self.prog} --help)"

    def _reject_unknown(self, extras: Sequence[str]) -> None:
        if not extras:
            return
        for word in extras:
            if word.startswith("-") and word not in ("-", "--") and not _NUMBER.fullmatch(word):
                self.error(self.unknown_option(word.partition("=")[0]))  # never the value after "="
        words = [word for word in extras if word != "--"] or list(extras)
        more = f" (and {plural(len(words) - 1, 'more argument')})" if len(words) > 1 else ""
        self.error(f"unexpected argument '{shown(words[0])}'{more}")

    def _extras_ignoring_required(self, words: Sequence[str]) -> list[str]:
        required = [action for action in self._actions if action.required]
        for action in required:
            action.required = False
        try:
            return super().parse_known_args(list(words), None)[1]
        finally:
            for action in required:
                action.required = True


# Commands with parsers of their own: the top-level parser only lists them, and their modules are imported
# when one of them runs (``--help`` of the program loads neither the rotation machinery nor the webhook).
# The emulator is another distribution, found through its entry point: the agent never imports it.
_DELEGATED_HELP = {
    "rotate": "rotate secrets by type or name (or --listen for SECRET_ROTATE events)",
    "rotation": "rotation status of every secret",
    "webhook": "serve the mutating admission webhook that injects the agent",
    "emulator": "run a wire-compatible Secret Manager emulator (gRPC + REST), if installed",
}
EMULATOR_ENTRY_POINTS = "secrets_agent.commands"
"""The entry-point group the emulator's distribution (``emulator/``) registers its ``emulator`` command in."""

COMPLETION_SHELLS = ("bash", "zsh", "tcsh")
"""The shells ``secrets-agent completion`` writes a script for (generated by shtab from the parser)."""


def _delegated_parser(command: str) -> argparse.ArgumentParser:
    """The parser of ``rotate``, ``rotation`` or ``webhook`` (a namespace's ``run`` is its entry point)."""
    if command in ("rotate", "rotation"):
        from agent.rotation.cli import build_parser as rotation_parser

        return rotation_parser(command, parser_class=Parser)
    from agent.webhook.cli import build_parser as webhook_parser

    return webhook_parser(parser_class=Parser)


def _delegated_args(command: str, argv: Sequence[str]) -> argparse.Namespace:
    """Parse a delegated command's own arguments; the namespace's ``run`` is its entry point."""
    if command == "emulator":
        return argparse.Namespace(run=_emulator_entry_point(), argv=list(argv))
    return _delegated_parser(command).parse_args(list(argv))


def _emulator_entry_point() -> Callable[[argparse.Namespace], int]:
    from importlib.metadata import entry_points

    found = entry_points(group=EMULATOR_ENTRY_POINTS, name="emulator")
    if not found:
        raise AgentError(
            "the Secret Manager emulator is not installed here (the production image leaves it out); "
            "install it with: pip install ./emulator (from a checkout of secrets-agent)"
        )
    main: Callable[..., int] = next(iter(found)).load()
    return lambda args: main(args.argv, prog="secrets-agent emulator")


# --------------------------------------------------------------------------------------------------
# Configuration flags: one table, shared by every command that builds a Config
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigFlag:
    """A command-line flag that sets one config setting (its value is parsed by ``load_config``)."""

    flag: str
    path: str
    help: str
    switch: bool = False
    """A flag without a value: ``--x`` sets the setting to true, ``--no-x`` to false."""
    metavar: str = "VALUE"

    @property
    def dest(self) -> str:
        return "config:" + self.path


# Help texts name the environment variable; the YAML key is the setting path.
COMMON_FLAGS: tuple[ConfigFlag, ...] = (
    ConfigFlag("--project", "project", "default project for short secret references"),
    ConfigFlag("--output-dir", "output_dir", "directory the secret files are written to", metavar="DIR"),
    ConfigFlag("--env-file", "env_file", "also write all secrets to this KEY=value file", metavar="FILE"),
    ConfigFlag("--poll-interval", "poll_interval", "time between polls, e.g. 30s, 5m", metavar="DURATION"),
    ConfigFlag(
        "--poll-jitter", "poll_jitter", "random spread of the poll interval, 0..1", metavar="FRACTION"
    ),
    ConfigFlag(
        "--max-staleness",
        "max_staleness",
        "not ready after this long without a refresh, e.g. 1h",
        metavar="DURATION",
    ),
    ConfigFlag("--log-level", "log_level", "debug, info, warning or error", metavar="LEVEL"),
    ConfigFlag(
        "--log-format",
        "log_format",
        "auto (default: text on a terminal, json otherwise), json (Cloud Logging) or text",
        metavar="FORMAT",
    ),
    ConfigFlag("--source", "source", "auto, gcp or dotenv", metavar="SOURCE"),
    ConfigFlag(
        "--timeout", "timeout", "deadline of the initial fetch of all secrets, e.g. 60s", metavar="DURATION"
    ),
    ConfigFlag("--concurrency", "concurrency", "most fetches in flight at once", metavar="N"),
    ConfigFlag("--require-tmpfs", "require_tmpfs", "refuse to write unless output_dir is tmpfs", switch=True),
    ConfigFlag(
        "--fallback-dotenv",
        "fallback_dotenv",
        "use this .env file, loudly, when no Google credentials exist",
        metavar="FILE",
    ),
    ConfigFlag(
        "--endpoint",
        "gcp.endpoint",
        "HOST:PORT of a Secret Manager emulator (plaintext gRPC)",
        metavar="HOST:PORT",
    ),
    ConfigFlag("--strategy", "gcp.strategy", "change detection: access or metadata", metavar="STRATEGY"),
    ConfigFlag(
        "--signal", "notify.signal", "signal sent to the app on change (default SIGHUP)", metavar="SIGNAL"
    ),
    ConfigFlag("--pid-file", "notify.pid_file", "signal the process whose pid is in FILE", metavar="FILE"),
    ConfigFlag(
        "--process", "notify.process", "signal processes whose command line matches REGEX", metavar="REGEX"
    ),
    ConfigFlag("--notify-url", "notify.url", "POST to this URL on change", metavar="URL"),
    ConfigFlag(
        "--listen", "server.listen", "local endpoint address (default 127.0.0.1:8730)", metavar="HOST:PORT"
    ),
    ConfigFlag(
        "--allow-remote", "server.allow_remote", "allow --listen on a non-loopback address", switch=True
    ),
    ConfigFlag("--token-file", "server.token_file", "read the endpoint token from FILE", metavar="FILE"),
    ConfigFlag("--audit", "server.audit", "log every secret read by the endpoint (default on)", switch=True),
    ConfigFlag(
        "--probes-listen",
        "probes.listen",
        "address of /healthz, /readyz, /metrics (default 0.0.0.0:8731)",
        metavar="HOST:PORT",
    ),
    ConfigFlag(
        "--notify-command", "notify.command", "run this command on change (split like a shell)", metavar="CMD"
    ),
    ConfigFlag(
        "--events-topic",
        "events.topic",
        "follow Secret Manager's Pub/Sub events: subscribe (own subscription) to this topic",
        metavar="projects/P/topics/T",
    ),
    ConfigFlag(
        "--events-subscription",
        "events.subscription",
        "follow Secret Manager's Pub/Sub events from this existing subscription",
        metavar="projects/P/subscriptions/S",
    ),
)
DEV_FLAGS = (ConfigFlag("--dotenv", "dotenv.file", "the .env file to serve (default .env)", metavar="FILE"),)
EXEC_FLAGS = (
    ConfigFlag(
        "--watch",
        "exec.watch",
        "stay as a supervisor: restart (or signal) the child on rotation",
        switch=True,
    ),
    ConfigFlag(
        "--reload-signal",
        "exec.reload_signal",
        "with --watch: send this signal instead of restarting",
        metavar="SIGNAL",
    ),
)
ALL_FLAGS = COMMON_FLAGS + DEV_FLAGS + EXEC_FLAGS


def _env_name(path: str) -> str:
    return "SECRETS_AGENT_" + path.upper().replace(".", "_")


def _add_config_flags(parser: argparse.ArgumentParser, flags: Sequence[ConfigFlag]) -> None:
    group = parser.add_argument_group("configuration (overrides SECRETS_AGENT_* variables and the file)")
    for flag in flags:
        help_text = f"{flag.help} (env {_env_name(flag.path)}, key {flag.path})"
        if flag.switch:
            group.add_argument(
                flag.flag, dest=flag.dest, action=argparse.BooleanOptionalAction, help=help_text
            )
        else:
            # Values stay strings: load_config parses them, so a bad flag is reported like a bad file value.
            group.add_argument(flag.flag, dest=flag.dest, metavar=flag.metavar, help=help_text)
    group.add_argument(
        "--secret",
        dest="secrets",
        action="append",
        metavar="NAME=REF",
        help="serve the secret REF as NAME, in addition to the file's secrets (repeatable)",
    )


def _config_flags_parser(extra: Sequence[ConfigFlag] = ()) -> Parser:
    """The flags that override configuration settings; shared by every command that loads a Config."""
    parent = Parser(add_help=False)
    _add_config_flags(parent, (*COMMON_FLAGS, *extra))
    return parent


def _flag_values(args: argparse.Namespace) -> dict[str, object]:
    """Setting path -> raw value (None: not given), as load_config takes them."""
    values: dict[str, object] = {}
    for flag in ALL_FLAGS:
        if hasattr(args, flag.dest):  # the command has this flag
            value = getattr(args, flag.dest)
            values[flag.path] = ("true" if value else "false") if isinstance(value, bool) else value
    values["secrets"] = args.secrets
    return values


CONFIG_FILE_ENV = "SECRETS_AGENT_CONFIG"
CONFIG_YAML_ENV = "SECRETS_AGENT_CONFIG_YAML"
ROTATION_CONFIG_KEYS = ("project", "topics", "subscription", "secrets", "gcp")
"""The top-level keys of a rotation config (``agent.rotation.config.TOP_LEVEL_KEYS``, which the agent does
not import): a file with only these, shaped the rotation way, was meant for ``rotate``."""


def _load_config(file: Path | None, args: argparse.Namespace, env: Mapping[str, str]) -> Config:
    from agent.config import load_config

    try:
        config = load_config(file, env, _flag_values(args), flag_names={f.path: f.flag for f in ALL_FLAGS})
    except ConfigError:
        _refuse_rotation_config(file if file is not None else _env_file(env))
        raise
    if config.templates or any(spec.key is not None or spec.keys for spec in config.secrets):
        # Key syntax and templates (syntax, the secrets they name) are understood by agent.render, which
        # only the configurations that shape their output need to load.
        from agent.render.outputs import check_outputs

        if problems := check_outputs(config.secrets, config.templates):
            raise ConfigError(problems)
    return config


def _env_file(env: Mapping[str, str]) -> Path | None:
    return Path(env[CONFIG_FILE_ENV]) if env.get(CONFIG_FILE_ENV) else None


def _refuse_rotation_config(file: Path | None) -> None:
    """A configuration that did not load: if ``file`` is a rotation config, one ConfigError saying so
    instead of a list of unknown keys. (Read again only on this path: a valid file is read once.)"""
    if file is None:
        return
    from agent.config import load_yaml, read_text_file

    try:
        data = load_yaml(read_text_file(file), str(file)).data
    except ConfigError:
        return  # unreadable: load_config's own problems say why
    if (
        not isinstance(data, Mapping)
        or not data
        or not {str(key) for key in data} <= set(ROTATION_CONFIG_KEYS)
    ):
        return
    secrets = data.get("secrets")
    signs = [key for key in ("topics", "subscription") if key in data]
    if isinstance(secrets, Mapping) and secrets:
        signs.append("secrets by secret id")
    if signs:
        raise ConfigError(
            Problem(
                str(file),
                f"this is a rotation config ({', '.join(signs)}), for `secrets-agent rotate -c FILE` and "
                "`secrets-agent rotation status -c FILE`; the agent's configuration lists its secrets as "
                "`secrets: [{name: db, ref: db-password}]`, each with a name and a ref",
            )
        ) from None


def _config_source(file: Path | None, env: Mapping[str, str]) -> str:
    """Where the configuration came from, for messages."""
    if file is not None:
        return str(file)
    if env.get(CONFIG_FILE_ENV):
        return env[CONFIG_FILE_ENV]
    if env.get(CONFIG_YAML_ENV):
        return f"${CONFIG_YAML_ENV}"
    return ""


def _nothing_to_fetch(source: str) -> Problem:
    where = f"{source} lists no secrets and no --secret is given" if source else "no secrets are configured"
    return Problem(
        "init",
        f"nothing to fetch: {where}; list them under `secrets:` in a config file (-c FILE) or pass "
        "--secret NAME=REF (or --allow-empty: succeed with nothing to write)",
    )


# --------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------


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
    **{command: lambda invocation: int(invocation.args.run(invocation.args)) for command in _DELEGATED_HELP},
}

_CONFIG_FILE_HELP = (
    "YAML configuration file (default: $SECRETS_AGENT_CONFIG, if set; or the text of one in "
    "$SECRETS_AGENT_CONFIG_YAML)"
)


@dataclass(frozen=True)
class _Command:
    """A command that loads a Config: its line in the program's help, its description and examples."""

    help: str
    description: str
    examples: tuple[str, ...]
    flags: Sequence[ConfigFlag] = ()
    """Configuration flags of this command only (besides COMMON_FLAGS)."""
    options: tuple[str, ...] = ()
    """Its options that are not configuration flags (added in ``_add_command``)."""

    def epilog(self) -> str:
        return "examples:\n" + "\n".join(f"  {example}" for example in self.examples)

    def own_options(self) -> list[str]:
        names = [*self.options]
        for flag in self.flags:
            names += [flag.flag, "--no-" + flag.flag[2:]] if flag.switch else [flag.flag]
        return names


_AGENT_COMMANDS: dict[str, _Command] = {
    "init": _Command(
        "fetch every secret once, write the outputs and exit (init container)",
        "Fetch all configured secrets concurrently, write the files (and the env file) as one atomic "
        "snapshot, and exit 0. Exit 1 with one line per required secret that could not be fetched, 2 for "
        "an invalid configuration or usage. With no secret configured at all, init exits 2 unless "
        "--allow-empty says that writing nothing is intended.",
        (
            "secrets-agent init -c /etc/secrets-agent/agent.yaml",
            "secrets-agent init --project my-proj --secret db=db-password --output-dir /secrets",
        ),
        options=("--allow-empty",),
    ),
    "run": _Command(
        "bootstrap, then keep the secrets fresh and tell the app (sidecar)",
        "Bootstrap like init, then keep the secrets fresh: poll for new versions (or follow Secret "
        "Manager's Pub/Sub events with --events-topic or --events-subscription), swap the outputs "
        "atomically and notify the app (signal, URL or command); serve the local endpoint and /healthz, "
        "/readyz, /metrics. SIGHUP: refresh now. SIGTERM: stop within the shutdown grace period.",
        (
            "secrets-agent run -c /etc/secrets-agent/agent.yaml",
            "secrets-agent run -c agent.yaml --pid-file /run/app.pid --signal SIGHUP",
        ),
    ),
    "dev": _Command(
        "serve the secrets of a .env file, watched for edits (local development)",
        "The local development daemon: the same outputs and endpoint as run, from a .env file watched for "
        "edits (or from the emulator with --source gcp --endpoint HOST:PORT). With no secrets configured, "
        "every KEY=value line of the .env file is served; the files go to ./.secrets unless --output-dir "
        "says otherwise.",
        (
            "secrets-agent dev",
            "secrets-agent dev --dotenv local.env --output-dir ./secrets",
        ),
        DEV_FLAGS,
    ),
    "exec": _Command(
        "put the secrets into the environment and run a command",
        "Resolve the secrets into environment variables and exec CMD. With --watch, stay as a small "
        "supervisor: forward signals, restart the child (or signal it) on rotation, exit with its status.",
        (
            "secrets-agent exec -c agent.yaml -- gunicorn app:app",
            "secrets-agent exec -c agent.yaml --watch --reload-signal SIGHUP -- ./server --port 8080",
        ),
        EXEC_FLAGS,
    ),
    "check-config": _Command(
        "validate a configuration file and print it normalised",
        "Validate the configuration (FILE or -c FILE, plus SECRETS_AGENT_* variables and flags) without "
        "fetching anything, and print it normalised. On a terminal: the YAML and a one-line verdict; "
        "otherwise (a pipe, a file) the YAML alone, itself a valid configuration file. --output chooses. "
        "Exit 0 if valid, 2 with every problem on stderr if not.",
        (
            "secrets-agent check-config agent.yaml",
            "secrets-agent check-config -c agent.yaml --project my-proj --output json",
        ),
        options=("--output",),
    ),
}

_COMPLETION = _Command(
    "print a shell completion script (bash, zsh, tcsh)",
    "Print a completion script for bash, zsh or tcsh, generated from this program's own parser: every "
    "command and option, file names where a file is expected.",
    (
        "source <(secrets-agent completion bash)     # bash, this shell",
        "secrets-agent completion bash > ~/.local/share/bash-completion/completions/secrets-agent",
        'secrets-agent completion zsh > "${fpath[1]}/_secrets-agent"',
        "secrets-agent completion tcsh > ~/.secrets-agent.tcsh && source ~/.secrets-agent.tcsh",
    ),
)

_PROGRAM_EXAMPLES = (
    "secrets-agent dev                                    # serve ./.env in ./.secrets",
    "secrets-agent init -c /etc/secrets-agent/agent.yaml  # init container",
    "secrets-agent run -c /etc/secrets-agent/agent.yaml   # sidecar",
    "secrets-agent check-config agent.yaml",
    "secrets-agent rotation status --project my-proj",
    "secrets-agent COMMAND --help                         # a command's options",
)


def _owners(command: str) -> dict[str, str]:
    """Each option that only other commands have -> those commands (``--dotenv`` -> ``dev``)."""
    owners: dict[str, list[str]] = {}
    for name, spec in _AGENT_COMMANDS.items():
        if name != command:
            for option in spec.own_options():
                owners.setdefault(option, []).append(name)
    own = set(_AGENT_COMMANDS[command].own_options())
    return {option: ", ".join(names) for option, names in owners.items() if option not in own}


def _add_command(sub: argparse._SubParsersAction[Parser], name: str) -> None:
    spec = _AGENT_COMMANDS[name]
    p = sub.add_parser(
        name,
        parents=[_config_flags_parser(spec.flags)],
        help=spec.help,
        description=spec.description,
        epilog=spec.epilog(),
    )
    p.usage = "%(prog)s [-c FILE] [OPTIONS]"
    p.owners = _owners(name)
    if name == "check-config":
        p.usage = "%(prog)s [OPTIONS] [FILE]"
        p.add_argument("file", type=Path, nargs="?", help=_CONFIG_FILE_HELP + "; or give it with -c")
        p.add_argument("-c", "--config", dest="config_file", type=Path, metavar="FILE", help="the same")
        p.add_argument(
            "--output",
            choices=("text", "yaml", "json"),
            help="text: the YAML and a one-line verdict (the default on a terminal); yaml: the YAML alone "
            "(the default otherwise); json: the same settings as one JSON document",
        )
    else:
        p.add_argument("-c", "--config", dest="file", type=Path, metavar="FILE", help=_CONFIG_FILE_HELP)
    if name == "init":
        p.add_argument(
            "--allow-empty",
            action="store_true",
            help="succeed (exit 0, writing nothing) when no secret is configured, instead of exit 2",
        )
    if name == "exec":
        p.usage = "%(prog)s [OPTIONS] -- CMD [ARGS...]"
        p.add_argument("argv", nargs=argparse.REMAINDER, metavar="CMD [ARGS...]", help="the command to run")
    p.set_defaults(command=name)


def _add_completion(sub: argparse._SubParsersAction[Parser]) -> None:
    p = sub.add_parser(
        "completion",
        help=_COMPLETION.help,
        description=_COMPLETION.description,
        epilog=_COMPLETION.epilog(),
    )
    p.add_argument("shell", choices=COMPLETION_SHELLS, help="the shell: " + ", ".join(COMPLETION_SHELLS))
    p.set_defaults(command="completion")


class _VersionAction(argparse.Action):
    """``--version``, like argparse's own, but the version is looked up only when asked for (it reads the
    installed distributions' metadata: tens of milliseconds that no other command should pay)."""

    def __init__(self, option_strings: Sequence[str], dest: str) -> None:
        super().__init__(
            option_strings,
            argparse.SUPPRESS,
            nargs=0,
            default=argparse.SUPPRESS,
            help="show program's version number and exit",
        )

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        from agent import __version__

        print(f"{parser.prog} {__version__}")
        parser.exit()


def build_parser(command: str | None = None, *, complete: bool = False) -> Parser:
    """The program's parser. With ``command`` (the first word of a command line that names one), only that
    command's options are built: the others are listed for ``--help``, as the delegated commands are, and
    the thirty-odd options of each (with argparse's message lookups) are not paid for on every pod start.
    ``complete``: every command with all its options, the delegated ones included (for ``completion``)."""
    parser = Parser(
        prog=PROG,
        description="Hands your app its secrets from Google Cloud Secret Manager: files, an env file, a "
        "local endpoint; kept fresh, the app told on change. Each command has its own --help.",
        epilog="examples:\n" + "\n".join(f"  {example}" for example in _PROGRAM_EXAMPLES),
    )
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for name, spec in _AGENT_COMMANDS.items():
        if complete or name == command:
            _add_command(sub, name)
        else:
            sub.add_parser(name, help=spec.help, add_help=False)
    _add_completion(sub)
    for name, help_text in _DELEGATED_HELP.items():
        # Listed for --help only: parse() hands their arguments to the command's own parser.
        sub.add_parser(name, help=help_text, add_help=False)
        if complete and name != "emulator":  # the emulator's parser is in another distribution
            sub.choices[name] = _delegated_parser(name)  # type: ignore[assignment]
    return parser


def parse(argv: Sequence[str] | None, env: Mapping[str, str]) -> Invocation:
    """Parse a command line into an Invocation. Usage errors exit 2 (argparse); an invalid configuration
    raises ConfigError with every problem."""
    words = list(sys.argv[1:] if argv is None else argv)
    if words and words[0] in _DELEGATED_HELP:
        return Invocation(words[0], None, args=_delegated_args(words[0], words[1:]))
    parser = build_parser(words[0] if words and words[0] in _AGENT_COMMANDS else None)
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
        args.config_source = _config_source(file, env)
    config = _load_config(file, args, env)
    if command == "init" and not args.allow_empty and not config.secrets and not config.templates:
        raise ConfigError(_nothing_to_fetch(_config_source(file, env)))
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
    for spec in _AGENT_COMMANDS.values():
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


def main(argv: Sequence[str] | None = None) -> int:
    """The ``secrets-agent`` program: parse, then run one entry point; returns the exit code.

    Run as the program (``argv`` None: the console script, ``python -m agent``), ``init`` does not return:
    once its files are written and its output flushed, the process ends without the interpreter's
    teardown (``exit_now``)."""
    from agent.core import collector

    try:
        # The collector waits while the command starts (agent.core.collector): imports, configuration and
        # pipeline are objects for the life of the process. The delegated commands have their own start.
        with collector.paused():
            invocation = parse(argv, os.environ)
            if invocation.config is None:
                collector.startup_done()
            code = invocation.run()
    except ConfigError as error:
        for problem in error.problems:
            print(f"secrets-agent: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except AgentError as error:
        print(f"secrets-agent: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE
    except BrokenPipeError:
        return _reader_gone()
    if argv is None and invocation.command == "init":
        exit_now(code)
    return code


def _reader_gone() -> int:
    """``secrets-agent check-config | head``: the reader closed the pipe before the output ended. Not an
    error of ours (no traceback); what is still buffered for stdout goes nowhere, as a shell's own tools do
    (the interpreter would otherwise report the same broken pipe again when it flushes at exit)."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return EXIT_FAILURE


def exit_now(code: int) -> NoReturn:
    """End the process with ``code`` after flushing the log and the standard streams, skipping the
    interpreter's teardown (as mypy does when it is done).

    Tearing down frees every object of the process one by one: the Google client's modules, protobuf
    descriptors and gRPC make some 60 MiB of them, and freeing them costs about a quarter of the CPU time
    of a whole ``init`` (``bench/init_cost.py``: 265 ms against 353 ms with the teardown), on every pod
    start, to give back memory the kernel takes back at once. Nothing is lost: the snapshot is on disk
    (written and renamed before ``init`` returns), the Secret Manager channel is closed, the output
    directory's lock goes with the process. ``atexit`` handlers do not run: the agent registers none (a
    tool that does, such as a coverage recorder, calls ``main`` with an argv and gets the code back)."""
    import logging

    logging.shutdown()  # flushes (and closes) every handler: the last log line is out
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed or broken pipe: nothing more to say
            stream.flush()
    os._exit(code)
