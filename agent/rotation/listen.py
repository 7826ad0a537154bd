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
* A subscription that cannot be set up at start is an error (exit non-zero, with the reason). Later
  failures (Pub/Sub unreachable, the stream ending, our subscription gone) are logged as warnings and
  retried with backoff; ours is created again if it is gone.
* Rotations are paced as ``rotate``'s are (``RotationOptions.pacing``, ``agent.rotation.pacing``): events
  that arrive together (several secrets falling due in the same minute) are rotated ``spacing`` apart, so
  the fleet's fetches of the new versions stay within its access budget.
* SIGTERM/SIGINT: stop pulling, let the rotation in progress finish (one waiting for its turn is not
  started, and its event is given back), give unhandled messages back, exit 0.

The subscription itself (create, pull, reconnect, give back, delete) is ``agent.sources.pubsub``'s
``Subscription``, the agent's own event feed's too; this module only says which events mean "rotate this
secret" and runs the engine.

``PUBSUB_EMULATOR_HOST`` points the Pub/Sub client at the emulator, as everywhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Final

from agent.core.retry import Backoff
from agent.errors import AgentError
from agent.observe.logs import fields
from agent.rotation.engine import rotate_one
from agent.rotation.pacing import Pacer
from agent.rotation.results import RotationOptions, RotationResult
from agent.secrets.interface import SecretsBackend
from agent.sources.events import new_subscription_name, parse_event
from agent.sources.pubsub import (
    Message,
    NewSubscription,
    Received,
    Subscription,
    SubscriptionUnavailable,
    require_pubsub,
)

log = logging.getLogger(__name__)

ROTATE_EVENT: Final = "SECRET_ROTATE"
SUBSCRIPTION_PREFIX: Final = "secrets-agent-rotate"
SUBSCRIPTION_TTL_SECONDS: Final = 86400
RETENTION_SECONDS: Final = 86400
"""A created subscription keeps unacknowledged events for a day: a listener restarted within the day
still rotates what fell due meanwhile."""
MAX_MESSAGES: Final = 10
"""Events leased at once per subscription: rotations run one at a time, and an event leased here waits
instead of going to another replica."""
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
        self._subscriptions: list[Subscription] = []
        self._healthy: dict[str, bool] = {}
        # Every subscription's messages, in arrival order: one rotation at a time, whichever it came from.
        self._inbox: asyncio.Queue[tuple[Subscription, Message]] = asyncio.Queue()
        self.ready = asyncio.Event()
        """Set once every subscription exists and is being pulled (tests wait on it)."""
        self._pacer: Pacer | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        require_pubsub()
        pacing = self.options.rotation.pacing
        self._pacer = Pacer(pacing, stop) if pacing is not None else None
        self._subscriptions = self._new_subscriptions()
        pumps: list[asyncio.Task[None]] = []
        try:
            for subscription in self._subscriptions:
                await self._open(subscription)
            self.ready.set()
            names = [s.name for s in self._subscriptions]
            log.info("listening for SECRET_ROTATE on %s", ", ".join(names), extra=fields(subscriptions=names))
            pumps = [
                asyncio.create_task(self._pump(s), name=f"rotate-listen {s.name}")
                for s in self._subscriptions
            ]
            await self._consume(stop, pumps)
        finally:
            await self._close(pumps)

    def _new_subscriptions(self) -> list[Subscription]:
        made = []
        if self.options.subscription:
            made.append(self._subscription(self.options.subscription, None))
        for topic in self.options.topics:
            name = new_subscription_name(topic, socket.gethostname(), SUBSCRIPTION_PREFIX)
            new = NewSubscription(
                topic,
                ttl_seconds=SUBSCRIPTION_TTL_SECONDS,
                retention_seconds=RETENTION_SECONDS,
                filter=f'attributes.eventType = "{ROTATE_EVENT}"',
            )
            made.append(self._subscription(name, new))
        return made

    def _subscription(self, name: str, create: NewSubscription | None) -> Subscription:
        return Subscription(
            name,
            create=create,
            backoff=RECONNECT,
            label="rotate --listen",
            log=log,
            on_health=functools.partial(self._health, name),
            max_messages=MAX_MESSAGES,
        )

    async def _open(self, subscription: Subscription) -> None:
        """Set up one subscription at start: a listener that cannot is refused, not left retrying."""
        try:
            await subscription.open()
        except SubscriptionUnavailable as failure:
            if subscription.create is not None:
                raise ListenError(
                    f"cannot create a subscription on {subscription.create.topic}: {failure}"
                ) from None
            if failure.missing:
                raise ListenError(
                    f"subscription {subscription.name} does not exist: create it on the topic your "
                    "secrets notify (gcloud pubsub subscriptions create ...)"
                ) from None
            raise ListenError(f"subscription {subscription.name}: {failure}") from None

    def _health(self, name: str, healthy: bool, why: str) -> None:
        before = self._healthy.get(name)
        self._healthy[name] = healthy
        where = why if name in why else f"{name}: {why}"
        if not healthy:
            log.warning("rotate --listen: %s", where, extra=fields(subscription=name))
        elif before is False:  # the first connection is announced by "listening for ..."
            log.info("rotate --listen: %s", where, extra=fields(subscription=name))

    async def _pump(self, subscription: Subscription) -> None:
        """Move one subscription's messages to the shared inbox; it reconnects by itself."""
        async with contextlib.aclosing(subscription.receive()) as received:
            async for item in received:
                if isinstance(item, Received):
                    for message in item.messages:
                        self._inbox.put_nowait((subscription, message))

    async def _consume(self, stop: asyncio.Event, pumps: list[asyncio.Task[None]]) -> None:
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                getting = asyncio.ensure_future(self._inbox.get())
                done, _ = await asyncio.wait({getting, stopping, *pumps}, return_when=asyncio.FIRST_COMPLETED)
                if getting not in done:
                    getting.cancel()
                    for pump in pumps:
                        if pump.done():
                            pump.result()  # a pump only ends by failing: that error ends the listener
                    break
                _, message = getting.result()
                await self._handle(message)
        finally:
            stopping.cancel()

    async def _close(self, pumps: list[asyncio.Task[None]]) -> None:
        for pump in pumps:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        # Whatever arrived but was not handled goes back to Pub/Sub for another listener.
        unhandled: dict[str, list[Message]] = {}
        while not self._inbox.empty():
            subscription, message = self._inbox.get_nowait()
            unhandled.setdefault(subscription.name, []).append(message)
        closed = await asyncio.gather(
            *(s.close(unhandled.get(s.name, ())) for s in self._subscriptions), return_exceptions=True
        )
        for outcome in closed:
            if isinstance(outcome, BaseException):
                raise outcome

    # -- one message -------------------------------------------------------------------------------

    async def _handle(self, message: Message) -> None:
        try:
            secret_id = self._secret_to_rotate(message)
            if secret_id is not None:
                published = _publish_time(message)
                options = replace(self.options.rotation, skip_if_rotated_after=published)
                result = await rotate_one(self.backend, secret_id, options, pacer=self._pacer)
                if result.result == "stopped":
                    message.nack()  # never started: another listener (or this one, restarted) rotates it
                    return
                self.handled += 1
                if self.on_result is not None:
                    self.on_result(result)
        except Exception:
            log.exception("rotate --listen: handling an event failed; it will be redelivered")
            message.nack()
            return
        message.ack()

    def _secret_to_rotate(self, message: Message) -> str | None:
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


def _publish_time(message: Message) -> datetime | None:
    moment = getattr(message, "publish_time", None)
    if not isinstance(moment, datetime):
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
