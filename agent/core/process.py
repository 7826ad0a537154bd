"""The one child-process helper: end a program's whole session, and say how a program ended.

Programs the agent starts (notify commands, rotation commands, the ``exec --watch`` child) run in their own
session (``start_new_session=True``), so that killing the process group also kills whatever they started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from typing import Any

PIPE_DRAIN_TIMEOUT = 2.0
"""Seconds to wait for a killed program's pipes to reach end of file."""


def kill_group(pgid: int) -> None:
    """SIGKILL the process group ``pgid``; a group already gone (or not ours any more) is not an error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def signal_name(number: int) -> str:
    """``SIGHUP`` for 1; ``signal 99`` for a number Python has no name for."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def describe_exit(returncode: int) -> str:
    """How a program ended, from an asyncio/subprocess return code (negative: killed by that signal)."""
    if returncode < 0:
        return f"was killed by {signal_name(-returncode)}"
    return f"exited with status {returncode}"


async def kill_session(process: asyncio.subprocess.Process, io: asyncio.Future[Any] | None = None) -> None:
    """Kill ``process`` and its session, reap it, then give ``io`` (the task reading its pipes) a bounded
    time to finish before cancelling it.

    After the group kill the pipes normally reach EOF at once; a process that escaped the session could
    keep them open, so the wait is bounded rather than hanging the caller.
    """
    kill_group(process.pid)
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    await process.wait()
    if io is None:
        return
    try:
        async with asyncio.timeout(PIPE_DRAIN_TIMEOUT):
            await io
    except (TimeoutError, asyncio.CancelledError):
        pass
    finally:
        io.cancel()
