"""The emulator's command line: ``secrets-agent emulator`` (through the agent's plugin entry point) and
``secrets-agent-emulator`` / ``python -m agent_emulator`` run the same parser.

Exit codes: 0 stopped cleanly, 1 could not start, 2 invalid seed, data or fault files or flags.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from agent.errors import AgentError, ConfigError
from agent_emulator.options import DEFAULT_GRPC_PORT, DEFAULT_HTTP_PORT, EmulatorOptions

EXIT_FAILURE = 1
EXIT_USAGE = 2


def build_parser(prog: str = "secrets-agent emulator") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
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
        quotas=args.quotas,
    )


def main(argv: Sequence[str] | None = None, prog: str = "secrets-agent-emulator") -> int:
    """Run the emulator until SIGINT/SIGTERM; returns the exit code."""
    options = parse_options(sys.argv[1:] if argv is None else argv, prog)
    # Imported here: parsing (and --help) does not load gRPC or the store.
    from agent_emulator.server import serve_forever

    try:
        return serve_forever(options)
    except ConfigError as error:
        for problem in error.problems:
            print(f"{prog}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except AgentError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE
