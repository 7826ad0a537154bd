"""The emulator's command line, run as ``secrets-agent emulator`` (the agent finds ``main`` through the
``secrets_agent.commands`` entry point of this distribution).

Exit codes (printed and mapped by the agent's CLI): 0 stopped cleanly, 1 could not start (AgentError),
2 invalid seed, data or fault files or flags (ConfigError, every problem with its path).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from agent_emulator.options import DEFAULT_GRPC_PORT, DEFAULT_HTTP_PORT, EmulatorOptions


def port(text: str) -> int:
    """An argparse type: a TCP port number, 0..65535 (0 = any free port)."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a port number from 0 to 65535, got {text[:20]!r}"
        ) from None
    if not 0 <= value <= 65535:
        # gRPC would otherwise bind the port modulo 65536, and aiohttp raise OverflowError.
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, got {value}")
    return value


def build_parser(prog: str = "secrets-agent emulator") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Serve google.cloud.secretmanager.v1 over plaintext gRPC and REST/JSON from memory.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    p.add_argument(
        "--grpc-port", type=port, default=DEFAULT_GRPC_PORT, help="gRPC port, 0 = any (default: %(default)s)"
    )
    p.add_argument(
        "--http-port",
        type=port,
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
        "--identity",
        type=Path,
        help="YAML file of identity: STS providers, service accounts, access bindings, require_auth",
    )
    p.add_argument(
        "--quotas", action="store_true", help="enforce the service's per-minute quotas (90000/600/600)"
    )
    return p


def parse_options(argv: Sequence[str], prog: str = "secrets-agent emulator") -> EmulatorOptions:
    """The options a command line asks for (usage errors exit 2, as argparse does)."""
    args = build_parser(prog).parse_args(list(argv))
    return EmulatorOptions(
        host=args.host,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        seed=args.seed,
        data=args.data,
        faults=args.faults,
        fault_specs=tuple(args.fault),
        identity=args.identity,
        quotas=args.quotas,
    )


def main(argv: Sequence[str], prog: str = "secrets-agent emulator") -> int:
    """Run the emulator until SIGINT/SIGTERM; returns the exit code. Startup problems raise AgentError
    (ConfigError for bad files or flags), which the caller prints as one line each."""
    options = parse_options(argv, prog)
    # Imported here: parsing (and --help) does not load gRPC or the store.
    from agent_emulator.server import serve_forever

    return serve_forever(options)
