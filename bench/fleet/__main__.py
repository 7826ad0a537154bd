"""``python -m bench.fleet``: ``run [--quick]`` (the default) measures the fleet and prints its tables;
``worker ...`` is one slice of the fleet, started by the benchmark itself (``driver.fleet_workers``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from bench.fleet import main
from bench.fleet.worker import run_worker
from bench.fleet.world import SECRETS


def _cli(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet")
    sub = parser.add_subparsers(dest="command")
    worker = sub.add_parser("worker", help="a slice of the fleet (used by the benchmark)")
    worker.add_argument("--target", required=True)
    worker.add_argument("--first", type=int, required=True)
    worker.add_argument("--count", type=int, required=True)
    worker.add_argument("--work", required=True)
    worker.add_argument("--poll-interval", type=float, required=True)
    worker.add_argument("--spread", type=float, default=0.0)
    worker.add_argument("--secrets", type=int, default=SECRETS)
    worker.add_argument("--events", action="store_true")
    sub.add_parser("run", help="the benchmark (default)").add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "worker":
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        asyncio.run(run_worker(args))
    else:
        main(getattr(args, "quick", False))


if __name__ == "__main__":
    _cli(sys.argv[1:])
