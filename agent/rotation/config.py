"""The rotation config file (``secrets-agent rotate --config FILE``) and where a secret's provider comes from.

::

    project: my-project                 # default for --project
    topics:                             # what `rotate --listen` subscribes to without --topic/--subscription
      - projects/my-project/topics/secret-events
    secrets:
      db-password:                      # a secret id
        provider: postgres              # symmetric | password | postgres | command | manual
        role: app
        admin_dsn_env: ADMIN_DSN
      stripe-key:
        type: api-key                   # only needed when the secret has no secret-type label
        provider: command
        generate: ["./mint-stripe-key"]
        validate: ["./check-stripe-key"]
    gcp:                                # who the rotator is to Secret Manager (the agent's settings)
      credentials_file: /var/run/gcp/credentials.json
      impersonate_service_account: rotator@my-project.iam.gserviceaccount.com
      quota_project: platform-billing
    fleet:                              # the pods that fetch the rotated secrets: rotate paces itself to them
      size: 10000
      access_per_minute: 45000

A secret's provider settings come from, in this order: its entry here, else its labels
(``settings_from_labels``), else its type's default (``default_settings_for``). Each entry's keys besides
``type`` go to the provider as they are; the provider checks them when it is built.

The file is read like the agent's own configuration (``agent.config``): a key set twice anywhere is an
error naming its path (``secrets.db-password.provider``), an unknown top-level key is an error, and
``project``, ``topics`` and ``subscription`` follow the rules of the agent's ``project``, ``events.topic``
and ``events.subscription``. ``gcp`` takes the agent's identity settings (``credentials_file``,
``impersonate_service_account``, ``delegates``, ``iam_endpoint``, ``quota_project``), read by the agent's
own loader (``read_identity_section``): same parsers, same rules. ``fleet`` is the agent's ``fleet`` section
(``FleetConfig``: ``size``, ``reads_per_minute``, ``access_per_minute``), read by the agent's section reader
(``read_section``); ``rotate`` paces its rotations with it (``agent.rotation.pacing``). Every problem is
reported at once, in one ConfigError (exit code 2).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.config import (
    DuplicateKey,
    FleetConfig,
    GcpConfig,
    describe,
    load_yaml,
    optional_project,
    pubsub_name,
    read_text_file,
    unknown_key,
)
from agent.config.loader import read_identity_section, read_section
from agent.errors import ConfigError, Problem
from agent.secrets.types import SecretType

TOP_LEVEL_KEYS = ("project", "topics", "subscription", "secrets", "gcp", "fleet")

# The agent's own rules for these names (events.topic, events.subscription, project): one rule each.
_topic = pubsub_name("topics")
_subscription = pubsub_name("subscriptions")

_Report = Callable[[str, str], None]
"""Records a problem: (key path, message)."""


@dataclass(frozen=True)
class RotationConfig:
    """The parsed rotation config file."""

    project: str | None = None
    topics: tuple[str, ...] = ()
    """Topics ``rotate --listen`` subscribes to (each with a subscription of its own)."""
    subscription: str | None = None
    """An existing subscription ``rotate --listen`` pulls from."""
    secrets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Secret id -> provider settings (``provider`` included, ``type`` removed)."""
    types: Mapping[str, SecretType] = field(default_factory=dict)
    """Secret id -> the ``type`` its entry names."""
    source: str = ""
    """The file it was read from (for messages)."""
    gcp: GcpConfig = field(default_factory=GcpConfig)
    """Who the rotator is to Secret Manager: the identity settings of the agent's ``gcp`` section
    (``GcpConfig.explicit_identity()`` false: Application Default Credentials)."""
    fleet: FleetConfig = field(default_factory=FleetConfig)
    """The pods that fetch the rotated secrets (the agent's ``fleet`` section): ``rotate`` starts its
    rotations ``60 * size / access_per_minute`` seconds apart (``agent.rotation.pacing``)."""


def load_rotation_config(path: Path) -> RotationConfig:
    """Read and check ``path`` with the agent's strict YAML reading; ConfigError listing every problem
    (``FILE: secrets.db.provider: ...``), duplicate keys included."""
    document = load_yaml(read_text_file(path), str(path))
    return _check(document.data, str(path), document.duplicates)


def parse_rotation_config(data: object, source: str = "rotation config") -> RotationConfig:
    """Check a parsed document; ConfigError with every problem found."""
    return _check(data, source, ())


def _check(data: object, source: str, duplicates: Sequence[DuplicateKey]) -> RotationConfig:
    """Every problem of the document (each ``FILE: path``), raised together; else the RotationConfig."""
    problems: list[Problem] = []

    def problem(where: str, message: str) -> None:
        problems.append(Problem(f"{source}: {where}" if where else source, message))

    # PyYAML kept the last of each duplicate; which one the user meant cannot be guessed.
    for duplicate in duplicates:
        problem(
            duplicate.path,
            f"duplicate key: set on line {duplicate.first_line} and again on line {duplicate.line}",
        )
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        problems.append(Problem(source, "expected a mapping with project, topics, secrets"))
        raise ConfigError(problems)
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            unknown = unknown_key(key, TOP_LEVEL_KEYS, "")
            problem(unknown.path, unknown.message)
    gcp, identity_problems = read_identity_section(data.get("gcp"), "gcp")
    for found in identity_problems:
        problem(found.path, found.message)
    fleet, fleet_problems = read_section(FleetConfig, data.get("fleet"), "fleet")
    for found in fleet_problems:
        problem(found.path, found.message)
    project = _read(data, "project", optional_project, problem)
    topics = _read_topics(data.get("topics"), problem)
    subscription = _read(data, "subscription", _subscription, problem)
    secrets: dict[str, dict[str, Any]] = {}
    types: dict[str, SecretType] = {}
    entries = data.get("secrets", {}) or {}
    if not isinstance(entries, Mapping):
        problem("secrets", "expected a mapping of secret id -> provider settings")
        entries = {}
    for secret_id, entry in entries.items():
        where = f"secrets.{secret_id}"
        if not isinstance(entry, Mapping):
            problem(where, "expected a mapping with at least `provider`")
            continue
        settings = {str(k): v for k, v in entry.items() if k != "type"}
        # Without `provider` the entry only names the type: the labels or the type's default decide.
        if "provider" in settings and not isinstance(settings["provider"], str):
            problem(f"{where}.provider", "expected symmetric, password, postgres, command or manual")
        if "provider" not in settings and ("type" not in entry or settings):
            problem(
                f"{where}.provider",
                "required unless the entry only names a `type` (then the type's default provider is used): "
                "symmetric, password, postgres, command or manual",
            )
        if "type" in entry:
            secret_type = SecretType.from_label(str(entry["type"]))
            if secret_type is None:
                known = ", ".join(t.value for t in SecretType)
                problem(f"{where}.type", f"unknown type {entry['type']!r}; expected one of {known}")
            else:
                types[str(secret_id)] = secret_type
        if settings:
            secrets[str(secret_id)] = settings
    if problems:
        raise ConfigError(problems)
    return RotationConfig(
        project=project,
        topics=topics,
        subscription=subscription,
        secrets=secrets,
        types=types,
        source=source,
        gcp=gcp,
        fleet=fleet,
    )


def _read(
    data: Mapping[Any, object], key: str, parse: Callable[[object], object], problem: _Report
) -> str | None:
    """One optional name, checked by ``parse`` (an agent config converter)."""
    try:
        value = parse(data.get(key))
    except ValueError as error:
        problem(key, str(error))
        return None
    return None if value is None else str(value)


def _read_topics(raw: object, problem: _Report) -> tuple[str, ...]:
    """``topics``: one name or a list of them, each checked like the agent's ``events.topic``."""
    if raw is None:
        return ()
    if isinstance(raw, str):
        named: list[tuple[str, object]] = [("topics", raw)]
    elif isinstance(raw, list):
        named = [(f"topics[{index}]", value) for index, value in enumerate(raw)]
    else:
        problem("topics", f"expected a list of projects/PROJECT/topics/ID names, got {describe(raw)}")
        return ()
    topics: list[str] = []
    for where, value in named:
        if value is None:  # the converter reads None as "not set", but a list item is set
            problem(where, "expected projects/PROJECT/topics/ID, got null")
            continue
        try:
            topics.append(str(_topic(value)))
        except ValueError as error:
            problem(where, str(error))
    return tuple(topics)
