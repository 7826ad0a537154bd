"""``secrets-agent rotate ...``, ``secrets-agent rotate --listen`` and ``secrets-agent rotation status``.

Parsing only, then one entry point each. Exit codes: 0 when every secret was rotated, skipped, not due or
locked by another rotation in progress; 1 when any failed, was rolled back or was stopped (SIGTERM/SIGINT
before its turn: not started); 2 for usage and configuration errors (raised as ConfigError, printed by
``agent.cli.main``). ``rotate`` paces its rotations to the fleet (``--fleet-size``, ``--access-per-minute``,
the config's ``fleet``: ``agent.rotation.pacing``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from agent.errors import ConfigError, Problem
from agent.observe.logs import configure_logging, is_terminal
from agent.secrets.types import SELECTORS

if TYPE_CHECKING:  # the rotation machinery (providers, drivers) is imported only by those who rotate
    from agent.rotation.config import RotationConfig
    from agent.rotation.pacing import Pacing
    from agent.rotation.results import RotationOptions
    from agent.secrets.interface import SecretsBackend

EXIT_OK = 0
EXIT_FAILURE = 1

TARGETS_HELP = f"{' | '.join(SELECTORS)} | SECRET... (groups by the secret-type label, or secret ids)"


def build_parser(
    command: str, parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser
) -> argparse.ArgumentParser:
    """The parser of ``rotate`` or ``rotation``; the namespace it returns holds ``command`` and ``run``
    (args -> exit code). ``parser_class``: the program's (``agent.cli.Parser``: "did you mean", examples
    kept as written)."""
    return _rotate_parser(parser_class) if command == "rotate" else _rotation_parser(parser_class)


_CONFIG_SHAPE = (
    "The rotation config (-c FILE) says how each secret is rotated:\n"
    "  project: my-project\n"
    "  topics: [projects/my-project/topics/secret-events]   # for --listen\n"
    "  secrets:\n"
    "    db-password: {provider: postgres, role: app, admin_dsn_env: ADMIN_DSN}\n"
    "    stripe-key: {type: api-key, provider: command, generate: [./mint-key]}\n"
    "  fleet: {size: 10000, access_per_minute: 45000}   # the pods fetching them: paces rotations\n"
    "It is not the agent's configuration (the file of init and run)."
)


def _rotate_parser(parser_class: type[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = parser_class(
        prog="secrets-agent rotate",
        usage="%(prog)s [OPTIONS] TARGET... | %(prog)s --listen [OPTIONS]",
        description="Rotate secrets with their providers: back up, generate, apply, add a version, "
        "validate; roll back on failure. A TARGET is a group of secrets by their secret-type label (all, "
        "database, api-keys...) or a secret id. Prints a table of what happened (--output json for "
        "scripts). Rotations are paced to the fleet that fetches them (--fleet-size). SIGTERM/SIGINT: the "
        "rotation in progress finishes, the rest are not started. Exit 0 when all rotated/skipped/not "
        "due/locked elsewhere, 1 when any failed, was rolled back or was not started, 2 for usage "
        "errors.\n\n" + _CONFIG_SHAPE,
        epilog="examples:\n"
        "  secrets-agent rotate --project my-proj --dry-run all\n"
        "  secrets-agent rotate --project my-proj -c rotation.yaml --due-only database api-keys\n"
        "  secrets-agent rotate --listen -c rotation.yaml --subscription projects/my-proj/subscriptions/rot",
    )
    p.add_argument("targets", nargs="*", metavar="TARGET", help=TARGETS_HELP)
    _add_backend_flags(p, "rotate")
    p.add_argument("--due-only", action="store_true", help="rotate only secrets that are due")
    p.add_argument("--dry-run", action="store_true", help="show the plan; change nothing")
    p.add_argument(
        "--disable-previous", action="store_true", help="after a successful rotation, disable the old version"
    )
    p.add_argument(
        "--backup-dir", type=Path, metavar="DIR", help="write each replaced value to DIR/<secret>.v<N> (0600)"
    )
    p.add_argument(
        "--lock-timeout",
        default="15m",
        metavar="DURATION",
        help="a rotation lock not updated for this long is stale and is resumed (default %(default)s)",
    )
    pacing = p.add_argument_group("pacing: rotations start 60 * fleet size / access-per-minute seconds apart")
    pacing.add_argument(
        "--fleet-size",
        metavar="N",
        help="pods (agents) that fetch the rotated secrets, not the whole cluster (default: the config's "
        "fleet.size, else 1)",
    )
    pacing.add_argument(
        "--access-per-minute",
        metavar="N",
        help="access calls per minute the fleet's fetches may use (default: the config's "
        "fleet.access_per_minute, else 45000: half of the 90,000/min quota). At least 0.1 s between "
        "rotations and at most 25 a minute whatever the fleet (the write quota)",
    )
    listen = p.add_argument_group("listen mode: rotate on Secret Manager's SECRET_ROTATE events")
    listen.add_argument("--listen", action="store_true", help="subscribe and rotate until SIGTERM/SIGINT")
    listen.add_argument(
        "--subscription", metavar="projects/P/subscriptions/S", help="an existing subscription"
    )
    listen.add_argument(
        "--topic",
        action="append",
        default=[],
        metavar="projects/P/topics/T",
        help="create a subscription of this process on the topic (repeatable)",
    )
    p.set_defaults(command="rotate", run=run_rotate)
    return p


def _rotation_parser(parser_class: type[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = parser_class(
        prog="secrets-agent rotation",
        description="Where the rotation of secrets stands (see also: secrets-agent rotate).",
        epilog="examples:\n  secrets-agent rotation status --project my-proj",
    )
    rsub = p.add_subparsers(title="commands", metavar="COMMAND", required=True)
    s = rsub.add_parser(
        "status",
        help="type, current version's age, next due date, overdue marked",
        usage="%(prog)s [OPTIONS]",
        description="A row per secret under rotation (a secret-type label, or an entry in -c FILE): its "
        "type, current version, the version's age, the next due date, OVERDUE marked, and notes (a "
        "rotation in progress, one rolled back). On a terminal: an aligned table and a one-line summary, "
        "with only warnings logged (the audit events of each read, INFO on agent.audit, are hidden unless "
        "--log-level info). Otherwise (a pipe, a file): JSON on stdout and the audit events as JSON lines "
        "on stderr, for a log collector. --output text or json chooses.\n\n" + _CONFIG_SHAPE,
        epilog="examples:\n"
        "  secrets-agent rotation status --project my-proj\n"
        "  secrets-agent rotation status --project my-proj -c rotation.yaml --output json | jq .secrets\n"
        "  secrets-agent rotation status --dotenv .env --now 2025-01-31T00:00:00Z",
    )
    _add_backend_flags(s, "status")
    s.set_defaults(run=run_status)
    p.set_defaults(command="rotation")
    return p


OUTPUTS = ("text", "json", "table")
"""``--output``: ``table`` is the former name of ``text``."""
LOG_FORMATS = ("auto", "json", "text")


def _add_backend_flags(p: argparse.ArgumentParser, command: str) -> None:
    p.add_argument(
        "-c",
        "--config",
        type=Path,
        metavar="FILE",
        help="rotation config file (providers per secret; not the agent's configuration)",
    )
    p.add_argument("--project", help="Google Cloud project (default: the config's, or $GOOGLE_CLOUD_PROJECT)")
    p.add_argument(
        "--endpoint",
        metavar="HOST:PORT",
        help="Secret Manager emulator (plaintext gRPC); default $SECRET_MANAGER_EMULATOR_HOST",
    )
    p.add_argument("--dotenv", type=Path, metavar="FILE", help="work on a local .env file instead")
    if command == "status":
        output_help = (
            "text: an aligned table (the default on a terminal); json: for scripts (the default otherwise)"
        )
    else:
        output_help = "text: an aligned table (the default); json: for scripts"
    p.add_argument("--output", choices=OUTPUTS, help=output_help + "; table is another name for text")
    p.add_argument(
        "--now", metavar="RFC3339", help="evaluate due dates at this time (e.g. 2025-01-31T00:00:00Z)"
    )
    level_help = (
        "default: warning when stderr is a terminal (the audit events are hidden), info otherwise"
        if command == "status"
        else "default: info"
    )
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help=level_help)
    p.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="auto",
        help="auto (default): text when stderr is a terminal, json otherwise",
    )


def _output(args: argparse.Namespace, default: str) -> str:
    """``text`` or ``json``: ``--output``, else ``default`` (``auto``: text on a terminal)."""
    chosen = args.output or default
    if chosen == "auto":
        chosen = "text" if is_terminal(sys.stdout) else "json"
    return "text" if chosen == "table" else str(chosen)


def _configure_logging(args: argparse.Namespace, quiet_on_terminal: bool) -> None:
    level = args.log_level or ("warning" if quiet_on_terminal and is_terminal(sys.stderr) else "info")
    configure_logging(level, args.log_format)


# --------------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------------


def run_rotate(args: argparse.Namespace) -> int:
    from agent.rotation.backend import endpoint_of, make_backend, project_of
    from agent.rotation.backup import BackupError, check_backup_dir
    from agent.rotation.results import RotationOptions

    _configure_logging(args, quiet_on_terminal=False)
    config = _load_config(args.config)
    _check_rotate_usage(args, config)
    pacing = _pacing(args, config)
    if args.backup_dir is not None and not args.dry_run:
        try:
            check_backup_dir(args.backup_dir)
        except BackupError as error:
            raise ConfigError(Problem("--backup-dir", str(error))) from None
    options = RotationOptions(
        config=config,
        disable_previous=args.disable_previous,
        backup_dir=args.backup_dir,
        dry_run=args.dry_run,
        due_only=args.due_only,
        now=_parse_now(args.now),
        lock_timeout=_parse_lock_timeout(args.lock_timeout),
        pacing=pacing,
    )
    backend = make_backend(
        dotenv=args.dotenv,
        project=project_of(args.project, config, os.environ),
        endpoint=endpoint_of(args.endpoint, os.environ),
        config=config,
    )
    if args.listen:
        return asyncio.run(_listen(args, config, backend, options))
    return asyncio.run(_rotate(args, config, backend, options))


def run_status(args: argparse.Namespace) -> int:
    from agent.rotation.backend import endpoint_of, make_backend, project_of

    _configure_logging(args, quiet_on_terminal=True)
    config = _load_config(args.config)
    now = _parse_now(args.now) or datetime.now(UTC)
    backend = make_backend(
        dotenv=args.dotenv,
        project=project_of(args.project, config, os.environ),
        endpoint=endpoint_of(args.endpoint, os.environ),
        config=config,
    )
    return asyncio.run(_status(args, config, backend, now))


# --------------------------------------------------------------------------------------------------
# The work
# --------------------------------------------------------------------------------------------------


async def _rotate(
    args: argparse.Namespace, config: RotationConfig | None, backend: SecretsBackend, options: RotationOptions
) -> int:
    from agent.rotation.engine import rotate_many
    from agent.rotation.pacing import announce
    from agent.rotation.report import results_json, results_table
    from agent.rotation.selection import select_secrets
    from agent.supervisor import signal_handlers

    stop = asyncio.Event()
    pacing = options.pacing
    try:
        # SIGTERM/SIGINT: the rotation in progress finishes, the rest are not started (`stopped`).
        with signal_handlers(stop):
            ids = await select_secrets(backend, args.targets, config)
            if pacing is not None and not options.dry_run:
                announce(pacing, len(ids))
            results = await rotate_many(backend, ids, options, stop=stop)
    finally:
        await backend.close()
    # The plan's pacing: the rotations it would make (planned), never waited for.
    planned = sum(r.result == "planned" for r in results) if options.dry_run else 0
    if _output(args, "text") == "json":
        plan = pacing.to_json(planned) if pacing is not None and options.dry_run else None
        sys.stdout.write(results_json(results, pacing=plan))
    elif results:
        sys.stdout.write(results_table(results))
        if pacing is not None and pacing.notable(planned):
            sys.stdout.write("\n" + pacing.describe(planned) + "\n")
    else:
        sys.stdout.write(f"no secrets selected by: {' '.join(args.targets)}\n")
    sys.stdout.flush()
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILURE


async def _listen(
    args: argparse.Namespace, config: RotationConfig | None, backend: SecretsBackend, options: RotationOptions
) -> int:
    from agent.rotation.listen import Listener, ListenOptions
    from agent.supervisor import signal_handlers

    # Flags win over the config file; the file's topics and subscription are used together.
    if args.topic or args.subscription:
        topics, subscription = tuple(args.topic), args.subscription
    else:
        topics = config.topics if config else ()
        subscription = config.subscription if config else None
    listen_options = ListenOptions(
        subscription=subscription, topics=topics, rotation=options, project=getattr(backend, "project", None)
    )
    stop = asyncio.Event()
    try:
        with signal_handlers(stop):
            await Listener(backend, listen_options).run(stop)
    finally:
        await backend.close()
    return EXIT_OK


async def _status(
    args: argparse.Namespace, config: RotationConfig | None, backend: SecretsBackend, now: datetime
) -> int:
    from agent.rotation.report import status_json, status_text
    from agent.rotation.status import rotation_status

    try:
        rows = await rotation_status(backend, config, now)
    finally:
        await backend.close()
    sys.stdout.write(status_json(rows) if _output(args, "auto") == "json" else status_text(rows))
    sys.stdout.flush()
    return EXIT_OK


# --------------------------------------------------------------------------------------------------
# Checking the command line
# --------------------------------------------------------------------------------------------------


def _load_config(path: Path | None) -> RotationConfig | None:
    if path is None:
        return None
    from agent.rotation.config import load_rotation_config

    try:
        return load_rotation_config(path)
    except ConfigError:
        _refuse_agent_config(path)
        raise


def _refuse_agent_config(path: Path) -> None:
    """A rotation config that did not load: if it is the agent's configuration (its keys, none of the
    rotation config's own), one ConfigError saying so and what rotate expects, instead of a list of
    unknown keys. (Read again only on this path: a valid file is read once.)"""
    import dataclasses

    from agent.config import Config, load_yaml, read_text_file
    from agent.rotation.config import TOP_LEVEL_KEYS

    try:
        data = load_yaml(read_text_file(path), str(path)).data
    except ConfigError:
        return  # unreadable: the rotation config's own problems say why
    if not isinstance(data, Mapping) or not data or any(key in data for key in ("topics", "subscription")):
        return
    agent_keys = {f.name for f in dataclasses.fields(Config)}
    keys = [str(key) for key in data]
    if not set(keys) <= agent_keys:
        return  # other unknown keys: typos, which the rotation config's problems name
    signs = [key for key in keys if key not in TOP_LEVEL_KEYS]
    if isinstance(data.get("secrets"), list):
        signs.append("secrets as a list")
    if signs:
        raise ConfigError(
            Problem(
                str(path),
                f"this is an agent configuration ({', '.join(signs)}), the file of init, run, dev and exec; "
                "rotate and rotation status expect a rotation config: project, topics, subscription and "
                "secrets as a mapping of secret id -> provider settings, e.g. "
                "`secrets: {db-password: {provider: postgres}}` (see secrets-agent rotate --help)",
            )
        ) from None


def _check_rotate_usage(args: argparse.Namespace, config: RotationConfig | None) -> None:
    problems: list[Problem] = []
    topics = config.topics if config else ()
    subscription = config.subscription if config else None
    if args.listen:
        if args.targets:
            problems.append(Problem("rotate --listen", "takes no TARGET: it rotates what the events name"))
        if not (args.subscription or args.topic or topics or subscription):
            problems.append(
                Problem("rotate --listen", "needs --subscription S or --topic T (or topics in --config)")
            )
        if args.due_only:
            problems.append(Problem("rotate --listen", "--due-only does not apply: an event means it is due"))
    else:
        if not args.targets:
            problems.append(Problem("rotate", f"what to rotate? {TARGETS_HELP}"))
        if args.subscription or args.topic:
            problems.append(Problem("rotate", "--subscription and --topic only apply with --listen"))
    if problems:
        raise ConfigError(problems)


_PACING_FLAGS = {"size": "--fleet-size", "access_per_minute": "--access-per-minute"}


def _pacing(args: argparse.Namespace, config: RotationConfig | None) -> Pacing:
    """The config's ``fleet`` (else its defaults) with ``--fleet-size`` and ``--access-per-minute`` over it,
    checked by the same parsers (a problem names the flag)."""
    import dataclasses

    from agent.config import FleetConfig
    from agent.config.loader import read_section
    from agent.rotation.pacing import Pacing

    fleet = config.fleet if config is not None else FleetConfig()
    given = {"size": args.fleet_size, "access_per_minute": args.access_per_minute}
    flags = {key: value for key, value in given.items() if value is not None}
    parsed, problems = read_section(FleetConfig, flags, "")
    if problems:
        raise ConfigError([Problem(_PACING_FLAGS.get(p.path, p.path), p.message) for p in problems])
    return Pacing(dataclasses.replace(fleet, **{key: getattr(parsed, key) for key in flags}))


def _parse_now(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ConfigError(
            Problem("--now", f"expected an RFC 3339 time such as 2025-01-31T00:00:00Z, got {text!r}")
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _parse_lock_timeout(text: str) -> timedelta:
    from agent.config import parse_duration

    try:
        return timedelta(seconds=parse_duration(text))
    except ValueError as error:
        raise ConfigError(Problem("--lock-timeout", str(error))) from None
