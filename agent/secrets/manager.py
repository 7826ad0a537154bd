"""``SecretManager``: create, read and change secrets in Google Cloud Secret Manager (or the emulator).

Built on the official ``SecretManagerServiceAsyncClient``. The client (and its gRPC channel) is created on
the first call, inside the running event loop, so constructing a ``SecretManager`` starts nothing::

    sm = SecretManager()                              # project and endpoint from the environment / ADC
    await sm.create_secret("db-password", "s3cr3t", secret_type=SecretType.DATABASE)
    password = await sm.get_secret("db-password")
    await sm.close()                                  # or: async with SecretManager() as sm: ...

* Project: the argument, else ``SECRETS_AGENT_PROJECT``, ``GOOGLE_CLOUD_PROJECT``, ``GCLOUD_PROJECT``,
  ``CLOUDSDK_CORE_PROJECT`` (read when the manager is made), else the project Application Default
  Credentials report. That last one is looked up at the first call, not in the constructor: finding it may
  read credential files, run ``gcloud`` or ask the metadata server, and for Google the same lookup loads
  the credentials anyway. No project anywhere: the first call raises SecretsError saying what to set.
* Endpoint: ``endpoint="host:port"``, else ``SECRETS_AGENT_GCP_ENDPOINT``, else
  ``SECRET_MANAGER_EMULATOR_HOST``: plaintext gRPC without credentials (the emulator), or with them when an
  identity is given (below). None of them: Google. (``agent.secrets.environment`` has the whole table.)
* Identity: who the manager is to Secret Manager, with the settings and the code of the agent's ``gcp``
  section (``agent.sources.identity``, google-auth unpatched): ``credentials_file`` (a Workload Identity
  Federation credential configuration, a key file; else Application Default Credentials),
  ``impersonate_service_account`` with ``delegates`` (and ``iam_endpoint`` for another IAM Credentials, the
  emulator's), ``quota_project`` (``x-goog-user-project``; else ``SECRETS_AGENT_GCP_QUOTA_PROJECT``, else
  ``GOOGLE_CLOUD_QUOTA_PROJECT``). The token is refreshed before a call when it is stale, off the event
  loop, so a refused impersonation is one clear error naming the account and the missing permission
  (never a token). With an endpoint, credentials go there when an identity is given (or
  ``endpoint_credentials=True``), over gRPC local credentials to a loopback address only.
* Each call has a timeout (``call_timeout``). Retries (the agent's one policy, ``agent.core.retry``: capped
  exponential backoff with full jitter, at most ``max_attempts`` calls) only where repeating is safe:
  reads and enable/disable on any transient failure (UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED);
  other writes only on RESOURCE_EXHAUSTED, which the service returns before doing anything (a lost answer
  to AddSecretVersion must not add the version twice). Per-minute quotas (600 reads/min per project) are
  what a bulk ``rotate all`` runs into; backoff rides them out instead of failing the rotation.
* Every payload read has its CRC32C verified (DATA_LOSS on mismatch, the value discarded); every payload
  written carries its ``data_crc32c`` so the service verifies it too.
* Errors are ``SecretsError`` subclasses, one line: ``secret 'db': NOT_FOUND: Secret [...] not found.``
* Every call is an audit event on ``agent.audit`` (``agent.secrets.audit``), never the value.

Rotation policy: a new secret of a type we rotate gets ``rotation_period`` = the type's period and
``next_rotation_time`` = now + that period, so Secret Manager publishes SECRET_ROTATE when it is due. Secret
Manager only accepts a rotation policy on a secret that has notification topics, so **without ``topics``
no policy is stored**: due dates then come from the type's period and the current version's age
(``secrets-agent rotation status``, ``rotate --due-only``), which works the same with or without topics.
TLS certificates (rotated by cert-manager) never get a policy.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from google.cloud.secretmanager_v1 import SecretManagerServiceAsyncClient
from google.cloud.secretmanager_v1 import types as pb
from google.protobuf import field_mask_pb2

from agent.core.model import crc32c
from agent.core.retry import Backoff
from agent.observe.logs import fields
from agent.secrets.audit import Operation, audited, default_caller
from agent.secrets.common import as_bytes, as_text, rotation_config_argument, secrets_error
from agent.secrets.connection import Connection, identity_settings
from agent.secrets.connection import Metadata as Metadata
from agent.secrets.environment import QUOTA_PROJECT_ENVS as QUOTA_PROJECT_ENVS
from agent.secrets.environment import endpoint_from, project_from, topics_from
from agent.secrets.interface import SecretInfo, SecretsError, VersionInfo
from agent.secrets.messages import secret_info, version_info
from agent.secrets.rotating import rotator
from agent.secrets.types import TYPE_LABEL, SecretType
from agent.sources.gcp import payload_problem, version_of
from agent.sources.identity import IdentitySettings

log = logging.getLogger(__name__)

BACKEND = "gcp"
DEFAULT_BACKOFF = Backoff(initial=0.5, maximum=30.0)
"""Between attempts: caps 0.5, 1, 2 ... 30 s (full jitter); eight attempts span about one quota minute."""


class SecretManager:
    """The secrets API over Google Cloud Secret Manager (or its emulator).

    Use it in one running event loop, and close it when done (``await sm.close()``, or
    ``async with SecretManager() as sm``). Constructing it reads only the environment: nothing connects
    until the first call, which builds the client inside the running loop.

    ```python
    sm = SecretManager()                         # project from the environment / ADC
    await sm.create_secret("api-key", "value", secret_type=SecretType.API_KEY)
    value = await sm.get_secret("api-key")
    await sm.close()
    ```

    Who the manager is to Secret Manager takes the agent's ``gcp`` identity settings, under the same
    names, checked by the agent's own loader:

    ```python
    sm = SecretManager(
        "my-project",
        impersonate_service_account="rotator@my-project.iam.gserviceaccount.com",
        quota_project="platform-billing",
    )
    ```

    Args:
        project: The project secrets live in (id or number). None: ``SECRETS_AGENT_PROJECT``, else
            ``GOOGLE_CLOUD_PROJECT``, ``GCLOUD_PROJECT``, ``CLOUDSDK_CORE_PROJECT``, else the project
            Application Default Credentials report, looked up at the first call.
        endpoint: ``HOST:PORT`` of a plaintext gRPC endpoint (the emulator), spoken to without
            credentials unless an identity is given (see ``endpoint_credentials``). None:
            ``SECRETS_AGENT_GCP_ENDPOINT``, else ``SECRET_MANAGER_EMULATOR_HOST``, else Google itself.
        credentials_file: A Google credential configuration or key file, loaded by google-auth: an
            ``external_account`` file (Workload Identity Federation: a Kubernetes service account token
            exchanged at STS, re-read at every refresh), a service account key... The agent's
            ``gcp.credentials_file``. None: Application Default Credentials.
        impersonate_service_account: Call Secret Manager as this service account (an email), impersonated
            with the credentials above through IAM Credentials' generateAccessToken; they need
            ``roles/iam.serviceAccountTokenCreator`` (``iam.serviceAccounts.getAccessToken``) on it. None:
            no impersonation.
        delegates: The delegation chain to ``impersonate_service_account``: service account emails in
            order, each holding the Token Creator role on the next.
        iam_endpoint: Where impersonation asks for tokens instead of Google's IAM Credentials: a base URL
            (``http://127.0.0.1:8781``, the emulator; ``http://`` only to a loopback address) or the full
            generateAccessToken URL with ``{}`` for the account. Only with ``impersonate_service_account``.
        quota_project: The project the calls count against (quota and billing), sent as
            ``x-goog-user-project``; the caller needs ``roles/serviceusage.serviceUsageConsumer`` on it.
            None: ``SECRETS_AGENT_GCP_QUOTA_PROJECT``, else ``GOOGLE_CLOUD_QUOTA_PROJECT``, else none (each
            call counts against the project of its secret).
        endpoint_credentials: Whether the credentials go to ``endpoint`` too (an ``authorization`` token
            on every call, over gRPC local credentials, which only connect to a loopback address). None:
            when ``credentials_file`` or ``impersonate_service_account`` is given. Ignored without an
            endpoint (Google always gets them).
        topics: Pub/Sub topics (``projects/P/topics/T``) new secrets notify; Secret Manager stores a
            rotation policy only on a secret with topics. None: ``SECRETS_AGENT_EVENTS_TOPIC`` when set,
            else no topics.
        caller: Who is acting, for the audit log. None: ``user@host pid N``.
        call_timeout: Seconds each call may take (default 10).
        rotation_config: How ``rotate_secret`` rotates secrets that need a provider configured (databases,
            API keys, OAuth tokens): the path of a rotation config file (the file ``secrets-agent rotate
            --config`` reads), its content as a mapping, or an ``agent.rotation.config.RotationConfig``.
            None: labels and type defaults only.
        max_attempts: Calls per operation at most, the first one included (default 8).
        backoff: The delay schedule between attempts (full jitter).
        environ: Where the defaults above are read; None: ``os.environ``. (Application Default
            Credentials, when used, always read the process environment.)

    Raises:
        ValueError: ``project`` is an empty string, ``call_timeout`` is not positive or ``max_attempts``
            is below 1.
        ConfigError: ``SECRETS_AGENT_GCP_ENDPOINT`` or ``SECRET_MANAGER_EMULATOR_HOST`` is set but is not
            ``HOST:PORT``, or a quota project variable is not a project (the message names the variable);
            an identity argument is invalid, the agent's loader says why (every problem, each named
            ``SecretManager.ARGUMENT``: ``SecretManager.impersonate_service_account: expected a service
            account email ...``); credentials would go in plaintext to an endpoint that is not on a
            loopback address.
    """

    backend = BACKEND

    def __init__(
        self,
        project: str | None = None,
        *,
        endpoint: str | None = None,
        credentials_file: str | os.PathLike[str] | None = None,
        impersonate_service_account: str | None = None,
        delegates: Sequence[str] = (),
        iam_endpoint: str | None = None,
        quota_project: str | None = None,
        endpoint_credentials: bool | None = None,
        topics: Sequence[str] | None = None,
        caller: str | None = None,
        call_timeout: float = 10.0,
        rotation_config: object | None = None,
        max_attempts: int = 8,
        backoff: Backoff = DEFAULT_BACKOFF,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        if project is not None and not project.strip():
            raise ValueError(
                "project must be a Google Cloud project id or number (or None: from the environment / ADC)"
            )
        if call_timeout <= 0:
            raise ValueError(f"call_timeout must be positive, got {call_timeout}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        env = os.environ if environ is None else environ
        chosen_project = project.strip() if project is not None else project_from(env)
        chosen_endpoint = endpoint or endpoint_from(env)
        identity = identity_settings(
            chosen_endpoint,
            env,
            credentials_file=credentials_file,
            impersonate_service_account=impersonate_service_account,
            delegates=delegates,
            iam_endpoint=iam_endpoint,
            quota_project=quota_project,
            endpoint_credentials=endpoint_credentials,
        )
        self.topics: tuple[str, ...] = tuple(topics) if topics is not None else topics_from(env)
        """Pub/Sub topics (``projects/P/topics/T``) new secrets notify; needed for a rotation policy."""
        self.caller = caller or default_caller()
        """Who is acting, for the audit log."""
        self.rotation_config = rotation_config_argument(rotation_config)
        """What ``rotate_secret`` hands the rotation tooling (a relative file path made absolute now)."""
        self._connection = Connection(
            chosen_project,
            chosen_endpoint,
            identity,
            call_timeout=call_timeout,
            max_attempts=max_attempts,
            backoff=backoff,
        )
        """The client, the identity it calls as and the calls (``agent.secrets.connection``)."""

    # The connection's settings, read and set through the manager as before.

    @property
    def project(self) -> str | None:
        """The project secrets live in (id or number). None only until the first call, when it comes from
        Application Default Credentials."""
        return self._connection.project

    @project.setter
    def project(self, value: str | None) -> None:
        self._connection.project = value

    @property
    def endpoint(self) -> str | None:
        """``host:port`` of a plaintext gRPC endpoint (the emulator), or None for Google."""
        return self._connection.endpoint

    @endpoint.setter
    def endpoint(self, value: str | None) -> None:
        self._connection.endpoint = value

    @property
    def identity(self) -> IdentitySettings:
        """Who the manager is to Secret Manager: the agent's identity settings (credentials file,
        impersonated account and chain, IAM endpoint, quota project, whether credentials go to
        ``endpoint``), as checked and resolved here."""
        return self._connection.identity

    @identity.setter
    def identity(self, value: IdentitySettings) -> None:
        self._connection.identity = value

    @property
    def call_timeout(self) -> float:
        """Seconds each call may take."""
        return self._connection.call_timeout

    @call_timeout.setter
    def call_timeout(self, value: float) -> None:
        self._connection.call_timeout = value

    @property
    def max_attempts(self) -> int:
        """Calls per operation at most, first one included (see the module docstring for which retry)."""
        return self._connection.max_attempts

    @max_attempts.setter
    def max_attempts(self, value: int) -> None:
        self._connection.max_attempts = value

    @property
    def backoff(self) -> Backoff:
        """The delay schedule between attempts (full jitter; the caps sum to about a minute by default, one
        quota window)."""
        return self._connection.backoff

    @backoff.setter
    def backoff(self, value: Backoff) -> None:
        self._connection.backoff = value

    async def __aenter__(self) -> SecretManager:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- names -------------------------------------------------------------------------------------

    def secret_name(self, secret_id: str) -> str:
        """The secret's resource name.

        Args:
            secret_id: The secret's id.

        Returns:
            ``projects/P/secrets/ID``.

        Raises:
            SecretsError: The project is not known yet (it comes from Application Default Credentials at
                the first call).
        """
        return f"{self._parent(secret_id)}/secrets/{secret_id}"

    def version_name(self, secret_id: str, version: str) -> str:
        """A version's resource name.

        Args:
            secret_id: The secret's id.
            version: A version number, ``latest`` or an alias.

        Returns:
            ``projects/P/secrets/ID/versions/V``.

        Raises:
            SecretsError: The project is not known yet (see ``secret_name``).
        """
        return f"{self.secret_name(secret_id)}/versions/{version}"

    def _parent(self, secret_id: str = "") -> str:
        if self.project is None:
            raise SecretsError(
                "the project is not known until the first call (it comes from Application Default "
                "Credentials); pass SecretManager(project=...) or set SECRETS_AGENT_PROJECT to know it now",
                code="FAILED_PRECONDITION",
                secret_id=secret_id,
            )
        return f"projects/{self.project}"

    # -- secrets -----------------------------------------------------------------------------------

    async def create_secret(
        self,
        secret_id: str,
        secret_data: str | bytes,
        secret_type: SecretType,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> VersionInfo:
        """Create the secret and its first version.

        The secret gets the label ``secret-type``, automatic replication, the configured topics and, for a
        type we rotate and when topics are configured, a rotation policy from the type (see the module
        docstring). If the first version cannot be added, the new secret is deleted again.

        Args:
            secret_id: The new secret's id (letters, digits, ``-`` and ``_``, at most 255).
            secret_data: The first value: text (stored as UTF-8) or bytes.
            secret_type: What kind of secret it is (the ``secret-type`` label, the rotation period).
            labels: More labels (``secret-type`` is always the type's).
            annotations: Annotations to set.

        Returns:
            The first version (``version="1"``, ``ENABLED``).

        Raises:
            SecretsError: ``ALREADY_EXISTS`` when the secret exists, ``INVALID_ARGUMENT`` for a bad id or
                value, or the service's status otherwise; never with the value in it.
        """
        data = as_bytes(secret_data, secret_id)  # before anything is created
        secret = pb.Secret(
            labels={**(labels or {}), TYPE_LABEL: secret_type.value},
            annotations=dict(annotations or {}),
            replication=pb.Replication(automatic=pb.Replication.Automatic()),
            topics=[pb.Topic(name=topic) for topic in self.topics],
        )
        period = secret_type.rotation_period
        if period is not None and self.topics:
            secret.rotation = pb.Rotation(
                rotation_period=period, next_rotation_time=datetime.now(UTC) + period
            )
        with audited("create", secret_id, caller=self.caller, backend=BACKEND) as event:
            client = await self._connection.client()
            request = pb.CreateSecretRequest(
                parent=self._parent(secret_id), secret_id=secret_id, secret=secret
            )
            await self._connection.call(secret_id, client.create_secret, request)
            try:
                version = await self._add(client, secret_id, data)
            except SecretsError:
                await self._delete_quietly(client, secret_id)
                raise
            event.version = version.version
            return version

    async def get_secret_info(self, secret_id: str) -> SecretInfo:
        """The secret's metadata, without any value.

        Args:
            secret_id: The secret's id.

        Returns:
            Its type, labels, annotations, rotation policy, topics and etag.

        Raises:
            SecretNotFound: There is no such secret.
            SecretsError: The service failed otherwise.
        """
        with audited("describe", secret_id, caller=self.caller, backend=BACKEND):
            client = await self._connection.client()
            request = pb.GetSecretRequest(name=self.secret_name(secret_id))
            return secret_info(
                await self._connection.call(secret_id, client.get_secret, request, idempotent=True)
            )

    async def list_secrets(self, types: Sequence[SecretType] | None = None) -> list[SecretInfo]:
        """Every secret of the project, or those of some types, sorted by id.

        The service filters by ``labels.secret-type``; the result is filtered again here, so a service
        that ignores part of the filter cannot widen it, and one that refuses the filter
        (INVALID_ARGUMENT) is asked for every secret instead.

        Args:
            types: Only secrets whose ``secret-type`` label is one of these; None: every secret.

        Returns:
            The secrets' metadata, sorted by id.

        Raises:
            SecretsError: The service failed.
        """
        wanted = None if types is None else {t.value for t in types}
        if wanted is not None and not wanted:
            return []
        with audited("list", "*", caller=self.caller, backend=BACKEND):
            text = " OR ".join(f"labels.{TYPE_LABEL}={value}" for value in sorted(wanted or ()))
            try:
                found = await self._list_secrets(text)
            except SecretsError as error:
                if not text or error.code != "INVALID_ARGUMENT":
                    raise
                log.debug(
                    "the service refused the label filter; listing every secret", extra=fields(filter=text)
                )
                found = await self._list_secrets("")
        infos = [secret_info(secret) for secret in found]
        if wanted is not None:
            infos = [i for i in infos if i.labels.get(TYPE_LABEL) in wanted]
        return sorted(infos, key=lambda info: info.secret_id)

    async def _list_secrets(self, filter_text: str) -> list[pb.Secret]:
        client = await self._connection.client()
        request = pb.ListSecretsRequest(parent=self._parent(), filter=filter_text)

        async def every_secret() -> list[pb.Secret]:
            pager = await client.list_secrets(
                request=request, retry=None, timeout=self.call_timeout, metadata=self._connection.metadata
            )
            return [secret async for secret in pager]

        return await self._connection.call_with("*", every_secret, idempotent=True)

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

        UpdateSecret replaces the whole annotation map, so the new map is built on the annotations as of
        ``etag``: ``current`` when the caller has them (the rotation lock does: one call per lock write
        instead of two, against the 600 reads/min quota), else read first. The service checks the etag
        either way, so a stale ``current`` can only make the update fail, never lose an annotation.

        Args:
            secret_id: The secret's id.
            set_: Annotations to set (added or replaced).
            remove: Annotation keys to remove.
            etag: The etag the secret must still have.
            current: The secret's annotations as of ``etag``, when the caller has them (saves a read).

        Returns:
            The secret, with its new etag.

        Raises:
            ConcurrentModification: The etag no longer matches (someone changed the secret meanwhile).
            SecretNotFound: There is no such secret.
            SecretsError: The service failed otherwise.
        """
        with audited("annotate", secret_id, caller=self.caller, backend=BACKEND):
            client = await self._connection.client()
            name = self.secret_name(secret_id)
            if current is None:
                secret = await self._connection.call(
                    secret_id, client.get_secret, pb.GetSecretRequest(name=name), idempotent=True
                )
                if secret.etag != etag:
                    raise secrets_error(
                        secret_id, "FAILED_PRECONDITION", "the etag no longer matches", etag_sent=True
                    )
                current = secret.annotations
            annotations = dict(current)
            annotations.update(set_)
            for key in remove:
                annotations.pop(key, None)
            request = pb.UpdateSecretRequest(
                secret=pb.Secret(name=name, annotations=annotations, etag=etag),
                update_mask=field_mask_pb2.FieldMask(paths=["annotations"]),
            )
            updated = await self._connection.call(secret_id, client.update_secret, request, etag_sent=True)
            return secret_info(updated)

    async def set_next_rotation_time(self, secret_id: str, when: datetime) -> SecretInfo:
        """Move the rotation policy's next_rotation_time.

        A secret without notification topics has no rotation policy in Secret Manager (the service refuses
        one): the call changes nothing and returns the secret as it is.

        Args:
            secret_id: The secret's id.
            when: The next rotation time (timezone-aware).

        Returns:
            The secret as it is now.

        Raises:
            ValueError: ``when`` is naive (no timezone).
            SecretNotFound: There is no such secret.
            SecretsError: The service failed otherwise.
        """
        if when.tzinfo is None:
            raise ValueError("when must be timezone-aware")
        with audited("schedule", secret_id, caller=self.caller, backend=BACKEND):
            client = await self._connection.client()
            name = self.secret_name(secret_id)
            current = await self._connection.call(
                secret_id, client.get_secret, pb.GetSecretRequest(name=name), idempotent=True
            )
            if not current.topics:
                return secret_info(current)
            request = pb.UpdateSecretRequest(
                secret=pb.Secret(name=name, rotation=pb.Rotation(next_rotation_time=when)),
                update_mask=field_mask_pb2.FieldMask(paths=["rotation.next_rotation_time"]),
            )
            return secret_info(await self._connection.call(secret_id, client.update_secret, request))

    async def delete_secret(self, secret_id: str, etag: str = "") -> None:
        """Delete the secret and every version.

        Args:
            secret_id: The secret's id.
            etag: When given, delete only if the secret's etag is still this.

        Raises:
            ConcurrentModification: ``etag`` was given and no longer matches.
            SecretNotFound: There is no such secret.
            SecretsError: The service failed otherwise.
        """
        with audited("delete", secret_id, caller=self.caller, backend=BACKEND):
            client = await self._connection.client()
            request = pb.DeleteSecretRequest(name=self.secret_name(secret_id), etag=etag)
            await self._connection.call(secret_id, client.delete_secret, request, etag_sent=bool(etag))

    # -- versions ----------------------------------------------------------------------------------

    async def get_secret(self, secret_id: str, version: str = "latest") -> str:
        """A version's value as text, its CRC32C verified.

        Args:
            secret_id: The secret's id.
            version: A version number, ``latest`` (the newest version, whatever its state, as in the
                service) or an alias.

        Returns:
            The value, decoded as UTF-8.

        Raises:
            SecretNotFound: There is no such secret or version.
            VersionNotEnabled: The version is DISABLED or DESTROYED.
            SecretsError: ``INVALID_ARGUMENT`` when the value is not UTF-8 (use ``get_secret_bytes``),
                ``DATA_LOSS`` when its checksum does not match, or the service's status otherwise.
        """
        data, number = await self._access(secret_id, version)
        return as_text(data, secret_id, number)

    async def get_secret_bytes(self, secret_id: str, version: str = "latest") -> bytes:
        """A version's value as bytes, its CRC32C verified.

        Args:
            secret_id: The secret's id.
            version: A version number, ``latest`` or an alias.

        Returns:
            The value.

        Raises:
            SecretNotFound: There is no such secret or version.
            VersionNotEnabled: The version is DISABLED or DESTROYED.
            SecretsError: ``DATA_LOSS`` when the checksum does not match (the value is discarded), or the
                service's status otherwise.
        """
        data, _ = await self._access(secret_id, version)
        return data

    async def _access(self, secret_id: str, version: str) -> tuple[bytes, str]:
        with audited("access", secret_id, caller=self.caller, backend=BACKEND, version=version) as event:
            client = await self._connection.client()
            request = pb.AccessSecretVersionRequest(name=self.version_name(secret_id, version))
            response = await self._connection.call(
                secret_id, client.access_secret_version, request, reading_value=True, idempotent=True
            )
            number = version_of(response.name)
            event.version = number
            payload = response.payload
            data = bytes(payload.data)
            problem = payload_problem(payload, crc32c(data))
            if problem is not None:
                raise secrets_error(
                    secret_id, "DATA_LOSS", f"version {number}: payload {problem}; the value was discarded"
                )
            return data, number

    async def resolve_version(self, secret_id: str, version: str = "latest") -> VersionInfo:
        """The version ``version`` names, whatever its state, without reading the value.

        Args:
            secret_id: The secret's id.
            version: A version number, ``latest`` or an alias.

        Returns:
            The version's metadata, its number resolved (``latest`` -> ``"3"``).

        Raises:
            SecretNotFound: There is no such secret or version.
            SecretsError: The service failed otherwise.
        """
        with audited("resolve", secret_id, caller=self.caller, backend=BACKEND, version=version) as event:
            client = await self._connection.client()
            request = pb.GetSecretVersionRequest(name=self.version_name(secret_id, version))
            found = await self._connection.call(
                secret_id, client.get_secret_version, request, idempotent=True
            )
            info = version_info(secret_id, found)
            event.version = info.version
            return info

    async def add_version(self, secret_id: str, secret_data: str | bytes) -> VersionInfo:
        """Add a version: ENABLED, the new ``latest``; its CRC32C goes along for the service to check.

        Args:
            secret_id: The secret's id.
            secret_data: The new value: text (stored as UTF-8) or bytes.

        Returns:
            The new version.

        Raises:
            SecretNotFound: There is no such secret.
            SecretsError: The service failed otherwise (never with the value in it).
        """
        with audited("add", secret_id, caller=self.caller, backend=BACKEND) as event:
            info = await self._add(
                await self._connection.client(), secret_id, as_bytes(secret_data, secret_id)
            )
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
            SecretsError: The service failed otherwise.
        """
        with audited("list-versions", secret_id, caller=self.caller, backend=BACKEND):
            client = await self._connection.client()
            request = pb.ListSecretVersionsRequest(parent=self.secret_name(secret_id))

            async def every_version() -> list[pb.SecretVersion]:
                pager = await client.list_secret_versions(
                    request=request, retry=None, timeout=self.call_timeout, metadata=self._connection.metadata
                )
                return [version async for version in pager]

            found = await self._connection.call_with(secret_id, every_version, idempotent=True)
        infos = [version_info(secret_id, v) for v in found]
        return sorted(infos, key=lambda info: int(info.version), reverse=True)

    async def enable_version(self, secret_id: str, version: str) -> VersionInfo:
        """Enable a DISABLED version (enabling an enabled one changes nothing).

        Args:
            secret_id: The secret's id.
            version: The version number.

        Returns:
            The version as it is now.

        Raises:
            SecretNotFound: There is no such secret or version.
            SecretsError: The version is DESTROYED (``FAILED_PRECONDITION``), or the service failed.
        """
        return await self._set_state("enable", secret_id, version)

    async def disable_version(self, secret_id: str, version: str) -> VersionInfo:
        """Disable a version: its value can no longer be read, until it is enabled again.

        Args:
            secret_id: The secret's id.
            version: The version number.

        Returns:
            The version as it is now.

        Raises:
            SecretNotFound: There is no such secret or version.
            SecretsError: The version is DESTROYED (``FAILED_PRECONDITION``), or the service failed.
        """
        return await self._set_state("disable", secret_id, version)

    async def destroy_version(self, secret_id: str, version: str) -> VersionInfo:
        """Destroy the version's data for good (or schedule it, when the secret has a destroy TTL).

        Args:
            secret_id: The secret's id.
            version: The version number.

        Returns:
            The version as it is now (``DESTROYED``).

        Raises:
            SecretNotFound: There is no such secret or version.
            SecretsError: The version is already DESTROYED (``FAILED_PRECONDITION``), or the service
                failed.
        """
        return await self._set_state("destroy", secret_id, version)

    async def _set_state(self, operation: Operation, secret_id: str, version: str) -> VersionInfo:
        with audited(operation, secret_id, caller=self.caller, backend=BACKEND, version=version):
            client = await self._connection.client()
            name = self.version_name(secret_id, version)
            call: Callable[..., Awaitable[pb.SecretVersion]]
            request: Any
            if operation == "enable":
                call, request = client.enable_secret_version, pb.EnableSecretVersionRequest(name=name)
            elif operation == "disable":
                call, request = client.disable_secret_version, pb.DisableSecretVersionRequest(name=name)
            else:
                call, request = client.destroy_secret_version, pb.DestroySecretVersionRequest(name=name)
            # Setting a state twice is harmless; destroying twice is refused (FAILED_PRECONDITION).
            repeatable = operation != "destroy"
            return version_info(
                secret_id, await self._connection.call(secret_id, call, request, idempotent=repeatable)
            )

    async def rotate_secret(self, secret_id: str) -> str:
        """Rotate the secret with its rotation provider: back up, generate, apply, add, validate.

        The provider comes from ``rotation_config`` (the secret's entry), else the secret's
        ``rotation-provider`` labels, else its type's default: encryption keys, JWT and session secrets
        get a new random value. A database, an API key or an OAuth token needs a provider configured
        (a database: ``provider: postgres`` with its role and admin connection); without one the error
        says what to write and where. Any failure after the new value was applied rolls it back. The
        rotation tooling (``agent.rotation``) is loaded on first use (see ``agent.secrets.rotating``).

        Args:
            secret_id: The secret's id.

        Returns:
            The new version number (``"2"``).

        Raises:
            SecretNotFound: There is no such secret.
            SecretsError: No provider is configured for the secret (``FAILED_PRECONDITION``; the message
                says what to configure), the rotation config is invalid (``INVALID_ARGUMENT``), or the
                rotation failed, was rolled back or was not done (``ABORTED``; the message says why).
                Never with a value in it.
        """
        return await rotator()(self, secret_id, self.rotation_config)

    async def close(self) -> None:
        """Close the channel. The manager may be used again: the next call builds a new client."""
        await self._connection.close()

    # -- plumbing ----------------------------------------------------------------------------------

    async def _add(self, client: SecretManagerServiceAsyncClient, secret_id: str, data: bytes) -> VersionInfo:
        request = pb.AddSecretVersionRequest(
            parent=self.secret_name(secret_id),
            payload=pb.SecretPayload(data=data, data_crc32c=crc32c(data)),
        )
        return version_info(
            secret_id, await self._connection.call(secret_id, client.add_secret_version, request)
        )

    async def _delete_quietly(self, client: SecretManagerServiceAsyncClient, secret_id: str) -> None:
        request = pb.DeleteSecretRequest(name=self.secret_name(secret_id))
        # The first error is the one to report; an empty secret left behind is harmless.
        with contextlib.suppress(SecretsError):
            await self._connection.call(secret_id, client.delete_secret, request)
