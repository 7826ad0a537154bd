"""When a secret is due for rotation (pure).

A secret is due when its current version is older than its rotation period, or when its rotation policy's
``next_rotation_time`` has passed (Secret Manager's own schedule, which also fires SECRET_ROTATE). The
period is the secret's own ``rotation_period`` when it has one, else its type's (``SecretType``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from agent.secrets.interface import SecretInfo, VersionInfo
from agent.secrets.types import SecretType


def current_version(versions: list[VersionInfo]) -> VersionInfo | None:
    """The version readers get: the newest ENABLED one (``versions`` in any order)."""
    enabled = [v for v in versions if v.state == "ENABLED"]
    return max(enabled, key=lambda v: int(v.version) if v.version.isdigit() else -1, default=None)


def newest_version(versions: list[VersionInfo]) -> VersionInfo | None:
    """The newest version in any state: what Secret Manager's ``latest`` alias names."""
    return max(versions, key=lambda v: int(v.version) if v.version.isdigit() else -1, default=None)


def period_of(info: SecretInfo, secret_type: SecretType | None) -> timedelta | None:
    """The rotation period: the secret's own, else its type's; None when neither says (or TLS)."""
    if info.rotation_period is not None:
        return info.rotation_period
    return secret_type.rotation_period if secret_type is not None else None


@dataclass(frozen=True)
class Due:
    """Whether a secret is due at ``now``, when it is (or was) due, and why (one line for tables)."""

    due: bool
    due_at: datetime | None
    """The earlier of ``next_rotation_time`` and current version's creation + period (None: never)."""
    age: timedelta | None
    """Age of the current version at ``now`` (None: no enabled version)."""
    why: str


def due_state(
    info: SecretInfo,
    secret_type: SecretType | None,
    current: VersionInfo | None,
    now: datetime,
    value_since: datetime | None = None,
) -> Due:
    """Is the secret due at ``now``? A secret without an enabled version is due (it has nothing to serve).

    ``value_since``: when the current value was first stored, if before the current version was created
    (a rollback re-added an old value, ``agent.rotation.marks``)."""
    now = now.astimezone(UTC)
    if current is None:
        return Due(True, None, None, "no enabled version")
    born = value_since or current.create_time
    age = now - born
    period = period_of(info, secret_type)
    candidates: list[tuple[datetime, str]] = []
    if period is not None:
        what = f"version {current.version}" if born == current.create_time else "its value (rolled back)"
        candidates.append((born + period, f"{what} older than {_days(period)}"))
    if info.next_rotation_time is not None:
        candidates.append((info.next_rotation_time, "next_rotation_time passed"))
    if not candidates:
        return Due(False, None, age, "no rotation period")
    due_at, why = min(candidates, key=lambda c: c[0])
    if due_at <= now:
        return Due(True, due_at, age, why)
    return Due(False, due_at, age, f"due {due_at.isoformat(timespec='seconds').replace('+00:00', 'Z')}")


def _days(delta: timedelta) -> str:
    if delta.total_seconds() % 86400 == 0:
        return f"{delta.days}d"
    hours = delta.total_seconds() / 3600
    return f"{hours:g}h"


def human_age(delta: timedelta | None) -> str:
    """``12d``, ``5h``, ``3m``, ``-`` (None)."""
    if delta is None:
        return "-"
    seconds = delta.total_seconds()
    if seconds < 0:
        return "0s"
    if seconds >= 86400:
        return f"{int(seconds // 86400)}d"
    if seconds >= 3600:
        return f"{int(seconds // 3600)}h"
    if seconds >= 60:
        return f"{int(seconds // 60)}m"
    return f"{int(seconds)}s"
