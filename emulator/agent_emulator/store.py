"""The in-memory Secret Manager: one method per RPC, behaving (and refusing) the way the service does.

Every public RPC method takes the proto-plus request and returns the proto-plus response, raising
EmulatorError with the code and message Google would send. Methods are synchronous: gRPC aio and aiohttp
share one event loop thread, so each call is atomic without locks. Callers get copies, never the stored
messages, so nothing outside the store can change its state.

Messages never contain payloads: only names, states, labels and other metadata.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from google.cloud.secretmanager_v1 import types

from agent_emulator import secret_rules as rules
from agent_emulator.clock import Clock
from agent_emulator.errors import EmulatorError
from agent_emulator.events import EventPublisher
from agent_emulator.listing import page, select
from agent_emulator.records import (
    SECRET_MESSAGE_FIELDS,
    VERSION_FIELDS,
    StoredSecret,
    StoredVersion,
    check_replication_unchanged,
    clear_field,
    copy_message,
    crc32c,
    etag_value,
    known_secret_field,
    load_secret,
    number_of,
    replication_status,
    secret_fields,
    settable_rotation,
    to_json,
    version_fields,
)
from agent_emulator.resource_names import (
    SECRET_ID,
    Parent,
    SecretName,
    VersionName,
    parse_numbered_version_name,
    parse_parent,
    parse_secret_name,
    parse_version_name,
)

log = logging.getLogger(__name__)

State = types.SecretVersion.State
# Looked up by name so type checkers see State members, not the plain ints proto-plus declares.
ENABLED, DISABLED, DESTROYED = (State.__members__[name] for name in ("ENABLED", "DISABLED", "DESTROYED"))
M = TypeVar("M")

DATA_FORMAT = "secrets-agent-emulator/1"
"""Marks files written by :meth:`SecretStore.dump`, so a wrong file is refused, not half-read."""

ETAG_MISMATCH = (
    "The etag provided in the request does not match the resource's current etag. "
    "Please retry the whole read-modify-write with exponential backoff."
)

_IGNORED_PATHS = {"name", "create_time", "createTime", "tags", "etag"}
_IMMUTABLE_PATHS = {"secret_type": "secret_type", "secretType": "secret_type"}
_IMMUTABLE_PATHS |= {"policy_member": "policy_member", "policyMember": "policy_member"}
_UPDATABLE_PATHS = {
    "labels": "labels",
    "annotations": "annotations",
    "version_aliases": "version_aliases",
    "versionAliases": "version_aliases",
    "expire_time": "expiration",
    "expireTime": "expiration",
    "ttl": "expiration",
    "version_destroy_ttl": "version_destroy_ttl",
    "versionDestroyTtl": "version_destroy_ttl",
    "replication": "replication",
    "topics": "topics",
    "rotation": "rotation",
    "rotation.next_rotation_time": "rotation.next_rotation_time",
    "rotation.nextRotationTime": "rotation.next_rotation_time",
    "rotation.rotation_period": "rotation.rotation_period",
    "rotation.rotationPeriod": "rotation.rotation_period",
    "customer_managed_encryption": "customer_managed_encryption",
    "customerManagedEncryption": "customer_managed_encryption",
}


def _error(code: grpc.StatusCode, message: str) -> EmulatorError:
    return EmulatorError(code, message)


class SecretStore:
    """Secrets and their versions, global and regional, for any project name."""

    def __init__(self, clock: Clock, publisher: EventPublisher) -> None:
        self._clock = clock
        self._publisher = publisher
        self._secrets: dict[SecretName, StoredSecret] = {}
        self._last_etag = 0
        self.on_change: Callable[[], None] | None = None
        """Called after every mutation (the server persists the store from here)."""

    # -- helpers ---------------------------------------------------------------------------------

    def _now(self) -> dt.datetime:
        return self._clock.now()

    def _new_etag(self) -> str:
        # Quoted hex like the service's ('"165cdb2b1551bc"'); strictly increasing so no two writes share one.
        self._last_etag = max(self._last_etag + 1, int(self._now().timestamp() * 1_000_000))
        return f'"{self._last_etag:x}"'

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def _publish(self, event: str, secret: StoredSecret, version: StoredVersion | None = None) -> None:
        if secret.meta.topics:
            self._publisher.publish(
                event, copy_message(secret.meta), copy_message(version.meta) if version else None
            )

    def _publish_expiry(self, secret: StoredSecret) -> None:
        if secret.meta.topics:
            self._publisher.publish("SECRET_DELETE", copy_message(secret.meta), delete_type="EXPIRATION")

    def _secret(self, name: SecretName) -> StoredSecret:
        record = self._secrets.get(name)
        if record is None:
            raise _error(grpc.StatusCode.NOT_FOUND, f"Secret [{name}] not found.")
        return record

    @staticmethod
    def _check_etag(sent: str, current: str) -> None:
        if sent and sent != current:
            raise _error(grpc.StatusCode.FAILED_PRECONDITION, ETAG_MISMATCH)

    def _resolve(self, name: VersionName) -> tuple[StoredSecret, StoredVersion]:
        """The version a number, ``latest`` or alias refers to, with NOT_FOUND worded per case."""
        record = self._secrets.get(name.secret)
        number = name.number
        if name.is_latest:
            if record is None or record.newest is None:
                raise _error(
                    grpc.StatusCode.NOT_FOUND, f"Secret [{name.secret}] not found or has no versions."
                )
            number = record.newest
        elif number is None:
            if record is None:
                raise _error(grpc.StatusCode.NOT_FOUND, f"Secret [{name.secret}] not found.")
            if name.version not in record.meta.version_aliases:
                raise _error(
                    grpc.StatusCode.NOT_FOUND, f"Secret [{name.secret}] has no alias [{name.version}]"
                )
            number = int(record.meta.version_aliases[name.version])
        if record is None or number not in record.versions:
            raise _error(
                grpc.StatusCode.NOT_FOUND, f"Secret Version [{name.secret.version(number)}] not found."
            )
        return record, record.versions[number]

    def _numbered(self, value: str, etag: str) -> tuple[StoredSecret, StoredVersion]:
        name, number = parse_numbered_version_name(value)
        record, version = self._resolve(VersionName(name.secret, str(number)))
        self._check_etag(etag, version.meta.etag)
        return record, version

    # -- secrets ---------------------------------------------------------------------------------

    def create_secret(self, request: types.CreateSecretRequest) -> types.Secret:
        parent = parse_parent(request.parent)
        if not request.secret_id:
            raise rules.invalid("Secret ID must be provided.")
        if not SECRET_ID.fullmatch(request.secret_id):
            # Reported on the full name, like every other malformed secret id.
            parse_secret_name(f"{parent}/secrets/{request.secret_id}")
        name = SecretName(parent, request.secret_id)
        if name in self._secrets:
            raise _error(grpc.StatusCode.ALREADY_EXISTS, f"Secret [{name}] already exists.")
        secret = self._new_secret(name, request.secret)
        record = StoredSecret(name, secret)
        self._secrets[name] = record
        self._publish("SECRET_CREATE", record)
        self._changed()
        return copy_message(secret)

    def _new_secret(self, name: SecretName, given: types.Secret) -> types.Secret:
        now = self._now()
        replication = rules.creation_replication(given, regional=name.parent.location is not None)
        rules.check_topics(given.topics)
        rules.check_labels(given.labels)
        rules.check_annotations(given.annotations)
        if given.version_aliases:
            rules.check_aliases(given.version_aliases, existing_versions=())
        secret = types.Secret(
            name=str(name),
            create_time=now,
            labels=dict(given.labels),
            annotations=dict(given.annotations),
            topics=[types.Topic(name=topic.name) for topic in given.topics],
        )
        if replication is not None:
            secret.replication = replication
        expire_time = self._expiration_of(given, now)
        if expire_time is not None:
            secret.expire_time = expire_time
        if "version_destroy_ttl" in given:
            rules.check_destroy_ttl(given.version_destroy_ttl)
            secret.version_destroy_ttl = given.version_destroy_ttl
        if "customer_managed_encryption" in given:
            secret.customer_managed_encryption = copy_message(given.customer_managed_encryption)
        if "rotation" in given:
            secret.rotation = settable_rotation(given.rotation)
        rules.check_rotation(secret, now, next_time_sent=True, period_sent=True)
        secret.etag = self._new_etag()
        return secret

    @staticmethod
    def _expiration_of(given: types.Secret, now: dt.datetime) -> dt.datetime | None:
        """The expiry a request asks for (``ttl`` is input-only: it becomes ``expire_time``)."""
        if "ttl" in given:
            expire_time: dt.datetime = now + given.ttl
        elif "expire_time" in given:
            expire_time = given.expire_time
        else:
            return None
        rules.check_expiration(expire_time, now)
        return expire_time

    def get_secret(self, request: types.GetSecretRequest) -> types.Secret:
        return copy_message(self._secret(parse_secret_name(request.name)).meta)

    def list_secrets(self, request: types.ListSecretsRequest) -> types.ListSecretsResponse:
        parent = parse_parent(request.parent)
        records = sorted(
            (r for r in self._secrets.values() if r.name.parent == parent), key=lambda r: r.name.secret_id
        )
        matching = select(records, request.filter, known_secret_field, secret_fields, SECRET_MESSAGE_FIELDS)
        chosen, token = page(
            matching,
            lambda r: r.name.secret_id,
            request.page_size,
            request.page_token,
            scope=f"secrets|{parent}|{request.filter}",
        )
        return types.ListSecretsResponse(
            secrets=[copy_message(r.meta) for r in chosen],
            next_page_token=token,
            # The service reports 0 when a filter is set (documented on ListSecretsResponse.total_size).
            total_size=0 if request.filter else len(matching),
        )

    def update_secret(self, request: types.UpdateSecretRequest) -> types.Secret:
        record = self._secret(parse_secret_name(request.secret.name))
        if "update_mask" not in request:
            raise rules.invalid("Field [update_mask] is required.")
        self._check_etag(request.secret.etag, record.meta.etag)
        paths = []
        for raw in request.update_mask.paths:
            if raw in _IMMUTABLE_PATHS:
                raise rules.invalid(f"Field '{_IMMUTABLE_PATHS[raw]}' is immutable and cannot be updated.")
            if raw in _IGNORED_PATHS:
                continue
            if raw not in _UPDATABLE_PATHS:
                raise rules.invalid("Request contains an invalid argument.")
            paths.append(_UPDATABLE_PATHS[raw])
        draft = copy_message(record.meta)
        self._apply_update(record, draft, request.secret, paths)
        draft.etag = self._new_etag()
        record.meta = draft
        self._publish("SECRET_UPDATE", record)
        self._changed()
        return copy_message(draft)

    def _apply_update(
        self, record: StoredSecret, draft: types.Secret, given: types.Secret, paths: list[str]
    ) -> None:
        """Apply each masked path: a path whose field the request left unset clears it; maps are replaced."""
        now = self._now()
        rotation_touched = next_sent = period_sent = False
        for path in paths:
            if path in ("labels", "annotations", "version_aliases"):
                target = getattr(draft, path)
                target.clear()
                target.update(dict(getattr(given, path)))
            elif path == "expiration":
                expire_time = self._expiration_of(given, now)
                if expire_time is None:
                    clear_field(draft, "expire_time")
                else:
                    draft.expire_time = expire_time
            elif path == "version_destroy_ttl":
                if "version_destroy_ttl" in given:
                    rules.check_destroy_ttl(given.version_destroy_ttl)
                    draft.version_destroy_ttl = given.version_destroy_ttl
                else:
                    clear_field(draft, "version_destroy_ttl")
            elif path == "customer_managed_encryption":
                if "customer_managed_encryption" in given:
                    draft.customer_managed_encryption = copy_message(given.customer_managed_encryption)
                else:
                    clear_field(draft, "customer_managed_encryption")
            elif path == "replication":
                check_replication_unchanged(record, given)
            elif path == "topics":
                rules.check_topics(given.topics)
                draft.topics = [types.Topic(name=topic.name) for topic in given.topics]
                rotation_touched = True
            else:
                rotation_touched = True
                whole = path == "rotation"
                sent = given.rotation if "rotation" in given else types.Rotation()
                rotation = settable_rotation(draft.rotation) if "rotation" in draft else types.Rotation()
                if whole or path == "rotation.next_rotation_time":
                    next_sent = "next_rotation_time" in sent
                    if next_sent:
                        rotation.next_rotation_time = sent.next_rotation_time
                    else:
                        clear_field(rotation, "next_rotation_time")
                if whole or path == "rotation.rotation_period":
                    period_sent = "rotation_period" in sent
                    if period_sent:
                        rotation.rotation_period = sent.rotation_period
                    else:
                        clear_field(rotation, "rotation_period")
                empty = "next_rotation_time" not in rotation and "rotation_period" not in rotation
                if empty:
                    clear_field(draft, "rotation")
                else:
                    draft.rotation = rotation
        rules.check_labels(draft.labels)
        rules.check_annotations(draft.annotations)
        rules.check_aliases(draft.version_aliases, existing_versions=record.versions.keys())
        if rotation_touched:
            rules.check_rotation(draft, now, next_time_sent=next_sent, period_sent=period_sent)

    def delete_secret(self, request: types.DeleteSecretRequest) -> None:
        name = parse_secret_name(request.name)
        record = self._secret(name)
        self._check_etag(request.etag, record.meta.etag)
        del self._secrets[name]
        self._publish("SECRET_DELETE", record)
        self._changed()

    # -- versions --------------------------------------------------------------------------------

    def add_secret_version(self, request: types.AddSecretVersionRequest) -> types.SecretVersion:
        record = self._secret(parse_secret_name(request.parent))
        payload = request.payload
        checksum = crc32c(payload.data)
        rules.check_payload(payload, checksum)
        number = (record.newest or 0) + 1
        meta = types.SecretVersion(
            name=record.name.version(number),
            create_time=self._now(),
            state=ENABLED,
            etag=self._new_etag(),
            client_specified_payload_checksum="data_crc32c" in payload,
        )
        if "replication" in record.meta:
            meta.replication_status = replication_status(record.meta.replication)
        version = StoredVersion(meta, bytes(payload.data), checksum)
        # A version added never moves the secret's etag: only writes to the secret itself do.
        record.versions[number] = version
        self._publish("SECRET_VERSION_ADD", record, version)
        self._changed()
        return copy_message(meta)

    def get_secret_version(self, request: types.GetSecretVersionRequest) -> types.SecretVersion:
        _, version = self._resolve(parse_version_name(request.name))
        return copy_message(version.meta)

    def access_secret_version(
        self, request: types.AccessSecretVersionRequest
    ) -> types.AccessSecretVersionResponse:
        _, version = self._resolve(parse_version_name(request.name))
        state = version.meta.state
        if state != ENABLED or version.data is None:
            raise _error(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"Secret Version [{version.meta.name}] is in {State(state).name} state.",
            )
        return types.AccessSecretVersionResponse(
            name=version.meta.name,
            payload=types.SecretPayload(data=version.data, data_crc32c=version.crc32c),
        )

    def list_secret_versions(
        self, request: types.ListSecretVersionsRequest
    ) -> types.ListSecretVersionsResponse:
        record = self._secret(parse_secret_name(request.parent))
        newest_first = [record.versions[n] for n in sorted(record.versions, reverse=True)]
        matching = select(newest_first, request.filter, VERSION_FIELDS.__contains__, version_fields)
        chosen, token = page(
            matching,
            lambda v: -number_of(v),
            request.page_size,
            request.page_token,
            scope=f"versions|{record.name}|{request.filter}",
        )
        return types.ListSecretVersionsResponse(
            versions=[copy_message(v.meta) for v in chosen],
            next_page_token=token,
            total_size=0 if request.filter else len(matching),
        )

    def enable_secret_version(self, request: types.EnableSecretVersionRequest) -> types.SecretVersion:
        return self._set_state(request.name, request.etag, ENABLED, "SECRET_VERSION_ENABLE")

    def disable_secret_version(self, request: types.DisableSecretVersionRequest) -> types.SecretVersion:
        return self._set_state(request.name, request.etag, DISABLED, "SECRET_VERSION_DISABLE")

    def _set_state(
        self, name: str, etag: str, state: types.SecretVersion.State, event: str
    ) -> types.SecretVersion:
        record, version = self._numbered(name, etag)
        if version.meta.state == DESTROYED:
            raise _error(grpc.StatusCode.FAILED_PRECONDITION, "SecretVersion.state is already DESTROYED")
        version.meta.state = state
        # Enabling or disabling a version scheduled for destruction cancels the destruction.
        clear_field(version.meta, "scheduled_destroy_time")
        version.meta.etag = self._new_etag()
        self._publish(event, record, version)
        self._changed()
        return copy_message(version.meta)

    def destroy_secret_version(self, request: types.DestroySecretVersionRequest) -> types.SecretVersion:
        record, version = self._numbered(request.name, request.etag)
        if version.meta.state == DESTROYED:
            raise _error(grpc.StatusCode.FAILED_PRECONDITION, "SecretVersion.state is already DESTROYED")
        if "scheduled_destroy_time" in version.meta:
            raise _error(
                grpc.StatusCode.FAILED_PRECONDITION, "SecretVersion is already scheduled for DESTRUCTION."
            )
        if "version_destroy_ttl" in record.meta:
            # Delayed destruction: disabled now, destroyed when the TTL runs out (see apply_due_lifecycle).
            version.meta.state = DISABLED
            version.meta.scheduled_destroy_time = self._now() + record.meta.version_destroy_ttl
            version.meta.etag = self._new_etag()
            self._publish("SECRET_VERSION_DESTROY_SCHEDULED", record, version)
        else:
            self._destroy(record, version)
        self._changed()
        return copy_message(version.meta)

    def _destroy(self, record: StoredSecret, version: StoredVersion) -> None:
        number = number_of(version)
        version.data = None
        version.crc32c = 0
        version.meta.state = DESTROYED
        version.meta.destroy_time = self._now()
        clear_field(version.meta, "scheduled_destroy_time")
        version.meta.etag = self._new_etag()
        stale = [alias for alias, target in record.meta.version_aliases.items() if int(target) == number]
        if stale:
            for alias in stale:
                del record.meta.version_aliases[alias]
            record.meta.etag = self._new_etag()
        self._publish("SECRET_VERSION_DESTROY", record, version)

    # -- time-driven behaviour -------------------------------------------------------------------

    def fire_due_rotations(self) -> int:
        """Publish SECRET_ROTATE for every secret whose next_rotation_time has passed; return how many.

        The next time moves on by rotation_period until it is in the future; a rotation without a period
        fires once and is removed, as the service does. Each rotation moves the secret's etag.
        """
        now = self._now()
        fired = 0
        for record in list(self._secrets.values()):
            meta = record.meta
            if "rotation" not in meta or "next_rotation_time" not in meta.rotation:
                continue
            if meta.rotation.next_rotation_time > now:
                continue
            if "rotation_period" in meta.rotation and meta.rotation.rotation_period > dt.timedelta(0):
                period = meta.rotation.rotation_period
                next_time = meta.rotation.next_rotation_time
                while next_time <= now:
                    next_time += period
                meta.rotation.next_rotation_time = next_time
            else:
                clear_field(meta, "rotation")
            meta.etag = self._new_etag()
            self._publish("SECRET_ROTATE", record)
            fired += 1
        if fired:
            self._changed()
        return fired

    def apply_due_lifecycle(self) -> int:
        """Delete expired secrets and finish scheduled destructions whose time has come; return how many."""
        now = self._now()
        done = 0
        for name, record in list(self._secrets.items()):
            if "expire_time" in record.meta and record.meta.expire_time <= now:
                del self._secrets[name]
                self._publish_expiry(record)
                done += 1
                continue
            for version in record.versions.values():
                due = "scheduled_destroy_time" in version.meta and version.meta.scheduled_destroy_time <= now
                if due and version.meta.state != DESTROYED:
                    self._destroy(record, version)
                    done += 1
        if done:
            self._changed()
        return done

    # -- persistence -----------------------------------------------------------------------------

    def __contains__(self, name: object) -> bool:
        """Whether a secret (by full name) exists; used by seeding to skip what is already there."""
        try:
            return isinstance(name, str) and parse_secret_name(name) in self._secrets
        except EmulatorError:
            return False

    def dump(self) -> dict[str, Any]:
        """Everything, as JSON-able data (proto JSON mapping; payloads base64)."""
        return {
            "format": DATA_FORMAT,
            "secrets": [
                {
                    "secret": to_json(record.meta),
                    "versions": [
                        {
                            "version": to_json(version.meta),
                            "data_base64": None
                            if version.data is None
                            else base64.b64encode(version.data).decode(),
                        }
                        for _, version in sorted(record.versions.items())
                    ],
                }
                for record in sorted(self._secrets.values(), key=lambda r: str(r.name))
            ],
        }

    def load(self, data: dict[str, Any]) -> None:
        """Replace everything with what :meth:`dump` wrote. ValueError (naming the entry) when malformed."""
        if not isinstance(data, dict) or data.get("format") != DATA_FORMAT:
            raise ValueError(f"not an emulator data file (expected format {DATA_FORMAT!r})")
        secrets: dict[SecretName, StoredSecret] = {}
        for index, entry in enumerate(data.get("secrets", [])):
            try:
                record = load_secret(entry)
            except (EmulatorError, KeyError, TypeError, ValueError, AttributeError) as error:
                detail = (
                    error.message if isinstance(error, EmulatorError) else f"{type(error).__name__}: {error}"
                )
                raise ValueError(f"secrets[{index}]: {detail}") from None
            secrets[record.name] = record
        self._secrets = secrets
        etags = [etag_value(r.meta.etag) for r in secrets.values()]
        etags += [etag_value(v.meta.etag) for r in secrets.values() for v in r.versions.values()]
        self._last_etag = max([self._last_etag, *etags])


__all__ = ["DATA_FORMAT", "ETAG_MISMATCH", "Parent", "SecretStore", "crc32c"]
