"""The configuration model: precedence, defaults, types, every problem reported at once with its path."""

from __future__ import annotations

import dataclasses
import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

from agent.app import build_notifiers
from agent.config import Config, SecretSpec, load_config
from agent.config.refs import SecretRef, parse_ref
from agent.errors import ConfigError
from agent.notify.signal import SignalNotifier

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "agent.yaml"


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
    assert config.output_dir is None
    assert config.output_dir_for("init") == config.output_dir_for("run") == Path("/secrets")
    assert config.output_dir_for("dev") == Path(".secrets")
    assert config.env_file is None
    assert config.poll_interval == 300.0
    assert config.poll_jitter == 0.1
    assert config.max_staleness == 3600.0
    assert config.secrets == ()


@pytest.mark.parametrize("layer", ["file", "env", "flag"])
def test_a_configured_output_dir_is_every_commands_even_dev(layer: str, tmp_path: Path) -> None:
    where = "/secrets" if layer != "flag" else "/run/secrets"
    file = tmp_path / "agent.yaml"
    file.write_text(f"output_dir: {where}\n" if layer == "file" else "{}\n")
    env = {"SECRETS_AGENT_OUTPUT_DIR": where} if layer == "env" else {}
    flags = {"output_dir": where} if layer == "flag" else {}
    config = load_config(file, env, flags)
    assert {config.output_dir_for(command) for command in ("init", "run", "exec", "dev")} == {Path(where)}
    assert config.to_dict()["output_dir"] == where


def test_an_unset_output_dir_prints_as_null_and_reads_back_as_unset(tmp_path: Path) -> None:
    printed = load_config(None, {}, {}).to_dict()
    assert printed["output_dir"] is None
    file = tmp_path / "agent.yaml"
    file.write_text(yaml.safe_dump(printed))
    assert load_config(file, {}, {}).output_dir_for("dev") == Path(".secrets")


# Each setting's default is documented once, by the schema: tests/docs/test_reference.py checks that what its
# docstring says is the real default, and the configuration reference (docs/reference/) shows the real one.


def value_at(config: object, path: str) -> object:
    for part in path.split("."):
        config = getattr(config, part)
    return config


def nested(path: str, value: object) -> dict[str, object]:
    """``"gcp.endpoint", v`` -> ``{"gcp": {"endpoint": v}}``, as it is written in the file."""
    *parents, last = path.split(".")
    data: dict[str, object] = {last: value}
    for parent in reversed(parents):
        data = {parent: data}
    return data


def env_var(path: str) -> str:
    return "SECRETS_AGENT_" + path.upper().replace(".", "_")


# setting, file value, env value, flag value, and the expected parsed value of each
PRECEDENCE = [
    ("project", "file-proj", "env-proj", "flag-proj", ("file-proj", "env-proj", "flag-proj")),
    ("log_level", "warning", "error", "debug", ("warning", "error", "debug")),
    ("output_dir", "/file", "/env", "/flag", (Path("/file"), Path("/env"), Path("/flag"))),
    ("env_file", "/f.env", "/e.env", "/g.env", (Path("/f.env"), Path("/e.env"), Path("/g.env"))),
    ("poll_interval", "10s", "2m", "1500ms", (10.0, 120.0, 1.5)),
    ("poll_jitter", 0.2, "0.3", "0.4", (0.2, 0.3, 0.4)),
    ("max_staleness", "2h", "30m", "45", (7200.0, 1800.0, 45.0)),
    ("source", "gcp", "dotenv", "AUTO", ("gcp", "dotenv", "auto")),
    ("env", "development", "production", "Development", ("development", "production", "development")),
    ("fallback_dotenv", "f.env", "e.env", "g.env", (Path("f.env"), Path("e.env"), Path("g.env"))),
    ("require_tmpfs", True, "false", "true", (True, False, True)),
    ("log_format", "text", "json", "text", ("text", "json", "text")),
    ("timeout", "2m", "90", "1500ms", (120.0, 90.0, 1.5)),
    ("shutdown_grace", 3, "5s", "1m", (3.0, 5.0, 60.0)),
    ("concurrency", 8, "16", "1", (8, 16, 1)),
    ("gcp.endpoint", "f:1", "[::1]:2", "127.0.0.1:8780", ("f:1", "[::1]:2", "127.0.0.1:8780")),
    ("gcp.call_timeout", "3s", "4", "500ms", (3.0, 4.0, 0.5)),
    ("gcp.strategy", "metadata", "access", "metadata", ("metadata", "access", "metadata")),
    ("gcp.backoff_initial", "1s", "2s", "100ms", (1.0, 2.0, 0.1)),
    ("gcp.backoff_max", "1m", "2m", "10s", (60.0, 120.0, 10.0)),
    ("dotenv.file", "a.env", "b.env", "c.env", (Path("a.env"), Path("b.env"), Path("c.env"))),
    ("dotenv.debounce", 0, "50ms", "0.2", (0.0, 0.05, 0.2)),
    ("notify.debounce", "2s", "0", "250ms", (2.0, 0.0, 0.25)),
    ("notify.signal", "usr1", "HUP", "SIGUSR2", ("SIGUSR1", "SIGHUP", "SIGUSR2")),
    ("notify.pid_file", "/f.pid", "/e.pid", "/g.pid", (Path("/f.pid"), Path("/e.pid"), Path("/g.pid"))),
    ("notify.process", "^nginx", "gunicorn: master", "app$", ("^nginx", "gunicorn: master", "app$")),
    (
        "notify.url",
        "http://f/reload",
        "https://e:8443/x",
        "http://127.0.0.1:9/-/reload",
        ("http://f/reload", "https://e:8443/x", "http://127.0.0.1:9/-/reload"),
    ),
    ("notify.url_timeout", "1s", "2s", "3s", (1.0, 2.0, 3.0)),
    ("notify.url_retries", 0, "1", "2", (0, 1, 2)),
    (
        "notify.command",
        ["kill", "-HUP", "1"],
        "nginx -s reload",
        "sh -c 'echo \"a b\"'",
        (("kill", "-HUP", "1"), ("nginx", "-s", "reload"), ("sh", "-c", 'echo "a b"')),
    ),
    ("notify.command_timeout", "10s", "20s", "1m", (10.0, 20.0, 60.0)),
    ("notify.max_attempts", 1, "2", "10", (1, 2, 10)),
    ("exec.watch", True, "no", "yes", (True, False, True)),
]


@pytest.mark.parametrize(("setting", "in_file", "in_env", "in_flag", "expected"), PRECEDENCE)
def test_flag_beats_env_beats_file_beats_default(
    tmp_path: Path, setting: str, in_file: object, in_env: str, in_flag: str, expected: tuple[object, ...]
) -> None:
    file = write(tmp_path, yaml.safe_dump(nested(setting, in_file)))
    env = {env_var(setting): in_env}
    flags = {setting: in_flag}
    default = value_at(Config(), setting)
    assert value_at(load_config(None, {}, {}), setting) == default
    assert value_at(load_config(file, {}, {}), setting) == expected[0]
    assert value_at(load_config(file, env, {}), setting) == expected[1]
    assert value_at(load_config(file, env, flags), setting) == expected[2]
    assert value_at(load_config(None, {}, flags), setting) == expected[2]
    # A flag that was not given (None) does not override anything.
    assert value_at(load_config(file, env, {setting: None}), setting) == expected[1]


def test_the_exec_reload_signal_is_layered_like_the_others(tmp_path: Path) -> None:
    # Separate from the table: it needs exec.watch as well.
    file = write(tmp_path, "exec: {watch: true, reload_signal: hup}\n")
    assert load_config(file, {}, {}).exec.reload_signal == "SIGHUP"
    env = {"SECRETS_AGENT_EXEC_RELOAD_SIGNAL": "TERM"}
    assert load_config(file, env, {}).exec.reload_signal == "SIGTERM"
    assert load_config(file, env, {"exec.reload_signal": "sigusr1"}).exec.reload_signal == "SIGUSR1"


def test_secret_manager_emulator_host_is_the_endpoint_fallback_below_the_file(tmp_path: Path) -> None:
    ambient = {"SECRET_MANAGER_EMULATOR_HOST": "localhost:8780"}
    assert load_config(None, ambient, {}).gcp.endpoint == "localhost:8780"
    assert load(tmp_path, "gcp: {endpoint: 'file:1'}\n", ambient).gcp.endpoint == "file:1"
    ours = {**ambient, "SECRETS_AGENT_GCP_ENDPOINT": "ours:2"}
    assert load_config(None, ours, {}).gcp.endpoint == "ours:2"
    # Only validated when it is used: a bad ambient value does not break a config that sets its own.
    assert load(
        tmp_path, "gcp: {endpoint: 'file:1'}\n", {"SECRET_MANAGER_EMULATOR_HOST": "junk"}
    ).gcp.endpoint
    with pytest.raises(ConfigError) as caught:
        load_config(None, {"SECRET_MANAGER_EMULATOR_HOST": "junk"}, {})
    assert [p.path for p in caught.value.problems] == ["env SECRET_MANAGER_EMULATOR_HOST"]


def test_the_source_follows_the_command_unless_configured() -> None:
    auto = load_config(None, {}, {})
    assert [auto.source_for(c) for c in ("init", "run", "exec", "dev")] == ["gcp", "gcp", "gcp", "dotenv"]
    pinned = load_config(None, {"SECRETS_AGENT_SOURCE": "gcp"}, {})
    assert pinned.source_for("dev") == "gcp"
    assert load_config(None, {}, {"source": "dotenv"}).source_for("run") == "dotenv"


def test_production_never_falls_back_to_dotenv_unless_told_to() -> None:
    assert load_config(None, {}, {}).fallback_file is None
    development = load_config(None, {"SECRETS_AGENT_ENV": "development"}, {"dotenv.file": "dev.env"})
    assert development.fallback_file == Path("dev.env")
    explicit = load_config(None, {}, {"fallback_dotenv": "/run/fallback.env"})
    assert explicit.fallback_file == Path("/run/fallback.env")


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


# path, bad YAML value, a fragment of the message
BAD_VALUES = [
    ("source", "vault", "expected one of auto, gcp, dotenv, got 'vault'"),
    ("env", "staging", "expected one of production, development, got 'staging'"),
    ("log_format", "xml", "expected one of auto, json, text, got 'xml'"),
    ("require_tmpfs", "sometimes", "expected true or false, got 'sometimes'"),
    ("timeout", "0s", "expected a positive, finite duration"),
    ("shutdown_grace", "soon", "expected a duration"),
    ("concurrency", 0, "expected an integer of at least 1, got 0"),
    ("concurrency", "many", "expected an integer, got 'many'"),
    ("fallback_dotenv", "", "must not be empty"),
    ("gcp.strategy", "push", "expected one of access, metadata, got 'push'"),
    ("gcp.endpoint", "localhost", "expected HOST:PORT"),
    ("gcp.endpoint", "host:99999", "expected HOST:PORT"),
    ("gcp.endpoint", "http://host:80", "expected HOST:PORT"),
    ("gcp.call_timeout", -1, "expected a positive, finite duration"),
    ("gcp.backoff_max", "forever", "expected a duration"),
    ("dotenv.debounce", "-1s", "expected a duration"),
    ("notify.debounce", "later", "expected a duration"),
    ("notify.signal", "SIGFOO", "unknown signal 'SIGFOO' (expected a name such as SIGHUP, SIGUSR1, SIGTERM)"),
    ("notify.signal", "1", "unknown signal '1'"),
    ("notify.signal", 15, "expected a string, got 15"),
    (
        "notify.process",
        "nginx(",
        "'nginx(' is not a valid regular expression: missing ), unterminated subpattern",
    ),
    (
        "notify.url",
        "ftp://host/reload",
        "expected an http:// or https:// URL with a host, got 'ftp://host' (the rest not shown)",
    ),
    ("notify.url", "http://", "expected an http:// or https:// URL with a host"),
    ("notify.url", "localhost:8080/reload", "expected an http:// or https:// URL with a host"),
    ("notify.url", "http://host:notaport/", "expected an http:// or https:// URL with a host"),
    ("notify.url", "http://host/a b", "expected an http:// or https:// URL with a host"),
    ("notify.url_timeout", "0", "expected a positive, finite duration"),
    ("notify.url_retries", -1, "expected an integer of at least 0, got -1"),
    ("notify.command", "sh -c 'unclosed", "No closing quotation"),
    ("notify.command", ["kill", 1], "expected a list of strings"),
    ("notify.command", {"run": "x"}, "expected a list of arguments or a command string, got a mapping"),
    ("notify.command_timeout", "1d", "expected a duration"),
    ("notify.max_attempts", 0, "expected an integer of at least 1, got 0"),
    ("exec.watch", "maybe", "expected true or false, got 'maybe'"),
    ("exec.reload_signal", "RELOAD", "unknown signal 'RELOAD'"),
]


@pytest.mark.parametrize(("path", "value", "message"), BAD_VALUES)
def test_bad_values_of_new_settings_name_their_path(
    tmp_path: Path, path: str, value: object, message: str
) -> None:
    problems = problems_of(tmp_path, yaml.safe_dump(nested(path, value)))
    assert list(problems) == [path]
    assert message in problems[path]


@pytest.mark.parametrize(
    ("path", "value", "message"), [b for b in BAD_VALUES if isinstance(b[1], str) and b[1]]
)
def test_bad_values_from_the_environment_name_the_variable(path: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, {env_var(path): value}, {})
    assert [(p.path, message in p.message) for p in caught.value.problems] == [(f"env {env_var(path)}", True)]


def test_a_bad_flag_is_named_as_the_cli_spells_it() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(
            None,
            {},
            {"gcp.endpoint": "nowhere", "notify.signal": "SIGNOPE", "concurrency": "0"},
            flag_names={"gcp.endpoint": "--endpoint", "notify.signal": "--signal"},
        )
    assert [p.path for p in caught.value.problems] == ["--concurrency", "--endpoint", "--signal"]


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("HUP", "SIGHUP"),
        ("hup", "SIGHUP"),
        ("SIGHUP", "SIGHUP"),
        ("sigterm", "SIGTERM"),
        (" usr2 ", "SIGUSR2"),
    ],
)
def test_signals_are_stored_by_their_canonical_name(tmp_path: Path, written: str, canonical: str) -> None:
    config = load(tmp_path, yaml.safe_dump({"notify": {"signal": written}}))
    assert config.notify.signal == canonical


def test_a_signal_notifier_is_active_only_with_a_pid_file_or_a_process(tmp_path: Path) -> None:
    # What the app builds from the config: a signal notifier only when it knows whom to signal.
    def signals(flags: Mapping[str, object]) -> bool:
        return any(isinstance(n, SignalNotifier) for n in build_notifiers(load_config(None, {}, flags)))

    assert not signals({})
    assert not signals({"notify.signal": "USR1"})  # a signal alone names no process
    assert signals({"notify.pid_file": "/run/app.pid"})
    assert signals({"notify.process": "^app"})


def test_sections_reject_unknown_keys_and_non_mappings(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        """
        gcp: {endpont: "h:1"}
        notify: yes
        exec: [watch]
        dotenv: {file: .env, debounce: 1s, wacth: true}
        """,
        {"SECRETS_AGENT_NOTIFY_SIGNALL": "HUP"},
    )
    assert problems == {
        "gcp.endpont": "unknown key (did you mean 'endpoint'?)",
        "notify": "expected a mapping, got true",
        "exec": "expected a mapping, got a list",
        "dotenv.wacth": "unknown key",
        "env SECRETS_AGENT_NOTIFY_SIGNALL": "unknown setting (did you mean SECRETS_AGENT_NOTIFY_SIGNAL?)",
    }


def test_cross_setting_rules_are_reported_together_with_the_rest(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        """
        concurrency: 0
        gcp: {backoff_initial: 1m, backoff_max: 10s}
        notify: {pid_file: /run/app.pid, process: "^app", signal: NOPE}
        exec: {reload_signal: HUP}
        """,
    )
    assert problems == {
        "concurrency": "expected an integer of at least 1, got 0",
        "gcp.backoff_initial": "60s is more than gcp.backoff_max (10s)",
        "notify.signal": "unknown signal 'NOPE' (expected a name such as SIGHUP, SIGUSR1, SIGTERM)",
        "exec.reload_signal": "only used with exec.watch (--watch): without it the agent execs the command "
        "and is gone",
    }
    # notify.signal was invalid, so the notify section was not built and the pid_file/process rule (which
    # needs the whole section) did not run; once the signal is fixed, it does.
    fixed = problems_of(tmp_path, "notify: {pid_file: /run/app.pid, process: '^app'}\n")
    assert fixed == {"notify.process": "set either notify.pid_file or notify.process, not both"}


# --- the compact form: --secret NAME=REF -------------------------------------------------------------------


def test_secret_flags_are_added_after_the_files_secrets(tmp_path: Path) -> None:
    file = write(tmp_path, "project: my-proj\nsecrets: [{name: db, ref: db-password, mode: '0400'}]\n")
    config = load_config(file, {}, {"secrets": ["api=api-key@3", "tls=sm://other-proj/tls#current"]})
    assert config.secrets == (
        SecretSpec(name="db", ref=parse_ref("db-password", "my-proj"), mode=0o400),
        SecretSpec(name="api", ref=parse_ref("api-key@3", "my-proj"), env="API", file="api"),
        SecretSpec(name="tls", ref=parse_ref("sm://other-proj/tls#current")),
    )
    # The flag's project counts for them as for the file's.
    flagged = load_config(None, {}, {"project": "flag-proj", "secrets": ["db=db"]})
    assert flagged.secrets[0].ref.project == "flag-proj"


def test_secret_flags_can_stand_alone_and_an_absent_flag_adds_nothing(tmp_path: Path) -> None:
    assert load_config(None, {}, {"secrets": None}).secrets == ()
    assert load_config(None, {}, {"secrets": []}).secrets == ()
    (spec,) = load_config(None, {}, {"secrets": ["a=projects/p-123456/secrets/a"]}).secrets
    assert (spec.name, spec.env, spec.file) == ("a", "A", "a")


def test_secret_flags_are_checked_like_file_secrets_and_duplicates_name_both(tmp_path: Path) -> None:
    file = write(tmp_path, "project: my-proj\nsecrets: [{name: db, ref: db}, {name: api, ref: api}]\n")
    with pytest.raises(ConfigError) as caught:
        load_config(
            file,
            {},
            {
                "secrets": [
                    "db=other",
                    "no-equals-sign",
                    "cache=bad!",
                    "=nameless",
                    "key=k",
                    "API=x",
                    "key=k2",
                ]
            },
        )
    assert {p.path: p.message for p in caught.value.problems} == {
        "--secret[1]": "expected NAME=REF such as db-password=projects/P/secrets/S, got 'no-equals-sign'",
        "--secret[2].ref": "secret reference not shown (4 characters, some of which no reference contains: a "
        "secret value pasted in place of its reference?): secret id may only contain letters, digits, '-' "
        "and '_'",
        "--secret[3].name": "must not be empty",
        "--secret[0].name": "duplicate name 'db': also used by secrets[0]",
        "--secret[6].name": "duplicate name 'key': also used by --secret[4]",
        "--secret[5].env": "duplicate env 'API' (derived from name): also used by secrets[1]",
    }


# --- secrets ------------------------------------------------------------------------------------------------
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
    # A '!' is not a reference's: the reference is described, its problems still named.
    assert problems["secrets[1].ref"].startswith("secret reference not shown (23 characters, ")
    assert "bad!" not in problems["secrets[1].ref"]
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
        "env SECRETS_AGENT_POLL_INTERVALL": "unknown setting (did you mean SECRETS_AGENT_POLL_INTERVAL?)",
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
        (".", "names output_dir itself"),
        ("./", "names output_dir itself"),
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
        ("ref: 42", "ref", "expected a string, got a number (a YAML number or boolean must be quoted)"),
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
            "key": None,
            "format": "auto",
            "decode": "none",
            "deliver": True,
            "keys": [],
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
            "key": None,
            "format": "auto",
            "decode": "none",
            "deliver": True,
            "keys": [],
        },
    ]
    assert load(tmp_path, yaml.safe_dump(data)) == config


def test_the_example_file_sets_every_setting_so_it_documents_them_all() -> None:
    raw = yaml.safe_load(EXAMPLE.read_text())

    def paths(cls: type, prefix: str = "") -> list[str]:
        out: list[str] = []
        for f in dataclasses.fields(cls):
            if isinstance(f.default_factory, type):  # a section
                out += paths(f.default_factory, f"{prefix}{f.name}.")
            else:
                out.append(prefix + f.name)
        return out

    missing = []
    for path in paths(Config):
        data = raw
        for part in path.split("."):
            if not isinstance(data, dict) or part not in data:
                missing.append(path)
                break
            data = data[part]
    assert missing == []
    for path in paths(Config):
        assert path.rpartition(".")[2] + ":" in EXAMPLE.read_text()


def test_new_sections_round_trip_through_the_normalised_form(tmp_path: Path) -> None:
    config = load_config(
        EXAMPLE,
        {},
        {"notify.command": "nginx -s 'reload now'", "exec.watch": "true", "exec.reload_signal": "hup"},
    )
    data = config.to_dict()
    notify = data["notify"]
    assert isinstance(notify, dict)
    assert (notify["command"], notify["signal"], notify["debounce"]) == (
        ["nginx", "-s", "reload now"],
        "SIGHUP",
        0.2,
    )
    assert data["exec"] == {"watch": True, "reload_signal": "SIGHUP"}
    assert data["gcp"] == {
        "endpoint": None,
        "endpoint_tls": False,
        "endpoint_credentials": None,
        "credentials_file": None,
        "impersonate_service_account": None,
        "delegates": [],
        "iam_endpoint": None,
        "quota_project": None,
        "call_timeout": 10,
        "strategy": "access",
        "backoff_initial": 0.5,
        "backoff_max": 30,
    }
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


# -- the local endpoint and the probes listener --------------------------------------------------


@pytest.mark.parametrize(
    ("text", "path", "fragment"),
    [
        ("server: {listen: '0.0.0.0:8730'}", "server.listen", "not a loopback address"),
        ("server: {listen: '10.1.2.3:8730'}", "server.listen", "server.allow_remote"),
        ("server: {listen: 'nowhere'}", "server.listen", "expected HOST:PORT"),
        ("server: {token: short}", "server.token", "at least 16 characters"),
        ("server: {token: 'has spaces in it, sixteen+'}", "server.token", "spaces"),
        (
            "server: {token: 0123456789abcdef0123, token_file: /t}",
            "server.token_file",
            "either server.token or server.token_file",
        ),
        ("server: {max_connections: 0}", "server.max_connections", "at least 1"),
        ("probes: {listen: '127.0.0.1:8730'}", "probes.listen", "use two ports"),
        (
            "secrets: [{name: t, ref: projects/my-project/secrets/t, file: .token}]",
            "secrets[0].file",
            "reserved",
        ),
    ],
)
def test_endpoint_settings_are_checked(tmp_path: Path, text: str, path: str, fragment: str) -> None:
    problems = problems_of(tmp_path, text)
    assert path in problems, problems
    assert fragment in problems[path]


def test_listening_remotely_is_allowed_only_when_asked(tmp_path: Path) -> None:
    config = load(tmp_path, "server: {listen: '0.0.0.0:8730', allow_remote: true}")
    assert config.server.listen == "0.0.0.0:8730"
    assert load(tmp_path, "server: {listen: '[::1]:9000'}").server.listen == "[::1]:9000"


def test_the_token_comes_from_the_environment_and_is_never_printed(tmp_path: Path) -> None:
    token = "canary-token-0123456789"
    config = load(tmp_path, "", env={"SECRETS_AGENT_SERVER_TOKEN": token})
    assert config.server.token == token
    assert token not in repr(config.to_dict())
    assert config.to_dict()["server"] == {**config.to_dict()["server"], "token": "<set>"}  # type: ignore[dict-item]


# --- allowed_hosts (the listeners' Host checks read them) -------------------------------------------------


def test_allowed_hosts_default_to_none_and_are_normalised() -> None:
    config = load_config(None, {}, {})
    assert (config.server.allowed_hosts, config.probes.allowed_hosts) == ((), ())
    yaml_config = load_config(
        None,
        {"SECRETS_AGENT_CONFIG_YAML": "server: {allowed_hosts: [App.Example., '[FD00::1]', 10.0.0.7]}\n"},
        {},
    )
    assert yaml_config.server.allowed_hosts == ("app.example", "fd00::1", "10.0.0.7")
    from_env = load_config(
        None, {"SECRETS_AGENT_PROBES_ALLOWED_HOSTS": "metrics.svc, probes.local metrics.svc"}, {}
    )
    assert from_env.probes.allowed_hosts == ("metrics.svc", "probes.local")
    assert from_env.to_dict()["probes"]["allowed_hosts"] == ["metrics.svc", "probes.local"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("app.example:8730", "item 0: 'app.example:8730': write the host name only, without a port"),
        ("10.0.0.1:80", "item 0: '10.0.0.1:80': write the host name only, without a port"),
        ("-bad.example", "item 0: '-bad.example' is neither a DNS name"),
        ("*.example", "item 0: '*.example' is neither a DNS name"),
        ("a..b", "item 0: 'a..b' is neither a DNS name"),
        ("[not-v6]", "item 0: '[not-v6]' is not an IPv6 address"),
    ],
)
def test_bad_allowed_hosts_are_named(value: str, message: str) -> None:
    for path in ("server.allowed_hosts", "probes.allowed_hosts"):
        env = "SECRETS_AGENT_" + path.upper().replace(".", "_")
        with pytest.raises(ConfigError) as caught:
            load_config(None, {env: value}, {})
        (problem,) = caught.value.problems
        assert str(problem).startswith(f"env {env}: {message}")


def test_allowed_hosts_are_bounded() -> None:
    with pytest.raises(ConfigError, match="at most 64 host names, got 65"):
        load_config(
            None, {"SECRETS_AGENT_SERVER_ALLOWED_HOSTS": ",".join(f"h{i}.example" for i in range(65))}, {}
        )
