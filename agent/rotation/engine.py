"""Rotating one secret: a small state machine that is locked, recorded and resumable.

Steps (each recorded in the lock annotation *before* it runs, see ``agent.rotation.lock``)::

    backup   record the current version (it stays ENABLED); --backup-dir: its value to a 0600 file
    generate the provider makes a new value (no side effect)
    apply    the provider puts it in force (database: ALTER ROLE ... PASSWORD); no-op for most
    add      add it as a new version
    validate the provider checks it (length/encoding, a database login, an external checker)
    finish   move next_rotation_time; with --disable-previous disable the old version; clear the lock

Any failure from ``apply`` on rolls back (``rollback``):

1. ``provider.rollback`` restores the old credential where it was applied (the database);
2. if the new version was added and is still the newest, the OLD value is added again as a newer version.
   Secret Manager's ``latest`` is the newest version whatever its state, so merely disabling the failed
   version would leave every reader of ``latest`` with an error (and agents that already fetched it would
   keep serving it as last-known-good). Re-adding the old value makes ``latest`` serve the old credential
   and moves the whole fleet back through the usual SECRET_VERSION_ADD path;
3. the failed version is disabled (kept, not destroyed: it is evidence, and can be inspected).

Pacing: with a ``Pacer`` (``rotate_many``, the listener), a rotation takes its turn just before its first
write, the lock, and tells the pacer of every version it adds (``agent.rotation.pacing``): what is skipped,
not due or only planned never waits, and a stop during the wait leaves the secret untouched (``stopped``).

Resuming: a lock that is stale (no update for ``lock_timeout``, or its process on this host is gone) is
taken over by the next rotation of that secret, which carries on from the recorded step: interrupted
before ``apply`` -> start afresh; during ``apply`` or ``add`` before the version exists -> roll back (the
generated value lived only in the dead process); new version added -> validate it now, then finish or
roll back; ``finish``/``rollback`` -> do them again (both are idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Final, TypeVar

from agent.errors import AgentError
from agent.observe.logs import fields, redact, register_secret_values, unregister_secret_values
from agent.rotation.backup import write_backup
from agent.rotation.choice import ProviderChoice, choose_provider
from agent.rotation.due import current_version, due_state, newest_version, period_of
from agent.rotation.lock import (
    Busy,
    Corrupt,
    CorruptLock,
    LockError,
    LockLost,
    RotationLock,
    RotationState,
    stale_reason,
    state_of,
)
from agent.rotation.marks import ROLLED_BACK, RolledBack, value_since
from agent.rotation.pacing import Pacer, Stopped
from agent.rotation.providers.base import Provider, ProviderConfigError, RotationContext
from agent.rotation.results import Outcome, RotationOptions, RotationResult
from agent.secrets.audit import audit_event
from agent.secrets.interface import SecretInfo, SecretNotFound, SecretsBackend, SecretsError, VersionInfo
from agent.secrets.types import SecretType

log = logging.getLogger(__name__)

T = TypeVar("T")

ADDED_VERSION_SLACK: Final = timedelta(minutes=5)
"""On resume, a version created this long before the interrupted run started still counts as its own
(the run's start is from its host's clock, the version's from the service's)."""
NOT_STARTED: Final = "not started: rotate was stopped (SIGTERM/SIGINT); nothing was changed"


async def rotate_one(
    backend: SecretsBackend,
    secret_id: str,
    options: RotationOptions | None = None,
    *,
    pacer: Pacer | None = None,
) -> RotationResult:
    """Rotate ``secret_id`` (or plan it, resume it, or say why not). Never raises for a rotation problem:
    the result says what happened. Logs one line (``agent.rotation.engine``) and one audit event.
    ``pacer``: wait for this rotation's turn before its first write (``stopped`` when its stop is set
    first)."""
    options = options or RotationOptions()
    rotation = _Rotation(backend, secret_id, options, pacer)
    try:
        result = await rotation.run()
    except Stopped:
        result = rotation.result("stopped", NOT_STARTED)
    except (SecretsError, LockError, ProviderConfigError) as error:
        result = rotation.result("failed", _one_line(error))
    except Exception as error:  # a bug: report it for this secret and carry on with the others
        log.exception("rotation of %s failed unexpectedly", secret_id, extra=fields(secret=secret_id))
        result = rotation.result("failed", f"unexpected {type(error).__name__}: {_one_line(error)}")
    finally:
        rotation.forget_values()
    _report(backend, result, options)
    return result


async def rotate_many(
    backend: SecretsBackend,
    secret_ids: Iterable[str],
    options: RotationOptions | None = None,
    *,
    stop: asyncio.Event | None = None,
) -> list[RotationResult]:
    """``rotate_one`` for each secret, one after the other (a database is not rotated in parallel with
    itself, and the order of the table is the order asked), paced by ``options.pacing``.

    ``stop`` set (SIGTERM/SIGINT): the rotation in progress finishes, a wait for the next turn ends, and
    every secret not started is ``stopped``, untouched.
    """
    options = options or RotationOptions()
    pacer = Pacer(options.pacing, stop) if options.pacing is not None else None
    results: list[RotationResult] = []
    for secret_id in secret_ids:
        if stop is not None and stop.is_set():
            result = RotationResult(secret_id, None, None, None, "stopped", NOT_STARTED)
            _report(backend, result, options)
            results.append(result)
            continue
        results.append(await rotate_one(backend, secret_id, options, pacer=pacer))
    return results


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return redact(text) if text else type(error).__name__


def _report(backend: SecretsBackend, result: RotationResult, options: RotationOptions) -> None:
    level = logging.INFO if result.ok else logging.WARNING if result.result == "stopped" else logging.ERROR
    log.log(
        level,
        "rotation %s: %s %s",
        result.result,
        result.secret_id,
        result.message,
        extra=fields(
            secret=result.secret_id,
            type=result.secret_type.value if result.secret_type is not None else None,
            old_version=result.old_version,
            new_version=result.new_version,
            result=result.result,
            provider=result.provider or None,
            restored_version=result.restored_version,
            resumed_run=result.resumed_run,
            dry_run=options.dry_run,
        ),
    )
    if result.result in ("rotated", "rolled-back", "failed"):
        audit_event(
            "rotate",
            result.secret_id,
            result.new_version,
            "ok" if result.result == "rotated" else result.result,
            caller=backend.caller,
            backend=str(getattr(backend, "backend", type(backend).__name__)),
        )


class _Rotation:
    """One call of ``rotate_one``: the state of the rotation of one secret in this process."""

    def __init__(
        self, backend: SecretsBackend, secret_id: str, options: RotationOptions, pacer: Pacer | None = None
    ) -> None:
        self.backend = backend
        self.secret_id = secret_id
        self.options = options
        self.pacer = pacer
        self.secret_type: SecretType | None = None
        self.choice: ProviderChoice | None = None
        self.old_version: str | None = None
        self.new_version: str | None = None
        self.lock: RotationLock | None = None
        self.resumed: RotationState | None = None
        self.value_since: datetime | None = None
        """When the current value was stored (``agent.rotation.marks``)."""
        self.prefix = ""
        """Said before the message when this run carried on an interrupted one."""
        self._registered: list[bytes] = []

    # -- results -----------------------------------------------------------------------------------

    def result(self, outcome: Outcome, message: str, restored: str | None = None) -> RotationResult:
        return RotationResult(
            self.secret_id,
            self.secret_type,
            self.old_version,
            self.new_version,
            outcome,
            self.prefix + message,
            provider=self.choice.name if self.choice is not None else "",
            restored_version=restored,
            resumed_run=self.resumed.run_id if self.resumed is not None else None,
        )

    def remember_value(self, value: bytes | None) -> None:
        """Redact this value from every log line while the rotation runs (a safety net)."""
        if value:
            register_secret_values([value])
            self._registered.append(value)

    def forget_values(self) -> None:
        unregister_secret_values(self._registered)
        self._registered.clear()

    def now(self) -> datetime:
        return (self.options.now or datetime.now(UTC)).astimezone(UTC)

    def _added(self) -> None:
        """A version was added (or an add tried): the fleet fetches it, the pacing counts from now."""
        if self.pacer is not None:
            self.pacer.added()

    # -- deciding ----------------------------------------------------------------------------------

    async def run(self) -> RotationResult:
        try:
            info = await self.backend.get_secret_info(self.secret_id)
        except SecretNotFound:
            return self.result("failed", "no such secret")
        config = self.options.config
        self.secret_type = info.secret_type or (config.types.get(self.secret_id) if config else None)
        if self.secret_type is not None and not self.secret_type.rotated_by_us:
            return self.result("skipped", "rotated elsewhere (e.g. cert-manager); never rotated by us")
        try:
            existing = state_of(info)
        except CorruptLock as error:
            return self.result("failed", f"{error}: check no rotation runs, then remove the annotation")
        stale = ""
        if existing is not None:
            stale = stale_reason(existing, datetime.now(UTC), self.options.lock_timeout) or ""
            if not stale:
                return self.result("locked", f"rotation in progress: {existing.describe()}")
        versions = await self.backend.list_versions(self.secret_id)
        current = current_version(versions)
        self.old_version = current.version if current is not None else None
        self.value_since = value_since(info, versions, current)
        if existing is None:
            skip = self._skip_reason(info, current)
            if skip is not None:
                return skip
        self.choice = choose_provider(self.secret_id, self.secret_type, info.labels, config)
        provider = self.choice.build(self.secret_type)
        if self.options.dry_run:
            return self._plan(info, current, existing, stale)
        if self.pacer is not None:
            # The first write is next: wait for this rotation's turn. The secret as read may have moved
            # meanwhile; the lock's etag check and the look after it (_locked) catch that.
            await self.pacer.turn(self.secret_id)
        acquired = await RotationLock.acquire(
            self.backend,
            self.secret_id,
            lock_timeout=self.options.lock_timeout,
            info=info,
            old_version=self.old_version,
        )
        if isinstance(acquired, Busy):
            return self.result("locked", f"rotation in progress: {acquired.state.describe()}")
        if isinstance(acquired, Corrupt):
            return self.result(
                "failed", f"{acquired.error}: check no rotation runs, then remove the annotation"
            )
        self.lock = acquired
        try:
            return await self._locked(provider, info, current, acquired)
        except LockLost as error:
            return self.result("failed", f"{error}; the run that took it over finishes or rolls back")
        except BaseException:
            # Nothing applied yet: free the secret now rather than after lock_timeout.
            if acquired.state.step in ("backup", "generate"):
                with contextlib.suppress(Exception):
                    await acquired.release()
            raise

    async def _locked(
        self, provider: Provider, info: SecretInfo, current: VersionInfo | None, acquired: RotationLock
    ) -> RotationResult:
        if acquired.resumed is not None:
            return await self._resume(provider, info, acquired.resumed, acquired.stale_reason)
        # Someone may have rotated between our look and our lock: then this rotation is not wanted.
        now_current = current_version(await self.backend.list_versions(self.secret_id))
        if (now_current.version if now_current else None) != self.old_version:
            await acquired.release()
            shown = now_current.version if now_current else "none"
            return self.result("skipped", f"rotated by another run meanwhile (now version {shown})")
        return await self._rotate(provider, info, current)

    def _skip_reason(self, info: SecretInfo, current: VersionInfo | None) -> RotationResult | None:
        since = self.options.skip_if_rotated_after
        if since is not None and self.value_since is not None and self.value_since > since:
            assert current is not None
            return self.result(
                "skipped", f"already rotated: version {current.version} is newer than the request"
            )
        if self.options.due_only:
            due = due_state(info, self.secret_type, current, self.now(), self.value_since)
            if not due.due:
                return self.result("not-due", due.why)
        return None

    def _plan(
        self, info: SecretInfo, current: VersionInfo | None, existing: RotationState | None, stale: str
    ) -> RotationResult:
        assert self.choice is not None
        via = f"with {self.choice.name} ({self.choice.source})"
        if existing is not None:
            return self.result("planned", f"would resume interrupted {existing.describe()} ({stale}) {via}")
        due = due_state(info, self.secret_type, current, self.now(), self.value_since)
        why = f"due: {due.why}" if due.due else f"not due ({due.why})"
        then = ", then disable the previous version" if self.options.disable_previous else ""
        return self.result("planned", f"would rotate {via}; {why}{then}")

    # -- the fresh rotation ------------------------------------------------------------------------

    async def _rotate(
        self, provider: Provider, info: SecretInfo, current: VersionInfo | None
    ) -> RotationResult:
        lock = self.lock
        assert lock is not None
        old_value: bytes | None = None
        if current is not None:
            old_value = await self.backend.get_secret_bytes(self.secret_id, current.version)
            self.remember_value(old_value)
        if self.options.backup_dir is not None and old_value is not None and self.old_version is not None:
            try:
                write_backup(self.options.backup_dir, self.secret_id, self.old_version, old_value)
            except AgentError as error:
                await lock.release()
                return self.result("failed", f"backup: {error}; nothing was changed")
        ctx = RotationContext(self.secret_id, self.secret_type, self.old_version, old_value)
        await lock.update(step="generate")
        try:
            new_value = await self._guarded(provider.generate(ctx))
        except LockLost:
            raise
        except Exception as error:
            await lock.release()
            return self.result("failed", f"generate: {_one_line(error)}; nothing was changed")
        self.remember_value(new_value)
        failed_step = "apply"
        try:
            await lock.update(step="apply")
            await self._guarded(provider.apply(ctx, new_value))
            failed_step = "add"
            await lock.update(step="add")
            try:
                added = await self.backend.add_version(self.secret_id, new_value)
            finally:
                self._added()
            self.new_version = added.version
            failed_step = "validate"
            await lock.update(step="validate", new_version=added.version)
            await self._guarded(provider.validate(ctx, new_value))
        except LockLost:
            raise
        except Exception as error:
            return await self._roll_back(provider, ctx, new_value, f"{failed_step}: {_one_line(error)}")
        return await self._finish(info, added.create_time)

    async def _guarded(self, step: Awaitable[T]) -> T:
        """Run a provider step while refreshing the lock, so a slow step does not look stale."""
        lock = self.lock
        assert lock is not None
        interval = self.options.heartbeat or self.options.lock_timeout / 3
        task = asyncio.ensure_future(step)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=max(interval.total_seconds(), 0.05))
                if done:
                    return task.result()
                try:
                    await lock.update()
                except LockLost:
                    raise
                except (SecretsError, LockError) as error:
                    # A missed heartbeat is not a failed step; the lock only looks stale after lock_timeout.
                    log.warning(
                        "rotation of %s: could not refresh its lock: %s",
                        self.secret_id,
                        _one_line(error),
                        extra=fields(secret=self.secret_id),
                    )
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    # -- endings -----------------------------------------------------------------------------------

    async def _finish(self, info: SecretInfo, created: datetime | None) -> RotationResult:
        """Validated: move the schedule, disable the previous version if asked, clear the lock."""
        lock = self.lock
        assert lock is not None
        await lock.update(step="finish")
        notes: list[str] = []
        period = period_of(info, self.secret_type)
        if period is not None and created is not None and (info.next_rotation_time or info.rotation_period):
            # From the new version's creation time: the service's own clock, whatever ours says.
            try:
                lock.saw(await self.backend.set_next_rotation_time(self.secret_id, created + period))
            except SecretsError as error:
                notes.append(f"next_rotation_time not moved: {_one_line(error)}")
        if (
            self.options.disable_previous
            and self.old_version is not None
            and self.old_version != self.new_version
        ):
            try:
                old = await self.backend.resolve_version(self.secret_id, self.old_version)
                if old.state == "ENABLED":
                    await self.backend.disable_version(self.secret_id, self.old_version)
                notes.append(f"version {self.old_version} disabled")
            except SecretsError as error:
                notes.append(f"previous version not disabled: {_one_line(error)}")
        await lock.release(remove=(ROLLED_BACK,))
        return self.result("rotated", "; ".join(["validated", *notes]))

    async def _roll_back(
        self, provider: Provider, ctx: RotationContext, new_value: bytes, reason: str
    ) -> RotationResult:
        """Undo: the old credential back where it was applied, the old value back as ``latest``, the failed
        version disabled. If any part fails, the lock stays at step ``rollback`` for the next run."""
        lock = self.lock
        assert lock is not None
        await lock.update(step="rollback", reason=reason)
        problems: list[str] = []
        try:
            await self._guarded(provider.rollback(ctx, new_value))
        except LockLost:
            raise
        except Exception as error:
            problems.append(f"provider rollback: {_one_line(error)}")
        restored: str | None = None
        if self.new_version is not None:
            try:
                restored = await self._restore_latest(ctx)
                new = await self.backend.resolve_version(self.secret_id, self.new_version)
                if new.state == "ENABLED":
                    await self.backend.disable_version(self.secret_id, self.new_version)
            except SecretsError as error:
                problems.append(f"secret rollback: {_one_line(error)}")
        if problems:
            return self.result(
                "failed",
                f"{reason}; rollback incomplete ({'; '.join(problems)}): the lock stays, the next rotate "
                "retries the rollback",
            )
        # A note, so the re-added old value does not look freshly rotated (due dates, status).
        mark = RolledBack(datetime.now(UTC), reason, self.old_version, restored)
        await lock.release({ROLLED_BACK: mark.to_annotation()})
        undone = f"version {self.new_version} disabled" if self.new_version else "no version was added"
        if restored is not None:
            undone += f", old value re-added as version {restored}"
        return self.result("rolled-back", f"{reason}; rolled back: {undone}", restored)

    async def _restore_latest(self, ctx: RotationContext) -> str | None:
        """Make ``latest`` serve the old value again; return the version that does (None: nothing to
        restore). Idempotent: on resume, a version newer than the failed one is the earlier restore."""
        newest = newest_version(await self.backend.list_versions(self.secret_id))
        if newest is None or ctx.old_value is None or self.new_version is None:
            return None
        if newest.version != self.new_version:
            newer = newest.version.isdigit() and self.new_version.isdigit()
            return newest.version if newer and int(newest.version) > int(self.new_version) else None
        try:
            added = await self.backend.add_version(self.secret_id, ctx.old_value)
        finally:
            self._added()
        return added.version

    # -- resuming ----------------------------------------------------------------------------------

    async def _resume(
        self, provider: Provider, info: SecretInfo, interrupted: RotationState, why: str
    ) -> RotationResult:
        lock = self.lock
        assert lock is not None
        self.resumed = interrupted
        self.prefix = f"resumed interrupted {interrupted.describe()} ({why}): "
        if interrupted.step in ("backup", "generate"):
            # Nothing had left the dead process: start afresh under our lock.
            self.prefix = f"cleared interrupted run {interrupted.run_id} (nothing was applied); "
            current = current_version(await self.backend.list_versions(self.secret_id))
            self.old_version = current.version if current is not None else None
            await lock.update(
                step="backup",
                started=datetime.now(UTC),
                old_version=self.old_version,
                new_version=None,
                reason="",
            )
            return await self._rotate(provider, info, current)
        self.old_version = interrupted.old_version
        self.new_version = interrupted.new_version
        if interrupted.step == "finish":
            return await self._finish(info, await self._created(self.new_version))
        old_value = await self._old_value()
        ctx = RotationContext(self.secret_id, self.secret_type, self.old_version, old_value)
        if interrupted.step == "rollback":
            new_value = await self._new_value_if_readable()
            return await self._roll_back(
                provider, ctx, new_value, interrupted.reason or "interrupted rollback"
            )
        if self.new_version is None and interrupted.step == "add":
            self.new_version = await self._find_added(interrupted)
            if self.new_version is not None:
                await lock.update(new_version=self.new_version)
        if self.new_version is None:
            # Applied (maybe) but never stored: the value died with the process. Put the old one back.
            return await self._roll_back(
                provider, ctx, b"", f"interrupted at {interrupted.step} before the new value was stored"
            )
        await lock.update(step="validate")
        new_value = await self.backend.get_secret_bytes(self.secret_id, self.new_version)
        self.remember_value(new_value)
        try:
            await self._guarded(provider.validate(ctx, new_value))
        except LockLost:
            raise
        except Exception as error:
            return await self._roll_back(provider, ctx, new_value, f"validate: {_one_line(error)}")
        return await self._finish(info, await self._created(self.new_version))

    async def _old_value(self) -> bytes | None:
        if self.old_version is None:
            return None
        value = await self.backend.get_secret_bytes(self.secret_id, self.old_version)
        self.remember_value(value)
        return value

    async def _new_value_if_readable(self) -> bytes:
        """The new value for ``provider.rollback`` on a resumed rollback; empty when it was already
        disabled (providers restore the OLD value and must not need the new one)."""
        if self.new_version is None:
            return b""
        try:
            value = await self.backend.get_secret_bytes(self.secret_id, self.new_version)
        except SecretsError:
            return b""
        self.remember_value(value)
        return value

    async def _created(self, version: str | None) -> datetime | None:
        if version is None:
            return None
        return (await self.backend.resolve_version(self.secret_id, version)).create_time

    async def _find_added(self, interrupted: RotationState) -> str | None:
        """The version an interrupted ``add`` created, if it did: the first one after the old version,
        created since the run started (the add may have succeeded just before the process died)."""
        old = (
            int(interrupted.old_version)
            if interrupted.old_version and interrupted.old_version.isdigit()
            else 0
        )
        since = interrupted.started - ADDED_VERSION_SLACK
        candidates = [
            v
            for v in await self.backend.list_versions(self.secret_id)
            if v.version.isdigit() and int(v.version) > old and v.create_time >= since
        ]
        first = min(candidates, key=lambda v: int(v.version), default=None)
        return first.version if first is not None else None
