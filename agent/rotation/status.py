"""``secrets-agent rotation status``: each managed secret, its current version's age, its next due date."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from agent.rotation.config import RotationConfig
from agent.rotation.due import current_version, due_state, human_age
from agent.rotation.lock import CorruptLock, state_of
from agent.rotation.marks import RolledBack, value_since
from agent.rotation.selection import effective_type, managed
from agent.secrets.interface import SecretsBackend
from agent.secrets.types import SecretType


@dataclass(frozen=True)
class StatusRow:
    """One secret in the status table. Metadata only."""

    secret_id: str
    secret_type: SecretType | None
    current_version: str | None
    age: timedelta | None
    due_at: datetime | None
    overdue: bool
    note: str = ""
    """``rotated elsewhere``, ``rotation in progress (...)``, ``no enabled version``..."""

    def to_json(self) -> dict[str, object]:
        return {
            "secret": self.secret_id,
            "type": self.secret_type.value if self.secret_type is not None else None,
            "current_version": self.current_version,
            "age_seconds": int(self.age.total_seconds()) if self.age is not None else None,
            "next_due": _rfc3339(self.due_at),
            "overdue": self.overdue,
            "note": self.note or None,
        }

    def cells(self) -> list[str]:
        due = "-" if self.due_at is None else _rfc3339(self.due_at) or "-"
        if self.secret_type is not None and not self.secret_type.rotated_by_us:
            due = "rotated elsewhere"
        return [
            self.secret_id,
            self.secret_type.value if self.secret_type is not None else "-",
            self.current_version or "-",
            human_age(self.age),
            due,
            "OVERDUE" if self.overdue else "",
            self.note,
        ]


STATUS_HEADERS = ["SECRET", "TYPE", "VERSION", "AGE", "NEXT DUE", "OVERDUE", "NOTE"]


def _rfc3339(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="seconds").replace("+00:00", "Z")


async def rotation_status(
    backend: SecretsBackend, config: RotationConfig | None, now: datetime
) -> list[StatusRow]:
    """A row per managed secret (typed, or in the rotation config file), sorted by id."""
    rows: list[StatusRow] = []
    for info in await backend.list_secrets():
        if not managed(info, config):
            continue
        secret_type = effective_type(info, config)
        versions = await backend.list_versions(info.secret_id)
        current = current_version(versions)
        version = current.version if current is not None else None
        if secret_type is not None and not secret_type.rotated_by_us:
            age = now - current.create_time if current is not None else None
            rows.append(
                StatusRow(info.secret_id, secret_type, version, age, None, False, "rotated elsewhere")
            )
            continue
        due = due_state(info, secret_type, current, now, value_since(info, versions, current))
        notes = []
        if current is None:
            notes.append("no enabled version")
        try:
            lock = state_of(info)
        except CorruptLock:
            notes.append("unreadable rotation lock annotation")
        else:
            if lock is not None:
                notes.append(f"rotation in progress: {lock.describe()}")
        if secret_type is None:
            notes.append("no secret-type label")
        mark = RolledBack.of(info)
        if mark is not None:
            notes.append(mark.describe())
        rows.append(
            StatusRow(info.secret_id, secret_type, version, due.age, due.due_at, due.due, "; ".join(notes))
        )
    return rows
