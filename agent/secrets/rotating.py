"""How a manager's ``rotate_secret`` reaches the rotation tooling without the secrets API importing it.

``agent.secrets`` is the lower layer: the rotation tooling (``agent.rotation``: providers, database
drivers, the resumable engine) is built on it, never the reverse. The tooling registers its entry point in
the package metadata (group ``secrets_agent.rotation``, name ``rotate``; see pyproject.toml), as plugins do;
``rotate_secret`` loads it on first use, so nobody who only reads secrets loads the rotation machinery.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Protocol

from agent.secrets.interface import SecretsError

if TYPE_CHECKING:
    from agent.secrets.interface import SecretsBackend

ENTRY_POINT_GROUP = "secrets_agent.rotation"
ENTRY_POINT_NAME = "rotate"


class Rotator(Protocol):
    def __call__(self, backend: SecretsBackend, secret_id: str, config: object | None) -> Awaitable[str]:
        """Rotate ``secret_id`` with its provider (``config``: the rotation config the manager was given);
        return the new version number, or raise SecretsError."""
        ...


_rotator: Rotator | None = None


def rotator() -> Rotator:
    """The registered rotation entry point (loaded once)."""
    global _rotator
    if _rotator is None:
        from importlib.metadata import entry_points

        found = entry_points(group=ENTRY_POINT_GROUP, name=ENTRY_POINT_NAME)
        if not found:
            raise SecretsError(
                "rotation is not available: the secrets-agent distribution's metadata is missing (install "
                "the package, e.g. pip install -e .)",
                code="UNIMPLEMENTED",
            )
        _rotator = next(iter(found)).load()
    return _rotator
