"""Running a command on rotation, in its own session, with the versions in ``SECRETS_AGENT_VERSIONS``."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence

from agent.config.childenv import child_environment
from agent.core.process import describe_exit, kill_session
from agent.errors import NotifyError
from agent.notify.base import VERSIONS_ENV

log = logging.getLogger(__name__)

OUTPUT_LOG_LIMIT = 4096
"""Bytes of a command notifier's output that are logged; the rest is read and dropped."""


class CommandNotifier:
    """Runs ``argv`` (no shell) with ``SECRETS_AGENT_VERSIONS`` set to the versions as JSON.

    The command inherits the agent's environment plus that variable, minus the credentials the agent holds
    (``agent.config.childenv``: the endpoint token, ``ADMIN_DSN``...), runs in its own session (so a timeout
    kills everything it started), and must exit 0 within ``timeout`` seconds. Its combined stdout/stderr is
    logged at info level, truncated to ``OUTPUT_LOG_LIMIT`` bytes. Beware: a command that prints secret
    values would put them into the agent's logs; the agent cannot tell, so don't write such commands.
    """

    name = "command"

    def __init__(self, argv: Sequence[str], timeout: float = 30.0) -> None:
        if not argv:
            raise ValueError("CommandNotifier needs a command")
        self.argv = tuple(argv)
        self.timeout = timeout

    async def notify(self, versions: Mapping[str, str]) -> None:
        """Run the command; NotifyError when it cannot start, times out or exits non-zero."""
        env = child_environment()
        env[VERSIONS_ENV] = json.dumps(dict(versions), sort_keys=True)
        program = self.argv[0]
        try:
            process = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        except FileNotFoundError:
            raise NotifyError(f"command {program!r} not found") from None
        except OSError as error:
            raise NotifyError(f"command {program!r} could not start: {error.strerror}") from None
        assert process.stdout is not None
        reader = asyncio.create_task(_read_head(process.stdout, OUTPUT_LOG_LIMIT))
        try:
            async with asyncio.timeout(self.timeout):
                status = await process.wait()
                head, total = await reader
        except TimeoutError:
            await kill_session(process, reader)
            raise NotifyError(
                f"command {program!r} did not finish within {self.timeout:g}s; killed"
            ) from None
        except BaseException:  # cancelled: leave nothing running behind us
            await kill_session(process, reader)
            raise
        _log_output(program, head, total)
        if status != 0:
            raise NotifyError(f"command {program!r} {describe_exit(status)}")


async def _read_head(stream: asyncio.StreamReader, limit: int) -> tuple[bytes, int]:
    """The first ``limit`` bytes of ``stream`` and its total length; reads to EOF so the pipe closes."""
    head = bytearray()
    total = 0
    while chunk := await stream.read(65536):
        total += len(chunk)
        if len(head) < limit:
            head += chunk[: limit - len(head)]
    return bytes(head), total


def _log_output(program: str, head: bytes, total: int) -> None:
    if not total:
        return
    text = head.decode("utf-8", "replace").rstrip()
    if total > len(head):
        log.info("command %r output (first %d of %d bytes): %s", program, len(head), total, text)
    else:
        log.info("command %r output: %s", program, text)
