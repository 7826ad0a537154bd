"""Telling the app that its secrets changed: a signal, an HTTP POST, or a command, debounced and retried.

Notifiers run after a snapshot swap has succeeded; a failing notifier is logged and retried but never rolls
the files back (the new secrets are on disk either way). Notifiers only ever see the *versions* of the
secrets (local name -> version number), never their values, so everything they say may be logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal as signals
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from agent.core.retry import Backoff
from agent.errors import AgentError, NotifyError
from agent.notify import procfind

log = logging.getLogger(__name__)

VERSIONS_ENV = "SECRETS_AGENT_VERSIONS"
"""Environment variable through which a command notifier receives the versions, as a JSON object."""

EVENT_NAME = "secrets-rotated"
"""The ``event`` field of the HTTP notifier's JSON body."""

OUTPUT_LOG_LIMIT = 4096
"""Bytes of a command notifier's output that are logged; the rest is read and dropped."""


class Notifier(Protocol):
    """One way of telling the app to reload."""

    name: str
    """``signal``, ``http`` or ``command``: used in logs and metric labels."""

    async def notify(self, versions: Mapping[str, str]) -> None:
        """Tell the app; raise NotifyError (whose text never holds a secret value) when that failed."""
        ...


# --------------------------------------------------------------------------------------------------
# Signal
# --------------------------------------------------------------------------------------------------


def compile_process_pattern(text: str) -> re.Pattern[str]:
    """The regex a SignalNotifier searches command lines with; ValueError (user-facing text) if invalid."""
    if not text:
        raise ValueError("the process pattern must not be empty (it would match every process)")
    try:
        return re.compile(text)
    except re.error as error:
        raise ValueError(f"invalid regular expression {text!r}: {error}") from None


class SignalNotifier:
    """Sends a signal (default SIGHUP) to the app, found by pid file and/or command-line pattern.

    With only ``process``, every process whose space-joined argv the regex *searches* successfully is
    signalled (the agent itself never is). With only ``pid_file``, the pid it holds. With both, the pid
    from the file must also match the pattern: a stale pid file whose pid was reused by another process
    is then an error instead of a stray signal.
    """

    name = "signal"

    def __init__(
        self,
        signal: signals.Signals = signals.SIGHUP,
        pid_file: Path | None = None,
        process: str | None = None,
        *,
        proc: Path = procfind.PROC,
    ) -> None:
        if pid_file is None and process is None:
            raise ValueError("SignalNotifier needs a pid_file or a process pattern")
        self.signal = signal
        self.pid_file = pid_file
        self.process = process
        self._pattern = compile_process_pattern(process) if process is not None else None
        self._proc = proc

    def _target_description(self) -> str:
        parts = []
        if self.pid_file is not None:
            parts.append(f"pid file {self.pid_file}")
        if self.process is not None:
            parts.append(f"process pattern {self.process!r}")
        return " and ".join(parts)

    def _targets(self) -> list[int]:
        if self.pid_file is None:
            assert self._pattern is not None
            pids = procfind.matching_pids(self._pattern, proc=self._proc)
            if not pids:
                raise NotifyError(f"{self.signal.name}: no process matches {self.process!r}")
            return pids
        pid = procfind.read_pid_file(self.pid_file)
        if pid == os.getpid():
            # SIGHUP to ourselves would mean "refresh now": a loop, never a reload of the app.
            raise NotifyError(f"{self.signal.name}: pid file {self.pid_file} names the agent itself")
        if self._pattern is not None:
            line = procfind.command_line(pid, self._proc)
            if line is None or not self._pattern.search(line):
                raise NotifyError(
                    f"{self.signal.name}: pid {pid} from {self.pid_file} is not running or does not "
                    f"match {self.process!r} (stale pid file?)"
                )
        return [pid]

    async def notify(self, versions: Mapping[str, str]) -> None:
        """Signal every target; NotifyError if none could be signalled or one refused (EPERM)."""
        pids = await asyncio.to_thread(self._targets)
        delivered: list[int] = []
        gone: list[int] = []
        denied: list[int] = []
        for pid in pids:
            try:
                os.kill(pid, self.signal)
            except ProcessLookupError:  # exited between the lookup and the kill
                gone.append(pid)
            except PermissionError:
                denied.append(pid)
            else:
                delivered.append(pid)
        if denied:
            raise NotifyError(
                f"{self.signal.name}: not permitted to signal pid {_pids(denied)} "
                f"({self._target_description()}); run the agent as the app's user or with CAP_KILL"
            )
        if not delivered:
            raise NotifyError(
                f"{self.signal.name}: pid {_pids(gone)} ({self._target_description()}) exited before it "
                "could be signalled"
            )
        if len(delivered) > 1:
            log.info("sent %s to %d processes (pids %s)", self.signal.name, len(delivered), _pids(delivered))
        else:
            log.info("sent %s to pid %d", self.signal.name, delivered[0])


def _pids(pids: Sequence[int]) -> str:
    return ", ".join(str(p) for p in pids)


# --------------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------------


def redact_url(url: str) -> str:
    """``url`` without user info, query or fragment: those may carry tokens and must not be logged."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<invalid URL>"
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class HttpNotifier:
    """POSTs ``{"event": "secrets-rotated", "versions": {...}}`` as JSON to ``url``.

    Each attempt is bounded by ``timeout`` seconds. A non-2xx answer (redirects are not followed) or a
    connection error is retried up to ``retries`` more times with full-jitter ``backoff``; after that,
    NotifyError names the URL (without user info or query) and the last status.
    """

    name = "http"

    def __init__(
        self, url: str, timeout: float = 5.0, retries: int = 2, *, backoff: Backoff | None = None
    ) -> None:
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.url = url
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff or Backoff(initial=0.5, maximum=5.0)
        self._shown_url = redact_url(url)

    async def notify(self, versions: Mapping[str, str]) -> None:
        """POST the versions; NotifyError after ``1 + retries`` failed attempts."""
        body = {"event": EVENT_NAME, "versions": dict(versions)}
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        outcome = ""
        async with aiohttp.ClientSession(timeout=timeout, headers={"User-Agent": "secrets-agent"}) as session:
            for attempt in range(self.retries + 1):
                if attempt:
                    await asyncio.sleep(self.backoff.delay(attempt - 1))
                outcome = await self._attempt(session, body)
                if not outcome:
                    log.info("POST %s accepted the rotation notice", self._shown_url)
                    return
                if attempt < self.retries:
                    log.warning("POST %s failed (%s); retrying", self._shown_url, outcome)
        attempts = self.retries + 1
        raise NotifyError(
            f"POST {self._shown_url} failed after {attempts} attempt{'s' if attempts > 1 else ''}: {outcome}"
        )

    async def _attempt(self, session: aiohttp.ClientSession, body: object) -> str:
        """'' on success, else a short description of what went wrong (status or error kind)."""
        try:
            async with session.post(self.url, json=body, allow_redirects=False) as response:
                # Read (and drop) the body so the connection is released cleanly; it is never logged,
                # since an app might echo what it was sent or something else we have no business printing.
                await response.read()
                if 200 <= response.status < 300:
                    return ""
                return f"HTTP {response.status}"
        except TimeoutError:
            return f"no answer within {self.timeout:g}s"
        except aiohttp.ClientConnectorError as error:
            return f"cannot connect ({error.os_error.strerror or type(error.os_error).__name__})"
        except aiohttp.ClientError as error:
            return type(error).__name__


# --------------------------------------------------------------------------------------------------
# Command
# --------------------------------------------------------------------------------------------------


class CommandNotifier:
    """Runs ``argv`` (no shell) with ``SECRETS_AGENT_VERSIONS`` set to the versions as JSON.

    The command inherits the agent's environment plus that variable, runs in its own session (so a timeout
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
        env = dict(os.environ)
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
            _kill_group(process.pid)
            await process.wait()
            await _finish_reader(reader)
            raise NotifyError(
                f"command {program!r} did not finish within {self.timeout:g}s; killed"
            ) from None
        except BaseException:  # cancelled: leave nothing running behind us
            _kill_group(process.pid)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            await _finish_reader(reader)
            raise
        _log_output(program, head, total)
        if status != 0:
            raise NotifyError(f"command {program!r} {_describe_status(status)}")


async def _read_head(stream: asyncio.StreamReader, limit: int) -> tuple[bytes, int]:
    """The first ``limit`` bytes of ``stream`` and its total length; reads to EOF so the pipe closes."""
    head = bytearray()
    total = 0
    while chunk := await stream.read(65536):
        total += len(chunk)
        if len(head) < limit:
            head += chunk[: limit - len(head)]
    return bytes(head), total


async def _finish_reader(reader: asyncio.Task[tuple[bytes, int]]) -> None:
    # After a group kill the pipe normally hits EOF at once; a process that escaped the session could
    # keep it open, so bound the wait rather than hang the coordinator.
    try:
        async with asyncio.timeout(2.0):
            await reader
    except TimeoutError:
        pass
    finally:
        reader.cancel()


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signals.SIGKILL)


def _describe_status(status: int) -> str:
    if status < 0:
        try:
            return f"was killed by {signals.Signals(-status).name}"
        except ValueError:
            return f"was killed by signal {-status}"
    return f"exited with status {status}"


def _log_output(program: str, head: bytes, total: int) -> None:
    if not total:
        return
    text = head.decode("utf-8", "replace").rstrip()
    if total > len(head):
        log.info("command %r output (first %d of %d bytes): %s", program, len(head), total, text)
    else:
        log.info("command %r output: %s", program, text)


# --------------------------------------------------------------------------------------------------
# Coordination: debounce, fan out, retry
# --------------------------------------------------------------------------------------------------

ResultHook = Callable[[str, bool], None]
"""``on_result(notifier_name, ok)``: called after every attempt of every notifier (for metrics)."""


class ReloadCoordinator:
    """Turns bursts of snapshot swaps into one notification per notifier, retried until delivered.

    ``request(versions)`` is called (in the event loop's thread) after each successful swap. ``run()``
    waits until ``debounce`` seconds pass without a new request (capped at ``max_delay`` after the first
    one, so a steady stream of swaps cannot starve the app), then runs every notifier concurrently with the
    latest versions. A failing notifier is retried on its own with ``backoff`` up to ``max_attempts``
    attempts; a new request arriving meanwhile supersedes the retries, since the next round notifies
    everyone with newer versions anyway.
    """

    def __init__(
        self,
        notifiers: Sequence[Notifier],
        *,
        debounce: float,
        backoff: Backoff,
        max_attempts: int,
        max_delay: float | None = None,
        on_result: ResultHook | None = None,
        on_delivered: Callable[[Mapping[str, str]], None] | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.notifiers = tuple(notifiers)
        self.debounce = debounce
        self.backoff = backoff
        self.max_attempts = max_attempts
        self.max_delay = max_delay if max_delay is not None else max(10 * debounce, 1.0)
        self.on_result = on_result
        self.on_delivered = on_delivered
        """Called with the versions once every notifier delivered them."""
        self._latest: dict[str, str] = {}
        self._requested = 0
        self._handled = 0
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def request(self, versions: Mapping[str, str]) -> None:
        """Ask for a notification with these versions; returns at once. Call it from the event loop."""
        self._latest = dict(versions)
        self._requested += 1
        self._idle.clear()
        self._wakeup.set()

    async def idle(self) -> None:
        """Return once every request made so far was delivered or given up (needs ``run()`` running)."""
        await self._idle.wait()

    async def run(self) -> None:
        """Deliver requests until cancelled; never raises anything else."""
        while True:
            await self._wakeup.wait()
            await self._quiet_period()
            versions, generation = self._latest, self._requested
            try:
                await self._deliver(versions)
            except Exception:  # a bug in a notifier must not stop future notifications
                log.exception("notifying the app failed unexpectedly")
            self._handled = generation
            if self._handled == self._requested:
                self._idle.set()

    async def _quiet_period(self) -> None:
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self.max_delay
        while True:
            self._wakeup.clear()
            window = min(self.debounce, give_up_at - loop.time())
            if window <= 0:
                return
            try:
                async with asyncio.timeout(window):
                    await self._wakeup.wait()
            except TimeoutError:
                return

    async def _deliver(self, versions: Mapping[str, str]) -> None:
        if not self.notifiers:
            return
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(self._deliver_one(notifier, versions), name=f"notify-{notifier.name}")
                for notifier in self.notifiers
            ]
        if self.on_delivered is not None and all(task.result() for task in tasks):
            self.on_delivered(versions)

    async def _deliver_one(self, notifier: Notifier, versions: Mapping[str, str]) -> bool:
        for attempt in range(1, self.max_attempts + 1):
            try:
                await notifier.notify(versions)
            except AgentError as error:
                problem = str(error)
            except Exception as error:
                problem = f"unexpected {type(error).__name__}"
                log.exception("%s notifier raised unexpectedly", notifier.name)
            else:
                self._report(notifier.name, True)
                return True
            self._report(notifier.name, False)
            if attempt == self.max_attempts:
                log.error(
                    "%s notifier gave up after %d attempts: %s", notifier.name, self.max_attempts, problem
                )
                return False
            log.warning(
                "%s notifier failed (attempt %d of %d): %s",
                notifier.name,
                attempt,
                self.max_attempts,
                problem,
            )
            if await self._superseded_within(self.backoff.delay(attempt - 1)):
                log.info("%s notifier: newer secrets arrived; the next round notifies again", notifier.name)
                return False
        return False  # not reached: the last attempt returns above

    async def _superseded_within(self, seconds: float) -> bool:
        """Wait ``seconds``; True early if a new request arrived (it will be delivered by the next round)."""
        try:
            async with asyncio.timeout(seconds):
                await self._wakeup.wait()
        except TimeoutError:
            return False
        return True

    def _report(self, name: str, ok: bool) -> None:
        if self.on_result is None:
            return
        try:
            self.on_result(name, ok)
        except Exception:  # metrics must never break notifications
            log.exception("on_result hook failed")
