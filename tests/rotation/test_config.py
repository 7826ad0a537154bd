"""The rotation config file is read by the agent's strict loader: duplicate and unknown keys are errors with
their paths, Pub/Sub names follow the agent's rules, every problem is reported at once."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent.config import load_config
from agent.errors import ConfigError
from agent.rotation.config import RotationConfig, load_rotation_config
from agent.secrets.types import SecretType

CANARY = "canary-value-7f3e"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rotation.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems_of(path: Path) -> list[str]:
    """Every problem, as printed, without the file name in front."""
    with pytest.raises(ConfigError) as caught:
        load_rotation_config(path)
    return [str(p).removeprefix(f"{path}: ") for p in caught.value.problems]


def agent_message(tmp_path: Path, key: str, value: str) -> str:
    """The message the agent's own config gives for ``events.<key>: value``."""
    agent_file = tmp_path / "agent.yaml"
    agent_file.write_text(f"events:\n  {key}: {value}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(agent_file, {}, {})
    [problem] = caught.value.problems
    assert problem.path == f"events.{key}"
    return problem.message


# --- duplicate keys -----------------------------------------------------------------------------------------


def test_a_duplicate_key_is_an_error_naming_its_path_and_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        secrets:
          db-password:
            provider: postgres
            role: app
            provider: command
        """,
    )

    assert problems_of(path) == [
        "secrets.db-password.provider: duplicate key: set on line 3 and again on line 5"
    ]


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        (
            "project: my-project\nproject: other-project\n",
            "project: duplicate key: set on line 1 and again on line 2",
        ),
        (
            "secrets: {enc: {provider: symmetric}}\nsecrets: {}\n",
            "secrets: duplicate key: set on line 1 and again on line 2",
        ),
        (
            "secrets:\n  a: {provider: symmetric}\n  a: {provider: password}\n",
            "secrets.a: duplicate key: set on line 2 and again on line 3",
        ),
        (  # on one line, in flow style
            "secrets: {a: {provider: symmetric, provider: password}}\n",
            "secrets.a.provider: duplicate key: set on line 1 and again on line 1",
        ),
        (  # inside a list
            "secrets:\n  s:\n    provider: command\n    generate: [{x: 1, x: 2}]\n",
            "secrets.s.generate[0].x: duplicate key: set on line 4 and again on line 4",
        ),
    ],
)
def test_duplicates_are_found_at_every_depth(tmp_path: Path, document: str, problem: str) -> None:
    assert problems_of(write(tmp_path, document)) == [problem]


def test_a_duplicate_never_shows_either_value(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""\
        secrets:
          stripe: {{provider: command, token: {CANARY}-1, token: {CANARY}-2, generate: [./mint]}}
        """,
    )

    with pytest.raises(ConfigError) as caught:
        load_rotation_config(path)

    assert "secrets.stripe.token: duplicate key" in str(caught.value)
    assert CANARY not in str(caught.value)


def test_a_merge_key_may_be_overridden_on_purpose(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        secrets:
          db-a: &postgres {provider: postgres, role: app, admin_dsn_env: ADMIN_DSN}
          db-b: {<<: *postgres, role: reporting}
        """,
    )

    config = load_rotation_config(path)

    assert config.secrets["db-b"] == {
        "provider": "postgres",
        "role": "reporting",
        "admin_dsn_env": "ADMIN_DSN",
    }


# --- unknown keys and names ---------------------------------------------------------------------------------


def test_an_unknown_key_is_an_error_naming_its_path(tmp_path: Path) -> None:
    path = write(tmp_path, "projekt: my-project\ntopicz: []\n42: x\n")

    assert problems_of(path) == [
        "projekt: unknown key (did you mean 'project'?)",
        "topicz: unknown key (did you mean 'topics'?)",
        "42: unknown key",
    ]


@pytest.mark.parametrize(
    "topic",
    [
        "my-topic",
        "projects/my-project/subscriptions/s",
        "projects/p/topics/secret-events",  # the agent refuses project id 'p'
        "projects/my-project/topics/goog-events",
        "projects/my-project/topics/x",
    ],
)
def test_a_bad_topic_gets_the_message_the_agent_gives_for_events_topic(tmp_path: Path, topic: str) -> None:
    expected = agent_message(tmp_path, "topic", topic)

    listed = problems_of(write(tmp_path, f"topics: [projects/my-project/topics/fine, {topic}]\n"))
    alone = problems_of(write(tmp_path, f"topics: {topic}\n"))

    assert listed == [f"topics[1]: {expected}"]
    assert alone == [f"topics: {expected}"]


def test_a_bad_subscription_gets_the_message_the_agent_gives_for_events_subscription(tmp_path: Path) -> None:
    expected = agent_message(tmp_path, "subscription", "projects/my-project/topics/t")

    assert problems_of(write(tmp_path, "subscription: projects/my-project/topics/t\n")) == [
        f"subscription: {expected}"
    ]


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ("topics: {a: b}\n", "topics: expected a list of projects/PROJECT/topics/ID names, got a mapping"),
        ("topics: [null]\n", "topics[0]: expected projects/PROJECT/topics/ID, got null"),
        ("topics: [7]\n", "topics[0]: expected a string, got 7"),
        ("project: [a]\n", "project: expected a string, got a list"),
    ],
)
def test_names_of_the_wrong_shape_are_errors(tmp_path: Path, document: str, problem: str) -> None:
    assert problems_of(write(tmp_path, document)) == [problem]


# --- all at once --------------------------------------------------------------------------------------------


def test_several_problems_are_reported_together(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        project: my-project
        topics: [my-topic]
        subscriptoin: projects/my-project/subscriptions/s
        secrets:
          db-password: {provider: postgres, provider: command}
          enc: {length: 32}
          legacy: {type: ssh-key, provider: manual}
        """,
    )

    assert problems_of(path) == [
        "secrets.db-password.provider: duplicate key: set on line 5 and again on line 5",
        "subscriptoin: unknown key (did you mean 'subscription'?)",
        "topics[0]: " + agent_message(tmp_path, "topic", "my-topic"),
        "secrets.enc.provider: required unless the entry only names a `type` (then the type's default "
        "provider is used): symmetric, password, postgres, command or manual",
        "secrets.legacy.type: unknown type 'ssh-key'; expected one of database, api-key, encryption-key, "
        "jwt-secret, session-secret, oauth-token, tls-cert",
    ]


def test_through_the_cli_every_problem_is_printed_and_the_exit_code_is_2(tmp_path: Path) -> None:
    path = write(tmp_path, "projekt: x\nsecrets:\n  enc: {provider: symmetric, provider: password}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SECRETS_AGENT_", "SECRET_MANAGER_"))}

    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent",
            "rotate",
            "all",
            "--config",
            str(path),
            "--dotenv",
            str(tmp_path / ".env"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )

    assert run.returncode == 2, run.stderr
    assert run.stderr.splitlines() == [
        f"secrets-agent: {path}: secrets.enc.provider: duplicate key: set on line 3 and again on line 3",
        f"secrets-agent: {path}: projekt: unknown key (did you mean 'project'?)",
    ]
    assert run.stdout == ""


# --- what loaded before still loads the same ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ("", RotationConfig()),
        ("secrets:\n", RotationConfig()),
        ("secrets: []\n", RotationConfig()),
        ("project: 123456789012\n", RotationConfig(project="123456789012")),
        (
            "topics: projects/my-project/topics/secret-events\n",
            RotationConfig(topics=("projects/my-project/topics/secret-events",)),
        ),
        (
            "topics: [projects/my-project/topics/events-a, projects/123456789012/topics/events-b]\n"
            "subscription: projects/my-project/subscriptions/secret-rotate\n",
            RotationConfig(
                topics=("projects/my-project/topics/events-a", "projects/123456789012/topics/events-b"),
                subscription="projects/my-project/subscriptions/secret-rotate",
            ),
        ),
        (
            "secrets:\n  api-key: {type: encryption-key}\n  db: {provider: postgres, role: app}\n",
            RotationConfig(
                secrets={"db": {"provider": "postgres", "role": "app"}},
                types={"api-key": SecretType.ENCRYPTION_KEY},
            ),
        ),
    ],
)
def test_valid_files_load_as_before(tmp_path: Path, document: str, expected: RotationConfig) -> None:
    path = write(tmp_path, document)

    assert load_rotation_config(path) == RotationConfig(
        project=expected.project,
        topics=expected.topics,
        subscription=expected.subscription,
        secrets=expected.secrets,
        types=expected.types,
        source=str(path),
    )


def test_the_example_rotation_config_loads() -> None:
    example = Path(__file__).resolve().parents[2] / "k8s" / "examples" / "rotation" / "rotation.yaml"

    config = load_rotation_config(example)

    assert config.project == "my-project"
    assert config.topics == ("projects/my-project/topics/secret-events",)
