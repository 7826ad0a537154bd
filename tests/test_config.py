"""The configuration model: precedence, defaults, types, every problem reported at once with its path."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

from agent.config import Config, SecretSpec, load_config
from agent.errors import ConfigError
from agent.refs import SecretRef, parse_ref

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "agent.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(
    tmp_path: Path, text: str, env: Mapping[str, str] | None = None, flags: Mapping[str, object] | None = None
) -> Config:
    return load_config(write(tmp_path, text), env or {}, flags or {})


def problems_of(tmp_path: Path, text: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """path -> message of every problem (asserting paths are unique, so tests can compare them exactly)."""
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text, env)
    found = {p.path: p.message for p in caught.value.problems}
    assert len(found) == len(caught.value.problems), caught.value.problems
    return found


# --- defaults and precedence --------------------------------------------------------------------------------


def test_nothing_configured_gives_the_documented_defaults() -> None:
    config = load_config(None, {}, {})
    assert config == Config()
    assert config.project is None
    assert config.log_level == "info"
    assert config.output_dir == Path("/secrets")
    assert config.env_file is None
    assert config.poll_interval == 300.0
    assert config.poll_jitter == 0.1
    assert config.max_staleness == 3600.0
    assert config.secrets == ()


# setting, file value, env value, flag value, and the expected parsed value of each
PRECEDENCE = [
    ("project", "file-proj", "env-proj", "flag-proj", ("file-proj", "env-proj", "flag-proj")),
    ("log_level", "warning", "error", "debug", ("warning", "error", "debug")),
    ("output_dir", "/file", "/env", "/flag", (Path("/file"), Path("/env"), Path("/flag"))),
    ("env_file", "/f.env", "/e.env", "/g.env", (Path("/f.env"), Path("/e.env"), Path("/g.env"))),
    ("poll_interval", "10s", "2m", "1500ms", (10.0, 120.0, 1.5)),
    ("poll_jitter", 0.2, "0.3", "0.4", (0.2, 0.3, 0.4)),
    ("max_staleness", "2h", "30m", "45", (7200.0, 1800.0, 45.0)),
]


@pytest.mark.parametrize(("setting", "in_file", "in_env", "in_flag", "expected"), PRECEDENCE)
def test_flag_beats_env_beats_file_beats_default(
    tmp_path: Path, setting: str, in_file: object, in_env: str, in_flag: str, expected: tuple[object, ...]
) -> None:
    file = write(tmp_path, yaml.safe_dump({setting: in_file}))
    env = {f"SECRETS_AGENT_{setting.upper()}": in_env}
    flags = {setting: in_flag}
    default = getattr(Config(), setting)
    assert getattr(load_config(None, {}, {}), setting) == default
    assert getattr(load_config(file, {}, {}), setting) == expected[0]
    assert getattr(load_config(file, env, {}), setting) == expected[1]
    assert getattr(load_config(file, env, flags), setting) == expected[2]
    assert getattr(load_config(None, {}, flags), setting) == expected[2]
    # A flag that was not given (None) does not override anything.
    assert getattr(load_config(file, env, {setting: None}), setting) == expected[1]


def test_google_cloud_project_is_the_fallback_below_the_file(tmp_path: Path) -> None:
    ambient = {"GOOGLE_CLOUD_PROJECT": "ambient-proj"}
    assert load_config(None, ambient, {}).project == "ambient-proj"
    assert load(tmp_path, "project: file-proj\n", ambient).project == "file-proj"
    both = {**ambient, "SECRETS_AGENT_PROJECT": "agent-proj"}
    assert load_config(None, both, {}).project == "agent-proj"


def test_an_ambient_google_cloud_project_is_ignored_when_the_config_sets_one(tmp_path: Path) -> None:
    # A legacy domain-scoped project in the environment must not break a config that names its own.
    config = load(tmp_path, "project: file-proj\n", {"GOOGLE_CLOUD_PROJECT": "example.com:legacy"})
    assert config.project == "file-proj"


def test_short_references_use_the_winning_project(tmp_path: Path) -> None:
    text = "project: file-proj\nsecrets: [{name: db, ref: db-password}]\n"
    assert load(tmp_path, text).secrets[0].ref.project == "file-proj"
    env = {"SECRETS_AGENT_PROJECT": "env-proj"}
    assert load(tmp_path, text, env).secrets[0].ref.project == "env-proj"
    assert load(tmp_path, text, env, {"project": "flag-proj"}).secrets[0].ref.project == "flag-proj"


def test_an_empty_variable_counts_as_unset(tmp_path: Path) -> None:
    config = load(tmp_path, "poll_interval: 10s\n", {"SECRETS_AGENT_POLL_INTERVAL": ""})
    assert config.poll_interval == 10.0


def test_the_file_can_come_from_secrets_agent_config(tmp_path: Path) -> None:
    file = write(tmp_path, "log_level: debug\n")
    assert load_config(None, {"SECRETS_AGENT_CONFIG": str(file)}, {}).log_level == "debug"
    other = tmp_path / "other.yaml"
    other.write_text("log_level: error\n")
    assert load_config(other, {"SECRETS_AGENT_CONFIG": str(file)}, {}).log_level == "error"


def test_an_empty_file_is_all_defaults(tmp_path: Path) -> None:
    assert load(tmp_path, "# nothing yet\n") == Config()


# --- secrets ------------------------------------------------------------------------------------------------


def test_secret_defaults_derive_from_the_name(tmp_path: Path) -> None:
    config = load(tmp_path, "project: my-proj\nsecrets:\n  - {name: db.pass-word, ref: db}\n")
    (spec,) = config.secrets
    assert spec == SecretSpec(
        name="db.pass-word",
        ref=SecretRef(project="my-proj", secret="db", version="latest"),
        env="DB_PASS_WORD",
        file="db.pass-word",
        mode=0o440,
        uid=None,
        gid=None,
        required=True,
    )


def test_every_secret_field_is_read(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        secrets:
          - name: api
            ref: projects/my-proj/locations/us-east1/secrets/api-key/versions/blue
            env: API_KEY
            file: keys/api
            mode: "0400"
            uid: 1000
            gid: 2000
            required: false
        """,
    )
    assert config.secrets == (
        SecretSpec(
            name="api",
            ref=parse_ref("projects/my-proj/locations/us-east1/secrets/api-key/versions/blue"),
            env="API_KEY",
            file="keys/api",
            mode=0o400,
            uid=1000,
            gid=2000,
            required=False,
        ),
    )


@pytest.mark.parametrize(
    ("yaml_mode", "expected"),
    [
        ('"0440"', 0o440),
        ('"440"', 0o440),
        ('"0o600"', 0o600),
        ("0640", 0o640),
        ("0o644", 0o644),
        ("384", 0o600),
    ],
)
def test_modes_are_octal_strings_or_ints(tmp_path: Path, yaml_mode: str, expected: int) -> None:
    config = load(tmp_path, f"secrets: [{{name: a, ref: projects/my-proj/secrets/a, mode: {yaml_mode}}}]\n")
    assert config.secrets[0].mode == expected


@pytest.mark.parametrize(
    ("value", "expected_seconds"),
    [
        ("30s", 30),
        ("5m", 300),
        ("1h", 3600),
        ("1500ms", 1.5),
        ("1h30m", 5400),
        ("90", 90),
        ("0.5", 0.5),
        ("2.5m", 150),
    ],
)
def test_durations(tmp_path: Path, value: str, expected_seconds: float) -> None:
    assert load(tmp_path, f"poll_interval: {value}\n").poll_interval == expected_seconds
    assert load_config(None, {"SECRETS_AGENT_MAX_STALENESS": value}, {}).max_staleness == expected_seconds


@pytest.mark.parametrize(
    "value", ["abc", "5 minutes", "1d", "-5s", "0", "0s", "m", "1 h", "true", "[1]", ".nan"]
)
def test_bad_durations_are_reported_with_the_value(tmp_path: Path, value: str) -> None:
    problems = problems_of(tmp_path, f"poll_interval: {value}\n")
    assert list(problems) == ["poll_interval"]
    assert "duration" in problems["poll_interval"]


# --- problems -----------------------------------------------------------------------------------------------


def test_every_problem_of_a_file_is_reported_together_with_its_path(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        """
        project: my-proj
        log_level: loud
        poll_interval: abc
        poll_jitter: 1.5
        colour: blue
        secrets:
          - name: ok
            ref: ok-secret
          - name: db
            ref: projects/p/secrets/bad!
          - name: api
            ref: api@0
            mode: rw
            uid: abc
            required: maybe
          - ref: nameless
          - name: "../escape"
            ref: x
            file: /etc/passwd
            env: 9LIVES
            colour: red
          - just-a-string
        """,
    )
    assert problems == {
        "log_level": "expected one of debug, info, warning, error, got 'loud'",
        "poll_interval": "expected a duration such as 30s, 5m, 1h or 1500ms, got 'abc'",
        "poll_jitter": "expected a fraction between 0 and 1, got 1.5",
        "colour": "unknown key",
        "secrets[1].ref": problems["secrets[1].ref"],
        "secrets[2].ref": "secret reference 'api@0': version 0 does not exist: versions are numbered from 1",
        "secrets[2].mode": "expected an octal file mode such as '0440', got 'rw'",
        "secrets[2].uid": "expected an integer, got 'abc'",
        "secrets[2].required": "expected true or false, got 'maybe'",
        "secrets[3].name": "required",
        "secrets[4].colour": "unknown key",
        "secrets[4].name": "name '../escape' may only contain letters, digits, '.', '-' and '_'",
        "secrets[4].file": "file '/etc/passwd' must be relative to output_dir, not absolute",
        "secrets[4].env": problems["secrets[4].env"],
        "secrets[5]": "expected a mapping with name and ref, got 'just-a-string'",
    }
    assert problems["secrets[1].ref"].startswith("secret reference 'projects/p/secrets/bad!': ")
    assert "secret id may only contain letters, digits, '-' and '_'" in problems["secrets[1].ref"]
    assert "'9LIVES' is not a valid environment variable name" in problems["secrets[4].env"]


def test_unknown_keys_suggest_the_closest_known_one(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path, "poll_intervall: 5m\nsecrets: [{name: a, ref: projects/my-proj/secrets/a, mdoe: '0400'}]\n"
    )
    assert problems == {
        "poll_intervall": "unknown key (did you mean 'poll_interval'?)",
        "secrets[0].mdoe": "unknown key (did you mean 'mode'?)",
    }


def test_invalid_environment_values_are_problems_with_the_variable_name(tmp_path: Path) -> None:
    env = {
        "SECRETS_AGENT_POLL_INTERVAL": "soon",
        "SECRETS_AGENT_LOG_LEVEL": "chatty",
        "SECRETS_AGENT_POLL_INTERVALL": "5m",
    }
    problems = problems_of(tmp_path, "poll_interval: 5m\n", env)
    assert problems == {
        "env SECRETS_AGENT_POLL_INTERVAL": "expected a duration such as 30s, 5m, 1h or 1500ms, got 'soon'",
        "env SECRETS_AGENT_LOG_LEVEL": "expected one of debug, info, warning, error, got 'chatty'",
        "env SECRETS_AGENT_POLL_INTERVALL": "unknown setting",
    }


def test_invalid_flags_are_problems_with_the_flag_name() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, {}, {"poll_interval": "soon", "project": "Bad_Project"})
    paths = [p.path for p in caught.value.problems]
    assert paths == ["--project", "--poll-interval"]


def test_types_are_checked_with_clear_messages(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        """
        project: [a, b]
        output_dir: 5
        env_file: ""
        secrets: {name: a}
        """,
    )
    assert problems == {
        "project": "expected a string, got a list",
        "output_dir": "expected a string, got 5",
        "env_file": "must not be empty",
        "secrets": "expected a list of secrets, got a mapping",
    }


def test_short_references_without_any_project_say_where_to_set_one(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, "secrets: [{name: a, ref: a-secret}]\n")
    assert list(problems) == ["secrets[0].ref"]
    assert problems["secrets[0].ref"].startswith(
        "secret reference 'a-secret': short reference needs a default project"
    )


def test_an_invalid_project_is_reported_once_not_once_per_short_reference(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, "project: Bad\nsecrets: [{name: a, ref: a}, {name: b, ref: 'b@0'}]\n")
    assert set(problems) == {"project", "secrets[1].ref"}
    assert "version 0 does not exist" in problems["secrets[1].ref"]


def test_duplicates_name_both_indices(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        """
        project: my-proj
        secrets:
          - {name: db, ref: db}
          - {name: api, ref: api, env: DB}
          - {name: api2, ref: api, file: db}
          - {name: db, ref: other}
        """,
    )
    assert problems == {
        "secrets[1].env": "duplicate env 'DB': also used by secrets[0]",
        "secrets[2].file": "duplicate file 'db': also used by secrets[0]",
        # The env and file derived from a duplicate name are not reported a second time.
        "secrets[3].name": "duplicate name 'db': also used by secrets[0]",
    }


def test_duplicates_are_found_even_next_to_other_problems(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path, "secrets: [{name: a, ref: 'bad!'}, {name: a, ref: projects/my-proj/secrets/a}]\n"
    )
    assert set(problems) == {"secrets[0].ref", "secrets[1].name"}


def test_a_file_cannot_sit_inside_another_secrets_file(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        "project: my-proj\nsecrets: [{name: db, ref: a}, {name: pw, ref: b, file: db/password}]\n",
    )
    assert problems == {"secrets[1].file": "file 'db/password' would be inside file 'db' of secrets[0]"}


@pytest.mark.parametrize(
    ("file", "fragment"),
    [
        ("/abs", "must be relative"),
        ("..", "must not contain '..'"),
        ("a/../b", "must not contain '..'"),
        ("..data", "reserved for the atomic writer"),
        ("dir/..2024", "reserved for the atomic writer"),
        ("", "must not be empty"),
        ("a\\b", "backslashes"),
    ],
)
def test_file_paths_stay_inside_the_output_dir(tmp_path: Path, file: str, fragment: str) -> None:
    problems = problems_of(
        tmp_path, f"secrets: [{{name: a, ref: projects/my-proj/secrets/a, file: {file!r}}}]\n"
    )
    assert list(problems) == ["secrets[0].file"]
    assert fragment in problems["secrets[0].file"]


def test_a_name_whose_default_env_is_invalid_asks_for_an_explicit_env(tmp_path: Path) -> None:
    text = "project: my-proj\nsecrets: [{name: 1password, ref: op}]\n"
    problems = problems_of(tmp_path, text)
    assert problems == {
        "secrets[0].env": "the default '1PASSWORD' (from name '1password') is not a valid environment "
        "variable name; set env explicitly"
    }
    fixed = load(tmp_path, text.replace("ref: op", "ref: op, env: ONE_PASSWORD"))
    assert fixed.secrets[0].env == "ONE_PASSWORD"


@pytest.mark.parametrize(
    ("field_yaml", "path", "message"),
    [
        ("mode: '0999'", "mode", "expected an octal file mode such as '0440', got '0999'"),
        ("mode: 01777", "mode", "expected an octal file mode such as '0440', got 1023"),
        ("mode: true", "mode", "expected an octal file mode such as '0440', got true"),
        ("uid: -1", "uid", "expected a non-negative integer, got -1"),
        ("gid: true", "gid", "expected an integer, got true"),
        ("gid: 1.5", "gid", "expected an integer, got 1.5"),
        ("required: 'perhaps'", "required", "expected true or false, got 'perhaps'"),
        ("env: 'MY-VAR'", "env", "'MY-VAR' is not a valid environment variable name"),
        ("name: ''", "name", "must not be empty"),
        ("ref: 42", "ref", "expected a string, got 42"),
    ],
)
def test_secret_field_types(tmp_path: Path, field_yaml: str, path: str, message: str) -> None:
    base = {"name": "a", "ref": "projects/my-proj/secrets/a"}
    key, _, _ = field_yaml.partition(": ")
    base.pop(key, None)
    text = f"secrets:\n  - {field_yaml}\n" + "".join(f"    {k}: {v}\n" for k, v in base.items())
    problems = problems_of(tmp_path, text)
    assert list(problems) == [f"secrets[0].{path}"]
    assert message in problems[f"secrets[0].{path}"]


# --- the file itself ----------------------------------------------------------------------------------------


def test_yaml_syntax_errors_name_the_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, "project: my-proj\nsecrets:\n  - name: [unclosed\n")
    (problem,) = caught.value.problems
    assert problem.path.startswith(f"{tmp_path / 'agent.yaml'}:")
    assert int(problem.path.rsplit(":", 1)[1]) >= 3
    assert problem.message.startswith("invalid YAML: ")


def test_duplicate_keys_are_errors_not_silently_overwritten(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, "poll_interval: 1m\nlog_level: info\npoll_interval: 1h\n")
    assert [str(p) for p in caught.value.problems] == [
        f"{tmp_path / 'agent.yaml'}:3: invalid YAML: found duplicate key 'poll_interval'"
    ]


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, "- project: my-proj\n")
    assert [p.message for p in caught.value.problems] == [
        "expected a mapping of settings at the top level, got a list"
    ]


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.yaml", {}, {})
    assert [str(p) for p in caught.value.problems] == [f"{tmp_path / 'absent.yaml'}: no such file"]


# --- normalised output --------------------------------------------------------------------------------------


def test_to_dict_is_normalised_and_loads_back_to_the_same_config(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        project: my-proj
        poll_interval: 1500ms
        max_staleness: 2h
        env_file: /run/app.env
        secrets:
          - {name: db, ref: 'db#3', mode: "0400"}
          - {name: api, ref: 'sm://other-proj/api', uid: 7}
        """,
    )
    data = config.to_dict()
    assert data["poll_interval"] == 1.5
    assert data["max_staleness"] == 7200
    assert data["env_file"] == "/run/app.env"
    assert data["secrets"] == [
        {
            "name": "db",
            "ref": "projects/my-proj/secrets/db/versions/3",
            "env": "DB",
            "file": "db",
            "mode": "0400",
            "uid": None,
            "gid": None,
            "required": True,
        },
        {
            "name": "api",
            "ref": "projects/other-proj/secrets/api/versions/latest",
            "env": "API",
            "file": "api",
            "mode": "0440",
            "uid": 7,
            "gid": None,
            "required": True,
        },
    ]
    assert load(tmp_path, yaml.safe_dump(data)) == config


def test_the_example_file_is_valid_and_shows_every_reference_form() -> None:
    config = load_config(EXAMPLE, {}, {})
    assert config.project == "acme-payments-prod"
    raw_refs = [s["ref"] for s in yaml.safe_load(EXAMPLE.read_text())["secrets"]]
    assert any("@" in r and "/" not in r for r in raw_refs)  # S@V
    assert any("#" in r and "/" not in r for r in raw_refs)  # S#V
    assert any("@" not in r and "#" not in r and "/" not in r for r in raw_refs)  # S
    assert any(r.startswith("sm://") for r in raw_refs)
    assert any(r.startswith("projects/") and "/versions/" in r for r in raw_refs)
    assert any(r.startswith("projects/") and "/versions/" not in r for r in raw_refs)
    assert any(s.ref.location is not None for s in config.secrets)
