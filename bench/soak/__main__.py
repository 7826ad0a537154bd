"""``python -m bench.soak``: parse the flags, run the soak (or print its plan), print the table or the JSON.

Exit codes: 0 every invariant held, 1 one broke (or a part could not start), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from dataclasses import dataclass

import bench.soak
from agent.config import parse_duration
from bench.soak.plan import make_plan
from bench.soak.run import Options, run_soak
from bench.soak.world import log
from testing.soak_values import secret_set


@dataclass(frozen=True)
class Command:
    options: Options
    as_json: bool
    plan_only: bool


def parse_args(argv: list[str] | None) -> Command:
    description = (bench.soak.__doc__ or "").split("\n\n")[0]
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=description)
    parser.add_argument("--duration", default="10m", help="how long (30s, 10m, 1h); at least 20s")
    parser.add_argument("--seed", type=int, default=1, help="draws the schedule and the values (default 1)")
    parser.add_argument("--secrets", type=int, default=20, help="how many secrets (default 20, at least 3)")
    parser.add_argument("--converge-within", default="60s", help="convergence bound after faults stop")
    parser.add_argument("--json", action="store_true", help="print the result as JSON instead of the table")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs) even on success")
    parser.add_argument(
        "--plan",
        action="store_true",
        help="print the schedule these flags draw (as JSON, with a tmpfs of its own) and exit: nothing runs",
    )
    args = parser.parse_args(argv)
    try:
        duration = parse_duration(args.duration)
        converge = parse_duration(args.converge_within)
    except ValueError as error:
        parser.error(str(error))
    if duration < 20:
        parser.error(f"--duration must be at least 20s, got {args.duration}")
    if args.secrets < 3:
        parser.error(f"--secrets must be at least 3, got {args.secrets}")
    options = Options(duration, args.seed, args.secrets, converge, args.keep)
    return Command(options, bool(args.json), bool(args.plan))


def stop_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM unwinds the run like Ctrl-C: agent and emulators stopped, the tmpfs unmounted."""
    raise SystemExit(f"soak: stopped by {signal.Signals(signum).name}")


def main(argv: list[str] | None = None) -> int:
    command = parse_args(argv)
    options = command.options
    if command.plan_only:
        plan = make_plan(options.duration, options.seed, secret_set(options.secrets))
        print(json.dumps(plan.to_json(ticks=True), indent=2))
        return 0
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        result = run_soak(options)
    except RuntimeError as error:  # a part that could not start: one line, not a traceback
        log(f"error: {error}")
        return 1
    if command.as_json:
        print(json.dumps(result, indent=2))
    else:
        m = result["machine"]
        print(
            f"\nSoak: `python -m bench.soak --duration {options.duration:g}s --seed {options.seed} --secrets "
            f"{options.secrets}` on {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB"
        )
        for note in result["notes"]:
            print(f"note: {note}")
        print(result["table"])
        for name, tally in result["observers"].items():
            for example in tally["examples"]:
                print(f"{name}: {example}")
        if "work_dir" in result:
            print(f"logs, result.json (with the RSS samples): {result['work_dir']}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
