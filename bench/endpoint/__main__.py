"""``python -m bench.endpoint``: without a command, the benchmark (its tables printed); ``serve``, ``load``
and ``watch`` are its child processes (a server, the fallback load generator, the long-poll watchers),
started by the benchmark itself.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from bench.endpoint import main
from bench.endpoint.client import load, watch
from bench.endpoint.serve import serve
from bench.endpoint.settings import CONNECTIONS, DURATION_SECONDS, WATCH_ROUNDS, WATCHERS


def _cli(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.endpoint")
    sub = parser.add_subparsers(dest="command")
    server = sub.add_parser("serve", help="a server process (used by the benchmark)")
    server.add_argument("--kind", choices=("agent", "bare"), required=True)
    server.add_argument("--no-audit", action="store_true")
    server.add_argument("--token", required=True)
    server.add_argument("--max-connections", type=int, default=128)
    server.add_argument("--count-requests", action="store_true", help="count requests in the handler")
    loader = sub.add_parser("load", help="the fallback load generator (used when wrk is absent)")
    watcher = sub.add_parser("watch", help="the long-poll watchers (used by the benchmark)")
    for client in (loader, watcher):
        client.add_argument("--port", type=int, required=True)
        client.add_argument("--token", required=True)
    loader.add_argument("--path", required=True)
    loader.add_argument("--connections", type=int, default=CONNECTIONS)
    loader.add_argument("--duration", type=float, default=DURATION_SECONDS)
    watcher.add_argument("--etag", required=True)
    watcher.add_argument("--watchers", type=int, default=WATCHERS)
    watcher.add_argument("--rounds", type=int, default=WATCH_ROUNDS)
    args = parser.parse_args(argv)
    if args.command == "serve":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        asyncio.run(
            serve(args.kind, not args.no_audit, args.token, args.max_connections, args.count_requests)
        )
    elif args.command == "load":
        asyncio.run(load("127.0.0.1", args.port, args.path, args.token, args.connections, args.duration))
    elif args.command == "watch":
        asyncio.run(watch("127.0.0.1", args.port, args.token, args.etag, args.watchers, args.rounds))
    else:
        main()


if __name__ == "__main__":
    _cli(sys.argv[1:])
