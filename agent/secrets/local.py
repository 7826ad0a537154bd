"""``LocalSecretManager``: the secrets API over a ``.env`` file, for development and tests.

::

    local = LocalSecretManager()                  # ./.env (or $SECRETS_AGENT_DOTENV_FILE)
    value = await local.get_secret("API_KEY")

The ``.env`` file holds each secret's current value (its newest ENABLED version) under the secret id, so
the app, ``secrets-agent dev`` and python-dotenv all read it as usual. Everything Secret Manager keeps
beside the value lives in a sidecar next to it, ``<file>.versions.json`` (mode 0600): every version with
its state, creation time and value (until destroyed), the type, labels, annotations, rotation schedule and
etags. With it, versions behave as in the service:

* ``latest`` is the newest version; reading it when it is DISABLED fails, as the service does (the ``.env``
  then carries the newest enabled value, or no line at all when no version is enabled);
* a DISABLED version cannot be read; a DESTROYED version's value is gone from both files;
* annotation updates are guarded by the secret's etag (ConcurrentModification when it moved).

A ``.env`` written by hand, with no sidecar, is valid: each key is a secret with one version ``"1"``
(created at the file's modification time, no type). A value edited by hand counts as a new version. A key
deleted by hand from a secret the sidecar knows comes back with the next change of that secret (use
``delete_secret`` to delete one).

Writes keep every other line, comment and blank line of the ``.env`` (``agent.secrets.envedit``) and
replace each file atomically (``agent.core.atomicfile``): the ``.env`` first, then the sidecar, so a
crash between the two leaves a newer value in the ``.env``, which is then taken for a hand edit (a new
version) rather than lost. Values are read literally (``interpolate=False``), like the agent's dotenv
source; the value must be UTF-8 text without NUL (a ``.env`` holds text). Processes sharing one file
serialise on an advisory lock (``flock``) of its directory. Rotation policies are kept (there is no Pub/Sub
here, so no topics are needed) but nothing fires them: due dates come from the type and version age.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from agent.core.atomicfile import read_regular_file, read_regular_file_status, write_atomically
from agent.secrets import envedit
from agent.secrets.audit import Operation, audited, default_caller
from agent.secrets.common import as_bytes, as_text, rotation_config_argument, secrets_error
from agent.secrets.environment import dotenv_file_from
from agent.secrets.interface import SecretInfo, SecretsError, VersionInfo
from agent.secrets.localstate import (
    DESTROYED,
    DISABLED,
    ENABLED,
    SIDECAR_FORMAT,
    LocalState,
    StoredSecret,
    StoredVersion,
    adopt_env_values,
    decode_sidecar,
    encode_sidecar,
    secret_info,
    version_info,
)
from agent.secrets.rotating import rotator
from agent.secrets.types import TYPE_LABEL, SecretType

T = TypeVar("T")

BACKEND = "dotenv"
MAX_FILE_BYTES = 64 * 1024 * 1024
"""Largest ``.env`` or sidecar read (Secret Manager's values are at most 64 KiB each)."""
SIDECAR_SUFFIX = ".versions.json"
"""The sidecar of ``.env`` is ``.env.versions.json``."""
SIDECAR_MODE = 0o600
"""The sidecar's permission bits, whatever an older sidecar had: it holds every version's value."""
SECRET_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")
"""Secret Manager's secret id syntax (also a valid .env key)."""


class LocalSecretManager:
    """The secrets API over a ``.env`` file and its version sidecar (see the module docstring).

    The same methods as ``SecretManager``, for development and tests: each key of the ``.env`` is a
    secret, and ``<file>.versions.json`` beside it keeps versions, states, types and labels. Nothing is
    opened until the first call.

    ```python
    local = LocalSecretManager()                 # ./.env
    value = await local.get_secret("API_KEY")
    ```

    Args:
        path: The ``.env`` file (created on the first write when missing). None:
            ``SECRETS_AGENT_DOTENV_FILE``, else ``.env``. A relative path is taken relative to the current
            directory when the manager is made.
        caller: Who is acting, for the audit log. None: ``user@host pid N``.
        rotation_config: How ``rotate_secret`` rotates secrets that need a provider configured: the path
            of a rotation config file, its content as a mapping, or an
            ``agent.rotation.config.RotationConfig`` (see ``SecretManager``). None: labels and type
            defaults only.
        environ: Where ``SECRETS_AGENT_DOTENV_FILE`` is read; None: ``os.environ``.
    """

    backend = BACKEND

    def __init__(
        self,
        path: Path | str | None = None,
        *,
        caller: str | None = None,
        rotation_config: object | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        # Made absolute now: a later chdir of the process must not switch the manager to another file.
        self.path = Path(path).absolute() if path is not None else dotenv_file_from(env)
        """The ``.env`` file, absolute (created on the first write when missing)."""
        self.sidecar = self.path.with_name(self.path.name + SIDECAR_SUFFIX)
        """Versions, states and metadata: ``<path>.versions.json``."""
        self.caller = caller or default_caller()
        """Who is acting, for the audit log."""
        self.rotation_config = rotation_config_argument(rotation_config)
        """What ``rotate_secret`` hands the rotation tooling (a relative file path made absolute now)."""

    async def __aenter__(self) -> LocalSecretManager:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Nothing to release: every call opens and closes the files it needs."""

    # -- secrets -----------------------------------------------------------------------------------

    async def create_secret(
        self,
        secret_id: str,
        secret_data: str | bytes,
        secret_type: SecretType,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> VersionInfo:
        """Create the secret (type label, rotation schedule from the type) and its first version.

        Args:
            secret_id: The new secret's id, also its ``.env`` key (letters, digits, ``-`` and ``_``).
            secret_data: The first value: UTF-8 text without NUL (as text or bytes).
            secret_type: What kind of secret it is (the ``secret-type`` label, the rotation period).
            labels: More labels (``secret-type`` is always the type's).
            annotations: Annotations to set.

        Returns:
            The first version (``version="1"``, ``ENABLED``).

        Raises:
            SecretsError: ``ALREADY_EXISTS`` when the secret exists, ``INVALID_ARGUMENT`` for a bad id or
                a value a ``.env`` cannot hold, ``FAILED_PRECONDITION``/``UNAVAILABLE`` when the files
                cannot be read or written; never with the value in it.
        """
        data = as_bytes(secret_data, secret_id)

        def create(state: LocalState) -> VersionInfo:
            if not SECRET_ID.fullmatch(secret_id):
                raise secrets_error(
                    secret_id, "INVALID_ARGUMENT", "a secret id is 1-255 letters, digits, '-' and '_'"
                )
            if secret_id in state.secrets:
                raise secrets_error(secret_id, "ALREADY_EXISTS", f"Secret [{secret_id}] already exists.")
            self._check_value(secret_id, data)
            now = datetime.now(UTC)
            period = secret_type.rotation_period
            secret = StoredSecret(
                create_time=now,
                etag=state.new_etag(),
                labels={**(labels or {}), TYPE_LABEL: secret_type.value},
                annotations=dict(annotations or {}),
                rotation_period=period,
                next_rotation_time=now + period if period is not None else None,
            )
            state.secrets[secret_id] = secret
            return self._add(state, secret_id, data)

        with audited("create", secret_id, caller=self.caller, backend=BACKEND) as event:
            info = await self._run(create, write=True)
            event.version = info.version
            return info

    async def get_secret_info(self, secret_id: str) -> SecretInfo:
        """The secret's metadata, without any value.

        Args:
            secret_id: The secret's id.

        Returns:
            Its type, labels, annotations, rotation schedule and etag.

        Raises:
            SecretNotFound: There is no such secret.
            SecretsError: The files cannot be read.
        """
        with audited("describe", secret_id, caller=self.caller, backend=BACKEND):
            return await self._run(lambda state: secret_info(secret_id, self._secret(state, secret_id)))

    async def list_secrets(self, types: Sequence[SecretType] | None = None) -> list[SecretInfo]:
        """Every secret, or those of some types, sorted by id.

        Args:
            types: Only secrets whose ``secret-type`` label is one of these; None: every secret.

        Returns:
            The secrets' metadata, sorted by id.

        Raises:
            SecretsError: The files cannot be read.
        """
        wanted = None if types is None else {t.value for t in types}

        def every(state: LocalState) -> list[SecretInfo]:
            infos = [secret_info(secret_id, secret) for secret_id, secret in sorted(state.secrets.items())]
            return [i for i in infos if wanted is None or i.labels.get(TYPE_LABEL) in wanted]

        with audited("list", "*", caller=self.caller, backend=BACKEND):
            return await self._run(every)

    async def update_annotations(
        self,
        secret_id: str,
        set_: Mapping[str, str],
        remove: Sequence[str] = (),
        *,
        etag: str,
        current: Mapping[str, str] | None = None,
    ) -> SecretInfo:
        """Set and remove annotations, only if the secret's etag is still ``etag``.

        Args:
            secret_id: The secret's id.
            set_: Annotations to set (added or replaced).
            remove: Annotation keys to remove.
            etag: The etag the secret must still have.
            current: Accepted for parity with ``SecretManager``, not needed: the file is read under its
                lock anyway.

        Returns:
            The secret, with its new etag.

        Raises:
            ConcurrentModification: The etag no longer matches.
            SecretNotFound: There is no such secret.
            SecretsError: The files cannot be read or written.
        """

        def annotate(state: LocalState) -> SecretInfo:
            secret = self._secret(state, secret_id)
            if secret.etag != etag:
                raise secrets_error(
                    secret_id,
                    "FAILED_PRECONDITION",
                    "The etag provided in the request does not match the resource's current etag.",
                    etag_sent=True,
                )
            secret.annotations.update(set_)
            for key in remove:
                secret.annotations.pop(key, None)
            secret.etag = state.new_etag()
            return secret_info(secret_id, secret)

        with audited("annotate", secret_id, caller=self.caller, backend=BACKEND):
            return await self._run(annotate, write=True)

    async def set_next_rotation_time(self, secret_id: str, when: datetime) -> SecretInfo:
        """Move the next rotation time.

        Args:
            secret_id: The secret's id.
            when: The next rotation time (timezone-aware).

        Returns:
            The secret as it is now.

        Raises:
            ValueError: ``when`` is naive (no timezone).
            SecretNotFound: There is no such secret.
            SecretsError: The files cannot be read or written.
        """
        if when.tzinfo is None:
            raise ValueError("when must be timezone-aware")

        def schedule(state: LocalState) -> SecretInfo:
            secret = self._secret(state, secret_id)
            secret.next_rotation_time = when.astimezone(UTC)
            secret.etag = state.new_etag()
            return secret_info(secret_id, secret)

        with audited("schedule", secret_id, caller=self.caller, backend=BACKEND):
            return await self._run(schedule, write=True)

    async def delete_secret(self, secret_id: str, etag: str = "") -> None:
        """Delete the secret: its ``.env`` line and its history.

        Args:
            secret_id: The secret's id.
            etag: When given, delete only if the secret's etag is still this.

        Raises:
            ConcurrentModification: ``etag`` was given and no longer matches.
            SecretNotFound: There is no such secret.
            SecretsError: The files cannot be read or written.
        """

        def delete(state: LocalState) -> None:
            secret = self._secret(state, secret_id)
            if etag and secret.etag != etag:
                raise secrets_error(
                    secret_id, "FAILED_PRECONDITION", "the etag no longer matches", etag_sent=True
                )
            del state.secrets[secret_id]
            state.touched.add(secret_id)

        with audited("delete", secret_id, caller=self.caller, backend=BACKEND):
            await self._run(delete, write=True)

    # -- versions ----------------------------------------------------------------------------------

    async def get_secret(self, secret_id: str, version: str = "latest") -> str:
        """A version's value as text.

        Args:
            secret_id: The secret's id (its ``.env`` key).
            version: A version number or ``latest`` (the newest version, whatever its state).

        Returns:
            The value.

        Raises:
            SecretNotFound: There is no such secret or version.
            VersionNotEnabled: The version is DISABLED or DESTROYED.
            SecretsError: The files cannot be read.
        """
        data, number = await self._access(secret_id, version)
        return as_text(data, secret_id, number)

    async def get_secret_bytes(self, secret_id: str, version: str = "latest") -> bytes:
        """A version's value as bytes (its UTF-8 encoding).

        Args:
            secret_id: The secret's id.
            version: A version number or ``latest``.

        Returns:
            The value.

        Raises:
            SecretNotFound: There is no such secret or version.
            VersionNotEnabled: The version is DISABLED or DESTROYED.
            SecretsError: The files cannot be read.
        """
        data, _ = await self._access(secret_id, version)
        return data

    async def _access(self, secret_id: str, version: str) -> tuple[bytes, str]:
        def access(state: LocalState) -> tuple[bytes, str]:
            number, found = self._version(state, secret_id, version)
            if found.state != ENABLED or found.data is None:
                raise secrets_error(
                    secret_id,
                    "FAILED_PRECONDITION",
                    f"Secret Version [{secret_id}/versions/{number}] is in {found.state} state.",
                    reading_value=True,
                )
            return found.data, str(number)

        with audited("access", secret_id, caller=self.caller, backend=BACKEND, version=version) as event:
            data, number = await self._run(access)
            event.version = number
            return data, number

    async def resolve_version(self, secret_id: str, version: str = "latest") -> VersionInfo:
        """The version ``version`` names, whatever its state, without reading the value.

        Args:
            secret_id: The secret's id.
            version: A version number or ``latest``.

        Returns:
            The version's metadata, its number resolved.

        Raises:
            SecretNotFound: There is no such secret or version.
            SecretsError: The files cannot be read.
        """

        def resolve(state: LocalState) -> VersionInfo:
            number, found = self._version(state, secret_id, version)
            return version_info(secret_id, number, found)

        with audited("resolve", secret_id, caller=self.caller, backend=BACKEND, version=version) as event:
            info = await self._run(resolve)
            event.version = info.version
            return info

    async def add_version(self, secret_id: str, secret_data: str | bytes) -> VersionInfo:
        """Add a version: ENABLED, the new ``latest``, its value the one in the ``.env``.

        Args:
            secret_id: The secret's id.
            secret_data: The new value: UTF-8 text without NUL (as text or bytes).

        Returns:
            The new version.

        Raises:
            SecretNotFound: There is no such secret.
            SecretsError: A value a ``.env`` cannot hold (``INVALID_ARGUMENT``), or the files cannot be
                read or written.
        """
        data = as_bytes(secret_data, secret_id)

        def add(state: LocalState) -> VersionInfo:
            self._secret(state, secret_id)
            self._check_value(secret_id, data)
            return self._add(state, secret_id, data)

        with audited("add", secret_id, caller=self.caller, backend=BACKEND) as event:
            info = await self._run(add, write=True)
            event.version = info.version
            return info

    async def list_versions(self, secret_id: str) -> list[VersionInfo]:
        """Every version of the secret, DESTROYED ones included.

        Args:
            secret_id: The secret's id.

        Returns:
            The versions' metadata, newest first.

        Raises:
            SecretNotFound: There is no such secret.
            SecretsError: The files cannot be read.
        """

        def every(state: LocalState) -> list[VersionInfo]:
            versions = self._secret(state, secret_id).versions
            return [version_info(secret_id, n, versions[n]) for n in sorted(versions, reverse=True)]

        with audited("list-versions", secret_id, caller=self.caller, backend=BACKEND):
            return await self._run(every)

    async def enable_version(self, secret_id: str, version: str) -> VersionInfo:
        """Enable a DISABLED version.

        Args:
            secret_id: The secret's id.
            version: The version number.

        Returns:
            The version as it is now.

        Raises:
            SecretNotFound: There is no such secret or version.
            SecretsError: The version is DESTROYED (``FAILED_PRECONDITION``), ``version`` is not a number
                (``INVALID_ARGUMENT``), or the files cannot be read or written.
        """
        return await self._set_state("enable", secret_id, version, ENABLED)

    async def disable_version(self, secret_id: str, version: str) -> VersionInfo:
        """Disable a version: its value can no longer be read (the ``.env`` then holds the newest enabled
        one).

        Args:
            secret_id: The secret's id.
            version: The version number.

        Returns:
            The version as it is now.

        Raises:
            SecretNotFound: There is no such secret or version.
            SecretsError: The version is DESTROYED (``FAILED_PRECONDITION``), ``version`` is not a number
                (``INVALID_ARGUMENT``), or the files cannot be read or written.
        """
        return await self._set_state("disable", secret_id, version, DISABLED)

    async def destroy_version(self, secret_id: str, version: str) -> VersionInfo:
        """Destroy the version: its value is removed from the sidecar (and the ``.env``) for good.

        Args:
            secret_id: The secret's id.
            version: The version number.

        Returns:
            The version as it is now (``DESTROYED``).

        Raises:
            SecretNotFound: There is no such secret or version.
            SecretsError: The version is already DESTROYED (``FAILED_PRECONDITION``), ``version`` is not
                a number (``INVALID_ARGUMENT``), or the files cannot be read or written.
        """
        return await self._set_state("destroy", secret_id, version, DESTROYED)

    async def _set_state(
        self, operation: Operation, secret_id: str, version: str, target: str
    ) -> VersionInfo:
        def change(state: LocalState) -> VersionInfo:
            if not version.isdecimal():
                raise secrets_error(
                    secret_id,
                    "INVALID_ARGUMENT",
                    f"{operation} needs a version number, not {version!r}",
                )
            number, found = self._version(state, secret_id, version)
            if found.state == DESTROYED:
                raise secrets_error(
                    secret_id, "FAILED_PRECONDITION", "SecretVersion.state is already DESTROYED"
                )
            found.state = target
            if target == DESTROYED:
                found.data = None
            found.etag = state.new_etag()
            state.touched.add(secret_id)
            return version_info(secret_id, number, found)

        with audited(operation, secret_id, caller=self.caller, backend=BACKEND, version=version):
            return await self._run(change, write=True)

    async def rotate_secret(self, secret_id: str) -> str:
        """Rotate the secret with its rotation provider, as ``SecretManager.rotate_secret`` does.

        Args:
            secret_id: The secret's id.

        Returns:
            The new version number.

        Raises:
            SecretNotFound: There is no such secret.
            SecretsError: No provider is configured for the secret (``FAILED_PRECONDITION``; the message
                says what to configure), the rotation config is invalid (``INVALID_ARGUMENT``), or the
                rotation failed, was rolled back or was not done (``ABORTED``). Never with a value in it.
        """
        return await rotator()(self, secret_id, self.rotation_config)

    # -- state -------------------------------------------------------------------------------------

    def _secret(self, state: LocalState, secret_id: str) -> StoredSecret:
        secret = state.secrets.get(secret_id)
        if secret is None:
            raise secrets_error(secret_id, "NOT_FOUND", f"Secret [{secret_id}] not found in {self.path}.")
        return secret

    def _version(self, state: LocalState, secret_id: str, version: str) -> tuple[int, StoredVersion]:
        secret = self._secret(state, secret_id)
        if version == "latest":
            if not secret.versions:
                raise secrets_error(secret_id, "NOT_FOUND", f"Secret [{secret_id}] has no versions.")
            number = max(secret.versions)
        elif version.isdecimal():
            number = int(version)
        else:
            raise secrets_error(secret_id, "NOT_FOUND", f"Secret [{secret_id}] has no alias [{version}]")
        found = secret.versions.get(number)
        if found is None:
            raise secrets_error(
                secret_id, "NOT_FOUND", f"Secret Version [{secret_id}/versions/{number}] not found."
            )
        return number, found

    @staticmethod
    def _check_value(secret_id: str, data: bytes) -> None:
        problem = envedit.value_problem(data)
        if problem is not None:
            raise secrets_error(secret_id, "INVALID_ARGUMENT", problem)

    @staticmethod
    def _add(state: LocalState, secret_id: str, data: bytes) -> VersionInfo:
        secret = state.secrets[secret_id]
        number = max(secret.versions, default=0) + 1
        version = StoredVersion(ENABLED, datetime.now(UTC), state.new_etag(), data)
        secret.versions[number] = version
        state.touched.add(secret_id)
        return version_info(secret_id, number, version)

    async def _run(self, operation: Callable[[LocalState], T], *, write: bool = False) -> T:
        """Run ``operation`` on the files' state in a worker thread, under the directory lock; save after a
        write (even when it raised nothing but changed nothing, saving is idempotent)."""
        return await asyncio.to_thread(self._locked, operation, write)

    def _locked(self, operation: Callable[[LocalState], T], write: bool) -> T:
        with self._lock(exclusive=write):
            state = self._load()
            result = operation(state)
            if write:
                self._save(state)
            return result

    @contextmanager
    def _lock(self, *, exclusive: bool) -> Iterator[None]:
        directory = self.path.absolute().parent
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as error:
            raise SecretsError(
                f"{self.path}: cannot open its directory ({error.strerror})", code="FAILED_PRECONDITION"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _load(self) -> LocalState:
        try:
            # The user's file: a link to it is followed (dotfiles repositories link .env), but a FIFO, a
            # device or an absurdly large file is refused without blocking.
            status, data = read_regular_file_status(self.path, MAX_FILE_BYTES, follow_links=True)
            # Universal newlines, as python-dotenv's text-mode read sees the file.
            env_text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
            modified = datetime.fromtimestamp(status.st_mtime, UTC)
        except FileNotFoundError:
            env_text, modified = "", datetime.now(UTC)
        except UnicodeDecodeError:
            raise SecretsError(
                f"{self.path}: the file is not UTF-8 text", code="FAILED_PRECONDITION"
            ) from None
        except OSError as error:
            raise SecretsError(
                f"{self.path}: cannot read ({error.strerror})", code="FAILED_PRECONDITION"
            ) from None
        state = LocalState(env_text, {})
        try:
            # Ours: never through a link planted in its place, and bounded.
            raw = json.loads(read_regular_file(self.sidecar, MAX_FILE_BYTES))
        except FileNotFoundError:
            raw = None
        except (OSError, ValueError) as error:
            reason = error.strerror if isinstance(error, OSError) else "not valid JSON"
            raise SecretsError(
                f"{self.sidecar}: cannot read ({reason})", code="FAILED_PRECONDITION"
            ) from None
        if raw is not None:
            try:
                state.secrets, state.last_etag = decode_sidecar(raw)
            except (KeyError, TypeError, ValueError, AttributeError):
                raise SecretsError(
                    f"{self.sidecar}: not a {SIDECAR_FORMAT} file (fix or remove it; the .env stays valid)",
                    code="FAILED_PRECONDITION",
                ) from None
        adopt_env_values(state, envedit.values(env_text), modified)
        return state

    def _save(self, state: LocalState) -> None:
        text = state.env_text
        for secret_id in sorted(state.touched):
            secret = state.secrets.get(secret_id)
            current = secret.current() if secret is not None else None
            text = (
                envedit.remove(text, secret_id)
                if current is None
                else envedit.set_value(text, secret_id, current)
            )
        try:
            if text != state.env_text or not self.path.exists():
                write_atomically(self.path, text.encode("utf-8"))
            document = json.dumps(encode_sidecar(state), indent=2, sort_keys=True) + "\n"
            # 0600 always: it keeps every version's value, whatever mode an older sidecar had.
            write_atomically(self.sidecar, document.encode("utf-8"), mode=SIDECAR_MODE)
        except OSError as error:
            raise SecretsError(
                f"{self.path}: cannot write ({error.strerror or type(error).__name__}); each file holds "
                "its previous or its new content, never a part",
                code="UNAVAILABLE",
            ) from None
