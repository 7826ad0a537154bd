"""Secret Manager's messages as the secrets API's types: ``SecretInfo`` and ``VersionInfo``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.cloud.secretmanager_v1 import types as pb

from agent.secrets.interface import SecretInfo, VersionInfo
from agent.secrets.types import TYPE_LABEL, SecretType
from agent.sources.gcp import version_of


def _utc(value: datetime) -> datetime:
    """A plain timezone-aware UTC datetime (proto-plus returns its own subclass, nanoseconds and all)."""
    value = value.astimezone(UTC)
    return datetime(
        value.year,
        value.month,
        value.day,
        value.hour,
        value.minute,
        value.second,
        value.microsecond,
        tzinfo=UTC,
    )


def version_info(secret_id: str, version: pb.SecretVersion) -> VersionInfo:
    """VersionInfo of a SecretVersion message."""
    return VersionInfo(
        secret_id=secret_id,
        version=version_of(version.name),
        state=pb.SecretVersion.State(version.state).name,
        create_time=_utc(version.create_time),
        etag=version.etag,
    )


def secret_info(secret: pb.Secret) -> SecretInfo:
    """SecretInfo of a Secret message."""
    rotation_period: timedelta | None = None
    next_rotation_time: datetime | None = None
    if "rotation" in secret:
        if "rotation_period" in secret.rotation:
            rotation_period = secret.rotation.rotation_period
        if "next_rotation_time" in secret.rotation:
            next_rotation_time = _utc(secret.rotation.next_rotation_time)
    labels = dict(secret.labels)
    return SecretInfo(
        secret_id=secret.name.rsplit("/", 1)[-1],
        secret_type=SecretType.from_label(labels.get(TYPE_LABEL)),
        labels=labels,
        annotations=dict(secret.annotations),
        rotation_period=rotation_period,
        next_rotation_time=next_rotation_time,
        topics=tuple(topic.name for topic in secret.topics),
        etag=secret.etag,
        create_time=_utc(secret.create_time) if "create_time" in secret else None,
    )
