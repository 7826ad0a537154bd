"""Configuration flags: one table (``ConfigFlag``), shared by every command that builds a Config; and the
loading of that Config from the file, the ``SECRETS_AGENT_*`` variables and the flags."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent.cli.parser import Parser
from agent.errors import ConfigError, Problem

if TYPE_CHECKING:
    from agent.config import Config


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


def config_flags_parser(extra: Sequence[ConfigFlag] = ()) -> Parser:
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
ROTATION_CONFIG_KEYS = ("project", "topics", "subscription", "secrets", "gcp", "fleet")
"""The top-level keys of a rotation config (``agent.rotation.config.TOP_LEVEL_KEYS``, which the agent does
not import): a file with only these, shaped the rotation way, was meant for ``rotate``."""


def load_config_with_flags(file: Path | None, args: argparse.Namespace, env: Mapping[str, str]) -> Config:
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


def config_source(file: Path | None, env: Mapping[str, str]) -> str:
    """Where the configuration came from, for messages."""
    if file is not None:
        return str(file)
    if env.get(CONFIG_FILE_ENV):
        return env[CONFIG_FILE_ENV]
    if env.get(CONFIG_YAML_ENV):
        return f"${CONFIG_YAML_ENV}"
    return ""
