"""One Pub/Sub subscription, followed: the lifecycle shared by the agent's event feed and ``rotate --listen``.

* **Ours or theirs.** With ``create`` (``NewSubscription``: topic, filter, expiration, retention) the
  subscription is ours: created on the first connection, created again whenever it is gone (expired,
  deleted behind our back, a restarted emulator), deleted by ``close()``. Without it, the subscription is
  used as it is and kept.
* **Streaming pull** with the official client, which runs in its own threads; each message is handed to
  the event loop and comes out of ``receive()`` in a batch (a burst becomes one batch). The owner
  acknowledges each message it has handled; ``close(unhandled)`` gives back what it has not, once the
  stream is down, so a kept subscription redelivers it at once instead of after the ack deadline.
* **Failures** (connecting, the stream ending, the channel failing) are reported through
  ``on_health(healthy, why)`` and retried by ``receive()`` with a ``Backoff`` (``agent.core.retry``),
  forever. ``open()`` is one attempt, for an owner that must refuse to start instead.

``why`` and every error text come from ``describe_error``: status, message, a hint; never message data.

google-cloud-pubsub is the optional ``pubsub`` extra: imported only once a subscription is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any, Final

from agent.core.retry import Backoff
from agent.errors import AgentError

MAX_FILTER_BYTES: Final = 256
"""Pub/Sub refuses longer subscription filters."""
ACK_DEADLINE_SECONDS: Final = 60
"""Initial ack deadline of a created subscription; the client library extends leases while a message is
being handled (up to an hour), so this only bounds redelivery after the process vanished mid-message."""
CALL_TIMEOUT_SECONDS: Final = 10.0
"""Deadline of each administrative Pub/Sub call (create, get subscription). The client library's own
retry is off: ``receive()`` retries with its backoff, so every failure is seen and health is reported."""
STABLE_STREAM_SECONDS: Final = 60.0
"""A stream that lasted this long worked: reconnecting after it ends starts the backoff afresh."""
CHANNEL_CHECK_SECONDS: Final = 1.0
"""How often the subscriber's gRPC channel state is read (a local call): an outage is noticed this fast."""
# gRPC core's connectivity states (grpc_connectivity_state), as the channel reports them.
_READY: Final = 2
_TRANSIENT_FAILURE: Final = 3
DELETE_TIMEOUT_SECONDS: Final = 5.0
"""Deadline of the calls made at shutdown (delete, give back): they must fit in a shutdown grace period. If
a delete fails, the expiration policy removes the subscription later."""
INSTALL_HINT: Final = "pip install 'secrets-agent[pubsub]'"

Message = Any
"""A ``google.cloud.pubsub_v1.subscriber.message.Message`` (the client library has no type hints)."""


class EventsUnavailable(AgentError):
    """Events are configured but cannot work at all here (the ``pubsub`` extra is missing)."""


def require_pubsub() -> None:
    """Raise EventsUnavailable unless google-cloud-pubsub can be imported (call before anything starts)."""
    try:
        from google.cloud import pubsub_v1  # type: ignore[attr-defined]  # noqa: F401
    except ImportError:
        raise EventsUnavailable(
            f"events are configured (events.topic / events.subscription) but google-cloud-pubsub is not "
            f"installed: {INSTALL_HINT}"
        ) from None


class SubscriptionUnavailable(AgentError):
    """The subscription could not be set up or reached; ``str()`` says why (no message data, ever)."""

    def __init__(self, why: str, *, missing: bool = False) -> None:
        super().__init__(why)
        self.missing = missing
        """Pub/Sub answered NOT_FOUND: the subscription (or the topic to create it on) does not exist."""


# --------------------------------------------------------------------------------------------------
# Creating our own subscriptions
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewSubscription:
    """How a subscription of ours is created."""

    topic: str
    """``projects/P/topics/T``."""
    ttl_seconds: float
    """Expiration policy: Pub/Sub deletes the subscription after this long without a subscriber (whole
    seconds, at least a day), should ``close()`` never run."""
    retention_seconds: int
    """How long unacknowledged messages are kept (Pub/Sub's minimum: 600)."""
    filter: str | None = None
    """A Pub/Sub filter (at most ``MAX_FILTER_BYTES``); None: every message of the topic."""
    unfiltered: str = f"too many secrets for {MAX_FILTER_BYTES} bytes"
    """Why there is no filter, for the log line (when ``filter`` is None)."""

    def request(self, name: str) -> dict[str, object]:
        """The CreateSubscription request for ``name``."""
        from google.protobuf import duration_pb2

        request: dict[str, object] = {
            "name": name,
            "topic": self.topic,
            "ack_deadline_seconds": ACK_DEADLINE_SECONDS,
            "message_retention_duration": duration_pb2.Duration(seconds=self.retention_seconds),
            "expiration_policy": {"ttl": duration_pb2.Duration(seconds=int(self.ttl_seconds))},
            "labels": {"created-by": "secrets-agent"},
        }
        if self.filter is not None:
            request["filter"] = self.filter
        return request


# --------------------------------------------------------------------------------------------------
# The lifecycle
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Connected:
    """``receive()`` (re)connected."""

    created: bool
    """The subscription was created by this connection: it holds nothing published before it existed."""


@dataclass(frozen=True)
class Received:
    """Messages that arrived together, in order. Each is the owner's to ``ack()`` once handled."""

    messages: list[Message]


@dataclass(frozen=True)
class _StreamEnded:
    """The streaming pull stopped (an error, or our own cancel)."""

    error: BaseException | None


class _Labelled(logging.LoggerAdapter[logging.Logger]):
    """Every line starts with the owner's label (``events: ...``), as the owner's own lines do."""

    def __init__(self, logger: logging.Logger, label: str) -> None:
        super().__init__(logger)
        self.label = label

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        return f"{self.label}: {msg}", kwargs


class Subscription:
    """One Pub/Sub subscription and its streaming pull. Create and use it in one running loop.

    ``label`` starts every line logged to ``log`` (``events``, ``rotate --listen``). ``on_health(healthy,
    why)``: messages flow now (connected, reachable again) or not (and why, with the retry delay when there
    is one); called at every such event, repeated ones included. ``before_connect()`` runs in the loop
    before every connection attempt; it may replace ``create`` (a filter that grew). ``max_messages``: at
    most this many messages leased at once (None: the client library's default).
    """

    def __init__(
        self,
        name: str,
        *,
        create: NewSubscription | None = None,
        backoff: Backoff,
        label: str,
        log: logging.Logger,
        on_health: Callable[[bool, str], None] | None = None,
        before_connect: Callable[[], None] | None = None,
        max_messages: int | None = None,
    ) -> None:
        self.name = name
        """``projects/P/subscriptions/S``."""
        self.create = create
        """How to create the subscription (ours), or None to use it as it is (theirs)."""
        self._backoff = backoff
        self._log = _Labelled(log, label)
        self._on_health = on_health
        self._before_connect = before_connect
        self._max_messages = max_messages
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: asyncio.Queue[Message | _StreamEnded] = asyncio.Queue()
        self._client: Any = None
        self._stream: Any = None
        self._opened = 0.0  # time.monotonic() of the last connection
        self._created = False  # our subscription exists (created by us, not deleted yet)
        self._closed = False
        self._channel_failing = False
        self._verifying: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None

    # -- receiving ---------------------------------------------------------------------------------

    async def open(self) -> bool:
        """One attempt to set up the subscription and start pulling: True when it was created just now.
        Raises SubscriptionUnavailable. ``receive()`` calls it, with backoff, whenever it is not connected."""
        from google.api_core import exceptions

        self._loop = asyncio.get_running_loop()
        try:
            if self._client is None:
                # Reads PUBSUB_EMULATOR_HOST; otherwise Application Default Credentials (blocking probe).
                self._client = await asyncio.to_thread(_new_subscriber)
                self._watcher = asyncio.create_task(self._watch_channel(), name=f"pubsub-channel {self.name}")
            if self._before_connect is not None:
                self._before_connect()
            created = await asyncio.to_thread(self._ensure_subscription)
        except exceptions.GoogleAPIError as error:
            missing = isinstance(error, exceptions.NotFound)
            raise SubscriptionUnavailable(describe_error(error, self.name), missing=missing) from error
        except Exception as error:  # credentials and transport problems come in many types
            raise SubscriptionUnavailable(f"{type(error).__name__}: {error}") from error
        self._start_stream()
        self._opened = time.monotonic()
        self._report(True, f"receiving events from {self.name}")
        return created

    async def receive(self) -> AsyncGenerator[Connected | Received, None]:
        """``Connected`` after each connection, then the messages as they arrive, until closed or cancelled.
        Connects (again) by itself, with backoff; a connection ``open()`` made is used as it is."""
        failures, delay = 0, 0.0
        while not self._closed:
            if self._stream is None:
                if delay:
                    await asyncio.sleep(delay)
                try:
                    created = await self.open()
                except SubscriptionUnavailable as failure:
                    delay = self._backoff.delay(failures)
                    failures += 1
                    self._report(False, f"{failure}; retrying in {delay:.1f}s")
                    continue
                yield Connected(created)
            while True:
                item = await self._inbox.get()
                if isinstance(item, _StreamEnded):
                    self._stream_ended(item)
                    break
                messages = [item]
                ended: _StreamEnded | None = None
                while not self._inbox.empty():  # a burst becomes one batch
                    more = self._inbox.get_nowait()
                    if isinstance(more, _StreamEnded):
                        ended = more
                        break
                    messages.append(more)
                yield Received(messages)
                if ended is not None:
                    self._stream_ended(ended)
                    break
            # The stream ended. One that kept failing at once (refused after it opened) must not spin.
            if time.monotonic() - self._opened >= STABLE_STREAM_SECONDS:
                failures = 0
            delay = self._backoff.delay(failures)
            failures += 1

    def _ensure_subscription(self) -> bool:
        """Runs in a worker thread. Creates our subscription (True) or checks that it exists."""
        from google.api_core import exceptions

        new = self.create
        if new is None or self._created:
            try:
                self._client.get_subscription(
                    request={"subscription": self.name}, timeout=CALL_TIMEOUT_SECONDS, retry=None
                )
                return False
            except exceptions.NotFound:
                if new is None:
                    raise
                self._created = False  # expired or deleted behind our back: create it again
        try:
            self._client.create_subscription(
                request=new.request(self.name), timeout=CALL_TIMEOUT_SECONDS, retry=None
            )
        except exceptions.AlreadyExists:
            # Ours, from an attempt whose answer was lost: it may have missed nothing, but be safe.
            self._log.info("subscription %s already exists, using it", self.name)
        self._created = True
        self._log.info(
            "created subscription %s on %s (filter: %s; expires after %s unused)",
            self.name,
            new.topic,
            new.filter or f"none, {new.unfiltered}",
            _human_seconds(new.ttl_seconds),
        )
        return True

    def _start_stream(self) -> None:
        loop = self._loop
        assert loop is not None

        def on_message(message: Message) -> None:  # a pubsub thread
            try:
                loop.call_soon_threadsafe(self._inbox.put_nowait, message)
            except RuntimeError:  # the loop is closed: we are gone, let it be redelivered
                message.nack()

        def on_done(future: Any) -> None:  # a pubsub thread
            # Our own cancel is reported too: receive() then reconnects, unless closed.
            error = None if future.cancelled() else future.exception()
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._inbox.put_nowait, _StreamEnded(error))

        options: dict[str, Any] = {}
        if self._max_messages is not None:
            from google.cloud import pubsub_v1  # type: ignore[attr-defined]

            options["flow_control"] = pubsub_v1.types.FlowControl(max_messages=self._max_messages)
        self._stream = self._client.subscribe(
            self.name, callback=on_message, await_callbacks_on_shutdown=False, **options
        )
        self._stream.add_done_callback(on_done)

    def _stream_ended(self, ended: _StreamEnded) -> None:
        self._stream = None
        if self._closed:
            return
        from google.api_core import exceptions

        if isinstance(ended.error, exceptions.NotFound) and self.create is not None:
            self._created = False  # gone (expired, deleted, a restarted emulator): create it again
        why = describe_error(ended.error, self.name) if ended.error else "closed to reconnect"
        self._report(False, f"the subscription stream ended ({why}); reconnecting")

    def _report(self, healthy: bool, why: str) -> None:
        if self._on_health is not None:
            self._on_health(healthy, why)

    # -- channel health ----------------------------------------------------------------------------

    async def _watch_channel(self) -> None:
        """Follow the gRPC channel's state: the client library retries UNAVAILABLE forever by itself, and
        the channel failing is the only sign of it that costs no call.

        Polled, not subscribed to (``grpc.Channel.subscribe``): with a connectivity watcher on the channel,
        a cancelled streaming pull was seen to stay registered at the Pub/Sub emulator, which then kept
        delivering (and leasing) messages to it. The state is read through grpc's internal channel object;
        where that is missing, only the stream's end is noticed (logged once)."""
        channel = getattr(self._client.transport.grpc_channel, "_channel", None)
        check = getattr(channel, "check_connectivity_state", None)
        if check is None:
            self._log.info(
                "cannot read the gRPC channel's state; an outage is noticed when the stream ends",
            )
            return
        while True:
            await asyncio.sleep(CHANNEL_CHECK_SECONDS)
            self._channel_changed(int(check(False)))

    def _channel_changed(self, state: int) -> None:
        if self._closed or self._stream is None:
            return
        if state == _TRANSIENT_FAILURE and not self._channel_failing:
            self._channel_failing = True
            self._report(False, f"Pub/Sub is unreachable (subscription {self.name})")
        elif state == _READY and self._channel_failing:
            self._channel_failing = False
            # Connected again, but is our subscription still there? (A restarted emulator forgets it.)
            if self._verifying is None or self._verifying.done():
                self._verifying = asyncio.create_task(self._verify_after_outage())

    async def _verify_after_outage(self) -> None:
        from google.api_core import exceptions

        stream = self._stream
        try:
            await asyncio.to_thread(
                self._client.get_subscription,
                request={"subscription": self.name},
                timeout=CALL_TIMEOUT_SECONDS,
                retry=None,
            )
        except exceptions.GoogleAPIError as error:
            self._log.info("after the outage: %s", describe_error(error, self.name))
            if stream is not None and stream is self._stream:
                stream.cancel()  # the stream ends; receive() reconnects (and re-creates) with backoff
                if isinstance(error, exceptions.NotFound) and self.create is not None:
                    self._created = False
            return
        if stream is not None and stream is self._stream and not self._closed:
            # Pub/Sub kept the subscription and its messages: nothing was lost.
            self._report(True, f"Pub/Sub is reachable again; receiving events from {self.name}")

    # -- shutdown ----------------------------------------------------------------------------------

    def _queued(self) -> list[Message]:
        """The messages that arrived and were never handed out by ``receive()``."""
        held = []
        while not self._inbox.empty():
            item = self._inbox.get_nowait()
            if not isinstance(item, _StreamEnded):
                held.append(item)
        return held

    async def close(self, unhandled: Iterable[Message] = ()) -> None:
        """Stop the stream; give back ``unhandled`` (received, neither acknowledged nor nacked) and what is
        still queued, so a kept subscription redelivers it at once; delete the subscription if it is ours.
        Best effort, logged, bounded by a few seconds."""
        if self._closed:
            return
        self._closed = True
        if self._verifying is not None:
            self._verifying.cancel()
        client, stream = self._client, self._stream
        self._stream = None
        if self._watcher is not None:
            self._watcher.cancel()
        if stream is not None:
            stream.cancel()
            with contextlib.suppress(Exception):  # its own errors were reported while it ran
                await asyncio.to_thread(stream.result, DELETE_TIMEOUT_SECONDS)
        held = [*unhandled, *self._queued()]
        if client is None:
            return
        try:
            if self._created:
                await asyncio.to_thread(self._delete_subscription)
            elif held:
                await asyncio.to_thread(self._give_back, [message.ack_id for message in held])
        finally:
            await asyncio.to_thread(client.close)

    def _give_back(self, ack_ids: list[str]) -> None:
        """Nack, once the stream is down: a nack sent while it is still open can be answered by an immediate
        redelivery to that very stream, which is going away, and the message would then wait for its ack
        deadline instead of going to the next subscriber. (``Message.nack()`` after the stream is down is
        no better: the client library has stopped the thread that would send it.)"""
        from google.api_core import exceptions

        try:
            self._client.modify_ack_deadline(
                request={"subscription": self.name, "ack_ids": ack_ids, "ack_deadline_seconds": 0},
                timeout=DELETE_TIMEOUT_SECONDS,
                retry=None,
            )
        except exceptions.GoogleAPIError as error:
            self._log.info(
                "%d unhandled message(s) come back after their ack deadline instead (%s)",
                len(ack_ids),
                describe_error(error, self.name),
            )
        else:
            self._log.info("gave %d unhandled message(s) back to %s", len(ack_ids), self.name)

    def _delete_subscription(self) -> None:
        from google.api_core import exceptions

        started = time.monotonic()
        try:
            self._client.delete_subscription(
                request={"subscription": self.name}, timeout=DELETE_TIMEOUT_SECONDS, retry=None
            )
        except exceptions.NotFound:
            self._log.info("subscription %s was already gone", self.name)
        except exceptions.GoogleAPIError as error:
            ttl = self.create.ttl_seconds if self.create is not None else 0.0
            self._log.warning(
                "could not delete subscription %s (%s); its expiration policy removes it after %s",
                self.name,
                describe_error(error, self.name),
                _human_seconds(ttl),
            )
        else:
            self._log.info(
                "deleted subscription %s in %.0f ms",
                self.name,
                (time.monotonic() - started) * 1000,
            )
        self._created = False


def _new_subscriber() -> Any:
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

    return pubsub_v1.SubscriberClient()


def describe_error(error: BaseException, subscription: str) -> str:
    """A short reason for a Pub/Sub error: status and message (never message data), and what to check."""
    code = getattr(error, "code", None)
    status = getattr(code, "name", None) or type(error).__name__
    message = getattr(error, "message", None) or str(error)
    hint = ""
    if status in ("PERMISSION_DENIED", "FORBIDDEN"):
        hint = " (the agent needs roles/pubsub.subscriber, and roles/pubsub.editor to create a subscription)"
    elif status == "NOT_FOUND":
        hint = f" ({subscription} or its topic does not exist)"
    return f"{status}: {message}{hint}"


def _human_seconds(seconds: float) -> str:
    if seconds % 86400 == 0:
        days = int(seconds // 86400)
        return f"{days} day" + ("s" if days != 1 else "")
    if seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    return f"{seconds:g}s"
