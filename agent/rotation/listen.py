"""``secrets-agent rotate --listen``: rotate secrets when Secret Manager says they are due (SECRET_ROTATE).

Secret Manager publishes SECRET_ROTATE to a secret's topics when its ``next_rotation_time`` passes; it
rotates nothing itself. The listener subscribes and rotates the secret each event names
(``rotate_one``), one event at a time:

* Only SECRET_ROTATE is acted on; every other event is acknowledged and ignored.
* A message is acknowledged after it was handled, whatever the outcome: a rotation that failed or rolled
  back is logged at ERROR (alert on it; ``rotate --due-only`` from a schedule is the safety net), a
  secret locked by another rotation is acknowledged too (that run does the work), so nothing is retried
  forever. Only an unexpected crash of the handler nacks the message for redelivery.
* A duplicate or redelivered event for a secret that was rotated after the event was published is
  skipped (``RotationOptions.skip_if_rotated_after``).
* ``--subscription S`` pulls from an existing subscription: give every listener replica the same one and
  Pub/Sub hands each event to one of them. ``--topic T`` creates a subscription of this process
  (``secrets-agent-rotate-<host>-<random>``, expiring after a day unused, deleted on exit); with several
  replicas each gets every event, and the rotation lock makes one of them rotate.
* SIGTERM/SIGINT: stop pulling, let the rotation in progress finish, give unhandled messages back, exit 0.

``PUBSUB_EMULATOR_HOST`` points the Pub/Sub client at the emulator, as everywhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets as random_tokens
import socket
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final

from agent.core.retry import Backoff
from agent.errors import AgentError
from agent.observe.logs import fields
from agent.rotation.engine import RotationOptions, RotationResult, rotate_one
from agent.secrets.interface import SecretsBackend
from agent.sources.pubsub import parse_event, require_pubsub

log = logging.getLogger(__name__)

ROTATE_EVENT: Final = "SECRET_ROTATE"
CALL_TIMEOUT_SECONDS: Final = 10.0
ACK_DEADLINE_SECONDS: Final = 60
SUBSCRIPTION_TTL_SECONDS: Final = 86400
RETENTION_SECONDS: Final = 86400
"""A created subscription keeps unacknowledged events for a day: a listener restarted within the day
still rotates what fell due meanwhile."""
RECONNECT: Final = Backoff(initial=0.5, maximum=30.0)


class ListenError(AgentError):
    """The listener cannot start (no such subscription, Pub/Sub unreachable, the extra missing)."""


@dataclass(frozen=True)
class ListenOptions:
    """Where to listen and how to rotate."""

    subscription: str | None = None
    topics: tuple[str, ...] = ()
    rotation: RotationOptions = field(default_factory=RotationOptions)
    project: str | None = None
    """Our project: events naming another project by id are ignored (numbers cannot be told apart)."""


@dataclass
class _Stream:
    subscription: str
    created: bool
    future: Any = None


class Listener:
    """Pulls SECRET_ROTATE events and rotates. ``run(stop)`` until ``stop`` is set."""

    def __init__(
        self,
        backend: SecretsBackend,
        options: ListenOptions,
        on_result: Callable[[RotationResult], None] | None = None,
    ) -> None:
        if not options.subscription and not options.topics:
            raise ListenError("rotate --listen needs --subscription or --topic (or topics in --config)")
        self.backend = backend
        self.options = options
        self.on_result = on_result
        self.handled = 0
        self._client: Any = None
        self._streams: list[_Stream] = []
        self._inbox: asyncio.Queue[Any] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.ready = asyncio.Event()
        """Set once every subscription exists and is being pulled (tests wait on it)."""

    # -- lifecycle ---------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        require_pubsub()
        self._loop = asyncio.get_running_loop()
        self._client = await asyncio.to_thread(_new_subscriber)
        try:
            await asyncio.to_thread(self._prepare_subscriptions)
            for stream in self._streams:
                self._start(stream)
            self.ready.set()
            log.info(
                "listening for SECRET_ROTATE on %s",
                ", ".join(s.subscription for s in self._streams),
                extra=fields(subscriptions=[s.subscription for s in self._streams]),
            )
            await self._consume(stop)
        finally:
            await self._close()

    async def _consume(self, stop: asyncio.Event) -> None:
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                getting = asyncio.ensure_future(self._inbox.get())
                done, _ = await asyncio.wait({getting, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if getting not in done:
                    getting.cancel()
                    break
                item = getting.result()
                if isinstance(item, _Ended):
                    await self._restart(item, stop)
                    continue
                await self._handle(item)
        finally:
            stopping.cancel()

    async def _restart(self, ended: _Ended, stop: asyncio.Event) -> None:
        """A stream ended with an error: log, wait (backoff), subscribe again (re-creating ours if gone)."""
        stream = ended.stream
        if stop.is_set():
            return
        log.warning(
            "rotate --listen: pulling from %s stopped: %s; reconnecting",
            stream.subscription,
            ended.error,
            extra=fields(subscription=stream.subscription),
        )
        attempt = 0
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RECONNECT.delay(attempt))
            if stop.is_set():
                return
            try:
                await asyncio.to_thread(self._ensure, stream)
            except Exception as error:  # Pub/Sub errors come in many types; all mean "not yet"
                attempt += 1
                log.warning("rotate --listen: %s still unavailable: %s", stream.subscription, error)
                continue
            self._start(stream)
            return

    async def _close(self) -> None:
        for stream in self._streams:
            if stream.future is not None:
                stream.future.cancel()
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(stream.future.result, 5.0)
        # Whatever arrived but was not handled goes back to Pub/Sub for another listener.
        while not self._inbox.empty():
            item = self._inbox.get_nowait()
            if not isinstance(item, _Ended):
                item.nack()
        if self._client is None:
            return
        for stream in self._streams:
            if stream.created:
                await asyncio.to_thread(self._delete, stream.subscription)
        await asyncio.to_thread(self._client.close)

    # -- one message -------------------------------------------------------------------------------

    async def _handle(self, message: Any) -> None:
        try:
            secret_id = self._secret_to_rotate(message)
            if secret_id is not None:
                published = _publish_time(message)
                options = replace(self.options.rotation, skip_if_rotated_after=published)
                result = await rotate_one(self.backend, secret_id, options)
                self.handled += 1
                if self.on_result is not None:
                    self.on_result(result)
        except Exception:
            log.exception("rotate --listen: handling an event failed; it will be redelivered")
            message.nack()
            return
        message.ack()

    def _secret_to_rotate(self, message: Any) -> str | None:
        """The secret id a SECRET_ROTATE names; None (logged) for anything to ignore."""
        attributes = dict(message.attributes)
        event = parse_event(attributes, b"")
        if event is None or event.event_type != ROTATE_EVENT:
            log.debug(
                "rotate --listen: ignored %s", attributes.get("eventType", "a message without eventType")
            )
            return None
        parts = event.secret.split("/")
        if len(parts) != 4 or parts[0] != "projects" or parts[2] != "secrets":
            log.warning(
                "rotate --listen: ignored SECRET_ROTATE for %r: not a global secret name", event.secret
            )
            return None
        project = self.options.project
        if project is not None and not parts[1].isdigit() and parts[1] != project:
            log.info("rotate --listen: ignored SECRET_ROTATE for %s: not project %s", event.secret, project)
            return None
        return parts[3]

    # -- Pub/Sub plumbing (worker threads) ---------------------------------------------------------

    def _prepare_subscriptions(self) -> None:
        if self.options.subscription:
            stream = _Stream(self.options.subscription, created=False)
            self._ensure(stream)
            self._streams.append(stream)
        host = socket.gethostname().lower()
        host = "".join(c if c.isalnum() or c == "-" else "-" for c in host)[:40].strip("-") or "host"
        for topic in self.options.topics:
            project = topic.split("/")[1]
            name = (
                f"projects/{project}/subscriptions/secrets-agent-rotate-{host}-{random_tokens.token_hex(4)}"
            )
            stream = _Stream(name, created=True)
            self._streams.append(stream)  # before creating: deleted on exit even if a later one fails
            self._create(name, topic)

    def _ensure(self, stream: _Stream) -> None:
        from google.api_core import exceptions

        try:
            self._client.get_subscription(
                request={"subscription": stream.subscription}, timeout=CALL_TIMEOUT_SECONDS, retry=None
            )
        except exceptions.NotFound:
            if not stream.created:
                raise ListenError(
                    f"subscription {stream.subscription} does not exist: create it on the topic your "
                    "secrets notify (gcloud pubsub subscriptions create ...)"
                ) from None
            topic = self._topic_of(stream)
            self._create(stream.subscription, topic)
        except exceptions.GoogleAPIError as error:
            raise ListenError(f"subscription {stream.subscription}: {error}") from None

    def _topic_of(self, stream: _Stream) -> str:
        index = [s for s in self._streams if s.created].index(stream)
        return self.options.topics[index]

    def _create(self, name: str, topic: str) -> None:
        from google.api_core import exceptions
        from google.protobuf import duration_pb2

        request = {
            "name": name,
            "topic": topic,
            "ack_deadline_seconds": ACK_DEADLINE_SECONDS,
            "message_retention_duration": duration_pb2.Duration(seconds=RETENTION_SECONDS),
            "expiration_policy": {"ttl": duration_pb2.Duration(seconds=SUBSCRIPTION_TTL_SECONDS)},
            "filter": f'attributes.eventType = "{ROTATE_EVENT}"',
            "labels": {"created-by": "secrets-agent"},
        }
        try:
            self._client.create_subscription(request=request, timeout=CALL_TIMEOUT_SECONDS, retry=None)
        except exceptions.AlreadyExists:
            pass
        except exceptions.GoogleAPIError as error:
            raise ListenError(f"cannot create a subscription on {topic}: {error}") from None

    def _delete(self, name: str) -> None:
        from google.api_core import exceptions

        try:
            self._client.delete_subscription(request={"subscription": name}, timeout=5.0, retry=None)
        except exceptions.GoogleAPIError as error:
            log.warning(
                "rotate --listen: could not delete subscription %s (%s); it expires unused", name, error
            )

    def _start(self, stream: _Stream) -> None:
        loop = self._loop
        assert loop is not None
        from google.cloud import pubsub_v1  # type: ignore[attr-defined]

        def on_message(message: Any) -> None:  # a Pub/Sub thread
            try:
                loop.call_soon_threadsafe(self._inbox.put_nowait, message)
            except RuntimeError:  # the loop is gone: let Pub/Sub redeliver it
                message.nack()

        def on_done(future: Any) -> None:  # a Pub/Sub thread
            if future.cancelled():
                return
            error = future.exception()
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._inbox.put_nowait, _Ended(stream, error))

        stream.future = self._client.subscribe(
            stream.subscription,
            callback=on_message,
            flow_control=pubsub_v1.types.FlowControl(max_messages=10),
            await_callbacks_on_shutdown=False,
        )
        stream.future.add_done_callback(on_done)


@dataclass(frozen=True)
class _Ended:
    stream: _Stream
    error: BaseException | None


def _publish_time(message: Any) -> datetime | None:
    moment = getattr(message, "publish_time", None)
    if not isinstance(moment, datetime):
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _new_subscriber() -> Any:
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

    return pubsub_v1.SubscriberClient()
