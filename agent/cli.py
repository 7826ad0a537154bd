"""Command line: parses arguments into a configuration object and calls one entry point. Nothing else.

Exit codes: 0 success, 1 runtime failure, 2 invalid configuration or usage.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from agent import __version__
from agent.errors import AgentError, ConfigError

if TYPE_CHECKING:
    from agent.config import Config

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def _add_emulator(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from agent.emulator.options import DEFAULT_GRPC_PORT, DEFAULT_HTTP_PORT

    p = sub.add_parser(
        "emulator",
        help="run a wire-compatible Secret Manager emulator (gRPC + REST)",
        description="Serve google.cloud.secretmanager.v1 over plaintext gRPC and REST/JSON from memory.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    p.add_argument(
        "--grpc-port", type=int, default=DEFAULT_GRPC_PORT, help="gRPC port, 0 = any (default: %(default)s)"
    )
    p.add_argument(
        "--http-port",
        type=int,
        default=DEFAULT_HTTP_PORT,
        help="REST and admin API port, 0 = any (default: %(default)s)",
    )
    p.add_argument("--seed", type=Path, help="YAML/JSON file of secrets to create at start")
    p.add_argument("--data", type=Path, help="persist everything to this file (atomic rewrites)")
    p.add_argument("--faults", type=Path, help="YAML file of faults and quotas")
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="METHOD:KIND=VALUE",
        help="inject a fault, e.g. AccessSecretVersion:unavailable=0.2 or *:latency_ms=50 (repeatable)",
    )
    p.add_argument(
        "--quotas", action="store_true", help="enforce the service's per-minute quotas (90000/600/600)"
    )
    p.set_defaults(handler=_run_emulator)


def _run_emulator(args: argparse.Namespace) -> int:
    from agent.emulator.options import EmulatorOptions
    from agent.emulator.server import serve_forever

    options = EmulatorOptions(
        host=args.host,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        seed=args.seed,
        data=args.data,
        faults=args.faults,
        fault_specs=tuple(args.fault),
        quotas=args.quotas,
    )
    return serve_forever(options)


# Config settings that have a flag: setting path -> help. The flag is ``--`` + the path with '-' for '_'.
_CONFIG_FLAGS: dict[str, str] = {
    "project": "default project for short secret references (env SECRETS_AGENT_PROJECT)",
    "log_level": "debug, info, warning or error (env SECRETS_AGENT_LOG_LEVEL)",
    "output_dir": "directory the secret files are written to (env SECRETS_AGENT_OUTPUT_DIR)",
    "env_file": "also write all secrets to this KEY=value file (env SECRETS_AGENT_ENV_FILE)",
    "poll_interval": "time between polls, e.g. 30s, 5m (env SECRETS_AGENT_POLL_INTERVAL)",
    "poll_jitter": "random spread of the poll interval, 0..1 (env SECRETS_AGENT_POLL_JITTER)",
    "max_staleness": "not ready after this long without a refresh, e.g. 1h (env SECRETS_AGENT_MAX_STALENESS)",
}


def _config_flags_parser() -> argparse.ArgumentParser:
    """The flags that override configuration settings; shared by every command that loads a Config."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("configuration (overrides SECRETS_AGENT_* variables and the file)")
    for path, help_text in _CONFIG_FLAGS.items():
        # Values stay strings: load_config parses them, so a bad flag is reported like a bad file value.
        group.add_argument("--" + path.replace("_", "-"), dest=path, metavar="VALUE", help=help_text)
    return parent


def _load_config(file: Path | None, args: argparse.Namespace) -> Config:
    from agent.config import load_config

    return load_config(file, os.environ, {path: getattr(args, path) for path in _CONFIG_FLAGS})


def _add_check_config(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "check-config",
        parents=[_config_flags_parser()],
        help="validate a configuration file and print it normalised",
        description="Validate FILE plus SECRETS_AGENT_* variables and flags; print the normalised "
        "configuration as YAML. Exit 0 if valid, 2 with every problem on stderr if not.",
    )
    p.add_argument(
        "file", type=Path, nargs="?", help="YAML configuration file (default: $SECRETS_AGENT_CONFIG, if set)"
    )
    p.set_defaults(handler=_run_check_config)


def _run_check_config(args: argparse.Namespace) -> int:
    from agent.app import check_config

    return check_config(_load_config(args.file, args), sys.stdout)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="secrets-agent",
        description="Hands your app its secrets from Google Cloud Secret Manager.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _add_emulator(sub)
    _add_check_config(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except ConfigError as error:
        for problem in error.problems:
            print(f"secrets-agent: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except AgentError as error:
        print(f"secrets-agent: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE
