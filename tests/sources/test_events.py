"""What Secret Manager's events mean (``agent.sources.events``, pure: tables of cases), how our subscriptions
are named, and how events are configured (file, env, flags)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from agent.config import EventsConfig, SecretSpec, load_config
from agent.config.refs import parse_ref
from agent.errors import ConfigError
from agent.sources.events import (
    EventTargets,
    SecretEvent,
    decide,
    new_subscription_id,
    new_subscription_name,
    parse_event,
    subscription_filter,
)
from agent.sources.pubsub import MAX_FILTER_BYTES

# --------------------------------------------------------------------------------------------------
# Decisions (pure)
# --------------------------------------------------------------------------------------------------

SECRET = "projects/my-project/secrets/db"


def spec(version: str = "latest", name: str = "db") -> SecretSpec:
    return SecretSpec(name=name, ref=parse_ref(f"{SECRET}/versions/{version}"))


def event(kind: str, version: str | None = None, data: object = None) -> SecretEvent:
    return SecretEvent(kind, SECRET, version, json.dumps(data).encode() if data is not None else b"")


@pytest.mark.parametrize(
    ("kind", "version", "wanted", "served", "data", "action"),
    [
        # latest follows newer versions only: duplicates and out-of-order events cost nothing
        ("SECRET_VERSION_ADD", "5", "latest", "4", None, "fetch"),
        ("SECRET_VERSION_ADD", "4", "latest", "4", None, "ignore"),
        ("SECRET_VERSION_ADD", "3", "latest", "4", None, "ignore"),
        ("SECRET_VERSION_ADD", "10", "latest", "9", None, "fetch"),  # numbers, not text: "10" > "9"
        ("SECRET_VERSION_ENABLE", "5", "latest", "4", None, "fetch"),
        ("SECRET_VERSION_ENABLE", "2", "latest", "4", None, "ignore"),
        ("SECRET_VERSION_ADD", "1", "latest", None, None, "fetch"),  # nothing served yet: any news helps
        # pinned versions never move
        ("SECRET_VERSION_ADD", "5", "3", "3", None, "ignore"),
        ("SECRET_VERSION_ENABLE", "3", "3", None, None, "ignore"),
        # aliases move with SECRET_UPDATE, not with new versions
        ("SECRET_VERSION_ADD", "5", "current", "4", None, "ignore"),
        ("SECRET_UPDATE", None, "current", "4", {"versionAliases": {"current": "5"}}, "fetch"),
        ("SECRET_UPDATE", None, "current", "4", {"versionAliases": {"current": "4"}}, "ignore"),
        ("SECRET_UPDATE", None, "current", "4", {"labels": {"a": "b"}}, "warn"),  # the alias is gone
        ("SECRET_VERSION_ENABLE", "5", "current", "4", None, "fetch"),  # the alias may name it
        # losing the served version: keep it, warn
        ("SECRET_VERSION_DISABLE", "4", "latest", "4", None, "warn"),
        ("SECRET_VERSION_DESTROY", "4", "latest", "4", None, "warn"),
        ("SECRET_VERSION_DESTROY_SCHEDULED", "4", "latest", "4", None, "warn"),
        ("SECRET_VERSION_DISABLE", "2", "latest", "4", None, "ignore"),
        ("SECRET_VERSION_DISABLE", "3", "3", "3", None, "warn"),
        ("SECRET_DELETE", None, "latest", "4", None, "warn"),
        # the rest is news, not work
        ("SECRET_UPDATE", None, "latest", "4", {"labels": {"a": "b"}}, "ignore"),
        ("SECRET_ROTATE", None, "latest", "4", None, "ignore"),
        ("SECRET_CREATE", None, "latest", None, None, "ignore"),
    ],
)
def test_what_an_event_means_for_a_secret(
    kind: str, version: str | None, wanted: str, served: str | None, data: object, action: str
) -> None:
    decision = decide(event(kind, version, data), spec(wanted), served)
    assert decision.action == action, decision.reason


def test_events_are_read_from_the_attributes_secret_manager_sets() -> None:
    parsed = parse_event(
        {
            "eventType": "SECRET_VERSION_ADD",
            "secretId": "projects/123456/secrets/db",
            "versionId": "projects/123456/secrets/db/versions/7",
            "dataFormat": "JSON_API_V1",
        },
        b"{}",
    )
    assert parsed == SecretEvent("SECRET_VERSION_ADD", "projects/123456/secrets/db", "7", b"{}")
    assert parse_event({"eventType": "TOPIC_CONFIGURED"}) is None  # the service's test message
    assert parse_event({"something": "else"}) is None


def test_events_name_secrets_with_the_project_number_and_still_find_ours() -> None:
    """Secret Manager's events (and the names it returns) carry the project NUMBER; configs use the id."""
    db = SecretSpec(name="db", ref=parse_ref("projects/my-project/secrets/db"))
    api = SecretSpec(name="api", ref=parse_ref("projects/my-project/secrets/api-key/versions/3"))
    eu = SecretSpec(name="eu", ref=parse_ref("projects/my-project/locations/europe-west1/secrets/db"))
    other = SecretSpec(name="other", ref=parse_ref("projects/other-project/secrets/db"))
    # Only db was fetched (api failed at bootstrap); the project's number applies to api as well.
    targets = EventTargets(
        [db, api, eu, other], {"projects/my-project/secrets/db": "projects/123456/secrets/db"}
    )

    assert targets.specs_for("projects/123456/secrets/db") == [db]
    assert targets.specs_for("projects/my-project/secrets/db") == [db]
    assert targets.specs_for("projects/123456/secrets/api-key") == [api]
    assert targets.specs_for("projects/123456/locations/europe-west1/secrets/db") == [eu]
    assert targets.specs_for("projects/other-project/secrets/db") == [other]
    assert targets.specs_for("projects/123456/secrets/unknown") == ()
    assert "projects/123456/secrets/db" in targets.secret_names


def test_the_subscription_filter_names_our_secrets_within_pubsubs_256_bytes() -> None:
    few = ["projects/123456/secrets/db", "projects/my-project/secrets/db"]
    assert subscription_filter(few) == (
        'attributes.secretId = "projects/123456/secrets/db" OR '
        'attributes.secretId = "projects/my-project/secrets/db"'
    )
    many = [f"projects/{p}/secrets/secret-number-{i}" for p in ("123456", "my-project") for i in range(20)]
    by_project = subscription_filter(many)
    assert by_project == (
        'hasPrefix(attributes.secretId, "projects/123456/secrets/") OR '
        'hasPrefix(attributes.secretId, "projects/my-project/secrets/")'
    )
    projects = [f"projects/project-number-{i:03d}/secrets/db" for i in range(20)]
    assert subscription_filter(projects) is None  # cannot be expressed: the agent filters by itself
    for names in (few, many, projects):
        made = subscription_filter(names)
        assert made is None or len(made.encode()) <= MAX_FILTER_BYTES


def test_created_subscription_ids_name_the_pod_and_are_valid() -> None:
    assert (
        new_subscription_id("payments-7d9f8b-x2k4q", "0a1b2c3d")
        == "secrets-agent-payments-7d9f8b-x2k4q-0a1b2c3d"
    )
    assert new_subscription_id("My_Laptop.local", "0a1b2c3d") == "secrets-agent-my-laptop-local-0a1b2c3d"
    long = new_subscription_id("x" * 300, "0a1b2c3d")
    assert len(long) == 255
    assert long.endswith("-0a1b2c3d")


def test_our_subscription_ids_can_carry_a_role_and_live_in_the_topics_project() -> None:
    assert (
        new_subscription_id("rotator-5c4b", "0a1b2c3d", prefix="secrets-agent-rotate")
        == "secrets-agent-rotate-rotator-5c4b-0a1b2c3d"
    )
    assert len(new_subscription_id("x" * 300, "0a1b2c3d", prefix="secrets-agent-rotate")) == 255
    name = new_subscription_name("projects/other-project/topics/events", "Pod_1")
    assert re.fullmatch(r"projects/other-project/subscriptions/secrets-agent-pod-1-[0-9a-f]{8}", name), name
    assert name != new_subscription_name("projects/other-project/topics/events", "Pod_1")  # never reused


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------


def test_events_are_configured_from_the_file_env_and_flags(tmp_path: Path) -> None:
    file = tmp_path / "agent.yaml"
    file.write_text("events:\n  topic: projects/my-project/topics/secret-events\n  max_delay: 250ms\n")
    config = load_config(file, {"SECRETS_AGENT_EVENTS_POLL_INTERVAL": "2h"}, {})
    assert config.events == EventsConfig(
        topic="projects/my-project/topics/secret-events", max_delay=0.25, poll_interval=7200.0
    )
    assert config.events.enabled
    assert config.events.subscription_ttl == 86400.0
    flagged = load_config(
        None,
        {},
        {"events.subscription": "projects/123456/subscriptions/agent-pod-1", "events.max_delay": "0"},
    )
    assert flagged.events.subscription == "projects/123456/subscriptions/agent-pod-1"
    assert flagged.events.max_delay == 0.0
    assert not load_config(None, {}, {}).events.enabled


def test_cli_flags_set_the_topic_or_the_subscription() -> None:
    from agent.cli import parse

    invocation = parse(["check-config", "--events-topic", "projects/my-project/topics/secret-events"], {})
    assert invocation.config is not None
    assert invocation.config.events.topic == "projects/my-project/topics/secret-events"
    invocation = parse(
        ["check-config", "--events-subscription", "projects/my-project/subscriptions/mine"], {}
    )
    assert invocation.config is not None
    assert invocation.config.events.subscription == "projects/my-project/subscriptions/mine"


@pytest.mark.parametrize(
    ("env", "path", "fragment"),
    [
        (
            {"SECRETS_AGENT_EVENTS_TOPIC": "secret-events"},
            "env SECRETS_AGENT_EVENTS_TOPIC",
            "projects/PROJECT/topics/ID",
        ),
        (
            {"SECRETS_AGENT_EVENTS_TOPIC": "projects/my-project/subscriptions/sub"},
            "env SECRETS_AGENT_EVENTS_TOPIC",
            "projects/PROJECT/topics/ID",
        ),
        (
            {"SECRETS_AGENT_EVENTS_TOPIC": "projects/my-project/topics/go"},
            "env SECRETS_AGENT_EVENTS_TOPIC",
            "3-255",
        ),
        (
            {"SECRETS_AGENT_EVENTS_TOPIC": "projects/my-project/topics/goog-events"},
            "env SECRETS_AGENT_EVENTS_TOPIC",
            "'goog'",
        ),
        (
            {"SECRETS_AGENT_EVENTS_SUBSCRIPTION": "projects/X/subscriptions/abc"},
            "env SECRETS_AGENT_EVENTS_SUBSCRIPTION",
            "project id",
        ),
        (
            {"SECRETS_AGENT_EVENTS_SUBSCRIPTION_TTL": "12h"},
            "env SECRETS_AGENT_EVENTS_SUBSCRIPTION_TTL",
            "at least 1 day",
        ),
        (
            {
                "SECRETS_AGENT_EVENTS_TOPIC": "projects/my-project/topics/secret-events",
                "SECRETS_AGENT_EVENTS_SUBSCRIPTION": "projects/my-project/subscriptions/mine",
            },
            "events.subscription",
            "not both",
        ),
    ],
)
def test_bad_events_settings_are_refused_with_their_path(
    env: dict[str, str], path: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, env, {})
    problems = {p.path: p.message for p in caught.value.problems}
    assert list(problems) == [path]
    assert fragment in problems[path]
