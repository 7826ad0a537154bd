"""``secrets-agent webhook``: flags -> WebhookOptions -> the server. Nothing else."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Mapping
from pathlib import Path

from agent.config import LOG_LEVELS, parse_delay, parse_duration, split_listen
from agent.config.refs import project_problem
from agent.errors import ConfigError, Problem
from agent.webhook.quantity import parse_quantity
from agent.webhook.settings import (
    DEFAULT_IMAGE,
    INJECTION_MODES,
    MAX_LISTING_TIMEOUT,
    InjectorSettings,
    ResolverSettings,
    Resources,
    WebhookOptions,
)

EMULATOR_HOST_ENV = "SECRET_MANAGER_EMULATOR_HOST"
"""The fallback of ``--secret-manager-endpoint``, as of the agent's ``gcp.endpoint``."""

_RESOURCE_FLAGS = {
    "cpu_request": "--cpu-request",
    "memory_request": "--memory-request",
    "cpu_limit": "--cpu-limit",
    "memory_limit": "--memory-limit",
}


def build_parser(
    parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser,
) -> argparse.ArgumentParser:
    """The parser of ``webhook``; the namespace it returns holds ``command`` and ``run`` (args -> exit
    code). ``parser_class``: the program's (``agent.cli.Parser``: "did you mean", examples as written)."""
    defaults = Resources()
    p = parser_class(
        prog="secrets-agent webhook",
        usage="%(prog)s --tls-cert-file FILE --tls-key-file FILE [OPTIONS]",
        description="Serve POST /mutate (admission.k8s.io/v1 AdmissionReview of Pods) over HTTPS: pods "
        "annotated secrets-agent.io/inject: 'true' get the agent as init container and/or sidecar "
        "(--default-mode, or the pod's secrets-agent.io/mode annotation), configured from the pod's "
        "annotations. The certificate files are re-read when they change. It reads no configuration file: "
        "everything is a flag. Exit 0 after SIGTERM, 1 when the certificate cannot be loaded, 2 for bad "
        "flags.",
        epilog="examples:\n"
        "  secrets-agent webhook --tls-cert-file /tls/tls.crt --tls-key-file /tls/tls.key\n"
        "  secrets-agent webhook --tls-cert-file tls.crt --tls-key-file tls.key --listen 127.0.0.1:8443 "
        "--default-mode native --project my-proj",
    )
    p.add_argument("--listen", default="0.0.0.0:8443", metavar="HOST:PORT", help="default: %(default)s")
    p.add_argument("--tls-cert-file", type=Path, required=True, metavar="FILE", help="PEM certificate chain")
    p.add_argument("--tls-key-file", type=Path, required=True, metavar="FILE", help="PEM private key")
    p.add_argument(
        "--tls-reload-interval",
        default="10s",
        metavar="DURATION",
        help="how often the certificate files are checked for changes (default: %(default)s)",
    )
    p.add_argument(
        "--image", default=DEFAULT_IMAGE, help="image of the injected agent (default: %(default)s)"
    )
    p.add_argument(
        "--default-mode",
        choices=INJECTION_MODES,
        default="sidecar",
        help="injection mode of pods without a secrets-agent.io/mode annotation (default: %(default)s)",
    )
    p.add_argument("--project", help="default project for short secret references (default: none)")
    for attr, flag in _RESOURCE_FLAGS.items():
        p.add_argument(
            flag,
            default=getattr(defaults, attr),
            metavar="QUANTITY",
            help=f"of each injected container, 'none' to leave it out (default: {getattr(defaults, attr)})",
        )
    p.add_argument(
        "--volume-size",
        default="16Mi",
        metavar="QUANTITY",
        help="sizeLimit of the memory volume (default: 16Mi)",
    )
    p.add_argument(
        "--shutdown-delay",
        default="5s",
        metavar="DURATION",
        help="keep answering this long after SIGTERM while endpoints are updated (default: %(default)s)",
    )
    p.add_argument(
        "--resolve-selections",
        action="store_true",
        help="list the selections of pods (secrets-agent.io/select-<name>) at admission and inject the ids "
        "they match (select[].known), so that their agents start without listing; needs the webhook's own "
        "identity to hold secretmanager.secrets.list (roles/secretmanager.viewer) on the projects, and "
        "egress to Secret Manager (default: off)",
    )
    p.add_argument(
        "--secret-manager-endpoint",
        metavar="HOST:PORT",
        help=f"where listings go: a loopback address is the plaintext emulator, any other gets TLS and the "
        f"webhook's credentials (default: ${EMULATOR_HOST_ENV}, else Google)",
    )
    p.add_argument(
        "--selection-cache-ttl",
        default="60s",
        metavar="DURATION",
        help="how long a listing is served before it is refreshed (default: %(default)s)",
    )
    p.add_argument(
        "--listings-per-minute",
        type=int,
        default=30,
        metavar="N",
        help="most listings this replica makes in any minute, all pods together (default: %(default)s)",
    )
    p.add_argument(
        "--listing-timeout",
        default="2s",
        metavar="DURATION",
        help=f"how long a review waits for a listing it has none of, at most {MAX_LISTING_TIMEOUT:g}s "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--fleet-size",
        type=int,
        metavar="N",
        help="written as fleet.size into the configuration of every pod with a selection, for the agents' "
        "relist_interval: auto and start jitter (default: not written)",
    )
    p.add_argument("--log-level", default="info", choices=LOG_LEVELS, help="default: %(default)s")
    p.add_argument(
        "--log-format",
        default="auto",
        choices=("auto", "json", "text"),
        help="auto (default): text when stderr is a terminal, json otherwise (a pod's log)",
    )
    p.set_defaults(command="webhook", run=run)
    return p


def options_from(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> WebhookOptions:
    """The WebhookOptions the flags ask for (``environ``: ``SECRET_MANAGER_EMULATOR_HOST``, default the
    process's); raises ConfigError naming every bad flag."""
    environ = os.environ if environ is None else environ
    problems: list[Problem] = []

    def check(flag: str, ok: bool, message: str) -> None:
        if not ok:
            problems.append(Problem(flag, message))

    try:
        split_listen(args.listen)
    except ValueError:
        problems.append(Problem("--listen", f"expected HOST:PORT such as 0.0.0.0:8443, got {args.listen!r}"))
    durations: dict[str, float] = {}
    for flag, name, parse in (
        ("--tls-reload-interval", "tls_reload_interval", parse_duration),
        ("--shutdown-delay", "shutdown_delay", parse_delay),  # 0: stop at once
        ("--selection-cache-ttl", "selection_cache_ttl", parse_duration),
        ("--listing-timeout", "listing_timeout", parse_duration),
    ):
        try:
            durations[name] = parse(getattr(args, name))
        except ValueError as error:
            problems.append(Problem(flag, str(error)))
    resources: dict[str, str | None] = {}
    for attr, flag in _RESOURCE_FLAGS.items():
        value = getattr(args, attr)
        resources[attr] = None if value is None or value.lower() == "none" else value
        if resources[attr] is not None:
            try:
                parse_quantity(str(resources[attr]))
            except ValueError as error:
                problems.append(Problem(flag, str(error)))
    try:
        parse_quantity(args.volume_size)
    except ValueError as error:
        problems.append(Problem("--volume-size", str(error)))
    check(
        "--image",
        bool(args.image) and not any(c.isspace() for c in args.image),
        "expected an image reference",
    )
    if args.project is not None and (problem := project_problem(args.project)):
        problems.append(Problem("--project", problem))
    if "listing_timeout" in durations:
        check(
            "--listing-timeout",
            durations["listing_timeout"] <= MAX_LISTING_TIMEOUT,
            f"at most {MAX_LISTING_TIMEOUT:g}s: a review must be answered within the API server's timeout",
        )
    check("--listings-per-minute", args.listings_per_minute >= 1, "expected a whole number >= 1")
    check("--fleet-size", args.fleet_size is None or args.fleet_size >= 1, "expected a whole number >= 1")
    endpoint = args.secret_manager_endpoint or environ.get(EMULATOR_HOST_ENV) or None
    if endpoint is not None:
        try:
            split_listen(endpoint)
        except ValueError:
            flag = "--secret-manager-endpoint" if args.secret_manager_endpoint else EMULATOR_HOST_ENV
            problems.append(Problem(flag, f"expected HOST:PORT such as 127.0.0.1:8780, got {endpoint!r}"))
    if problems:
        raise ConfigError(problems)
    resolver = None
    if args.resolve_selections:
        resolver = ResolverSettings(
            endpoint=endpoint,
            cache_ttl=durations["selection_cache_ttl"],
            listings_per_minute=args.listings_per_minute,
            listing_timeout=durations["listing_timeout"],
        )
    injector = InjectorSettings(
        image=args.image,
        default_mode=args.default_mode,
        project=args.project,
        resources=Resources(**resources),
        volume_size=args.volume_size,
        fleet_size=args.fleet_size,
    )
    return WebhookOptions(
        listen=args.listen,
        cert_file=args.tls_cert_file,
        key_file=args.tls_key_file,
        injector=injector,
        reload_interval=durations["tls_reload_interval"],
        shutdown_delay=durations["shutdown_delay"],
        resolver=resolver,
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM; 0 after a clean stop. Bad flags raise ConfigError (exit 2), a certificate that
    cannot be loaded raises an AgentError (exit 1): the CLI prints either as one line."""
    from agent.observe.logs import configure_logging
    from agent.webhook.server import run_webhook

    options = options_from(args)
    configure_logging(args.log_level, args.log_format)
    asyncio.run(run_webhook(options))
    return 0
