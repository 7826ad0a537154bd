"""What ``LocalSecretManager`` keeps about each secret beside its ``.env`` value, and the sidecar format.

The sidecar ``<file>.versions.json`` holds every version with its state, creation time and value (until
destroyed), the type, labels, annotations, rotation schedule and etags (see ``agent.secrets.local``).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from agent.secrets.interface import SecretInfo, VersionInfo
from agent.secrets.types import TYPE_LABEL, SecretType

SIDECAR_FORMAT = "secrets-agent-local/1"
ENABLED, DISABLED, DESTROYED = "ENABLED", "DISABLED", "DESTROYED"
HAND_WRITTEN_ETAG = '"0"'
"""The etag of a secret or version that came from a hand-written ``.env`` line."""


@dataclass
class StoredVersion:
    state: str
    create_time: datetime
    etag: str
    data: bytes | None = field(repr=False)
    """None once destroyed: destroyed data is gone, not hidden."""


@dataclass
class StoredSecret:
    create_time: datetime
    etag: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    rotation_period: timedelta | None = None
    next_rotation_time: datetime | None = None
    versions: dict[int, StoredVersion] = field(default_factory=dict)

    def current(self) -> bytes | None:
        """The value the .env carries: the newest ENABLED version's, or None."""
        enabled = [n for n, v in self.versions.items() if v.state == ENABLED]
        return self.versions[max(enabled)].data if enabled else None


@dataclass
class LocalState:
    env_text: str = field(repr=False)
    """The whole .env text: every value in it."""
    secrets: dict[str, StoredSecret]
    last_etag: int = 0
    touched: set[str] = field(default_factory=set)
    """Secrets whose .env line may have to change."""

    def new_etag(self) -> str:
        # Quoted hex, strictly increasing, like the service's (and the emulator's) etags.
        self.last_etag = max(self.last_etag + 1, time.time_ns() // 1000)
        return f'"{self.last_etag:x}"'


def adopt_env_values(state: LocalState, values: Mapping[str, str], modified: datetime) -> None:
    """Values in the .env the sidecar does not know: a new secret (version 1), or an edit (a new version)."""
    for key, text in values.items():
        data = text.encode("utf-8")
        secret = state.secrets.get(key)
        if secret is None:
            version = StoredVersion(ENABLED, modified, HAND_WRITTEN_ETAG, data)
            state.secrets[key] = StoredSecret(
                create_time=modified, etag=HAND_WRITTEN_ETAG, versions={1: version}
            )
        elif secret.current() != data:
            number = max(secret.versions, default=0) + 1
            secret.versions[number] = StoredVersion(ENABLED, modified, HAND_WRITTEN_ETAG, data)


# -- conversions -----------------------------------------------------------------------------------


def version_info(secret_id: str, number: int, version: StoredVersion) -> VersionInfo:
    return VersionInfo(secret_id, str(number), version.state, version.create_time, version.etag)


def secret_info(secret_id: str, secret: StoredSecret) -> SecretInfo:
    return SecretInfo(
        secret_id=secret_id,
        secret_type=SecretType.from_label(secret.labels.get(TYPE_LABEL)),
        labels=dict(secret.labels),
        annotations=dict(secret.annotations),
        rotation_period=secret.rotation_period,
        next_rotation_time=secret.next_rotation_time,
        topics=(),
        etag=secret.etag,
        create_time=secret.create_time,
    )


def parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def encode_sidecar(state: LocalState) -> dict[str, Any]:
    secrets: dict[str, Any] = {}
    for secret_id, secret in state.secrets.items():
        secrets[secret_id] = {
            "create_time": secret.create_time.isoformat(),
            "etag": secret.etag,
            "labels": secret.labels,
            "annotations": secret.annotations,
            "rotation_period_seconds": (
                secret.rotation_period.total_seconds() if secret.rotation_period is not None else None
            ),
            "next_rotation_time": (
                secret.next_rotation_time.isoformat() if secret.next_rotation_time is not None else None
            ),
            "versions": {
                str(number): {
                    "state": version.state,
                    "create_time": version.create_time.isoformat(),
                    "etag": version.etag,
                    "data": base64.b64encode(version.data).decode("ascii")
                    if version.data is not None
                    else None,
                }
                for number, version in sorted(secret.versions.items())
            },
        }
    return {"format": SIDECAR_FORMAT, "last_etag": state.last_etag, "secrets": secrets}


def decode_sidecar(raw: Any) -> tuple[dict[str, StoredSecret], int]:
    if raw.get("format") != SIDECAR_FORMAT:
        raise ValueError("unknown format")
    secrets: dict[str, StoredSecret] = {}
    for secret_id, item in raw["secrets"].items():
        period = item.get("rotation_period_seconds")
        next_time = item.get("next_rotation_time")
        versions = {
            int(number): StoredVersion(
                state=str(v["state"]),
                create_time=parse_time(v["create_time"]),
                etag=str(v["etag"]),
                data=base64.b64decode(v["data"], validate=True) if v["data"] is not None else None,
            )
            for number, v in item["versions"].items()
        }
        if any(v.state not in (ENABLED, DISABLED, DESTROYED) for v in versions.values()):
            raise ValueError("unknown state")
        secrets[str(secret_id)] = StoredSecret(
            create_time=parse_time(item["create_time"]),
            etag=str(item["etag"]),
            labels={str(k): str(v) for k, v in item["labels"].items()},
            annotations={str(k): str(v) for k, v in item["annotations"].items()},
            rotation_period=timedelta(seconds=period) if period is not None else None,
            next_rotation_time=parse_time(next_time) if next_time is not None else None,
            versions=versions,
        )
    return secrets, int(raw.get("last_etag", 0))
