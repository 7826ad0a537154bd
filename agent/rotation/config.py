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

A secret's provider settings come from, in this order: its entry here, else its labels
(``settings_from_labels``), else its type's default (``default_settings_for``). Each entry's keys besides
``type`` go to the provider as they are; the provider checks them when it is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agent.errors import ConfigError, Problem
from agent.secrets.types import SecretType

TOP_LEVEL_KEYS = ("project", "topics", "subscription", "secrets")


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


def load_rotation_config(path: Path) -> RotationConfig:
    """Read and check ``path``; ConfigError listing every problem (``FILE: secrets.db.provider: ...``)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(
            [Problem(str(path), f"cannot read the rotation config: {error.strerror}")]
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError([Problem(str(path), f"not valid YAML{where}")]) from None
    return parse_rotation_config(data, str(path))


def parse_rotation_config(data: object, source: str = "rotation config") -> RotationConfig:
    """Check a parsed document; ConfigError with every problem found."""
    problems: list[Problem] = []

    def problem(where: str, message: str) -> None:
        problems.append(Problem(f"{source}: {where}" if where else source, message))

    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([Problem(source, "expected a mapping with project, topics, secrets")])
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            problem(str(key), f"unknown key; expected one of {', '.join(TOP_LEVEL_KEYS)}")
    project = data.get("project")
    if project is not None and not isinstance(project, str | int):
        problem("project", "expected a project id")
    topics = data.get("topics", [])
    if isinstance(topics, str):
        topics = [topics]
    if not isinstance(topics, list) or not all(isinstance(t, str) and "/topics/" in t for t in topics):
        problem("topics", "expected a list of projects/PROJECT/topics/TOPIC names")
        topics = []
    subscription = data.get("subscription")
    if subscription is not None and (
        not isinstance(subscription, str) or "/subscriptions/" not in subscription
    ):
        problem("subscription", "expected projects/PROJECT/subscriptions/NAME")
        subscription = None
    secrets: dict[str, dict[str, Any]] = {}
    types: dict[str, SecretType] = {}
    entries = data.get("secrets", {}) or {}
    if not isinstance(entries, dict):
        problem("secrets", "expected a mapping of secret id -> provider settings")
        entries = {}
    for secret_id, entry in entries.items():
        where = f"secrets.{secret_id}"
        if not isinstance(entry, dict):
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
        project=str(project) if project is not None else None,
        topics=tuple(topics),
        subscription=subscription,
        secrets=secrets,
        types=types,
        source=source,
    )
