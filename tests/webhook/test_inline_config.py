"""SECRETS_AGENT_CONFIG_YAML: the whole configuration in one environment variable, as the webhook injects it.

It takes the file's place (same schema, same precedence, problems reported the same way), and cannot be
combined with a file.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from agent.config import CONFIG_FILE_ENV, CONFIG_YAML_ENV, load_config
from agent.config.refs import parse_ref
from agent.errors import ConfigError

INLINE = textwrap.dedent(
    """\
    project: inline-project
    output_dir: /secrets
    poll_interval: 2m
    notify: {process: gunicorn, signal: USR1}
    secrets:
      - {name: db-password, ref: db-password@3, mode: "0400"}
      - {name: api-key, ref: projects/other-project/secrets/api-key, env: API_TOKEN, file: keys/api}
    """
)


def problems(env: dict[str, str], file: Path | None = None) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        load_config(file, env, {})
    return {p.path: p.message for p in caught.value.problems}


def test_the_inline_text_is_read_like_a_file(tmp_path: Path) -> None:
    from_env = load_config(None, {CONFIG_YAML_ENV: INLINE}, {})
    file = tmp_path / "agent.yaml"
    file.write_text(INLINE, encoding="utf-8")
    assert from_env == load_config(file, {}, {})
    assert from_env.poll_interval == 120.0
    assert from_env.notify.process == "gunicorn"
    assert from_env.notify.signal == "SIGUSR1"
    db, api = from_env.secrets
    assert db.ref == parse_ref("projects/inline-project/secrets/db-password/versions/3")
    assert db.mode == 0o400
    assert (api.env, api.file) == ("API_TOKEN", "keys/api")


def test_json_is_accepted_too() -> None:
    config = load_config(None, {CONFIG_YAML_ENV: '{"project": "json-project", "poll_interval": 30}'}, {})
    assert (config.project, config.poll_interval) == ("json-project", 30.0)


def test_variables_and_flags_still_override_it() -> None:
    env = {CONFIG_YAML_ENV: INLINE, "SECRETS_AGENT_OUTPUT_DIR": "/elsewhere"}
    config = load_config(None, env, {"poll_interval": "5s"})
    assert str(config.output_dir) == "/elsewhere"
    assert config.poll_interval == 5.0


def test_an_empty_variable_counts_as_unset() -> None:
    assert load_config(None, {CONFIG_YAML_ENV: ""}, {}) == load_config(None, {}, {})


def test_problems_carry_the_same_paths_as_a_file_s() -> None:
    text = "poll_interval: soon\nsecrets:\n  - {name: db, ref: 'projects/p/secrets/'}\nbogus: 1\n"
    found = problems({CONFIG_YAML_ENV: text})
    assert set(found) == {"poll_interval", "secrets[0].ref", "bogus"}
    assert "duration" in found["poll_interval"]
    assert found["bogus"].startswith("unknown key")


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("a: [1,\n", f"env {CONFIG_YAML_ENV}:2", "invalid YAML"),
        ("project: a\nproject: b\n", f"env {CONFIG_YAML_ENV}:2", "duplicate key"),
        ("- just\n- a list\n", f"env {CONFIG_YAML_ENV}:1", "expected a mapping of settings"),
    ],
)
def test_invalid_text_is_located_in_the_variable(text: str, where: str, message: str) -> None:
    found = problems({CONFIG_YAML_ENV: text})
    assert list(found) == [where]
    assert message in found[where]


def test_a_file_and_the_inline_text_together_are_refused(tmp_path: Path) -> None:
    file = tmp_path / "agent.yaml"
    file.write_text("project: file-project\n", encoding="utf-8")
    for found in (
        problems({CONFIG_YAML_ENV: INLINE}, file),
        problems({CONFIG_YAML_ENV: INLINE, CONFIG_FILE_ENV: str(file)}),
    ):
        assert list(found) == [f"env {CONFIG_YAML_ENV}"]
        assert str(file) in found[f"env {CONFIG_YAML_ENV}"]
        assert "not both" in found[f"env {CONFIG_YAML_ENV}"]


def test_the_variable_is_not_mistaken_for_an_unknown_setting() -> None:
    # SECRETS_AGENT_* variables that are not settings are typos, except the ones naming the source.
    assert load_config(None, {CONFIG_YAML_ENV: "project: some-project\n"}, {}).project == "some-project"


def test_check_config_prints_it_normalised_from_a_real_process() -> None:
    env = {CONFIG_YAML_ENV: INLINE, "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "agent", "check-config"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    printed = yaml.safe_load(done.stdout)
    assert printed["poll_interval"] == 120
    assert [s["ref"] for s in printed["secrets"]] == [
        "projects/inline-project/secrets/db-password/versions/3",
        "projects/other-project/secrets/api-key/versions/latest",
    ]


def test_check_config_reports_a_bad_variable_and_exits_2() -> None:
    env = {CONFIG_YAML_ENV: "secrets: [{name: db}]\n", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "agent", "check-config"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "secrets-agent: secrets[0].ref: required"
