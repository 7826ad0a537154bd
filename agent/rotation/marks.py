"""What a rolled-back rotation leaves on the secret: the annotation ``secrets-agent-rolled-back``.

A rollback re-adds the old value as a new version (so ``latest`` serves it). That version is new but its
value is not: without a note, its age would make the secret look freshly rotated, and ``--due-only`` and
``rotation status`` would wait a whole period before trying again. The note says which version holds
which older version's value, when and why the rotation was rolled back. Due dates count from the original
version; the next successful rotation removes the note. Metadata only, never a value.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from agent.secrets.interface import SecretInfo, VersionInfo

ROLLED_BACK: Final = "secrets-agent-rolled-back"


@dataclass(frozen=True)
class RolledBack:
    """The last rotation of a secret was rolled back."""

    at: datetime
    reason: str
    value_of: str | None
    """The version whose value was current before (and is again)."""
    restored: str | None = None
    """The version that re-added that value, if one was added."""

    def to_annotation(self) -> str:
        return json.dumps(
            {
                "at": self.at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
                "reason": self.reason[:300],
                "value_of": self.value_of,
                "restored": self.restored,
            },
            separators=(",", ":"),
        )

    @classmethod
    def of(cls, info: SecretInfo) -> RolledBack | None:
        """The note on ``info``, None when absent or unreadable (it is advice, not state)."""
        text = info.annotations.get(ROLLED_BACK)
        if text is None:
            return None
        try:
            data = json.loads(text)
            at = datetime.fromisoformat(str(data["at"]).replace("Z", "+00:00"))
            value_of, restored = data.get("value_of"), data.get("restored")
            return cls(
                at,
                str(data.get("reason", "")),
                None if value_of is None else str(value_of),
                None if restored is None else str(restored),
            )
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        when = self.at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        return f"last rotation rolled back {when}: {self.reason}"


def value_since(
    info: SecretInfo, versions: Sequence[VersionInfo], current: VersionInfo | None
) -> datetime | None:
    """When the current VALUE was stored: the current version's creation, or, when it only re-added an
    older value after a rollback, that older version's creation."""
    if current is None:
        return None
    mark = RolledBack.of(info)
    if mark is not None and mark.restored == current.version and mark.value_of is not None:
        for version in versions:
            if version.version == mark.value_of:
                return version.create_time
    return current.create_time
