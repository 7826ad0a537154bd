"""The rotation lock: one small JSON annotation on the secret, written with the secret's etag.

The annotation ``secrets-agent-rotation`` holds the state of the rotation in progress (``RotationState``):
which run, who holds it, when it started, the step it reached, the old and new version numbers. Never a
value. Writing it is a compare-and-swap on the secret's etag (``update_annotations(..., etag=)``), so of two
rotations that start at once exactly one writes it; the other sees it and reports ``locked``.

The same annotation makes an interrupted rotation resumable: the next run that finds it *stale* (not
updated for ``lock_timeout``, or held by a process of this host that is gone) takes it over with a
compare-and-swap of its own and carries on from the recorded step.

Ownership is the ``run_id`` in the annotation, not the etag: other writes move the etag too (Secret
Manager advancing ``next_rotation_time`` when it sends SECRET_ROTATE, our own ``set_next_rotation_time``).
A write that loses the etag race re-reads the secret and retries while the annotation still names our run,
and raises ``LockLost`` once another run has taken it over.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final, Literal, get_args

from agent.errors import AgentError
from agent.secrets.audit import default_caller
from agent.secrets.interface import ConcurrentModification, SecretInfo, SecretsBackend

ANNOTATION: Final = "secrets-agent-rotation"
"""The annotation key (Secret Manager allows no ``/`` in annotation keys)."""

FORMAT_VERSION: Final = 1

Step = Literal["backup", "generate", "apply", "add", "validate", "finish", "rollback"]
"""The step a rotation is in. It is written *before* the step runs, so a crash during a step leaves that
step recorded: it may or may not have happened."""
STEPS: Final[tuple[Step, ...]] = get_args(Step)

CAS_ATTEMPTS: Final = 8
"""How often a lock write is retried when the etag moved but the lock is still ours."""


class LockError(AgentError):
    """The rotation lock could not be read or kept."""


class LockLost(LockError):
    """Another run took the lock over (ours was judged stale): this run must stop touching the secret."""


class CorruptLock(LockError):
    """The annotation is there but is not a rotation state this program wrote."""


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _rfc3339(moment: datetime, timespec: str = "milliseconds") -> str:
    return _utc(moment).isoformat(timespec=timespec).replace("+00:00", "Z")


def _parse_time(text: object) -> datetime:
    if not isinstance(text, str):
        raise ValueError("expected an RFC 3339 time")
    return _utc(datetime.fromisoformat(text.replace("Z", "+00:00")))


# --------------------------------------------------------------------------------------------------
# Who holds a lock
# --------------------------------------------------------------------------------------------------


def process_start_ticks(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux ``/proc``), None elsewhere or if
    the process does not exist. Together with the pid it names a process: pids are reused, start times not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after its closing one.
    after_name = stat.rsplit(")", 1)[-1].split()
    try:
        return int(after_name[19])  # field 22 of the whole line
    except (IndexError, ValueError):
        return None


@dataclass(frozen=True)
class Holder:
    """The process that holds (or held) a lock."""

    caller: str
    """``user@host pid N`` (for people and the audit log)."""
    host: str
    pid: int
    pid_start: int | None = None
    """``process_start_ticks(pid)`` when it took the lock, so a reused pid is not mistaken for it."""

    @classmethod
    def current(cls) -> Holder:
        pid = os.getpid()
        return cls(default_caller(), socket.gethostname(), pid, process_start_ticks(pid))

    def is_gone(self) -> bool:
        """True when this holder is a process of THIS host that no longer runs. (A holder on another host
        cannot be checked: only ``lock_timeout`` frees its lock.)"""
        if self.host != socket.gethostname():
            return False
        started = process_start_ticks(self.pid)
        if started is not None:
            return self.pid_start is not None and started != self.pid_start
        if Path("/proc/self/stat").exists():
            return True  # /proc works here and has no such pid
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False  # it exists, as another user
        return False


# --------------------------------------------------------------------------------------------------
# The state (pure)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RotationState:
    """What a rotation in progress has done so far. Metadata only, never a value."""

    run_id: str
    holder: Holder
    started: datetime
    updated: datetime
    """Last write by the holder (each step, and a heartbeat while a step runs long)."""
    step: Step
    old_version: str | None = None
    new_version: str | None = None
    """Set as soon as the new version was added."""
    reason: str = ""
    """Why it is rolling back (``step == "rollback"``)."""

    @classmethod
    def new(cls, holder: Holder, now: datetime, old_version: str | None = None) -> RotationState:
        """A fresh rotation at step ``backup`` of ``old_version`` (the version being replaced)."""
        return cls(new_run_id(), holder, _utc(now), _utc(now), "backup", old_version)

    def to_annotation(self) -> str:
        """Compact JSON for the annotation (well under the 16 KiB the service allows for all of them)."""
        data: dict[str, object] = {
            "v": FORMAT_VERSION,
            "run": self.run_id,
            "holder": self.holder.caller,
            "host": self.holder.host,
            "pid": self.holder.pid,
            "pid_start": self.holder.pid_start,
            "started": _rfc3339(self.started),
            "updated": _rfc3339(self.updated),
            "step": self.step,
            "old": self.old_version,
            "new": self.new_version,
        }
        if self.reason:
            data["reason"] = self.reason[:500]
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_annotation(cls, text: str) -> RotationState:
        """Parse an annotation; CorruptLock (saying what is wrong, never quoting it) if it is not ours."""
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("v") != FORMAT_VERSION:
                raise ValueError(f"not format version {FORMAT_VERSION}")
            step = data["step"]
            if step not in STEPS:
                raise ValueError(f"unknown step {step!r}")
            pid_start = data.get("pid_start")
            return cls(
                run_id=str(data["run"]),
                holder=Holder(
                    str(data["holder"]),
                    str(data["host"]),
                    int(data["pid"]),
                    int(pid_start) if pid_start is not None else None,
                ),
                started=_parse_time(data["started"]),
                updated=_parse_time(data["updated"]),
                step=step,
                old_version=_optional_str(data.get("old")),
                new_version=_optional_str(data.get("new")),
                reason=str(data.get("reason", "")),
            )
        except (ValueError, KeyError, TypeError) as error:
            raise CorruptLock(
                f"annotation {ANNOTATION} is not a rotation state ({type(error).__name__}: {error})"
            ) from None

    def taken_over_by(self, holder: Holder, now: datetime) -> RotationState:
        """The same rotation, now carried on by ``holder`` under a new run id."""
        return replace(self, run_id=new_run_id(), holder=holder, updated=_utc(now))

    def describe(self) -> str:
        """``run 1a2b by alice@host pid 42 since 12:00:00Z at step validate`` (one line, for messages)."""
        since = _rfc3339(self.started, "seconds")
        return f"run {self.run_id} by {self.holder.caller} since {since} at step {self.step}"


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)


def new_run_id() -> str:
    return secrets.token_hex(6)


def state_of(info: SecretInfo) -> RotationState | None:
    """The rotation state on a secret, None when no rotation holds it; CorruptLock if unreadable."""
    text = info.annotations.get(ANNOTATION)
    return None if text is None else RotationState.from_annotation(text)


def stale_reason(state: RotationState, now: datetime, lock_timeout: timedelta) -> str | None:
    """Why ``state``'s lock may be taken over, or None while its holder may still be working on it."""
    idle = _utc(now) - state.updated
    if idle >= lock_timeout:
        return f"not updated for {_human(idle)} (lock timeout {_human(lock_timeout)})"
    if state.holder.is_gone():
        return f"its process ({state.holder.caller}) is gone"
    return None


def _human(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


# --------------------------------------------------------------------------------------------------
# The lock on a secret
# --------------------------------------------------------------------------------------------------

Clock = Callable[[], datetime]


def wall_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Busy:
    """Another run holds the lock and it is not stale."""

    state: RotationState


@dataclass(frozen=True)
class Corrupt:
    """The annotation exists but cannot be read: a person must look at it."""

    error: CorruptLock


class RotationLock:
    """The lock of one secret, held by this process. Create with ``acquire``."""

    def __init__(
        self, backend: SecretsBackend, secret_id: str, state: RotationState, seen: SecretInfo
    ) -> None:
        self.backend = backend
        self.secret_id = secret_id
        self.state = state
        """What the annotation says now (our last write)."""
        self.resumed: RotationState | None = None
        """The stale state this run took over, if it took one over."""
        self.stale_reason: str = ""
        # The secret as our last write (or read) left it: its etag guards the next write, and its
        # annotations are what that write builds on.
        self._seen = seen
        self._write = asyncio.Lock()  # step writes and heartbeats never race each other

    @classmethod
    async def acquire(
        cls,
        backend: SecretsBackend,
        secret_id: str,
        *,
        lock_timeout: timedelta,
        holder: Holder | None = None,
        clock: Clock = wall_clock,
        info: SecretInfo | None = None,
        old_version: str | None = None,
    ) -> RotationLock | Busy | Corrupt:
        """Take the lock: write a fresh state (replacing ``old_version``), or take over a stale one
        (``resumed`` is then set).

        ``info`` is the secret as just read (saves a call); its etag guards the first write.
        """
        holder = holder or Holder.current()
        for _ in range(CAS_ATTEMPTS):
            if info is None:
                info = await backend.get_secret_info(secret_id)
            try:
                existing = state_of(info)
            except CorruptLock as error:
                return Corrupt(error)
            now = clock()
            resumed: RotationState | None = None
            reason = ""
            if existing is None:
                state = RotationState.new(holder, now, old_version)
            else:
                reason = stale_reason(existing, now, lock_timeout) or ""
                if not reason:
                    return Busy(existing)
                resumed, state = existing, existing.taken_over_by(holder, now)
            try:
                written = await backend.update_annotations(
                    secret_id, {ANNOTATION: state.to_annotation()}, etag=info.etag, current=info.annotations
                )
            except ConcurrentModification:
                info = None  # someone wrote first: look again (it may be a lock now, or only a moved etag)
                continue
            lock = cls(backend, secret_id, state, written)
            lock.resumed, lock.stale_reason = resumed, reason
            return lock
        raise LockError(
            f"secret {secret_id!r}: could not write the rotation lock: the secret kept changing under us "
            f"({CAS_ATTEMPTS} attempts); try again"
        )

    async def update(self, clock: Clock = wall_clock, **changes: object) -> RotationState:
        """Record progress (``step=``, ``new_version=``, ``reason=``); also the heartbeat (no changes)."""
        async with self._write:
            state = replace(self.state, updated=_utc(clock()), **changes)  # type: ignore[arg-type]
            await self._compare_and_swap({ANNOTATION: state.to_annotation()}, ())
            self.state = state
            return state

    def saw(self, info: SecretInfo) -> None:
        """Another write of ours returned the secret (``set_next_rotation_time``): take its etag while the
        annotation still names this run, which saves the next lock write a failed attempt."""
        try:
            current = state_of(info)
        except CorruptLock:
            return
        if current is not None and current.run_id == self.state.run_id:
            self._seen = info

    async def release(self, set_: Mapping[str, str] | None = None, remove: Sequence[str] = ()) -> None:
        """Remove the annotation (the rotation is over: finished or rolled back), setting and removing
        other annotations in the same write."""
        async with self._write:
            await self._compare_and_swap(dict(set_ or {}), (ANNOTATION, *remove))

    async def _compare_and_swap(self, set_: dict[str, str], remove: tuple[str, ...]) -> None:
        for _ in range(CAS_ATTEMPTS):
            try:
                written = await self.backend.update_annotations(
                    self.secret_id, set_, remove, etag=self._seen.etag, current=self._seen.annotations
                )
            except ConcurrentModification:
                info = await self.backend.get_secret_info(self.secret_id)
                try:
                    current = state_of(info)
                except CorruptLock:
                    current = None
                if current is None or current.run_id != self.state.run_id:
                    taker = f" by {current.holder.caller}" if current is not None else ""
                    raise LockLost(
                        f"secret {self.secret_id!r}: the rotation lock was taken over{taker} while this run "
                        "held it (it looked stale: raise --lock-timeout for slow providers)"
                    ) from None
                self._seen = info  # still ours: something else moved the etag
                continue
            self._seen = written
            return
        raise LockError(
            f"secret {self.secret_id!r}: could not update the rotation lock: the secret kept changing "
            f"({CAS_ATTEMPTS} attempts)"
        )
