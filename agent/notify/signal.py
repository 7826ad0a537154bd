"""Signalling the app: by pid file, by command-line pattern (``/proc``), or the pid given."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal as signals
from collections.abc import Mapping, Sequence
from pathlib import Path

from agent.errors import NotifyError
from agent.notify import procfind

log = logging.getLogger(__name__)


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
