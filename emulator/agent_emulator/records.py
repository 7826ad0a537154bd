"""What the emulator's store keeps per secret and version, and the conversions around it: copies of
proto-plus messages, the data-file form of a secret, the fields list filters can name, replication rules.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import google_crc32c
from google.cloud.secretmanager_v1 import types

from agent_emulator import secret_rules as rules
from agent_emulator.listing import PRESENT
from agent_emulator.resource_names import SecretName, parse_numbered_version_name, parse_secret_name

State = types.SecretVersion.State
M = TypeVar("M")

SECRET_FIELDS = {
    "name",
    "create_time",
    "expire_time",
    "labels",
    "annotations",
    "topics.name",
    "version_aliases",
    # Documented list filters (cloud.google.com/secret-manager/docs/filtering):
    # "replication.automatic:*", "replication.user_managed.replicas.location:(us-east1 OR ...)".
    "replication.automatic",
    "replication.user_managed",
    "replication.user_managed.replicas.location",
}
SECRET_MESSAGE_FIELDS = frozenset({"replication.automatic", "replication.user_managed"})
"""Secret fields that are messages: a filter can only test them for presence (``replication.automatic:*``)."""
SECRET_MAP_FIELDS = ("labels.", "annotations.", "version_aliases.")
VERSION_FIELDS = {"name", "state", "create_time", "destroy_time"}


def copy_message(message: M) -> M:
    """A deep copy of a proto-plus message."""
    cls: Any = type(message)
    return cast(M, cls.deserialize(cls.serialize(message)))


def clear_field(message: Any, field_name: str) -> None:
    """Unset a field (a message, or one member of a oneof) so that ``field_name in message`` is False."""
    type(message).pb(message).ClearField(field_name)


def to_json(message: Any) -> Any:
    """A message as plain JSON data (proto3 JSON mapping, field names as in the proto)."""
    return json.loads(type(message).to_json(message, preserving_proto_field_name=True, indent=None))


def crc32c(data: bytes) -> int:
    """CRC32C (Castagnoli) of ``data``, as Secret Manager reports it."""
    return int(google_crc32c.value(data))


@dataclass
class StoredVersion:
    meta: types.SecretVersion
    data: bytes | None
    """None once the version is destroyed: destroyed data is gone, not hidden."""
    crc32c: int = 0


@dataclass
class StoredSecret:
    name: SecretName
    meta: types.Secret
    versions: dict[int, StoredVersion] = field(default_factory=dict)

    @property
    def newest(self) -> int | None:
        return max(self.versions, default=None)


def etag_value(etag: str) -> int:
    try:
        return int(etag.strip('"'), 16)
    except ValueError:
        return 0


def load_secret(entry: dict[str, Any]) -> StoredSecret:
    meta = types.Secret.from_json(json.dumps(entry["secret"]))
    name = parse_secret_name(meta.name)
    record = StoredSecret(name, meta)
    for item in entry.get("versions", []):
        version_meta = types.SecretVersion.from_json(json.dumps(item["version"]))
        number = parse_numbered_version_name(version_meta.name)[1]
        encoded = item.get("data_base64")
        data = None if encoded is None else base64.b64decode(encoded, validate=True)
        record.versions[number] = StoredVersion(version_meta, data, crc32c(data) if data is not None else 0)
    return record


def number_of(version: StoredVersion) -> int:
    return int(version.meta.name.rsplit("/", 1)[1])


def settable_rotation(given: types.Rotation) -> types.Rotation:
    """Only the user-settable parts of a rotation (managed_rotation_status is the service's)."""
    rotation = types.Rotation()
    if "next_rotation_time" in given:
        rotation.next_rotation_time = given.next_rotation_time
    if "rotation_period" in given:
        rotation.rotation_period = given.rotation_period
    return rotation


def replication_status(replication: types.Replication) -> types.ReplicationStatus:
    if "user_managed" in replication:
        replicas = [
            types.ReplicationStatus.UserManagedStatus.ReplicaStatus(location=replica.location)
            for replica in replication.user_managed.replicas
        ]
        return types.ReplicationStatus(
            user_managed=types.ReplicationStatus.UserManagedStatus(replicas=replicas)
        )
    return types.ReplicationStatus(automatic=types.ReplicationStatus.AutomaticStatus())


def check_replication_unchanged(record: StoredSecret, given: types.Secret) -> None:
    """Replication is fixed at creation; a mask naming it may only repeat it."""
    if record.name.parent.location is not None:
        raise rules.invalid(
            'Field mask paths starting with "replication" are not supported in updates of regional secret.'
        )
    current = record.meta.replication
    sent = given.replication if "replication" in given else types.Replication()
    if types.Replication.serialize(sent) != types.Replication.serialize(current):
        kind = "automatic" if "automatic" in current else "user-managed"
        raise rules.invalid(
            f"Existing secret has {kind} replication, but requested secret does not. "
            "Updating secret replication is not supported."
        )


def known_secret_field(name: str) -> bool:
    return name in SECRET_FIELDS or name.startswith(SECRET_MAP_FIELDS)


def secret_fields(record: StoredSecret) -> Callable[[str], Any]:
    meta = record.meta

    def lookup(name: str) -> Any:
        if name == "name":
            return meta.name
        if name in ("create_time", "expire_time"):
            return getattr(meta, name) if name in meta else None
        if name == "topics.name":
            return [topic.name for topic in meta.topics]
        if name in ("labels", "annotations"):
            return dict(getattr(meta, name))
        if name == "version_aliases":
            return {alias: str(n) for alias, n in meta.version_aliases.items()}
        if name.startswith("replication."):
            return _replication_field(meta, name)
        field_name, key = name.split(".", 1)
        values = {alias: str(n) for alias, n in getattr(meta, field_name).items()}
        return values.get(key)

    return lookup


def _replication_field(meta: types.Secret, name: str) -> Any:
    # Regional secrets have no replication at all: every replication field is unset for them.
    replication = meta.replication if "replication" in meta else None
    if name == "replication.automatic":
        return PRESENT if replication is not None and "automatic" in replication else None
    managed = replication.user_managed if replication is not None and "user_managed" in replication else None
    if name == "replication.user_managed":
        return PRESENT if managed is not None else None
    return [replica.location for replica in managed.replicas] if managed is not None else []


def version_fields(version: StoredVersion) -> Callable[[str], Any]:
    meta = version.meta

    def lookup(name: str) -> Any:
        if name == "state":
            return State(meta.state).name
        if name in ("create_time", "destroy_time"):
            return getattr(meta, name) if name in meta else None
        return meta.name

    return lookup
