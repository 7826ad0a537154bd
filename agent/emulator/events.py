"""STUB - to be replaced: Secret Manager event notifications published to Pub/Sub topics."""

from __future__ import annotations

from google.cloud.secretmanager_v1 import types


class EventPublisher:
    """Publishes SECRET_* events for a secret to every topic in ``secret.topics``. Never blocks the caller."""

    def publish(
        self, event_type: str, secret: types.Secret, version: types.SecretVersion | None = None
    ) -> None:
        return None

    async def close(self) -> None:
        return None


def make_publisher() -> EventPublisher:
    """A Pub/Sub publisher when PUBSUB_EMULATOR_HOST is set (or credentials exist), else one that drops events."""
    return EventPublisher()
