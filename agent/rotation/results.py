"""What a rotation is asked to do (``RotationOptions``) and what came of it (``RotationResult``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final, Literal

from agent.rotation.config import RotationConfig
from agent.rotation.pacing import Pacing
from agent.secrets.types import SecretType

Outcome = Literal["rotated", "rolled-back", "failed", "skipped", "not-due", "locked", "planned", "stopped"]
OK_OUTCOMES: Final = frozenset({"rotated", "skipped", "not-due", "locked", "planned"})
"""Results that do not make ``rotate`` exit non-zero. ``locked``: another run is rotating that secret right
now; that is not a failure of this run (the table says who holds it). ``stopped`` (SIGTERM/SIGINT came before
the secret's turn: nothing of it was changed) is not OK: the run did not do all it was asked."""


@dataclass(frozen=True)
class RotationOptions:
    """How ``rotate_one`` behaves."""

    config: RotationConfig | None = None
    """The parsed rotation config file; None = labels and type defaults only."""
    disable_previous: bool = False
    """After a successful rotation, disable the version it replaced."""
    backup_dir: Path | None = None
    """Write the value being replaced to ``<dir>/<secret>.v<version>`` (0600) before anything changes."""
    dry_run: bool = False
    """Plan only: read, decide, report ``planned``; write nothing (no lock either)."""
    due_only: bool = False
    """Rotate only secrets that are due (``agent.rotation.due``)."""
    now: datetime | None = None
    """Evaluate due dates at this time (None = the real clock)."""
    lock_timeout: timedelta = timedelta(minutes=15)
    """A lock not updated for this long is stale and may be taken over (the run resumed)."""
    skip_if_rotated_after: datetime | None = None
    """Skip when the current version was created after this moment (``--listen``: a redelivered or
    duplicate SECRET_ROTATE for a secret that was rotated since)."""
    heartbeat: timedelta | None = None
    """How often the lock is refreshed while a step runs; default a third of ``lock_timeout``."""
    pacing: Pacing | None = None
    """Start consecutive rotations this far apart (``agent.rotation.pacing``: ``rotate_many`` and the
    listener keep the schedule); None = no pacing (one rotation: the Python API)."""


@dataclass(frozen=True)
class RotationResult:
    """What happened to one secret. ``message`` is one line and never holds a value."""

    secret_id: str
    secret_type: SecretType | None
    old_version: str | None
    new_version: str | None
    result: Outcome
    message: str
    provider: str = ""
    """The provider's name (empty when none was chosen)."""
    restored_version: str | None = None
    """Rolled back after the new version was added: the version that re-added the old value."""
    resumed_run: str | None = None
    """The interrupted run this one carried on, if any."""

    @property
    def ok(self) -> bool:
        return self.result in OK_OUTCOMES

    def to_json(self) -> dict[str, object]:
        return {
            "secret": self.secret_id,
            "type": self.secret_type.value if self.secret_type is not None else None,
            "old_version": self.old_version,
            "new_version": self.new_version,
            "result": self.result,
            "message": self.message,
            "provider": self.provider or None,
            "restored_version": self.restored_version,
            "resumed_run": self.resumed_run,
        }
