"""Push, not poll: Secret Manager's Pub/Sub notifications as a change feed for the Syncer.

``EventFeed`` follows one subscription (``agent.sources.pubsub.Subscription``) and tells the Syncer which
secrets to check, as ``agent.sources.events.decide`` says; events that arrive together become one check.

Acknowledgement: a batch's messages are acknowledged when the consumer asks for the next batch, i.e. after
``Syncer.follow`` handled it (its check, retried with backoff while it fails transiently, is finished).
Messages that ask for nothing are acknowledged at once. A feed closed in the middle of a batch gives it
back, so a kept subscription redelivers it.

Subscription: with ``events.topic`` the feed creates its own subscription (``secrets-agent-<host>-<random>``)
filtered on ``attributes.secretId``, with an expiration policy and a short retention, and deletes it in
``close()``; with ``events.subscription`` it uses that one as it is. The filter is applied in the agent too:
the Pub/Sub emulator stores filters but does not apply them, and a long list of secrets does not fit
Pub/Sub's 256-byte filter limit (the feed then falls back to per-project prefixes, or to no filter).

Selections: given ``on_secret``, every ``SECRET_CREATE`` / ``SECRET_UPDATE`` / ``SECRET_DELETE`` (with the
secret's labels, ``events.event_listing``), and every version event of a secret that is not (yet) one of
its targets, is also handed to ``on_secret(event, listing)``: ``agent.discovery`` decides what a selection
takes. ``replace_specs`` changes the targets when the set of secrets changes; with ``selections`` (their
projects and locations) the filter of a created subscription lets through every secret of those projects
(a prefix per project; no filter while the service's number for a project is not known, since events name
it so).

Health: while the subscription is unreachable (connection failing, subscription gone, creation refused)
``on_health(False)`` lets the Syncer poll at its normal interval; the feed reconnects with backoff (and
re-creates its subscription), then ``on_health(True)``. A newly created subscription holds nothing that was
published before it existed, so each creation is followed by one catch-up check of every polled secret.

google-cloud-pubsub is the optional ``pubsub`` extra: imported only when events are configured.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Final

from agent.config import EventsConfig, SecretSpec
from agent.core.retry import Backoff
from agent.sources.events import (
    FETCH_EVENTS,
    KNOWN_EVENTS,
    LIFECYCLE_EVENTS,
    EventTargets,
    SecretEvent,
    decide,
    event_listing,
    new_subscription_name,
    parse_event,
    subscription_filter,
)
from agent.sources.pubsub import MAX_FILTER_BYTES, Connected, Message, NewSubscription, Subscription
from agent.sources.selection import SecretListing

log = logging.getLogger(__name__)

MESSAGE_RETENTION_SECONDS: Final = 600
"""Retention of a created subscription: Pub/Sub's minimum (10 minutes). Longer is pointless: a created
subscription lives and dies with its agent, and a reconnect is followed by a catch-up check anyway."""
DEFAULT_BACKOFF: Final = Backoff(1.0, 60.0)
"""Between reconnection attempts, unless the agent passes its configured schedule (``gcp.backoff_*``)."""

OnSecret = Callable[[SecretEvent, SecretListing | None], None]
"""``on_secret(event, listing)``: a lifecycle event (``listing`` with labels, None when its data could not
be read), or a version event of a secret the feed has no target for (``listing`` without labels)."""


class EventFeed:
    """A ``ChangeFeed`` of Secret Manager events from Pub/Sub. Create and use it in one running loop.

    ``served(name)``: the version served now for a local name (None: nothing yet). ``resolved``: canonical
    secret name -> the name Secret Manager returned for it (``GcpSource.resolved_secret_names``, read again
    whenever the subscription is (re)connected, so a secret fetched late is matched by its service name too).
    ``on_health(True|False)``: events flow / do not (the Syncer picks its poll interval from it).
    ``on_event(type, action)``: one call per event and configured secret it concerns (metrics).
    ``on_secret``, ``selections`` (project, location) and ``project_number`` (the service's number of a
    project, None while unknown): see the module docstring.
    """

    def __init__(
        self,
        config: EventsConfig,
        specs: Sequence[SecretSpec],
        served: Callable[[str], str | None],
        *,
        resolved: Mapping[str, str] | None = None,
        on_health: Callable[[bool], None] | None = None,
        on_event: Callable[[str, str], None] | None = None,
        backoff: Backoff | None = None,
        hostname: str | None = None,
        on_secret: OnSecret | None = None,
        selections: Sequence[tuple[str, str | None]] = (),
        project_number: Callable[[str], str | None] | None = None,
    ) -> None:
        if not config.enabled:
            raise ValueError("EventFeed needs events.topic or events.subscription")
        self.config = config
        self.specs = list(specs)
        self._resolved = resolved if resolved is not None else {}
        self._on_secret = on_secret
        self._selections = list(dict.fromkeys(selections))
        self._project_number = project_number
        self.targets = EventTargets(self.specs, self._resolved)
        self.filter, self._unfiltered = self._filter()
        """The filter a created subscription gets (None: too many secrets for 256 bytes, or a selection's
        project whose number is not known yet; see above), and why there is none."""
        self.creates = config.subscription is None
        """Whether this feed creates (and deletes) its subscription."""
        self.subscription = config.subscription or self._created_name(config.topic, hostname)
        """The subscription pulled from: the configured one, or the one this feed creates."""
        self.healthy: bool | None = None
        """Whether events flow now (the stream is up and its subscription exists); None before the first
        attempt to connect."""
        self._served = served
        self._on_health = on_health
        self._on_event = on_event
        self._in_flight: list[Message] = []  # messages of the batch the consumer is handling
        self._pubsub = Subscription(
            self.subscription,
            create=self._new_subscription(),
            backoff=backoff or DEFAULT_BACKOFF,
            label="events",
            log=log,
            on_health=self._set_health,
            before_connect=self._refresh_targets,
        )

    @staticmethod
    def _created_name(topic: str | None, hostname: str | None) -> str:
        assert topic is not None  # config: topic or subscription
        return new_subscription_name(topic, hostname)

    def _new_subscription(self) -> NewSubscription | None:
        if not self.creates:
            return None
        assert self.config.topic is not None
        return NewSubscription(
            self.config.topic,
            ttl_seconds=self.config.subscription_ttl,
            retention_seconds=MESSAGE_RETENTION_SECONDS,
            filter=self.filter,
            unfiltered=self._unfiltered,
        )

    def _refresh_targets(self) -> None:
        # Names the source learned since (a secret fetched late); read here, in the loop's thread.
        self.targets = EventTargets(self.specs, self._resolved)
        self.filter, self._unfiltered = self._filter()
        self._pubsub.create = self._new_subscription()

    def _filter(self) -> tuple[str | None, str]:
        """The filter of a created subscription: our secrets' names, and the selections' projects; and why
        there is none, when there is none."""
        prefixes: list[str] = []
        for project, location in self._selections:
            forms = {project}
            if not project.isdigit():
                number = self._project_number(project) if self._project_number is not None else None
                if number is None:
                    # Google's events name the project by number: an id prefix would keep them all out.
                    return None, f"the number of project {project!r} (selected) is not known yet"
                forms.add(number)
            where = f"/locations/{location}" if location else ""
            prefixes += [f"projects/{form}{where}/secrets/" for form in sorted(forms)]
        too_many = f"too many secrets for {MAX_FILTER_BYTES} bytes"
        return subscription_filter(self.targets.secret_names, prefixes), too_many

    def replace_specs(self, specs: Sequence[SecretSpec]) -> None:
        """Follow ``specs`` from now on (selected secrets came or went): the targets and the filter of a
        subscription created from now on. An existing subscription keeps its filter (Pub/Sub cannot change
        one), which lets the selections' projects through already."""
        self.specs = list(specs)
        self._refresh_targets()

    # -- the ChangeFeed --------------------------------------------------------------------------

    async def changes(self) -> AsyncIterator[frozenset[str] | None]:
        """Batches of local names to check, until cancelled or closed. Connects (again) by itself.

        A batch's messages are acknowledged when the next batch is asked for; if the consumer stops in
        between, they stay unacknowledged and ``close()`` gives them back."""
        # Closed with this generator, not whenever the garbage collector finds it.
        async with contextlib.aclosing(self._pubsub.receive()) as received:
            async for item in received:
                if isinstance(item, Connected):
                    if item.created and (catch_up := self._catch_up_names()):
                        # Nothing published before the subscription existed will ever arrive on it.
                        yield catch_up
                        log.info(
                            "events: caught up with what changed before subscribing (%d secret(s))",
                            len(catch_up),
                        )
                    continue
                names, self._in_flight = self._handle(item.messages)
                if names:
                    yield frozenset(names)
                    # Resumed: the consumer asks for the next batch, so it has handled this one.
                    for message in self._in_flight:
                        message.ack()
                    self._in_flight = []

    def _catch_up_names(self) -> frozenset[str]:
        # Pinned versions cannot have changed; the rest (and anything missing) may have.
        return frozenset(
            s.name for s in self.specs if not s.ref.version.isdigit() or self._served(s.name) is None
        )

    def _handle(self, messages: Iterable[Message]) -> tuple[set[str], list[Message]]:
        """Decide every message and acknowledge those that need no fetch. Returns the names to check and
        the messages that asked for them (acknowledged once the check is done)."""
        names: set[str] = set()
        pending: list[Message] = []
        for message in messages:
            wanted = self._names_for(parse_event(dict(message.attributes), bytes(message.data)))
            if wanted:
                names |= wanted
                pending.append(message)
            else:
                message.ack()
        return names, pending

    def _names_for(self, event: SecretEvent | None) -> set[str]:
        if event is None:
            log.debug("events: a message without eventType/secretId, ignored")
            return set()
        kind = event.event_type if event.event_type in KNOWN_EVENTS else "OTHER"
        specs = self.targets.specs_for(event.secret)
        if self._on_secret is not None and (
            event.event_type in LIFECYCLE_EVENTS or (not specs and event.event_type in FETCH_EVENTS)
        ):
            self._on_secret(event, event_listing(event))
        if not specs:
            # The Pub/Sub emulator does not apply filters, and a filter may be a prefix or absent.
            log.debug("events: %s for %s, not one of our secrets", kind, event.secret)
            self._count(kind, "ignored")
            return set()
        wanted: set[str] = set()
        for spec in specs:
            decision = decide(event, spec, self._served(spec.name))
            version = f" version {event.version}" if event.version else ""
            if decision.action == "fetch":
                log.info("events: %s%s of %s: %s, checking", kind, version, spec.name, decision.reason)
                wanted.add(spec.name)
                self._count(kind, "fetch")
            elif decision.action == "warn":
                log.warning("events: %s%s of %s: %s", kind, version, spec.name, decision.reason)
                self._count(kind, "warned")
            else:
                log.debug("events: %s%s of %s: %s", kind, version, spec.name, decision.reason)
                self._count(kind, "ignored")
        return wanted

    def _count(self, kind: str, action: str) -> None:
        if self._on_event is not None:
            self._on_event(kind, action)

    def _set_health(self, healthy: bool, why: str) -> None:
        if healthy == self.healthy:
            if not healthy:  # still down: the reason may have changed, and the retry delay has
                log.info("events: %s", why)
            return
        self.healthy = healthy
        if healthy:
            log.info("events: %s", why)
        else:
            log.warning("events: %s; polling at the normal interval meanwhile", why)
        if self._on_health is not None:
            self._on_health(healthy)

    async def close(self) -> None:
        """Stop the stream; give back what was not handled (a kept subscription redelivers it at once);
        delete the subscription this feed created. Best effort, logged, bounded by a few seconds."""
        unhandled, self._in_flight = self._in_flight, []
        await self._pubsub.close(unhandled)
