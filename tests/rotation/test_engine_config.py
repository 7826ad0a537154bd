"""The rotation config file, where a secret's provider comes from, and what `rotate WORD...` selects."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.rotation.choice import choose_provider
from agent.rotation.config import load_rotation_config, parse_rotation_config
from agent.rotation.providers.base import ProviderConfigError
from agent.rotation.selection import in_group
from agent.secrets.interface import SecretInfo
from agent.secrets.types import TYPE_LABEL, SecretType


def test_a_config_file_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "rotation.yaml"
    path.write_text(
        """
project: my-project
topics: [projects/my-project/topics/secret-events]
secrets:
  db-password: {provider: postgres, role: app, admin_dsn_env: ADMIN_DSN}
  stripe-key:
    type: api-key
    provider: command
    generate: [./mint]
    validate: [./check]
"""
    )

    config = load_rotation_config(path)

    assert config.project == "my-project"
    assert config.topics == ("projects/my-project/topics/secret-events",)
    assert config.secrets["db-password"] == {
        "provider": "postgres",
        "role": "app",
        "admin_dsn_env": "ADMIN_DSN",
    }
    assert "type" not in config.secrets["stripe-key"]  # for us, not for the provider
    assert config.types == {"stripe-key": SecretType.API_KEY}


@pytest.mark.parametrize(
    ("document", "problems"),
    [
        ("- a list\n", ["expected a mapping with project, topics, secrets"]),
        ("secret: {}\n", ["secret: unknown key (did you mean 'secrets'?)"]),
        (
            "topics: [my-topic]\n",
            [
                "topics[0]: expected projects/PROJECT/topics/ID such as "
                "projects/my-project/topics/secret-events, got 'my-topic'"
            ],
        ),
        (
            "subscription: sub\n",
            [
                "subscription: expected projects/PROJECT/subscriptions/ID such as "
                "projects/my-project/subscriptions/secret-events, got 'sub'"
            ],
        ),
        ("secrets: [a, b]\n", ["secrets: expected a mapping of secret id -> provider settings"]),
        (
            "secrets:\n  a: {length: 3}\n  b: {provider: symmetric, type: ssh-key}\n  c: command\n",
            [
                "secrets.a.provider: required unless the entry only names a `type` (then the type's default "
                "provider is used): symmetric, password, postgres, command or manual",
                "secrets.b.type: unknown type 'ssh-key'; expected one of database, api-key, encryption-key, "
                "jwt-secret, session-secret, oauth-token, tls-cert",
                "secrets.c: expected a mapping with at least `provider`",
            ],
        ),
        ("secrets: {a: {provider: x}\n", [":2: invalid YAML: expected ',' or '}', but got '<stream end>'"]),
    ],
)
def test_every_problem_of_a_bad_file_is_reported(tmp_path: Path, document: str, problems: list[str]) -> None:
    path = tmp_path / "rotation.yaml"
    path.write_text(document)

    with pytest.raises(ConfigError) as caught:
        load_rotation_config(path)

    # Problems inside the file read "FILE: key.path: message"; YAML errors "FILE:LINE: invalid YAML: ...".
    assert [str(p).removeprefix(str(path)).removeprefix(": ") for p in caught.value.problems] == problems


def test_a_missing_file_is_one_clear_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: no such file"):
        load_rotation_config(tmp_path / "nope.yaml")


def info(secret_id: str, secret_type: SecretType | None, **labels: str) -> SecretInfo:
    all_labels = {**labels, **({TYPE_LABEL: secret_type.value} if secret_type else {})}
    return SecretInfo(secret_id, secret_type, labels=all_labels)


def test_the_provider_comes_from_the_file_then_labels_then_the_type() -> None:
    config = parse_rotation_config({"secrets": {"enc": {"provider": "symmetric", "length": 64}}})

    from_file = choose_provider("enc", SecretType.ENCRYPTION_KEY, {}, config)
    from_labels = choose_provider(
        "jwt", SecretType.JWT_SECRET, {"rotation-provider": "symmetric", "rotation-length": "48"}, config
    )
    from_type = choose_provider("session", SecretType.SESSION_SECRET, {}, config)

    assert (from_file.source, from_file.settings["length"]) == ("config", 64)
    assert (from_labels.source, from_labels.settings["length"]) == ("labels", 48)
    assert (from_type.source, from_type.name) == ("default", "symmetric")
    with pytest.raises(
        ProviderConfigError, match=r"no rotation provider for 'stripe' \(a secret of type api-key\)"
    ):
        choose_provider("stripe", SecretType.API_KEY, {}, config)


def test_a_database_without_a_provider_is_told_the_postgres_entry_to_add() -> None:
    with pytest.raises(ProviderConfigError) as refused:
        choose_provider("orders-db", SecretType.DATABASE, {}, None)

    message = str(refused.value)
    assert "{orders-db: {provider: postgres, role: ROLE, admin_dsn_env: ADMIN_DSN}}" in message
    assert "provider: command" not in message


def test_an_entry_that_only_names_the_type_gets_that_types_default_provider() -> None:
    config = parse_rotation_config({"secrets": {"api-key": {"type": "encryption-key"}}})

    chosen = choose_provider("api-key", config.types["api-key"], {}, config)

    assert config.types == {"api-key": SecretType.ENCRYPTION_KEY}
    assert (chosen.source, chosen.name, chosen.settings["length"]) == ("default", "symmetric", 32)


def test_groups_follow_the_label_or_the_files_type() -> None:
    config = parse_rotation_config({"secrets": {"legacy": {"type": "api-key", "provider": "manual"}}})
    cases = {
        ("enc", SecretType.ENCRYPTION_KEY): {"all", "symmetric"},
        ("jwt", SecretType.JWT_SECRET): {"all", "symmetric"},
        ("session", SecretType.SESSION_SECRET): {"all", "symmetric"},
        ("db", SecretType.DATABASE): {"all", "database"},
        ("stripe", SecretType.API_KEY): {"all", "api-keys"},
        ("github", SecretType.OAUTH_TOKEN): {"all", "oauth"},
        ("cert", SecretType.TLS_CERT): {"all"},  # listed by `all`, then skipped
        ("legacy", None): {"all", "api-keys"},  # no label, typed by the file
        ("plain", None): set(),  # unmanaged
    }
    for (secret_id, secret_type), groups in cases.items():
        selected = {
            g
            for g in ("all", "symmetric", "api-keys", "database", "oauth")
            if in_group(info(secret_id, secret_type), g, config)
        }
        assert selected == groups, secret_id
