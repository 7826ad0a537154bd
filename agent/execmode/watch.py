"""``exec --watch``: a small supervisor in the manner of tini and dumb-init.

Every catchable signal it receives goes to the app, orphans reparented to it are reaped, it exits with the
app's status, and on rotation it restarts the app with the new environment (or sends it a signal).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType

from agent.core.process import kill_group, signal_name
from agent.execmode.launch import (
    ExecError,
    shell_exit_status,
    spawn,
)

log = logging.getLogger(__name__)


_NOT_FORWARDED = frozenset(
    {
        signal.SIGKILL,
        signal.SIGSTOP,  # cannot be caught
        signal.SIGCHLD,  # ours: reaping
        # Synchronous faults concern the process they happen in, not the app.
        signal.SIGSEGV,
        signal.SIGBUS,
        signal.SIGILL,
        signal.SIGFPE,
        signal.SIGABRT,
        signal.SIGTRAP,
        signal.SIGSYS,
        # About our own writes and file sizes.
        signal.SIGPIPE,
        signal.SIGXFSZ,
        signal.SIGXCPU,
        # Terminal job control: the app has no controlling terminal (own session), and stopping it while
        # we keep running would only confuse the terminal; we keep the default behaviour for ourselves.
        signal.SIGTSTP,
        signal.SIGTTIN,
        signal.SIGTTOU,
    }
)

FORWARDED_SIGNALS: frozenset[int] = frozenset(int(s) for s in signal.valid_signals()) - {
    int(s) for s in _NOT_FORWARDED
}
"""Every signal a supervisor passes on: SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1/2, SIGWINCH, SIGALRM,
SIGCONT, SIGURG, the real-time signals, ... (all catchable ones but faults, SIGPIPE/SIGXFSZ/SIGXCPU and
terminal job control)."""

STOP_SIGNALS = frozenset({int(signal.SIGTERM), int(signal.SIGINT), int(signal.SIGQUIT)})
"""After forwarding one of these, the supervisor stops restarting the app on rotation."""

_PR_GET_CHILD_SUBREAPER = 37


def is_reaper() -> bool:
    """True when orphans are reparented to us: we are PID 1, or a child subreaper (Linux prctl)."""
    if os.getpid() == 1:
        return True
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        flag = ctypes.c_int(0)
        if libc.prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0) != 0:
            return False
        return flag.value != 0
    except (OSError, AttributeError):
        return False


@dataclass(eq=False)
class _Child:
    pid: int
    exited: asyncio.Future[int]
    """Resolves with the shell-style exit status once reaped."""
    replacing: bool = False
    """True once we decided to stop it ourselves (rotation): its exit is not the supervisor's exit."""


class WatchedChild:
    """Runs the app as a child and supervises it (``exec --watch``).

    Use as ``async with WatchedChild(...) as child: status = await child.wait()``; call
    ``await child.rotated(new_env)`` after each snapshot swap. Entering installs signal handlers (in the
    main thread's running loop) and starts the child; leaving stops the child if it still runs
    (SIGTERM, ``grace`` seconds, then SIGKILL to its whole process group) and restores the handlers.

    Signals go to the app's process only (as tini does without ``-g``): the app decides what its own
    workers get. The app runs in its own session, without a controlling terminal. When the app exits, or is
    replaced, whatever it left in its process group is killed: those processes hold the old secrets.

    ``env_factory`` gives the environment of the first start (and of restarts without a new one).
    ``reload_signal``: on rotation, send this instead of restarting (the environment stays the old one).
    ``forward``: the signals passed on (default ``FORWARDED_SIGNALS``). ``reap_orphans``: reap every
    child that is not ours (default: when ``is_reaper()``); only do that when this process starts no
    other subprocesses, since their exit statuses would be taken from their owners.
    """

    def __init__(
        self,
        argv: Sequence[str],
        env_factory: Callable[[], Mapping[str, str]],
        reload_signal: signal.Signals | None = None,
        grace: float = 10.0,
        *,
        forward: Collection[int] = FORWARDED_SIGNALS,
        reap_orphans: bool | None = None,
    ) -> None:
        if not argv:
            raise ValueError("WatchedChild needs a command")
        self.argv = tuple(argv)
        self.reload_signal = reload_signal
        self.grace = grace
        self._env_factory = env_factory
        self._forward = frozenset(int(s) for s in forward) - {
            int(s) for s in (signal.SIGKILL, signal.SIGSTOP)
        }
        self._reap_orphans = reap_orphans
        self._child: _Child | None = None
        self._retiring: list[_Child] = []
        self._status: asyncio.Future[int] | None = None
        self._stopping = False
        self._restart_lock = asyncio.Lock()
        self._previous_handlers: dict[int, object] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.restarts = 0
        """How many times the app was restarted for a rotation."""
        self.orphans_reaped = 0
        """How many processes that were not our child we reaped (as PID 1 or subreaper)."""

    # -- lifecycle --------------------------------------------------------------------------------

    async def __aenter__(self) -> WatchedChild:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self.running:
                await self.stop()
        finally:
            self.close()

    async def start(self) -> int:
        """Install the handlers and start the app; returns its pid. ExecError when it cannot start."""
        if self._loop is not None:
            raise RuntimeError("WatchedChild already started")
        self._loop = asyncio.get_running_loop()
        self._status = self._loop.create_future()
        if self._reap_orphans is None:
            self._reap_orphans = is_reaper()
        # SIGCHLD first: a child that dies at once must still be noticed.
        self._install(signal.SIGCHLD, self._reap)
        for sig in sorted(self._forward):
            self._install(sig, self.forward, sig)
        # A signal storm fills asyncio's wake-up socket, and CPython then reports each byte it could not
        # write from inside its C signal handler, which can deadlock the process: drop those silently.
        with contextlib.suppress(ValueError):  # not the main thread: no handler was installed either
            signal.set_wakeup_fd(signal.set_wakeup_fd(-1), warn_on_full_buffer=False)
        try:
            return self._spawn(self._env_factory()).pid
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Restore the signal handlers that were there before ``start()``. Idempotent."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        for sig, previous in self._previous_handlers.items():
            loop.remove_signal_handler(sig)
            if previous is not None:
                with contextlib.suppress(OSError, ValueError, TypeError):
                    signal.signal(sig, previous)  # type: ignore[arg-type]
        self._previous_handlers.clear()

    def _install(self, sig: int, callback: Callable[..., object], *args: object) -> None:
        assert self._loop is not None
        previous = signal.getsignal(sig)
        try:
            self._loop.add_signal_handler(sig, callback, *args)
        except (OSError, RuntimeError, ValueError) as error:
            log.debug("cannot handle %s: %s", signal_name(sig), error)
            return
        self._previous_handlers[sig] = previous

    # -- state ------------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """Pid of the current app process (None before start and between a stop and a restart)."""
        child = self._child
        return None if child is None or child.exited.done() else child.pid

    @property
    def running(self) -> bool:
        """True while the current app process has not been reaped."""
        return self.pid is not None

    @property
    def stopping(self) -> bool:
        """True once a stop signal was forwarded or ``stop()`` was called: no more restarts."""
        return self._stopping

    async def wait(self) -> int:
        """The exit status of the app once it ends on its own or after a forwarded stop signal.

        Restarts for rotation do not count. Shell-style: 128 + N after death by signal N. An app that
        ignores a forwarded SIGTERM keeps the supervisor waiting, as with tini: the kubelet's SIGKILL after
        ``terminationGracePeriodSeconds`` ends both.
        """
        if self._status is None:
            raise RuntimeError("WatchedChild not started")
        return await asyncio.shield(self._status)

    # -- signals and reaping --------------------------------------------------------------------------

    def forward(self, sig: int) -> None:
        """Pass ``sig`` on to the app (the handler of every forwarded signal)."""
        if sig in STOP_SIGNALS:
            self._stopping = True
        child = self._child
        if child is None or child.exited.done():
            log.info("received %s while the app is not running; not forwarded", signal_name(sig))
            return
        try:
            os.kill(child.pid, sig)
        except ProcessLookupError:  # exited, not reaped yet: its SIGCHLD is on the way
            return
        log.debug("forwarded %s to pid %d", signal_name(sig), child.pid)

    def _reap(self) -> None:
        """SIGCHLD: collect our children's statuses; as a reaper, also every orphan's."""
        ours = {c.pid: c for c in (self._child, *self._retiring) if c is not None and not c.exited.done()}
        if self._reap_orphans:
            while True:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                if pid in ours:
                    self._exited(ours[pid], shell_exit_status(status))
                else:
                    self.orphans_reaped += 1
                    log.debug("reaped orphan pid %d", pid)
            return
        # Not a reaper: wait only for our own pids, so the statuses of any other subprocess of this
        # process stay with whoever started it.
        for pid, child in ours.items():
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                log.warning("the status of pid %d was collected elsewhere; reporting 255", pid)
                self._exited(child, 255)
                continue
            if done:
                self._exited(child, shell_exit_status(status))

    def _exited(self, child: _Child, status: int) -> None:
        child.exited.set_result(status)
        if child in self._retiring:
            self._retiring.remove(child)
        if child.replacing:
            log.info("app pid %d stopped for restart (status %d)", child.pid, status)
            return
        log.info("app pid %d exited with status %d", child.pid, status)
        assert self._status is not None
        if not self._status.done():
            self._status.set_result(status)
        # Anything it left in its process group would outlive it with the old secrets.
        kill_group(child.pid)

    def _spawn(self, env: Mapping[str, str]) -> _Child:
        assert self._loop is not None
        pid = spawn(self.argv, env)
        child = _Child(pid, self._loop.create_future())
        self._child = child
        # No race with SIGCHLD: the loop runs signal callbacks later, when this child is registered.
        log.info("started app pid %d: %s", pid, self.argv[0])
        return child

    # -- rotation and stopping --------------------------------------------------------------------

    async def rotated(self, new_env: Mapping[str, str] | None = None) -> None:
        """Deliver a rotation: send ``reload_signal``, or restart the app with ``new_env``.

        Ignored once stopping or after the app exited on its own (the supervisor is about to exit). If the
        new process cannot be started, ``wait()`` returns 126/127.
        """
        if new_env is not None:
            frozen = dict(new_env)
            self._env_factory = lambda: frozen
        if self._stopping or self._status is None or self._status.done():
            return
        if self.reload_signal is not None:
            child = self._child
            if child is not None and not child.exited.done():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, self.reload_signal)
                    log.info("sent %s to app pid %d", self.reload_signal.name, child.pid)
            return
        async with self._restart_lock:
            if self._stopping or self._status.done():
                return
            await self._restart()

    async def _restart(self) -> None:
        old = self._child
        assert old is not None
        assert self._status is not None
        old.replacing = True
        self._retiring.append(old)
        status = await self._terminate(old)
        kill_group(old.pid)
        if self._stopping:  # a stop signal arrived while we were replacing it: that is the outcome
            if not self._status.done():
                self._status.set_result(status)
            return
        try:
            self._spawn(self._env_factory())
        except ExecError as error:
            log.error("cannot restart the app: %s", error)
            if not self._status.done():
                self._status.set_result(error.exit_status)
            return
        self.restarts += 1

    async def _terminate(self, child: _Child) -> int:
        """SIGTERM, ``grace`` seconds, then SIGKILL to its process group; returns the exit status."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(self.grace):
                return await asyncio.shield(child.exited)
        except TimeoutError:
            log.warning("app pid %d ignored SIGTERM for %gs; killing it", child.pid, self.grace)
        kill_group(child.pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGKILL)
        return await asyncio.shield(child.exited)

    async def stop(self) -> int:
        """Stop the app (SIGTERM, ``grace``, SIGKILL) and return its exit status."""
        self._stopping = True
        child = self._child
        if child is None:
            raise RuntimeError("WatchedChild not started")
        if not child.exited.done():
            await self._terminate(child)
        return await self.wait()
