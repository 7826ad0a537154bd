"""Events for selections: the Secret resource in SECRET_CREATE / SECRET_UPDATE / SECRET_DELETE read for its
name and labels (bounded), the subscription filter that lets the selections' projects through, and the feed
handing lifecycle events (and version events of secrets it does not follow yet) to discovery."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
from google.cloud.secretmanager_v1 import types

from agent.config import EventsConfig, SecretSpec
from agent.config.refs import parse_ref
from agent.sources.event_feed import EventFeed
from agent.sources.events import (
    MAX_RESOURCE_BYTES,
    SecretEvent,
    event_listing,
    json_depth_within,
    parse_event,
    secret_resource,
    subscription_filter,
)
from agent.sources.selection import SecretListing
from agent_emulator.events import build_event_message

NAME = "projects/123456/secrets/payments-db"


def secret(labels: dict[str, str], name: str = NAME) -> types.Secret:
    return types.Secret(name=name, labels=labels, topics=[types.Topic(name="projects/p/topics/t")])


def emulated(kind: str, resource: types.Secret) -> SecretEvent:
    """The event exactly as our emulator publishes it (attributes and the resource's JSON)."""
    message = build_event_message(kind, resource)
    event = parse_event(dict(message.attributes), message.data)
    assert event is not None
    return event


def test_create_and_update_carry_the_secret_with_its_labels() -> None:
    for kind in ("SECRET_CREATE", "SECRET_UPDATE"):
        listing = event_listing(emulated(kind, secret({"app": "payments", "env": "prod"})))
        assert listing == SecretListing("123456", None, "payments-db", {"app": "payments", "env": "prod"})
        assert listing is not None
        assert listing.labels == {"app": "payments", "env": "prod"}
    unlabelled = event_listing(emulated("SECRET_UPDATE", secret({})))
    assert unlabelled is not None
    assert unlabelled.labels == {}


def test_delete_and_version_events_name_the_secret_without_labels() -> None:
    deleted = event_listing(emulated("SECRET_DELETE", secret({"app": "payments"})))
    assert deleted is not None
    assert deleted.labels is None
    assert deleted.secret_id == "payments-db"
    added = parse_event(
        {"eventType": "SECRET_VERSION_ADD", "secretId": NAME, "versionId": f"{NAME}/versions/2"}
    )
    assert added is not None
    listing = event_listing(added)
    assert listing is not None
    assert (listing.labels, listing.secret_id) == (None, "payments-db")
    regional = event_listing(
        SecretEvent("SECRET_DELETE", "projects/my-project/locations/europe-west1/secrets/eu-db")
    )
    assert regional is not None
    assert regional.key == ("my-project", "europe-west1", "eu-db")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"[]",
        b'{"labels": {"app": "x"}}',  # no name
        b'{"name": "projects/123456/secrets/other", "labels": {}}',  # another secret
        b'{"name": "' + NAME.encode() + b'", "labels": {"app": 1}}',
        b'{"name": "' + NAME.encode() + b'", "labels": ["app"]}',
        b'{"name": "' + NAME.encode() + b'", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"name": "' + NAME.encode() + b'", "pad": "' + b"x" * MAX_RESOURCE_BYTES + b'"}',
        json.dumps({"name": NAME, "labels": {f"k{i}": "v" for i in range(65)}}).encode(),
    ],
)
def test_unreadable_or_hostile_data_gives_no_listing(data: bytes) -> None:
    assert event_listing(SecretEvent("SECRET_UPDATE", NAME, None, data)) is None


def test_depth_is_checked_outside_strings() -> None:
    assert json_depth_within(b'{"a": "[[[[[[[[[[[[[[[[[[[[["}', 2)
    assert json_depth_within(b'{"a": "\\"[[[[["}', 1)
    assert not json_depth_within(b'{"a": [[[1]]]}', 3)
    assert json_depth_within(b'{"a": [[[1]]]}', 4)
    assert secret_resource(b'{"name": "n"}') == ("n", {})


def test_the_filter_lets_the_selections_projects_through() -> None:
    names = ["projects/a/secrets/db", "projects/b/secrets/api"]
    assert subscription_filter(names, ["projects/a/secrets/"]) == (
        'attributes.secretId = "projects/b/secrets/api" OR '
        'hasPrefix(attributes.secretId, "projects/a/secrets/")'
    )
    assert (
        subscription_filter([], ["projects/a/secrets/"])
        == 'hasPrefix(attributes.secretId, "projects/a/secrets/")'
    )
    many = [f"projects/b/secrets/secret-number-{i}" for i in range(20)]
    assert subscription_filter(many, ["projects/a/secrets/"]) == (
        'hasPrefix(attributes.secretId, "projects/a/secrets/") OR '
        'hasPrefix(attributes.secretId, "projects/b/secrets/")'
    )
    assert subscription_filter([], []) is None


# --------------------------------------------------------------------------------------------------
# The feed, fed messages by hand (no Pub/Sub: _handle is what a received batch goes through)
# --------------------------------------------------------------------------------------------------


@dataclass
class Message:
    attributes: dict[str, str]
    data: bytes = b""
    acked: list[bool] = field(default_factory=list)

    def ack(self) -> None:
        self.acked.append(True)


def message(kind: str, resource: types.Secret) -> Message:
    built = build_event_message(kind, resource)
    return Message(dict(built.attributes), built.data)


def version_added(name: str, version: str) -> Message:
    attributes = {
        "eventType": "SECRET_VERSION_ADD",
        "secretId": name,
        "versionId": f"{name}/versions/{version}",
    }
    return Message(attributes, b"{}")


CONFIG = EventsConfig(topic="projects/my-project/topics/secret-events")


def spec(name: str, ref: str) -> SecretSpec:
    return SecretSpec(name=name, ref=parse_ref(ref))


async def test_the_feed_hands_lifecycle_events_and_untargeted_versions_to_discovery() -> None:
    seen: list[tuple[str, SecretListing | None]] = []
    explicit = spec("db", "projects/my-project/secrets/db")
    feed = EventFeed(
        CONFIG,
        [explicit],
        lambda name: None,
        on_secret=lambda event, listing: seen.append((event.event_type, listing)),
        selections=[("my-project", None)],
    )
    created = message("SECRET_CREATE", secret({"app": "payments"}, "projects/my-project/secrets/new"))
    names, pending = feed._handle([created, version_added("projects/my-project/secrets/new", "1")])
    assert names == set()
    assert pending == []
    assert created.acked == [True]
    assert seen == [
        ("SECRET_CREATE", SecretListing("my-project", None, "new", {"app": "payments"})),
        ("SECRET_VERSION_ADD", SecretListing("my-project", None, "new")),
    ]

    seen.clear()
    feed.replace_specs([explicit, spec("new", "projects/my-project/secrets/new")])
    names, pending = feed._handle([version_added("projects/my-project/secrets/new", "2")])
    assert names == {"new"}
    assert len(pending) == 1
    assert seen == []  # followed by the feed now: the Syncer checks it

    names, _ = feed._handle([message("SECRET_UPDATE", secret({}, "projects/my-project/secrets/new"))])
    assert [kind for kind, _ in seen] == ["SECRET_UPDATE"]  # a relabelling of a followed secret too
    assert names == set()


async def test_without_selections_nothing_goes_to_discovery_and_the_filter_is_exact() -> None:
    feed = EventFeed(CONFIG, [spec("db", "projects/my-project/secrets/db")], lambda name: None)
    assert feed.filter == 'attributes.secretId = "projects/my-project/secrets/db"'
    names, _ = feed._handle([message("SECRET_CREATE", secret({}, "projects/my-project/secrets/x"))])
    assert names == set()


async def test_the_filter_of_a_selection_waits_for_the_project_number() -> None:
    numbers: dict[str, str] = {}
    feed = EventFeed(
        CONFIG,
        [spec("db", "projects/my-project/secrets/db")],
        lambda name: None,
        on_secret=lambda event, listing: None,
        selections=[("my-project", None), ("42", None)],
        project_number=numbers.get,
    )
    assert feed.filter is None  # Google's events name the project by number, which is not known yet
    created = feed._new_subscription()
    assert created is not None  # what the log line of its creation says: not "too many secrets"
    assert created.unfiltered == "the number of project 'my-project' (selected) is not known yet"
    numbers["my-project"] = "123456"
    feed.replace_specs(feed.specs)
    assert feed.filter is not None
    for prefix in ("projects/123456/secrets/", "projects/my-project/secrets/", "projects/42/secrets/"):
        assert f'"{prefix}"' in feed.filter
    assert "secrets/db" not in feed.filter  # covered by its project's prefix
    regional = EventFeed(
        CONFIG,
        [],
        lambda name: None,
        selections=[("my-project", "europe-west1")],
        project_number=numbers.get,
    )
    assert regional.filter is not None
    assert '"projects/123456/locations/europe-west1/secrets/"' in regional.filter
