"""Command line: parses arguments into a configuration object and calls one entry point. Nothing else.

Exit codes: 0 success, 1 runtime failure, 2 invalid configuration or usage.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from agent.errors import AgentError, ConfigError

if TYPE_CHECKING:
    from agent.config import Config

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


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


def _delegated_args(command: str, argv: Sequence[str]) -> argparse.Namespace:
    """Parse a delegated command's own arguments; the namespace's ``run`` is its entry point."""
    if command in ("rotate", "rotation"):
        from agent.rotation.cli import build_parser as rotation_parser

        return rotation_parser(command).parse_args(list(argv))
    if command == "webhook":
        from agent.webhook.cli import build_parser as webhook_parser

        return webhook_parser().parse_args(list(argv))
    return argparse.Namespace(run=_emulator_entry_point(), argv=list(argv))


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
    ConfigFlag("--log-format", "log_format", "json (Cloud Logging) or text (terminals)", metavar="FORMAT"),
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


def _config_flags_parser(extra: Sequence[ConfigFlag] = ()) -> argparse.ArgumentParser:
    """The flags that override configuration settings; shared by every command that loads a Config."""
    parent = argparse.ArgumentParser(add_help=False)
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


def _load_config(file: Path | None, args: argparse.Namespace, env: Mapping[str, str]) -> Config:
    from agent.config import load_config

    config = load_config(file, env, _flag_values(args), flag_names={f.path: f.flag for f in ALL_FLAGS})
    if config.templates or any(spec.key is not None or spec.keys for spec in config.secrets):
        # Key syntax and templates (syntax, the secrets they name) are understood by agent.render, which
        # only the configurations that shape their output need to load.
        from agent.render.outputs import check_outputs

        if problems := check_outputs(config.secrets, config.templates):
            raise ConfigError(problems)
    return config


# --------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Invocation:
    """What the command line asked for, before anything runs: ``main()`` runs it, tests inspect it."""

    command: str
    """The subcommand: init, run, dev, exec, check-config, emulator, rotate, rotation or webhook."""
    config: Config | None
    """The validated configuration (None for emulator, rotate, rotation and webhook: they have their own
    options)."""
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

    return check_config(_needs_config(invocation), sys.stdout)


_HANDLERS: dict[str, Callable[[Invocation], int]] = {
    "init": _run_init,
    "run": _run_agent,
    "dev": _run_dev,
    "exec": _run_exec,
    "check-config": _run_check_config,
    # Commands with their own parsers and options (not a Config): the parser stores its entry point.
    **{command: lambda invocation: int(invocation.args.run(invocation.args)) for command in _DELEGATED_HELP},
}

_CONFIG_FILE_HELP = (
    "YAML configuration file (default: $SECRETS_AGENT_CONFIG, if set; or the text of one in "
    "$SECRETS_AGENT_CONFIG_YAML)"
)


# The commands that load a Config: (help line, description, extra flags). ``exec`` and ``check-config`` add
# their positional arguments in ``_add_command``.
_AGENT_COMMANDS: dict[str, tuple[str, str, Sequence[ConfigFlag]]] = {
    "init": (
        "fetch every secret once, write the outputs and exit (init container)",
        "Fetch all secrets concurrently, write the files and env file as one snapshot, exit 0. If a "
        "required secret fails: exit 1 with one line per failure.",
        (),
    ),
    "run": (
        "bootstrap, then keep the secrets fresh and tell the app (sidecar)",
        "Bootstrap like init, then poll for new versions, swap the outputs atomically and notify the "
        "app. SIGHUP: refresh now. SIGTERM: stop within the shutdown grace period.",
        (),
    ),
    "dev": (
        "serve the secrets of a .env file, watched for edits (local development)",
        "The local development daemon: the same outputs as run, from a .env file (or the emulator with "
        "--source gcp --endpoint HOST:PORT).",
        DEV_FLAGS,
    ),
    "exec": (
        "put the secrets into the environment and run a command",
        "Resolve the secrets into environment variables and exec CMD. With --watch, stay as a small "
        "supervisor: forward signals, restart the child (or signal it) on rotation, exit with its status.",
        EXEC_FLAGS,
    ),
    "check-config": (
        "validate a configuration file and print it normalised",
        "Validate FILE plus SECRETS_AGENT_* variables and flags; print the normalised "
        "configuration as YAML. Exit 0 if valid, 2 with every problem on stderr if not.",
        (),
    ),
}


def _add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str) -> None:
    help_text, description, extra = _AGENT_COMMANDS[name]
    p = sub.add_parser(name, parents=[_config_flags_parser(extra)], help=help_text, description=description)
    if name == "check-config":
        p.add_argument("file", type=Path, nargs="?", help=_CONFIG_FILE_HELP)
    else:
        p.add_argument("-c", "--config", dest="file", type=Path, metavar="FILE", help=_CONFIG_FILE_HELP)
    if name == "exec":
        p.usage = "%(prog)s [OPTIONS] -- CMD [ARGS...]"
        p.add_argument("argv", nargs=argparse.REMAINDER, metavar="CMD [ARGS...]", help="the command to run")
    p.set_defaults(command=name)


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


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The program's parser. With ``command`` (the first word of a command line that names one), only that
    command's options are built: the others are listed for ``--help``, as the delegated commands are, and
    the thirty-odd options of each (with argparse's message lookups) are not paid for on every pod start."""
    parser = argparse.ArgumentParser(
        prog="secrets-agent",
        description="Hands your app its secrets from Google Cloud Secret Manager.",
    )
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for name, (help_text, _, _) in _AGENT_COMMANDS.items():
        if command is None or name == command:
            _add_command(sub, name)
        else:
            sub.add_parser(name, help=help_text, add_help=False)
    for name, help_text in _DELEGATED_HELP.items():
        # Listed for --help only: parse() hands their arguments to the command's own parser.
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def parse(argv: Sequence[str] | None, env: Mapping[str, str]) -> Invocation:
    """Parse a command line into an Invocation. Usage errors exit 2 (argparse); an invalid configuration
    raises ConfigError with every problem."""
    words = list(sys.argv[1:] if argv is None else argv)
    if words and words[0] in _DELEGATED_HELP:
        return Invocation(words[0], None, args=_delegated_args(words[0], words[1:]))
    parser = build_parser(words[0] if words and words[0] in _AGENT_COMMANDS else None)
    args = parser.parse_args(words)
    command: str = args.command
    program: tuple[str, ...] = ()
    if command == "exec":
        program = tuple(args.argv[1:] if args.argv[:1] == ["--"] else args.argv)
        if not program:
            _subparser(parser, "exec").error("a command to run is required: exec [OPTIONS] -- CMD [ARGS...]")
    return Invocation(command, _load_config(args.file, args, env), program, args)


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
    if argv is None and invocation.command == "init":
        exit_now(code)
    return code


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
