"""``secrets-agent webhook``: flags -> WebhookOptions -> the server. Nothing else."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from agent.config import LOG_LEVELS, parse_delay, parse_duration, split_listen
from agent.config.refs import project_problem
from agent.errors import ConfigError, Problem
from agent.webhook.quantity import parse_quantity
from agent.webhook.settings import DEFAULT_IMAGE, INJECTION_MODES, InjectorSettings, Resources, WebhookOptions

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
    p.add_argument("--log-level", default="info", choices=LOG_LEVELS, help="default: %(default)s")
    p.add_argument(
        "--log-format",
        default="auto",
        choices=("auto", "json", "text"),
        help="auto (default): text when stderr is a terminal, json otherwise (a pod's log)",
    )
    p.set_defaults(command="webhook", run=run)
    return p


def options_from(args: argparse.Namespace) -> WebhookOptions:
    """The WebhookOptions the flags ask for; raises ConfigError naming every bad flag."""
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
    if problems:
        raise ConfigError(problems)
    injector = InjectorSettings(
        image=args.image,
        default_mode=args.default_mode,
        project=args.project,
        resources=Resources(**resources),
        volume_size=args.volume_size,
    )
    return WebhookOptions(
        listen=args.listen,
        cert_file=args.tls_cert_file,
        key_file=args.tls_key_file,
        injector=injector,
        reload_interval=durations["tls_reload_interval"],
        shutdown_delay=durations["shutdown_delay"],
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
