"""``python -m bench.fleet``: ``run [--quick]`` (the default) measures the fleet and prints its tables;
``selections [--quick]`` only the fleet with selections (restart, steady state, ``rotate all``);
``restart [--quick] [--concurrency 32,default] [--spread 60,1]`` only the fleet restarts, for each
concurrency and window given; ``worker ...`` is one slice of the fleet, started by the benchmark itself
(``driver.fleet_workers``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from bench.fleet import main
from bench.fleet.report import print_restart_table
from bench.fleet.scenarios import measure_restarts
from bench.fleet.selections import measure_selections
from bench.fleet.selections_report import print_selection_tables
from bench.fleet.worker import run_worker
from bench.fleet.world import RESTART_SPREAD, SECRETS


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
    worker.add_argument("--concurrency", type=int, default=None)
    worker.add_argument("--restart", action="store_true", help="init containers restarting (no polling)")
    worker.add_argument("--config-dir", default=None, help="each agent's configuration file, agent-NNNN.yaml")
    worker.add_argument("--flags", default="{}", help="more settings, JSON: config path -> value")
    sub.add_parser("run", help="the benchmark (default)").add_argument("--quick", action="store_true")
    restart = sub.add_parser("restart", help="only fleet restarts, for several concurrencies and windows")
    restart.add_argument("--quick", action="store_true")
    restart.add_argument(
        "--concurrency", default="default", help="comma-separated, e.g. 32,default (default: default)"
    )
    restart.add_argument("--spread", default=f"{RESTART_SPREAD:g}", help="windows in seconds, e.g. 60,1")
    selections = sub.add_parser("selections", help="only the fleet with selections")
    selections.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "selections":
        print_selection_tables(measure_selections(args.quick))
    elif args.command == "restart":
        concurrencies = [None if c == "default" else int(c) for c in args.concurrency.split(",")]
        spreads = [float(s) for s in args.spread.split(",")]
        print_restart_table(measure_restarts(args.quick, concurrencies, spreads))
    elif args.command == "worker":
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        asyncio.run(run_worker(args))
    else:
        main(getattr(args, "quick", False))


if __name__ == "__main__":
    _cli(sys.argv[1:])
