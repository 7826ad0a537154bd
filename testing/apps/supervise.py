"""Runs ``agent.execmode.watch.WatchedChild`` as its own process, as ``secrets-agent exec --watch`` will.

``python testing/apps/supervise.py --status FILE [--subreaper] [--reload-signal NAME] [--grace S] -- CMD...``

Writes ``{"pid", "child", "reaper"}`` to FILE once the child runs (atomically), supervises the child with
this process's environment, and exits with the child's shell-style status. ``--subreaper`` makes this
process a Linux child subreaper first, so orphans are reparented to it as they would be to PID 1.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import logging
import os
import signal
import sys
from pathlib import Path

from agent.execmode.launch import ExecError
from agent.execmode.watch import WatchedChild, is_reaper

PR_SET_CHILD_SUBREAPER = 36


async def supervise(args: argparse.Namespace) -> int:
    reload_signal = signal.Signals[args.reload_signal] if args.reload_signal else None
    child = WatchedChild(args.command, lambda: dict(os.environ), reload_signal, args.grace)
    try:
        async with child:
            tmp = args.status.with_suffix(".tmp")
            tmp.write_text(json.dumps({"pid": os.getpid(), "child": child.pid, "reaper": is_reaper()}))
            tmp.rename(args.status)
            status = await child.wait()
            print(json.dumps({"orphans_reaped": child.orphans_reaped}), file=sys.stderr, flush=True)
            return status
    except ExecError as error:
        print(f"secrets-agent: {error}", file=sys.stderr)
        return error.exit_status


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--status", type=Path, required=True)
    parser.add_argument("--subreaper", action="store_true")
    parser.add_argument("--reload-signal")
    parser.add_argument("--grace", type=float, default=5.0)
    parser.add_argument("command", nargs="+")
    args = parser.parse_args()
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    if args.subreaper:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    return asyncio.run(supervise(args))


if __name__ == "__main__":
    sys.exit(main())
