"""Push, not poll: Secret Manager's Pub/Sub notifications as a change feed for the Syncer.

Secret Manager publishes a message to every topic configured on a secret when the secret or one of its
versions changes: attributes ``eventType``, ``secretId`` (the secret's full name, with the project NUMBER:
``projects/123456/secrets/S``), ``versionId`` on version events, ``dataFormat=JSON_API_V1``; the data is the
Secret or SecretVersion resource as JSON, never a payload. ``EventFeed`` subscribes and tells the Syncer
which secrets to check:

* ``SECRET_VERSION_ADD`` / ``SECRET_VERSION_ENABLE`` of an assigned secret -> check it (``latest``: only when
  the event's version is newer than the one served, so a duplicate or out-of-order event costs nothing;
  the check reads what ``latest`` points to NOW, so an old event can never roll a value back). Pinned
  versions ignore events. Events that arrive together become one check.
* ``SECRET_UPDATE`` moves aliases: a secret referenced by alias is checked when the alias now names
  another version than the one served.
* ``SECRET_VERSION_DISABLE`` / ``DESTROY`` of the version being served, and ``SECRET_DELETE``: a warning;
  the last known good value stays (fetching would only fail). Anything else: logged at debug.

Acknowledgement: a batch's messages are acknowledged when the consumer asks for the next batch, i.e. after
``Syncer.follow`` handled it (its check, retried with backoff while it fails transiently, is finished). A
feed closed in the middle of a batch nacks it, so a kept subscription redelivers it.

Subscription: with ``events.topic`` the feed creates its own subscription (``secrets-agent-<host>-<random>``)
filtered on ``attributes.secretId``, with an expiration policy and a short retention, and deletes it in
``close()``; with ``events.subscription`` it uses that one as it is. The filter is applied in the agent too:
the Pub/Sub emulator stores filters but does not apply them, and a long list of secrets does not fit
Pub/Sub's 256-byte filter limit (the feed then falls back to per-project prefixes, or to no filter).

Health: while the subscription is unreachable (connection failing, subscription gone, creation refused)
``on_health(False)`` lets the Syncer poll at its normal interval; the feed reconnects with backoff (and
re-creates its subscription), then ``on_health(True)``. A newly created subscription holds nothing that was
published before it existed, so each creation is followed by one catch-up check of every polled secret.

google-cloud-pubsub is the optional ``pubsub`` extra: imported only when events are configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from agent.config import EventsConfig, SecretSpec
from agent.config.refs import LATEST
from agent.core.retry import Backoff
from agent.errors import AgentError

log = logging.getLogger(__name__)

FETCH_EVENTS: Final = frozenset({"SECRET_VERSION_ADD", "SECRET_VERSION_ENABLE"})
LOSS_EVENTS: Final = frozenset(
    {"SECRET_VERSION_DISABLE", "SECRET_VERSION_DESTROY", "SECRET_VERSION_DESTROY_SCHEDULED"}
)
KNOWN_EVENTS: Final = (
    FETCH_EVENTS
    | LOSS_EVENTS
    | {
        "SECRET_CREATE",
        "SECRET_UPDATE",
        "SECRET_DELETE",
        "SECRET_ROTATE",
        "TOPIC_CONFIGURED",
    }
)
"""The event types Secret Manager documents; anything else is counted as ``OTHER``."""

MAX_FILTER_BYTES: Final = 256
"""Pub/Sub refuses longer subscription filters."""
MESSAGE_RETENTION_SECONDS: Final = 600
"""Retention of a created subscription: Pub/Sub's minimum (10 minutes). Longer is pointless: a created
subscription lives and dies with its agent, and a reconnect is followed by a catch-up check anyway."""
ACK_DEADLINE_SECONDS: Final = 60
"""Initial ack deadline of a created subscription; the client library extends leases while a batch is
being handled (up to an hour), so this only bounds redelivery after the agent vanished mid-batch."""
CALL_TIMEOUT_SECONDS: Final = 10.0
"""Deadline of each administrative Pub/Sub call (create, get, delete subscription). The client library's
own retry is off: the feed retries with its backoff, so every failure is seen and health is reported."""
STABLE_STREAM_SECONDS: Final = 60.0
"""A stream that lasted this long worked: reconnecting after it ends starts the backoff afresh."""
CHANNEL_CHECK_SECONDS: Final = 1.0
"""How often the subscriber's gRPC channel state is read (a local call): an outage is noticed this fast."""
# gRPC core's connectivity states (grpc_connectivity_state), as the channel reports them.
_READY: Final = 2
_TRANSIENT_FAILURE: Final = 3
DELETE_TIMEOUT_SECONDS: Final = 5.0
"""Deadline of the subscription delete at shutdown: it must fit in the shutdown grace period. If it fails,
the expiration policy removes the subscription later."""
INSTALL_HINT: Final = "pip install 'secrets-agent[pubsub]'"

Action = Literal["fetch", "warn", "ignore"]


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


# --------------------------------------------------------------------------------------------------
# Decisions (pure)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SecretEvent:
    """One Secret Manager notification, as far as the agent cares. Holds metadata only."""

    event_type: str
    secret: str
    """``secretId``: the secret's full name as the service spells it (``projects/123456/secrets/S``)."""
    version: str | None = None
    """The version NUMBER from ``versionId`` (``SECRET_VERSION_*`` events), else None."""
    data: bytes = b""
    """The resource as JSON (a Secret or a SecretVersion); used for the aliases of SECRET_UPDATE."""


def parse_event(attributes: Mapping[str, str], data: bytes = b"") -> SecretEvent | None:
    """The event in a message's attributes, or None when it names no secret (``TOPIC_CONFIGURED``, or a
    message that did not come from Secret Manager)."""
    event_type, secret = attributes.get("eventType"), attributes.get("secretId")
    if not event_type or not secret:
        return None
    version_name = attributes.get("versionId")
    version = (
        version_name.rsplit("/versions/", 1)[-1] if version_name and "/versions/" in version_name else None
    )
    return SecretEvent(event_type, secret, version if version and version.isdigit() else None, data)


@dataclass(frozen=True)
class Decision:
    """What one event means for one configured secret, and why (for the log)."""

    action: Action
    reason: str


def decide(event: SecretEvent, spec: SecretSpec, served: str | None) -> Decision:
    """What ``event`` (about ``spec``'s secret) means, given the version now ``served`` (None: nothing yet).

    Never a rollback: a fetch always reads what ``latest`` or the alias points to now, and an event that is
    not newer than what is served triggers nothing.
    """
    wanted, kind = spec.ref.version, event.event_type
    number = f"version {event.version}" if event.version else "a version"
    if kind in FETCH_EVENTS:
        if wanted.isdigit():
            return Decision("ignore", f"pinned to version {wanted}")
        if served is None:
            return Decision("fetch", f"{number} is available and nothing is served yet")
        if wanted == LATEST:
            if event.version is None or not served.isdigit() or int(event.version) > int(served):
                return Decision("fetch", f"{number} is newer than the served version {served}")
            return Decision("ignore", f"{number} is not newer than the served version {served}")
        if kind == "SECRET_VERSION_ADD":
            return Decision("ignore", f"a new version does not move alias {wanted!r}")
        if event.version != served:
            return Decision("fetch", f"{number} was enabled; alias {wanted!r} may point at it")
        return Decision("ignore", f"{number} is the one served")
    if kind == "SECRET_UPDATE" and not wanted.isdigit() and wanted != LATEST:
        aliases = _aliases_of(event.data)
        if aliases is None:
            return Decision(
                "fetch", f"the secret changed and alias {wanted!r} could not be read from the event"
            )
        target = aliases.get(wanted)
        if target is None:
            return Decision(
                "warn", f"alias {wanted!r} no longer exists; keeping the last known good version {served}"
            )
        if target != served:
            return Decision("fetch", f"alias {wanted!r} now names version {target} (served: {served})")
        return Decision("ignore", f"alias {wanted!r} still names the served version {served}")
    if kind in LOSS_EVENTS:
        if event.version is not None and event.version == served:
            state = _LOST_STATES[kind]
            return Decision(
                "warn",
                f"the served version {served} is now {state}; keeping it as the last known good value "
                "until a newer version is added or enabled",
            )
        return Decision("ignore", f"{number} is not the one served ({served})")
    if kind == "SECRET_DELETE":
        return Decision("warn", "the secret was deleted in Secret Manager; keeping the last known good value")
    return Decision("ignore", "nothing to fetch")


_LOST_STATES: Final = {
    "SECRET_VERSION_DISABLE": "disabled",
    "SECRET_VERSION_DESTROY": "destroyed",
    "SECRET_VERSION_DESTROY_SCHEDULED": "scheduled for destruction",
}


def _aliases_of(data: bytes) -> dict[str, str] | None:
    """``versionAliases`` of a Secret resource in JSON (alias -> version number), or None if unreadable."""
    try:
        resource = json.loads(data)
    except ValueError:
        return None
    if not isinstance(resource, dict):
        return None
    aliases = resource.get("versionAliases", {})  # proto3 JSON leaves an empty map out
    if not isinstance(aliases, dict):
        return None
    return {str(alias): str(number) for alias, number in aliases.items()}


_PROJECT_PART = re.compile(r"projects/([^/]+)/")


def _project_of(name: str) -> str | None:
    match = _PROJECT_PART.match(name)
    return match[1] if match else None


class EventTargets:
    """Which configured secrets an event's ``secretId`` is about.

    A secret is known under its configured name (``projects/my-project/secrets/S``) and under the name the
    service returned when it was fetched (``projects/123456/secrets/S``: Secret Manager puts the project
    NUMBER in the names it returns and in ``secretId``). A project's number learned from one secret applies
    to every secret of that project, even one that could not be fetched yet.
    """

    def __init__(self, specs: Iterable[SecretSpec], resolved: Mapping[str, str] | None = None) -> None:
        resolved = dict(resolved or {})
        projects: dict[str, str] = {}
        for configured, returned in resolved.items():
            ours, theirs = _project_of(configured), _project_of(returned)
            if ours and theirs and ours != theirs:
                projects[ours] = theirs
        self._by_name: dict[str, list[SecretSpec]] = {}
        for spec in specs:
            canonical = spec.ref.secret_name
            forms = {canonical, resolved.get(canonical, canonical)}
            if (number := projects.get(spec.ref.project)) is not None:
                forms.add(canonical.replace(f"projects/{spec.ref.project}/", f"projects/{number}/", 1))
            for form in forms:
                self._by_name.setdefault(form, []).append(spec)

    @property
    def secret_names(self) -> list[str]:
        """Every name an event may use for one of our secrets, sorted."""
        return sorted(self._by_name)

    def specs_for(self, secret: str) -> Sequence[SecretSpec]:
        """The configured secrets an event with ``secretId == secret`` is about (often one, maybe none)."""
        return self._by_name.get(secret, ())


def subscription_filter(secret_names: Collection[str]) -> str | None:
    """A Pub/Sub filter that lets through only events of ``secret_names``, within 256 bytes.

    Exact names when they fit (``attributes.secretId = "..." OR ...``), else one prefix per project and
    location (``hasPrefix(attributes.secretId, "projects/P/secrets/")``), else None (no filter: the agent
    filters every message itself anyway).
    """
    if not secret_names:
        return None
    exact = " OR ".join(f'attributes.secretId = "{name}"' for name in sorted(secret_names))
    if len(exact.encode()) <= MAX_FILTER_BYTES:
        return exact
    prefixes = sorted({name.rsplit("/secrets/", 1)[0] + "/secrets/" for name in secret_names})
    by_prefix = " OR ".join(f'hasPrefix(attributes.secretId, "{prefix}")' for prefix in prefixes)
    if len(by_prefix.encode()) <= MAX_FILTER_BYTES:
        return by_prefix
    return None


_NOT_IN_ID = re.compile(r"[^a-z0-9-]+")


def new_subscription_id(hostname: str, suffix: str) -> str:
    """``secrets-agent-<hostname>-<suffix>``: the pod's name says whose it is, the suffix keeps a restarted
    pod (same name) from taking over the subscription of its predecessor. At most 255 characters."""
    host = _NOT_IN_ID.sub("-", hostname.lower()).strip("-") or "host"
    return f"secrets-agent-{host[: 255 - len('secrets-agent--') - len(suffix)]}-{suffix}"


# --------------------------------------------------------------------------------------------------
# The feed
# --------------------------------------------------------------------------------------------------


class _ConnectFailed(Exception):
    """The subscription could not be set up or reached; ``str()`` says why (no secret data, ever)."""


@dataclass(frozen=True)
class _StreamEnded:
    """The streaming pull stopped (an error, or our own cancel)."""

    error: BaseException | None


_Item = Any  # a pubsub Message or _StreamEnded


class EventFeed:
    """A ``ChangeFeed`` of Secret Manager events from Pub/Sub. Create and use it in one running loop.

    ``served(name)``: the version served now for a local name (None: nothing yet). ``resolved``: canonical
    secret name -> the name Secret Manager returned for it (``GcpSource.resolved_secret_names``, read again
    whenever the subscription is (re)created, so a secret fetched late is matched by its service name too).
    ``on_health(True|False)``: events flow / do not (the Syncer picks its poll interval from it).
    ``on_event(type, action)``: one call per event and configured secret it concerns (metrics).
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
    ) -> None:
        if not config.enabled:
            raise ValueError("EventFeed needs events.topic or events.subscription")
        self.config = config
        self.specs = list(specs)
        self._resolved = resolved if resolved is not None else {}
        self.targets = EventTargets(self.specs, self._resolved)
        self.filter = subscription_filter(self.targets.secret_names)
        """The filter a created subscription gets (None: too many secrets for 256 bytes, see above)."""
        self.subscription = config.subscription or self._created_name(config.topic, hostname)
        """The subscription pulled from: the configured one, or the one this feed creates."""
        self.creates = config.subscription is None
        """Whether this feed creates (and deletes) its subscription."""
        self.healthy: bool | None = None
        """Whether events flow now (the stream is up and its subscription exists); None before the first
        attempt to connect."""
        self._served = served
        self._on_health = on_health
        self._on_event = on_event
        self._backoff = backoff or Backoff(1.0, 60.0)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: asyncio.Queue[_Item] = asyncio.Queue()
        self._client: Any = None
        self._stream: Any = None
        self._created = False  # our subscription exists (created by us, not deleted yet)
        self._in_flight: list[Any] = []  # messages of the batch the consumer is handling
        self._closed = False
        self._channel_failing = False
        self._verifying: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None

    @staticmethod
    def _created_name(topic: str | None, hostname: str | None) -> str:
        assert topic is not None  # config: topic or subscription
        project = topic.split("/")[1]
        sub_id = new_subscription_id(hostname or socket.gethostname(), secrets.token_hex(4))
        return f"projects/{project}/subscriptions/{sub_id}"

    # -- the ChangeFeed --------------------------------------------------------------------------

    async def changes(self) -> AsyncIterator[frozenset[str] | None]:
        """Batches of local names to check, until cancelled or closed. Connects (again) by itself.

        A batch's messages are acknowledged when the next batch is asked for; if the consumer stops in
        between, they stay unacknowledged and ``close()`` gives them back."""
        self._loop = asyncio.get_running_loop()
        failures, delay = 0, 0.0
        while not self._closed:
            if delay:
                await asyncio.sleep(delay)
            try:
                fresh = await self._connect()
            except _ConnectFailed as failure:
                delay = self._backoff.delay(failures)
                failures += 1
                self._set_health(False, f"{failure}; retrying in {delay:.1f}s")
                continue
            opened = time.monotonic()
            self._set_health(True, f"receiving events from {self.subscription}")
            if fresh and (catch_up := self._catch_up_names()):
                # Nothing published before the subscription existed will ever arrive on it.
                yield catch_up
                log.info(
                    "events: caught up with what changed before subscribing (%d secret(s))", len(catch_up)
                )
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
                names, self._in_flight = self._handle(messages)
                if names:
                    yield frozenset(names)
                    # Resumed: the consumer asks for the next batch, so it has handled this one.
                    for message in self._in_flight:
                        message.ack()
                    self._in_flight = []
                if ended is not None:
                    self._stream_ended(ended)
                    break
            # The stream ended. One that kept failing at once (refused after it opened) must not spin.
            if time.monotonic() - opened >= STABLE_STREAM_SECONDS:
                failures = 0
            delay = self._backoff.delay(failures)
            failures += 1

    def _catch_up_names(self) -> frozenset[str]:
        # Pinned versions cannot have changed; the rest (and anything missing) may have.
        return frozenset(
            s.name for s in self.specs if not s.ref.version.isdigit() or self._served(s.name) is None
        )

    def _handle(self, messages: Iterable[Any]) -> tuple[set[str], list[Any]]:
        """Decide every message and acknowledge those that need no fetch. Returns the names to check and
        the messages that asked for them (acknowledged once the check is done)."""
        names: set[str] = set()
        pending: list[Any] = []
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

    # -- connecting ------------------------------------------------------------------------------

    async def _connect(self) -> bool:
        """Set up the subscription and start pulling; True when the subscription is new (catch up)."""
        from google.api_core import exceptions

        try:
            if self._client is None:
                # Reads PUBSUB_EMULATOR_HOST; otherwise Application Default Credentials (blocking probe).
                self._client = await asyncio.to_thread(_new_subscriber)
                self._watcher = asyncio.create_task(self._watch_channel(), name="events-channel")
            # Names the source learned since (a secret fetched late); read here, in the loop's thread.
            self.targets = EventTargets(self.specs, self._resolved)
            self.filter = subscription_filter(self.targets.secret_names)
            fresh = await asyncio.to_thread(self._ensure_subscription)
        except exceptions.GoogleAPIError as error:
            raise _ConnectFailed(_describe(error, self.subscription)) from error
        except Exception as error:  # credentials and transport problems come in many types
            raise _ConnectFailed(f"{type(error).__name__}: {error}") from error
        self._start_stream()
        return fresh

    def _ensure_subscription(self) -> bool:
        """Runs in a worker thread. Creates our subscription (True) or checks the configured one exists."""
        from google.api_core import exceptions

        if not self.creates or self._created:
            try:
                self._client.get_subscription(
                    request={"subscription": self.subscription}, timeout=CALL_TIMEOUT_SECONDS, retry=None
                )
                return False
            except exceptions.NotFound:
                if not self.creates:
                    raise
                self._created = False  # expired or deleted behind our back: create it again
        request = _subscription_request(self.subscription, self.config, self.filter)
        try:
            self._client.create_subscription(request=request, timeout=CALL_TIMEOUT_SECONDS, retry=None)
        except exceptions.AlreadyExists:
            # Ours, from an attempt whose answer was lost: it may have missed nothing, but be safe.
            log.info("events: subscription %s already exists, using it", self.subscription)
        self._created = True
        log.info(
            "events: created subscription %s on %s (filter: %s; expires after %s unused)",
            self.subscription,
            self.config.topic,
            self.filter or "none, too many secrets for 256 bytes",
            _human_seconds(self.config.subscription_ttl),
        )
        return True

    def _start_stream(self) -> None:
        loop = self._loop
        assert loop is not None

        def on_message(message: Any) -> None:  # a pubsub thread
            try:
                loop.call_soon_threadsafe(self._inbox.put_nowait, message)
            except RuntimeError:  # the loop is closed: we are gone, let it be redelivered
                message.nack()

        def on_done(future: Any) -> None:  # a pubsub thread
            error = None if future.cancelled() else future.exception()
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._inbox.put_nowait, _StreamEnded(error))

        self._stream = self._client.subscribe(
            self.subscription, callback=on_message, await_callbacks_on_shutdown=False
        )
        self._stream.add_done_callback(on_done)

    def _stream_ended(self, ended: _StreamEnded) -> None:
        self._stream = None
        if self._closed:
            return
        from google.api_core import exceptions

        if isinstance(ended.error, exceptions.NotFound) and self.creates:
            self._created = False  # gone (expired, deleted, a restarted emulator): create it again
        why = _describe(ended.error, self.subscription) if ended.error else "closed to reconnect"
        self._set_health(False, f"the subscription stream ended ({why}); reconnecting")

    # -- channel health --------------------------------------------------------------------------

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
            log.info(
                "events: cannot read the gRPC channel's state; an outage is noticed when the stream ends"
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
            self._set_health(False, f"Pub/Sub is unreachable (subscription {self.subscription})")
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
                request={"subscription": self.subscription},
                timeout=CALL_TIMEOUT_SECONDS,
                retry=None,
            )
        except exceptions.GoogleAPIError as error:
            log.info("events: after the outage: %s", _describe(error, self.subscription))
            if stream is not None and stream is self._stream:
                stream.cancel()  # the stream ends; changes() reconnects (and re-creates) with backoff
                if isinstance(error, exceptions.NotFound) and self.creates:
                    self._created = False
            return
        if stream is not None and stream is self._stream and not self._closed:
            # Pub/Sub kept the subscription and its messages: nothing was lost, no catch-up needed.
            self._set_health(True, f"Pub/Sub is reachable again; receiving events from {self.subscription}")

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

    # -- shutdown --------------------------------------------------------------------------------

    def _unhandled(self) -> list[Any]:
        """The messages received and not acknowledged: the batch being handled and those still queued."""
        held, self._in_flight = self._in_flight, []
        while not self._inbox.empty():
            item = self._inbox.get_nowait()
            if not isinstance(item, _StreamEnded):
                held.append(item)
        return held

    async def close(self) -> None:
        """Stop the stream; give back what was not handled (a kept subscription redelivers it at once);
        delete the subscription this feed created. Best effort, logged, bounded by a few seconds."""
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
        unhandled = self._unhandled()
        if client is None:
            return
        try:
            if self.creates and self._created:
                await asyncio.to_thread(self._delete_subscription)
            elif unhandled:
                await asyncio.to_thread(self._give_back, [message.ack_id for message in unhandled])
        finally:
            await asyncio.to_thread(client.close)

    def _give_back(self, ack_ids: list[str]) -> None:
        """Nack, once the stream is down: a nack sent while it is still open can be answered by an immediate
        redelivery to that very stream, which is going away, and the message would then wait for its ack
        deadline instead of going to the next subscriber."""
        from google.api_core import exceptions

        try:
            self._client.modify_ack_deadline(
                request={"subscription": self.subscription, "ack_ids": ack_ids, "ack_deadline_seconds": 0},
                timeout=DELETE_TIMEOUT_SECONDS,
                retry=None,
            )
        except exceptions.GoogleAPIError as error:
            log.info(
                "events: %d unhandled message(s) come back after their ack deadline instead (%s)",
                len(ack_ids),
                _describe(error, self.subscription),
            )
        else:
            log.info("events: gave %d unhandled message(s) back to %s", len(ack_ids), self.subscription)

    def _delete_subscription(self) -> None:
        from google.api_core import exceptions

        started = time.monotonic()
        try:
            self._client.delete_subscription(
                request={"subscription": self.subscription}, timeout=DELETE_TIMEOUT_SECONDS, retry=None
            )
        except exceptions.NotFound:
            log.info("events: subscription %s was already gone", self.subscription)
        except exceptions.GoogleAPIError as error:
            log.warning(
                "events: could not delete subscription %s (%s); its expiration policy removes it after %s",
                self.subscription,
                _describe(error, self.subscription),
                _human_seconds(self.config.subscription_ttl),
            )
        else:
            log.info(
                "events: deleted subscription %s in %.0f ms",
                self.subscription,
                (time.monotonic() - started) * 1000,
            )
        self._created = False


def _new_subscriber() -> Any:
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

    return pubsub_v1.SubscriberClient()


def _subscription_request(name: str, config: EventsConfig, filter_: str | None) -> dict[str, object]:
    from google.protobuf import duration_pb2

    request: dict[str, object] = {
        "name": name,
        "topic": config.topic,
        "ack_deadline_seconds": ACK_DEADLINE_SECONDS,
        "message_retention_duration": duration_pb2.Duration(seconds=MESSAGE_RETENTION_SECONDS),
        "expiration_policy": {"ttl": duration_pb2.Duration(seconds=int(config.subscription_ttl))},
        "labels": {"created-by": "secrets-agent"},
    }
    if filter_ is not None:
        request["filter"] = filter_
    return request


def _describe(error: BaseException, subscription: str) -> str:
    """A short reason for a Pub/Sub error: status and message (never message data; events carry none)."""
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
