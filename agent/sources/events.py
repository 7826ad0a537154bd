"""What Secret Manager's Pub/Sub notifications mean (pure: no I/O, no Pub/Sub client).

Secret Manager publishes a message to every topic configured on a secret when the secret or one of its
versions changes: attributes ``eventType``, ``secretId`` (the secret's full name, with the project NUMBER:
``projects/123456/secrets/S``), ``versionId`` on version events, ``dataFormat=JSON_API_V1``; the data is the
Secret or SecretVersion resource as JSON, never a payload. ``parse_event`` reads that; ``decide`` says what
an event means for one configured secret:

* ``SECRET_VERSION_ADD`` / ``SECRET_VERSION_ENABLE`` of an assigned secret -> check it (``latest``: only when
  the event's version is newer than the one served, so a duplicate or out-of-order event costs nothing;
  the check reads what ``latest`` points to NOW, so an old event can never roll a value back). Pinned
  versions ignore events.
* ``SECRET_UPDATE`` moves aliases: a secret referenced by alias is checked when the alias now names
  another version than the one served.
* ``SECRET_VERSION_DISABLE`` / ``DESTROY`` of the version being served, and ``SECRET_DELETE``: a warning;
  the last known good value stays (fetching would only fail). Anything else: nothing to do.

Selections (``select``) follow the secrets' lifecycle: ``SECRET_CREATE``, ``SECRET_UPDATE`` and
``SECRET_DELETE`` carry the Secret resource, whose name and labels ``event_listing`` reads (bounded in size
and nesting) for ``agent.discovery`` to match.

``EventTargets`` finds the configured secrets an event is about (events name the project by number,
configurations mostly by id); ``subscription_filter`` lets only their events through a subscription, and
``new_subscription_name`` names a subscription of ours on an events topic.
The agent's feed of these decisions is ``agent.sources.event_feed``; ``rotate --listen`` reads
``SECRET_ROTATE`` with ``parse_event`` too.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from agent.config import SecretSpec
from agent.config.refs import LATEST
from agent.sources.pubsub import MAX_FILTER_BYTES
from agent.sources.selection import SecretListing

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
LIFECYCLE_EVENTS: Final = frozenset({"SECRET_CREATE", "SECRET_UPDATE", "SECRET_DELETE"})
"""Events about the secret itself (its data: the Secret, with its labels): what selections follow."""
MAX_RESOURCE_BYTES: Final = 256 * 1024
"""Largest event data read as a Secret resource (labels, annotations of at most 16 KiB, topics...)."""
MAX_RESOURCE_DEPTH: Final = 16
"""Deepest nesting of objects and arrays read in event data (a Secret nests about five levels)."""
MAX_LABELS: Final = 64
"""Labels read from a Secret resource: Google allows 64 per resource."""

Action = Literal["fetch", "warn", "ignore"]


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


def json_depth_within(data: bytes, limit: int) -> bool:
    """Whether the JSON text ``data`` nests objects and arrays at most ``limit`` deep (strings skipped),
    checked before it is parsed, so that hostile data cannot make the parser recurse deeply."""
    depth, in_string, escaped = 0, False, False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x7B, 0x5B):  # { [
            depth += 1
            if depth > limit:
                return False
        elif byte in (0x7D, 0x5D):  # } ]
            depth -= 1
    return True


def secret_resource(data: bytes) -> tuple[str, dict[str, str]] | None:
    """(name, labels) of a Secret resource in event data (the proto3 JSON mapping), or None when it is not
    one: too large, nested too deep, not JSON, no name, or labels that are not a map of strings."""
    if not data or len(data) > MAX_RESOURCE_BYTES or not json_depth_within(data, MAX_RESOURCE_DEPTH):
        return None
    try:
        resource = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if not isinstance(resource, dict):
        return None
    name = resource.get("name")
    labels = resource.get("labels", {})  # proto3 JSON leaves an empty map out
    if not isinstance(name, str) or not isinstance(labels, dict) or len(labels) > MAX_LABELS:
        return None
    if not all(isinstance(key, str) and isinstance(value, str) for key, value in labels.items()):
        return None
    return name, dict(labels)


def event_listing(event: SecretEvent) -> SecretListing | None:
    """The secret an event is about, for selections: with its labels for ``SECRET_CREATE`` and
    ``SECRET_UPDATE`` (read from the Secret in the data; None when that cannot be read or names another
    secret), without labels (None) for every other event. The project is the event's: a number from the
    service (``agent.sources.listing.ProjectNames`` maps it back)."""
    if event.event_type in ("SECRET_CREATE", "SECRET_UPDATE"):
        resource = secret_resource(event.data)
        if resource is None or resource[0] != event.secret:
            return None
        return SecretListing.from_name(event.secret, resource[1])
    return SecretListing.from_name(event.secret)


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


def subscription_filter(secret_names: Collection[str], prefixes: Collection[str] = ()) -> str | None:
    """A Pub/Sub filter that lets through only events of ``secret_names`` and of every secret whose name
    starts with one of ``prefixes`` (``projects/P/secrets/``: a selection's project, whose secrets come
    and go), within 256 bytes.

    Exact names when they fit (``attributes.secretId = "..." OR ...``, with the prefixes), else one prefix
    per project and location (``hasPrefix(attributes.secretId, "projects/P/secrets/")``), else None (no
    filter: the agent filters every message itself anyway).
    """
    wanted = sorted(set(prefixes))
    names = sorted(name for name in set(secret_names) if not any(name.startswith(p) for p in wanted))
    if not names and not wanted:
        return None
    exact = " OR ".join(
        [f'attributes.secretId = "{name}"' for name in names]
        + [f'hasPrefix(attributes.secretId, "{prefix}")' for prefix in wanted]
    )
    if len(exact.encode()) <= MAX_FILTER_BYTES:
        return exact
    all_prefixes = sorted({name.rsplit("/secrets/", 1)[0] + "/secrets/" for name in names} | set(wanted))
    by_prefix = " OR ".join(f'hasPrefix(attributes.secretId, "{prefix}")' for prefix in all_prefixes)
    if len(by_prefix.encode()) <= MAX_FILTER_BYTES:
        return by_prefix
    return None


_NOT_IN_ID = re.compile(r"[^a-z0-9-]+")


def new_subscription_id(hostname: str, suffix: str, prefix: str = "secrets-agent") -> str:
    """``<prefix>-<hostname>-<suffix>``: the pod's name says whose it is, the suffix keeps a restarted pod
    (same name) from taking over the subscription of its predecessor. At most 255 characters, and only
    characters Pub/Sub accepts in an id, whatever the hostname."""
    host = _NOT_IN_ID.sub("-", hostname.lower()).strip("-") or "host"
    return f"{prefix}-{host[: 255 - len(prefix) - 2 - len(suffix)]}-{suffix}"


def new_subscription_name(topic: str, hostname: str | None = None, prefix: str = "secrets-agent") -> str:
    """A fresh name for a subscription of ours on ``topic`` (``projects/P/topics/T``), in the topic's
    project, with a random suffix."""
    project = topic.split("/")[1]
    sub_id = new_subscription_id(hostname or socket.gethostname(), secrets.token_hex(4), prefix)
    return f"projects/{project}/subscriptions/{sub_id}"
