"""Secret Manager event notifications, published to the Pub/Sub topics configured on a secret.

The real service publishes one message per topic in ``Secret.topics`` whenever a secret or one of its versions
changes. Each message carries the attributes ``eventType``, ``dataFormat=JSON_API_V1`` and ``secretId``
(the secret's full name), plus ``versionId`` (the version's full name) on ``SECRET_VERSION_*`` events and
``deleteType`` on ``SECRET_DELETE``; the data is the Secret or SecretVersion resource in the proto3 JSON
mapping (camelCase, enum names, RFC 3339 timestamps): metadata only, never a payload.

The emulator publishes only to the official Pub/Sub emulator (``PUBSUB_EMULATOR_HOST``): it is a local tool
and must never send events to a real project by accident. Without that variable, or without the ``pubsub``
extra, events are dropped and one log line says why.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from google.cloud.secretmanager_v1 import types
from google.protobuf import json_format

log = logging.getLogger(__name__)

EventType = Literal[
    "SECRET_CREATE",
    "SECRET_UPDATE",
    "SECRET_DELETE",
    "SECRET_VERSION_ADD",
    "SECRET_VERSION_ENABLE",
    "SECRET_VERSION_DISABLE",
    "SECRET_VERSION_DESTROY",
    "SECRET_VERSION_DESTROY_SCHEDULED",
    "SECRET_ROTATE",
    "TOPIC_CONFIGURED",
]
"""The event types the service documents. TOPIC_CONFIGURED is its bare test message when topics are set."""

DeleteType = Literal["REQUESTED", "EXPIRATION"]
"""Why a secret was deleted: a DeleteSecret call, or its ``expire_time`` passing."""

DATA_FORMAT: Final = "JSON_API_V1"
EMULATOR_HOST_ENV: Final = "PUBSUB_EMULATOR_HOST"

BATCH_MAX_LATENCY_SECONDS: Final = 0.01
"""How long the Pub/Sub client holds a message to batch it with others. Small, because the agent's target is
< 1 s from AddSecretVersion to files swapped, and the emulator's volume is tiny."""

PUBLISH_RETRY_SECONDS: Final = 10.0
"""Total time a publish is retried on transient errors (Pub/Sub emulator restarting). Bounded so that a
stopped Pub/Sub emulator cannot hold our shutdown (``close()``) for the library's default 600 s."""

CLOSE_TIMEOUT_SECONDS: Final = 2.0
"""How long ``close()`` waits for publishes still in flight. Short: a Pub/Sub emulator that is down must not
hold the Secret Manager emulator's shutdown; what is still unpublished then is logged as lost."""


@dataclass(frozen=True)
class EventMessage:
    """One Pub/Sub message as Secret Manager would publish it (the same message goes to every topic)."""

    data: bytes
    attributes: Mapping[str, str]


def resource_json(resource: types.Secret | types.SecretVersion) -> bytes:
    """The resource in the proto3 JSON mapping, as the v1 REST API renders it: camelCase, enums by name,
    default-valued fields omitted, compact UTF-8."""
    message = type(resource).pb(resource)
    as_dict = json_format.MessageToDict(message, preserving_proto_field_name=False)
    return json.dumps(as_dict, separators=(",", ":"), ensure_ascii=False).encode()


def build_event_message(
    event_type: EventType | str,
    secret: types.Secret,
    version: types.SecretVersion | None = None,
    *,
    delete_type: DeleteType = "REQUESTED",
) -> EventMessage:
    """The message Secret Manager publishes for ``event_type`` (pure).

    Version events carry the version as data and its full name in ``versionId``; every other event carries the
    secret; SECRET_DELETE adds ``deleteType``. ``TOPIC_CONFIGURED`` is the service's test message: no data and
    no attribute but ``eventType``.
    """
    if event_type == "TOPIC_CONFIGURED":
        return EventMessage(data=b"", attributes={"eventType": event_type})
    attributes = {"eventType": event_type, "dataFormat": DATA_FORMAT, "secretId": secret.name}
    if version is not None:
        attributes["versionId"] = version.name
        return EventMessage(data=resource_json(version), attributes=attributes)
    if event_type == "SECRET_DELETE":
        attributes["deleteType"] = delete_type
    return EventMessage(data=resource_json(secret), attributes=attributes)


@dataclass
class PublishCounts:
    """What happened to the messages handed to the publisher (one per event and topic)."""

    published: int = 0
    """Accepted by Pub/Sub."""
    failed: int = 0
    """Rejected or never delivered (topic missing, Pub/Sub emulator down); each one is logged."""
    dropped: int = 0
    """Not sent, because publishing is off (no PUBSUB_EMULATOR_HOST, or the pubsub extra is missing)."""


class EventPublisher:
    """Publishes SECRET_* events for a secret to every topic in ``secret.topics``. Never blocks the caller.

    This base class publishes nothing: it counts the events it drops and logs once why. The store calls
    ``publish`` synchronously inside RPC handlers, so ``publish`` never raises and never waits on I/O.
    """

    def __init__(self, disabled_reason: str = "event publishing is switched off") -> None:
        self._disabled_reason = disabled_reason
        self._lock = threading.Lock()  # counts are updated from the Pub/Sub client's threads
        self._counts = PublishCounts()
        self._said_why = False

    @property
    def counts(self) -> PublishCounts:
        """A snapshot of the publish counters."""
        with self._lock:
            return PublishCounts(self._counts.published, self._counts.failed, self._counts.dropped)

    def publish(
        self,
        event_type: str,
        secret: types.Secret,
        version: types.SecretVersion | None = None,
        *,
        delete_type: DeleteType = "REQUESTED",
    ) -> None:
        """Queue ``event_type`` for every topic of ``secret``; a secret without topics publishes nothing.

        ``version`` is the changed version for SECRET_VERSION_* events; ``delete_type`` is for SECRET_DELETE
        (``"EXPIRATION"`` when ``expire_time`` passed).
        """
        topics = [topic.name for topic in secret.topics]
        if not topics:
            return
        try:
            message = build_event_message(event_type, secret, version, delete_type=delete_type)
            for topic in topics:
                self._send(topic, message, event_type, secret.name)
        except Exception:
            # A bug here must not fail the RPC that changed the secret; the change itself has happened.
            log.exception("could not publish %s for %s", event_type, secret.name)
            self._count(failed=len(topics))

    def _send(self, topic: str, message: EventMessage, event_type: str, secret_name: str) -> None:
        if not self._said_why:
            self._said_why = True
            log.info("Pub/Sub events for secrets with topics are dropped: %s", self._disabled_reason)
        self._count(dropped=1)

    def _count(self, *, published: int = 0, failed: int = 0, dropped: int = 0) -> None:
        with self._lock:
            self._counts.published += published
            self._counts.failed += failed
            self._counts.dropped += dropped

    async def close(self) -> None:
        """Flush publishes still in flight (bounded by ``CLOSE_TIMEOUT_SECONDS``) and release the client."""
        return None


class PubSubEventPublisher(EventPublisher):
    """Publishes through ``google.cloud.pubsub_v1.PublisherClient``, which batches in its own threads."""

    def __init__(self, client: Any) -> None:
        super().__init__()
        self._client = client
        self._pending: set[concurrent.futures.Future[str]] = set()
        self._closed = False
        self._retry = _publish_retry()

    def _send(self, topic: str, message: EventMessage, event_type: str, secret_name: str) -> None:
        if self._closed:
            self._count(dropped=1)
            return
        future: concurrent.futures.Future[str] = self._client.publish(
            topic, message.data, retry=self._retry, **message.attributes
        )
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(lambda done: self._on_done(done, topic, event_type, secret_name))

    def _on_done(
        self, future: concurrent.futures.Future[str], topic: str, event_type: str, secret_name: str
    ) -> None:
        with self._lock:
            self._pending.discard(future)
        error = future.exception()
        if error is None:
            self._count(published=1)
            log.debug("published %s for %s to %s", event_type, secret_name, topic)
            return
        self._count(failed=1)
        # Pub/Sub errors name the topic and the status, never message content; the data is metadata anyway.
        log.warning(
            "could not publish %s for %s to %s: %s: %s",
            event_type,
            secret_name,
            topic,
            type(error).__name__,
            error,
        )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._flush_and_close)

    def _flush_and_close(self) -> None:
        self._client.stop()  # commits every open batch now instead of after max_latency
        with self._lock:
            pending = set(self._pending)
        _, not_done = concurrent.futures.wait(pending, timeout=CLOSE_TIMEOUT_SECONDS)
        if not_done:
            # Closing the channel under a publish that is still retrying makes the library's commit thread die
            # with an unhandled error; leave it to give up by itself (PUBLISH_RETRY_SECONDS) and log the loss.
            log.warning("%d event(s) not published by shutdown; they are lost", len(not_done))
            return
        self._client.transport.close()


def _publish_retry() -> Any:
    from google.api_core import retry

    return retry.Retry(
        predicate=retry.if_transient_error,
        initial=0.05,
        maximum=1.0,
        multiplier=2.0,
        timeout=PUBLISH_RETRY_SECONDS,
    )


def make_publisher() -> EventPublisher:
    """A Pub/Sub publisher when PUBSUB_EMULATOR_HOST is set and the ``pubsub`` extra is installed, else one
    that drops events (saying why, once, when a secret with topics first changes)."""
    host = os.environ.get(EMULATOR_HOST_ENV)
    if not host:
        return EventPublisher(
            f"{EMULATOR_HOST_ENV} is not set (the emulator publishes only to the Pub/Sub emulator, "
            "never to a real project)"
        )
    try:
        from google.cloud import pubsub_v1  # type: ignore[attr-defined]
    except ImportError:
        reason = "google-cloud-pubsub is not installed: pip install 'secrets-agent[pubsub]'"
        log.warning("%s is set but %s", EMULATOR_HOST_ENV, reason)
        return EventPublisher(reason)
    # The client reads PUBSUB_EMULATOR_HOST itself: plaintext channel, anonymous credentials.
    client = pubsub_v1.PublisherClient(
        batch_settings=pubsub_v1.types.BatchSettings(max_latency=BATCH_MAX_LATENCY_SECONDS)
    )
    log.info("publishing Secret Manager events to the Pub/Sub emulator at %s", host)
    return PubSubEventPublisher(client)
