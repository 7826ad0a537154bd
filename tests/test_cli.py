"""The real command line: `check-config` exit codes and output, `--help`, and no traceback ever."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agent.cli import ALL_FLAGS, Invocation, main, parse
from agent.config import Config, load_config
from agent.errors import ConfigError
from agent_emulator.cli import parse_options

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "agent.yaml"

BAD_CONFIG = """\
project: my-proj
log_level: loud
secrets:
  - name: db
    ref: db
  - name: api
    ref: api@0
  - name: cache
    ref: projects/p/secrets/bad!
    mode: rw
  - name: db
    ref: other
"""

BAD_LINES = [
    "secrets-agent: log_level: expected one of debug, info, warning, error, got 'loud'",
    "secrets-agent: secrets[1].ref: secret reference 'api@0': version 0 does not exist: "
    "versions are numbered from 1",
    "secrets-agent: secrets[2].mode: expected an octal file mode such as '0440', got 'rw'",
    "secrets-agent: secrets[3].name: duplicate name 'db': also used by secrets[0]",
]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own SECRETS_AGENT_* or GOOGLE_CLOUD_PROJECT must not leak into these tests."""
    for name in list(os.environ):
        if name.startswith("SECRETS_AGENT_") or name == "GOOGLE_CLOUD_PROJECT":
            monkeypatch.delenv(name)


@pytest.fixture
def bad_file(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_CONFIG)
    return path


def clean_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SECRETS_AGENT_") and k != "GOOGLE_CLOUD_PROJECT"
    }


def test_check_config_prints_the_normalised_configuration(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(EXAMPLE)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    printed = yaml.safe_load(out)
    assert printed == load_config(EXAMPLE, {}, {}).to_dict()
    assert printed["secrets"][0]["ref"] == "projects/acme-payments-prod/secrets/db-password/versions/latest"
    assert printed["poll_interval"] == 300


def test_the_printed_configuration_is_itself_a_valid_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", str(EXAMPLE)]) == 0
    normalised = tmp_path / "normalised.yaml"
    normalised.write_text(capsys.readouterr().out)
    assert load_config(normalised, {}, {}) == load_config(EXAMPLE, {}, {})


def test_check_config_reports_every_problem_with_its_path_and_exits_2(
    bad_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", str(bad_file)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    for expected in BAD_LINES:
        assert expected in lines
    cache_line = next(line for line in lines if line.startswith("secrets-agent: secrets[2].ref: "))
    assert "secret reference not shown (23 characters, " in cache_line
    assert "bad!" not in cache_line
    assert "secret id may only contain letters, digits, '-' and '_'" in cache_line
    assert len(lines) == len(BAD_LINES) + 1
    assert "Traceback" not in err


def test_flags_override_environment_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text("project: file-proj\npoll_interval: 1m\nsecrets: [{name: db, ref: db}]\n")
    monkeypatch.setenv("SECRETS_AGENT_PROJECT", "env-proj")
    monkeypatch.setenv("SECRETS_AGENT_POLL_INTERVAL", "2m")
    assert main(["check-config", str(config), "--project", "flag-proj"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["project"] == "flag-proj"
    assert printed["poll_interval"] == 120
    assert printed["secrets"][0]["ref"] == "projects/flag-proj/secrets/db/versions/latest"


def test_bad_flags_and_variables_are_reported_by_name(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SECRETS_AGENT_MAX_STALENESS", "forever")
    assert main(["check-config", str(EXAMPLE), "--poll-interval", "soon"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "secrets-agent: --poll-interval: expected a duration such as 30s, 5m, 1h or 1500ms, got 'soon'",
        "secrets-agent: env SECRETS_AGENT_MAX_STALENESS: expected a duration such as 30s, 5m, 1h or 1500ms, "
        "got 'forever'",
    ]


def test_the_file_can_be_named_by_secrets_agent_config(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SECRETS_AGENT_CONFIG", str(EXAMPLE))
    assert main(["check-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["project"] == "acme-payments-prod"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("project: [unclosed\n", "bad.yaml:2: invalid YAML: "),
        ("a: 1\na: 2\n", "bad.yaml:2: invalid YAML: found duplicate key 'a'"),
        ("just text\n", "bad.yaml:1: expected a mapping of settings at the top level, got 'just text'"),
    ],
)
def test_unreadable_yaml_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, expected: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    assert main(["check-config", str(path)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"secrets-agent: {tmp_path}/")
    assert expected in line


def test_a_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(tmp_path / "nope.yaml")]) == 2
    assert capsys.readouterr().err == f"secrets-agent: {tmp_path / 'nope.yaml'}: no such file\n"


def test_help_lists_the_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "emulator" in out
    assert "check-config" in out


def test_check_config_help_lists_the_config_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["check-config", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for flag in (
        "--project",
        "--log-level",
        "--output-dir",
        "--env-file",
        "--poll-interval",
        "--max-staleness",
    ):
        assert flag in out


def test_python_dash_m_agent_check_config_as_a_real_process(bad_file: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "agent", "check-config", str(EXAMPLE)],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert yaml.safe_load(ok.stdout)["project"] == "acme-payments-prod"

    bad = subprocess.run(
        [sys.executable, "-m", "agent", "check-config", str(bad_file)],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stdout == ""
    for expected in BAD_LINES:
        assert expected in bad.stderr.splitlines()
    assert "Traceback" not in bad.stderr


def test_the_installed_secrets_agent_command_has_help() -> None:
    command = Path(sys.executable).parent / "secrets-agent"
    done = subprocess.run(
        [str(command), "--help"], capture_output=True, text=True, env=clean_env(), timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "emulator" in done.stdout
    assert "check-config" in done.stdout


# --- the agent's commands: what each one builds ------------------------------------------------------------

AGENT_COMMANDS = ["init", "run", "dev", "exec"]


def parsed(argv: list[str], env: dict[str, str] | None = None) -> Invocation:
    """Parse like main() does, with `-- true` appended for exec (which needs a command) and
    `--allow-empty` for init (which refuses to start with no secret at all)."""
    if argv[0] == "exec" and "--" not in argv:
        argv = [*argv, "--", "true"]
    if argv[0] == "init":
        argv = [*argv, "--allow-empty"]
    return parse(argv, env or {})


@pytest.mark.parametrize("command", AGENT_COMMANDS)
def test_each_command_builds_the_config_from_file_env_and_flags(tmp_path: Path, command: str) -> None:
    file = tmp_path / "agent.yaml"
    file.write_text("project: file-proj\npoll_interval: 1m\nsecrets: [{name: db, ref: db}]\n")
    env = {"SECRETS_AGENT_POLL_INTERVAL": "2m", "SECRETS_AGENT_LOG_FORMAT": "text"}
    invocation = parsed([command, "-c", str(file), "--project", "flag-proj", "--secret", "api=api-key"], env)
    assert invocation.command == command
    expected = load_config(file, env, {"project": "flag-proj", "secrets": ["api=api-key"]})
    assert invocation.config == expected
    assert invocation.config.poll_interval == 120
    assert invocation.config.log_format == "text"
    assert [(s.name, str(s.ref)) for s in invocation.config.secrets] == [
        ("db", "projects/flag-proj/secrets/db/versions/latest"),
        ("api", "projects/flag-proj/secrets/api-key/versions/latest"),
    ]


@pytest.mark.parametrize("command", AGENT_COMMANDS)
def test_the_config_file_defaults_to_secrets_agent_config(tmp_path: Path, command: str) -> None:
    file = tmp_path / "agent.yaml"
    file.write_text("log_level: debug\n")
    assert parsed([command], {"SECRETS_AGENT_CONFIG": str(file)}).config == Config(log_level="debug")
    assert parsed([command]).config == Config()


# flag as typed, its value, the setting path, the parsed value
COMMON_FLAG_CASES = [
    (["--project", "my-proj"], "project", "my-proj"),
    (["--output-dir", "/run/secrets"], "output_dir", Path("/run/secrets")),
    (["--env-file", "/run/app.env"], "env_file", Path("/run/app.env")),
    (["--poll-interval", "30s"], "poll_interval", 30.0),
    (["--poll-jitter", "0.5"], "poll_jitter", 0.5),
    (["--max-staleness", "2h"], "max_staleness", 7200.0),
    (["--log-level", "debug"], "log_level", "debug"),
    (["--log-format", "text"], "log_format", "text"),
    (["--source", "dotenv"], "source", "dotenv"),
    (["--timeout", "5s"], "timeout", 5.0),
    (["--concurrency", "4"], "concurrency", 4),
    (["--require-tmpfs"], "require_tmpfs", True),
    (["--fallback-dotenv", "local.env"], "fallback_dotenv", Path("local.env")),
    (["--endpoint", "127.0.0.1:8780"], "gcp.endpoint", "127.0.0.1:8780"),
    (["--strategy", "metadata"], "gcp.strategy", "metadata"),
    (["--signal", "usr1"], "notify.signal", "SIGUSR1"),
    (["--pid-file", "/run/app.pid"], "notify.pid_file", Path("/run/app.pid")),
    (["--process", "^gunicorn: master"], "notify.process", "^gunicorn: master"),
    (["--notify-url", "http://127.0.0.1:8080/-/reload"], "notify.url", "http://127.0.0.1:8080/-/reload"),
    (["--notify-command", "nginx -s 'reload'"], "notify.command", ("nginx", "-s", "reload")),
]


def value_at(config: object, path: str) -> object:
    for part in path.split("."):
        config = getattr(config, part)
    return config


@pytest.mark.parametrize("command", [*AGENT_COMMANDS, "check-config"])
@pytest.mark.parametrize(("flags", "path", "expected"), COMMON_FLAG_CASES)
def test_every_common_flag_sets_its_setting(
    command: str, flags: list[str], path: str, expected: object
) -> None:
    config = parsed([command, *flags]).config
    assert value_at(config, path) == expected
    assert value_at(config, path) != value_at(Config(), path)  # the case really changes something


def test_switches_can_also_turn_a_setting_off() -> None:
    env = {"SECRETS_AGENT_REQUIRE_TMPFS": "true", "SECRETS_AGENT_EXEC_WATCH": "true"}
    assert parsed(["run"], env).config.require_tmpfs is True  # type: ignore[union-attr]
    assert parsed(["run", "--no-require-tmpfs"], env).config.require_tmpfs is False  # type: ignore[union-attr]
    assert parsed(["exec", "--no-watch"], env).config.exec.watch is False  # type: ignore[union-attr]


def test_dev_takes_a_dotenv_file() -> None:
    invocation = parsed(["dev", "--dotenv", "local.env", "--secret", "db=projects/my-proj/secrets/db"])
    assert invocation.config is not None
    assert invocation.config.dotenv.file == Path("local.env")
    assert invocation.config.source_for("dev") == "dotenv"
    assert invocation.argv == ()


@pytest.mark.parametrize(
    ("argv", "config_watch", "reload_signal", "program"),
    [
        (["exec", "--", "app", "--port", "8080"], False, None, ("app", "--port", "8080")),
        (["exec", "app", "--port", "8080"], False, None, ("app", "--port", "8080")),
        (["exec", "--watch", "--", "app"], True, None, ("app",)),
        (
            ["exec", "--watch", "--reload-signal", "hup", "--", "app", "--", "x"],
            True,
            "SIGHUP",
            ("app", "--", "x"),
        ),
        (["exec", "--project", "my-proj", "--", "--odd-name"], False, None, ("--odd-name",)),
    ],
)
def test_exec_builds_the_config_and_the_command_line(
    argv: list[str], config_watch: bool, reload_signal: str | None, program: tuple[str, ...]
) -> None:
    invocation = parse(argv, {})
    assert invocation.config is not None
    assert invocation.config.exec.watch is config_watch
    assert invocation.config.exec.reload_signal == reload_signal
    assert invocation.argv == program


@pytest.mark.parametrize("argv", [["exec"], ["exec", "--"], ["exec", "--watch"], ["exec", "--watch", "--"]])
def test_exec_without_a_command_is_a_usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "usage: secrets-agent exec [OPTIONS] -- CMD [ARGS...]" in err
    assert "a command to run is required" in err


def test_exec_without_a_command_as_a_real_process() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agent", "exec", "--watch"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "a command to run is required" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("owner", "flags"),
    [("dev", ["--dotenv", "x.env"]), ("exec", ["--watch"]), ("exec", ["--no-watch"])],
)
@pytest.mark.parametrize("other", ["init", "run", "check-config"])
def test_command_specific_flags_belong_to_their_command(
    owner: str, flags: list[str], other: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert parsed([owner, *flags]).config is not None
    with pytest.raises(SystemExit) as exited:
        parse([other, *flags], {})
    assert exited.value.code == 2
    owner_text = f"unknown option {flags[0]}: it is an option of {owner}, not of {other}"
    assert owner_text in capsys.readouterr().err


def test_config_problems_from_flags_name_the_flag_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    flags = ["--secret", "db", "--endpoint", "nowhere", "--signal", "SIGNOPE", "--concurrency", "0"]
    flags += ["--notify-url", "ftp://x", "--secret", "a=projects/p-123456/secrets/a", "--secret", "a=b"]
    assert main(["run", *flags]) == 2
    lines = [line.removeprefix("secrets-agent: ") for line in capsys.readouterr().err.splitlines()]
    assert lines == [
        "--concurrency: expected an integer of at least 1, got 0",
        "--endpoint: expected HOST:PORT (e.g. 127.0.0.1:8085 or [::1]:8085), got 'nowhere'",
        "--signal: unknown signal 'SIGNOPE' (expected a name such as SIGHUP, SIGUSR1, SIGTERM)",
        "--notify-url: expected an http:// or https:// URL with a host, got 'ftp://x'",
        "--secret[0]: expected NAME=REF such as db-password=projects/P/secrets/S, got 'db'",
        "--secret[2].ref: secret reference 'b': short reference needs a default project: set 'project' "
        "(or SECRETS_AGENT_PROJECT / GOOGLE_CLOUD_PROJECT), or write the full name projects/P/secrets/S",
        "--secret[2].name: duplicate name 'a': also used by --secret[1]",
    ]


def test_reload_signal_without_watch_is_explained(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["exec", "--reload-signal", "HUP", "--", "app"]) == 2
    assert capsys.readouterr().err == (
        "secrets-agent: exec.reload_signal: only used with exec.watch (--watch): without it the agent execs "
        "the command and is gone\n"
    )


# The one entry point each command calls, and the arguments it gets.
ENTRY_POINTS = {"init": "run_init", "run": "run_agent", "dev": "run_dev", "exec": "run_exec"}


@pytest.mark.parametrize("command", AGENT_COMMANDS)
def test_main_calls_the_commands_one_entry_point_and_returns_its_exit_code(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import agent.app

    calls: list[tuple[object, ...]] = []

    def record(*args: object) -> int:
        calls.append(args)
        return 7

    monkeypatch.setattr(agent.app, ENTRY_POINTS[command], record)
    argv = [command, "--project", "my-proj", "--secret", "db=db"]
    if command == "exec":
        argv += ["--", "app", "--flag"]
    assert main(argv) == 7
    expected_config = load_config(None, {}, {"project": "my-proj", "secrets": ["db=db"]})
    assert calls == ([(expected_config, ["app", "--flag"])] if command == "exec" else [(expected_config,)])


# command, flags its --help must list
HELP_FLAGS = {
    "init": ["-c FILE, --config FILE", "--timeout", "--concurrency", "--require-tmpfs", "--fallback-dotenv"],
    "run": ["--poll-interval", "--strategy", "--signal", "--pid-file", "--process", "--notify-url"],
    "dev": ["--dotenv FILE", "--notify-command", "--log-format"],
    "exec": ["--watch", "--reload-signal SIGNAL", "-- CMD [ARGS...]", "--endpoint HOST:PORT"],
}


@pytest.mark.parametrize("command", AGENT_COMMANDS)
def test_help_of_each_command(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for flag in [*HELP_FLAGS[command], "--secret NAME=REF", "--project", "SECRETS_AGENT_"]:
        assert flag in out
    if command != "dev":
        assert "--dotenv FILE" not in out


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in [*AGENT_COMMANDS, "check-config", "emulator"]:
        assert re.search(rf"^\s+{command}\s+\S", out, re.MULTILINE), command


def test_emulator_arguments_go_to_the_emulators_own_parser() -> None:
    invocation = parse(["emulator", "--grpc-port", "0", "--fault", "*:latency_ms=5"], {})
    assert invocation.command == "emulator"
    assert invocation.config is None
    assert invocation.args.argv == ["--grpc-port", "0", "--fault", "*:latency_ms=5"]
    options = parse_options(invocation.args.argv)
    assert options.grpc_port == 0
    assert options.fault_specs == ("*:latency_ms=5",)


# --- hostile and unlucky input: real `python -m agent check-config` processes ------------------------------


def check_config(
    *args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m agent check-config ARGS`` as a real process with a clean environment plus ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "agent", "check-config", *map(str, args)],
        capture_output=True,
        text=True,
        env={**clean_env(), **(env or {})},
        cwd=cwd,
        timeout=60,
        check=False,
    )


def assert_config_error(done: subprocess.CompletedProcess[str], *lines: str) -> None:
    """Exit 2, nothing on stdout, no traceback, and each of ``lines`` begins a line of stderr."""
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert done.stdout == ""
    assert "Traceback" not in done.stderr, done.stderr
    assert "Error:" not in done.stderr, done.stderr
    listed = [line.removeprefix("secrets-agent: ") for line in done.stderr.splitlines()]
    for start in lines:
        assert any(line.startswith(start) for line in listed), (start, listed)


# What Kubernetes injects for the Services `secrets-agent-webhook` (a named port) and `secrets-agent`
# (IPv6) of the pod's namespace: https://kubernetes.io/docs/concepts/services-networking/service/
SERVICE_LINKS = {
    "SECRETS_AGENT_WEBHOOK_SERVICE_HOST": "10.96.12.34",
    "SECRETS_AGENT_WEBHOOK_SERVICE_PORT": "443",
    "SECRETS_AGENT_WEBHOOK_SERVICE_PORT_HTTPS": "443",
    "SECRETS_AGENT_WEBHOOK_PORT": "tcp://10.96.12.34:443",
    "SECRETS_AGENT_WEBHOOK_PORT_443_TCP": "tcp://10.96.12.34:443",
    "SECRETS_AGENT_WEBHOOK_PORT_443_TCP_PROTO": "tcp",
    "SECRETS_AGENT_WEBHOOK_PORT_443_TCP_PORT": "443",
    "SECRETS_AGENT_WEBHOOK_PORT_443_TCP_ADDR": "10.96.12.34",
    "SECRETS_AGENT_SERVICE_HOST": "fd00:10:96::1",
    "SECRETS_AGENT_SERVICE_PORT": "8731",
    "SECRETS_AGENT_PORT": "tcp://[fd00:10:96::1]:8731",
    "SECRETS_AGENT_PORT_8731_UDP": "udp://[fd00:10:96::1]:8731",
    "SECRETS_AGENT_PORT_8731_UDP_PROTO": "udp",
    "SECRETS_AGENT_PORT_8731_UDP_PORT": "8731",
    "SECRETS_AGENT_PORT_8731_UDP_ADDR": "fd00:10:96::1",
}


def test_kubernetes_service_links_of_our_services_are_not_settings() -> None:
    done = check_config(EXAMPLE, env=SERVICE_LINKS)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_a_typo_next_to_service_links_is_still_an_error_with_a_suggestion() -> None:
    done = check_config(
        EXAMPLE,
        env={
            **SERVICE_LINKS,
            "SECRETS_AGENT_POLL_INTERVALL": "5m",
            "SECRETS_AGENT_SERVER_TOKN": "x" * 20,
            # Service-link names with values no Service link has: a guess at a setting, not a link.
            "SECRETS_AGENT_SERVER_PORT": "8730",
            "SECRETS_AGENT_PROBES_SERVICE_HOST": "probes.example",
        },
    )
    assert_config_error(
        done,
        "env SECRETS_AGENT_POLL_INTERVALL: unknown setting (did you mean SECRETS_AGENT_POLL_INTERVAL?)",
        "env SECRETS_AGENT_SERVER_TOKN: unknown setting (did you mean SECRETS_AGENT_SERVER_TOKEN?)",
        "env SECRETS_AGENT_SERVER_PORT: unknown setting",
        "env SECRETS_AGENT_PROBES_SERVICE_HOST: unknown setting",
    )
    assert len(done.stderr.splitlines()) == 4, done.stderr


def test_no_setting_looks_like_a_service_link() -> None:
    """A setting whose variable had a service link's shape would be silently ignored: none may."""
    from agent.config.loader import _SERVICE_LINK, _Reader

    reader = _Reader(env={}, flags={})
    reader.section(Config, {}, "", layered=True)
    assert reader.env_used
    assert [name for name in reader.env_used if _SERVICE_LINK.fullmatch(name)] == []


TOKEN_CANARY = "98127364519283746510"
VALUE_CANARY = "Pa55-w0rd!canary-7Qx2"


def test_credentials_in_a_bad_configuration_are_never_echoed(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"project: my-project\n"
        f"server: {{token: {TOKEN_CANARY}}}\n"  # a YAML number: the type error quoted it
        f"notify: {{url: 'ftp://user:{VALUE_CANARY}@hooks.example/x?key={VALUE_CANARY}'}}\n"
        f"secrets:\n"
        f"  - {{name: db, ref: '{VALUE_CANARY}'}}\n"  # a value pasted as its reference
        f"  - {{name: pin, ref: {TOKEN_CANARY}}}\n"
    )
    done = check_config(config, "--secret", VALUE_CANARY)
    assert_config_error(
        done,
        "server.token: expected a string, got a number",
        "notify.url: expected an http:// or https:// URL with a host, got 'ftp://hooks.example'",
        "secrets[0].ref: secret reference not shown (21 characters",
        "secrets[1].ref: expected a string, got a number",
        "--secret[0]: expected NAME=REF such as db-password=projects/P/secrets/S, got a string of 21 "
        "characters",
    )
    for canary in (TOKEN_CANARY, VALUE_CANARY, "Pa55", "w0rd", "canary-7Qx2"):
        assert canary not in done.stderr, done.stderr


def test_check_config_prints_the_notify_url_without_its_credentials(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"notify: {{url: 'https://user:{VALUE_CANARY}@hooks.example:8443/reload?sig={VALUE_CANARY}#{VALUE_CANARY}'}}\n"
    )
    done = check_config(config)
    assert done.returncode == 0, done.stderr
    assert VALUE_CANARY not in done.stdout
    printed = yaml.safe_load(done.stdout)["notify"]["url"]
    assert printed == "https://<redacted>@hooks.example:8443/reload?<redacted>#<redacted>"
    # Still a valid configuration, as the rest of the output is.
    again = tmp_path / "printed.yaml"
    again.write_text(done.stdout)
    assert check_config(again).returncode == 0


def test_deeply_nested_yaml_is_a_config_error(tmp_path: Path) -> None:
    deep = tmp_path / "deep.yaml"
    deep.write_text("notify: " + "[" * 5000 + "]" * 5000 + "\n")
    nested = tmp_path / "nested.yaml"
    nested.write_text("notify: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n")
    for file in (deep, nested):
        assert_config_error(check_config(file), f"{file}:1: invalid YAML: nested more than 64 levels deep")
    inline = check_config(env={"SECRETS_AGENT_CONFIG_YAML": "a: " + "[" * 5000 + "]" * 5000})
    assert_config_error(inline, "env SECRETS_AGENT_CONFIG_YAML:1: invalid YAML: nested more than 64 levels")


def test_a_regular_expression_nested_thousands_deep_is_a_config_error(tmp_path: Path) -> None:
    """re.compile recurses once per group: 3,000 of them used to end in a RecursionError traceback."""
    file = tmp_path / "agent.yaml"
    file.write_text('notify:\n  process: "' + "(" * 3000 + '"\n')
    assert_config_error(check_config(file), "notify.process: the regular expression is nested too deeply")


@pytest.mark.parametrize(
    ("yaml_text", "problem"),
    [
        ('output_dir: "/tmp/out\\0put"', "output_dir: must not contain a NUL byte (at character 9)"),
        ('env_file: "app\\0.env"', "env_file: must not contain a NUL byte"),
        ('server: {token_file: "/run/tok\\0en"}', "server.token_file: must not contain a NUL byte"),
        (
            'notify: {pid_file: "/run/app\\npid"}',
            "notify.pid_file: must not contain a control character (U+000A)",
        ),
        ('dotenv: {file: "\\x1b[2J.env"}', "dotenv.file: must not contain a control character (U+001B)"),
        ('fallback_dotenv: "a\\x7f"', "fallback_dotenv: must not contain a control character (U+007F)"),
        ('notify: {process: "app\\0"}', "notify.process: must not contain a NUL byte"),
        ('notify: {command: ["reload", "a\\0b"]}', "notify.command: argument 1: must not contain a NUL byte"),
        (
            'secrets: [{name: a, ref: projects/my-project/secrets/a, file: "a\\tb"}]',
            "secrets[0].file: must not",
        ),
        (
            'server: {allowed_hosts: ["app\\0.example"]}',
            "server.allowed_hosts: item 0: must not contain a NUL",
        ),
    ],
    ids=[
        "output_dir",
        "env_file",
        "token_file",
        "pid_file",
        "dotenv",
        "fallback",
        "process",
        "command",
        "file",
        "hosts",
    ],
)
def test_control_characters_in_paths_and_strings_are_config_errors(
    yaml_text: str, problem: str, tmp_path: Path
) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(yaml_text + "\n")
    assert_config_error(check_config(config), problem)


@pytest.mark.parametrize(
    ("setting", "problem"),
    [
        (
            "env_file: .notified",
            "env_file: '.notified' (in output_dir): reserved for the record of what the app",
        ),
        ("env_file: .token", "env_file: '.token' (in output_dir): reserved for the local endpoint's token"),
        ("env_file: ..data", "env_file: '..data' (in output_dir): names starting with '..' are reserved"),
        (
            "env_file: ..manifest.json",
            "env_file: '..manifest.json' (in output_dir): names starting with '..'",
        ),
        (
            "env_file: {out}/..2024_01_01/env",
            "env_file: '{out}/..2024_01_01/env' ('..2024_01_01/env' in output_dir",
        ),
        ("env_file: db", "env_file: 'db' (in output_dir) is the file of secret 'db'"),
        (
            "server: {{token_file: {out}/db}}",
            "server.token_file: '{out}/db' ('db' in output_dir) is the file of",
        ),
        (
            "server: {{token_file: {out}/..data/db}}",
            "server.token_file: '{out}/..data/db' ('..data/db' in output_dir)",
        ),
        (
            "notify: {{pid_file: {out}/.notified}}",
            "notify.pid_file: '{out}/.notified' ('.notified' in output_dir)",
        ),
    ],
    ids=[
        "notified",
        "token",
        "data",
        "manifest",
        "snapshot",
        "secret",
        "token-file",
        "token-data",
        "pid-file",
    ],
)
def test_files_the_agent_writes_cannot_be_configured_as_other_files(
    setting: str, problem: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"output_dir: {out}\nsecrets: [{{name: db, ref: projects/my-project/secrets/db}}]\n"
        + setting.format(out=out)
        + "\n"
    )
    assert_config_error(check_config(config), problem.format(out=out))


# --- habits of the command line: the real `secrets-agent` console script -------------------------------

SECRETS_AGENT = Path(sys.executable).parent / "secrets-agent"


def agent_process(
    *args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The installed ``secrets-agent ARGS`` with pipes for stdout and stderr (not a terminal)."""
    return subprocess.run(
        [str(SECRETS_AGENT), *map(str, args)],
        capture_output=True,
        text=True,
        env={**clean_env(), **(env or {})},
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )


def on_a_terminal(*args: str | Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    """``secrets-agent ARGS`` with stdout and stderr on one pseudo-terminal: (exit code, what it showed)."""
    import pty

    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen(
            [str(SECRETS_AGENT), *map(str, args)],
            stdin=subprocess.DEVNULL,
            stdout=terminal,
            stderr=terminal,
            env={**clean_env(), "COLUMNS": "200", **(env or {})},
        )
    finally:
        os.close(terminal)
    shown = bytearray()
    try:
        while chunk := os.read(controller, 65536):
            shown += chunk
    except OSError:  # EIO: every copy of the terminal's other end is closed, all was read
        pass
    finally:
        os.close(controller)
    return process.wait(60), shown.decode().replace("\r\n", "\n")


def assert_usage_error(done: subprocess.CompletedProcess[str], message: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    last = done.stderr.splitlines()[-1]
    assert last.endswith(f"error: {message}") or last == f"secrets-agent: {message}", done.stderr


# 1. "did you mean"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["init", "--ouput-dir", "x"], "unknown option --ouput-dir; did you mean --output-dir?"),
        (["init", "--ouput-dir=/x"], "unknown option --ouput-dir; did you mean --output-dir?"),
        (["run", "--pol-interval", "5m"], "unknown option --pol-interval; did you mean --poll-interval?"),
        (["exec", "--watchh", "--", "app"], "unknown option --watchh; did you mean --watch?"),
        (["check-config", "--projet", "p"], "unknown option --projet; did you mean --project?"),
        (["rotate", "--dry-rn", "all"], "unknown option --dry-rn; did you mean --dry-run?"),
        (["rotation", "status", "--projct", "p"], "unknown option --projct; did you mean --project?"),
        # Two required options are missing too: the typo is the likelier mistake, and is named first.
        (["webhook", "--lisen", "127.0.0.1:1"], "unknown option --lisen; did you mean --listen?"),
        (["initt"], "unknown command 'initt'; did you mean init?"),
        (["chek-config"], "unknown command 'chek-config'; did you mean check-config?"),
        (["rotation", "stauts"], "unknown command 'stauts'; did you mean status?"),
        (["check-config", "--output", "jsn"], "argument --output: invalid choice 'jsn'; did you mean json?"),
        (["init", "--dotenv", "x.env"], "unknown option --dotenv: it is an option of dev, not of init"),
        (["--verison"], "unknown option --verison; did you mean --version?"),
        (
            ["--project", "my-proj", "init"],
            "--project is an option of the commands: it goes after one, as in: "
            "secrets-agent init --project ...",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) and len(value) < 30 else None,
)
def test_a_mistyped_command_line_gets_a_suggestion_and_exit_2(argv: list[str], message: str) -> None:
    assert_usage_error(agent_process(*argv), message)


def test_a_mistyped_option_with_a_value_never_echoes_the_value() -> None:
    done = agent_process("init", f"--tokn={VALUE_CANARY}", f"--secrett={TOKEN_CANARY}")
    assert_usage_error(done, "unknown option --tokn (see secrets-agent init --help)")
    assert VALUE_CANARY not in done.stderr
    assert TOKEN_CANARY not in done.stderr


def test_huge_or_hostile_words_are_quoted_short_and_escaped() -> None:
    huge = "--output-dirr" + "r" * 100_000  # one argument may be 128 KiB
    done = agent_process("init", huge)
    assert done.returncode == 2
    assert len(done.stderr) < 2000, len(done.stderr)
    assert "unknown option --output-dirrrr" in done.stderr
    escape = agent_process("init", "\x1b[2J\x1b]0;owned\x07", "x" * 100_000)
    assert escape.returncode == 2
    assert "\x1b" not in escape.stderr
    assert "unexpected argument '\\x1b[2J\\x1b]0;owned\\x07' (and 1 more argument)" in escape.stderr
    value = agent_process("check-config", "--output", "j" * 100_000)
    assert value.returncode == 2
    assert len(value.stderr) < 2000


def test_the_suggestion_is_looked_up_among_the_parsers_own_names_only() -> None:
    from agent.cli import closest

    options = [f.flag for f in ALL_FLAGS]
    assert closest("--ouput-dir", options) == "--output-dir"
    assert closest("--zzzzzz", options) is None
    # Only a bounded prefix of a huge word is compared: a megabyte costs what sixty characters do.
    assert closest("--output-dir" + "x" * 1_000_000, options) is None


# 2. -c/--config everywhere, and the wrong kind of file


def test_check_config_takes_the_file_as_c_too(tmp_path: Path) -> None:
    assert parse(["check-config", "-c", str(EXAMPLE)], {}).config == load_config(EXAMPLE, {}, {})
    assert parse(["check-config", "--config", str(EXAMPLE)], {}).config == load_config(EXAMPLE, {}, {})
    twice = agent_process("check-config", EXAMPLE, "-c", EXAMPLE)
    assert_usage_error(twice, "the configuration file is given twice: as FILE and as -c FILE")


@pytest.mark.parametrize("argv", [["rotate", "all"], ["rotation", "status"]])
def test_rotation_commands_take_their_file_as_c(argv: list[str], tmp_path: Path) -> None:
    file = tmp_path / "rotation.yaml"
    assert parse([*argv, "-c", str(file)], {}).args.config == file
    assert parse([*argv, "--config", str(file)], {}).args.config == file


AGENT_CONFIG = """\
output_dir: /run/secrets
templates: []
secrets:
  - {name: db, ref: projects/my-project/secrets/db-password}
"""
ROTATION_CONFIG = """\
project: my-project
topics: [projects/my-project/topics/secret-events]
secrets:
  db-password: {provider: password}
"""


@pytest.mark.parametrize("argv", [["rotate", "all"], ["rotation", "status"]])
def test_rotate_given_an_agent_configuration_says_so(argv: list[str], tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(AGENT_CONFIG)
    done = agent_process(*argv, "-c", config, "--dotenv", tmp_path / ".env")
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(
        f"secrets-agent: {config}: this is an agent configuration (output_dir, templates, secrets as a list)"
    )
    assert (
        "rotate and rotation status expect a rotation config: project, topics, subscription and secrets"
        in line
    )
    assert "unknown key" not in line


def test_a_rotation_config_with_a_typo_is_not_taken_for_an_agent_configuration(tmp_path: Path) -> None:
    config = tmp_path / "rotation.yaml"
    config.write_text("projekt: my-project\nsecrets:\n  db: {provider: password}\n")
    done = agent_process("rotate", "all", "-c", config, "--dotenv", tmp_path / ".env")
    assert done.returncode == 2
    assert "projekt: unknown key (did you mean 'project'?)" in done.stderr
    assert "agent configuration" not in done.stderr


@pytest.mark.parametrize("command", ["init", "run", "check-config"])
def test_an_agent_command_given_a_rotation_config_says_so(command: str, tmp_path: Path) -> None:
    config = tmp_path / "rotation.yaml"
    config.write_text(ROTATION_CONFIG)
    done = agent_process(command, "-c", config)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(
        f"secrets-agent: {config}: this is a rotation config (topics, secrets by secret id)"
    )
    assert "`secrets-agent rotate -c FILE`" in line


def test_the_rotation_keys_the_agent_knows_are_the_rotation_configs() -> None:
    from agent.cli import ROTATION_CONFIG_KEYS
    from agent.rotation.config import TOP_LEVEL_KEYS

    assert ROTATION_CONFIG_KEYS == TOP_LEVEL_KEYS


# 3. init with nothing to do


def test_init_with_no_secret_configured_is_an_error(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = agent_process("init", "--output-dir", out)
    assert_usage_error(
        done,
        "init: nothing to fetch: no secrets are configured; list them under `secrets:` in a config file "
        "(-c FILE) or pass --secret NAME=REF (or --allow-empty: succeed with nothing to write)",
    )
    assert not out.exists()
    empty = tmp_path / "agent.yaml"
    empty.write_text("project: my-project\nsecrets: []\n")
    from_file = agent_process("init", "-c", empty, "--output-dir", out)
    assert from_file.returncode == 2
    assert f"init: nothing to fetch: {empty} lists no secrets and no --secret is given" in from_file.stderr
    from_env = agent_process("init", "--output-dir", out, env={"SECRETS_AGENT_CONFIG": str(empty)})
    assert f"init: nothing to fetch: {empty} lists no secrets" in from_env.stderr
    # Secrets from a file or from flags need no --allow-empty.
    assert parse(["init", "--secret", "db=projects/my-project/secrets/db"], {}).config is not None
    assert parse(["init", "-c", str(EXAMPLE)], {}).config == load_config(EXAMPLE, {}, {})


def test_init_with_allow_empty_writes_an_empty_snapshot_and_exits_0(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # Nothing is fetched: the emulator address is never dialled.
    done = agent_process("init", "--allow-empty", "--output-dir", out, "--endpoint", "127.0.0.1:9")
    assert done.returncode == 0, done.stderr
    assert [path.name for path in (out / "..data").iterdir() if not path.name.startswith("..")] == []
    assert parse(["init", "--allow-empty"], {}).config == Config()


# 4. text for people on a terminal, data for programs otherwise


def test_check_config_on_a_terminal_prints_yaml_and_a_verdict() -> None:
    code, shown = on_a_terminal("check-config", EXAMPLE)
    assert code == 0, shown
    *document, verdict = shown.rstrip("\n").splitlines()
    assert verdict == f"# OK: a valid configuration ({EXAMPLE}): 8 secrets, 2 templates"
    assert yaml.safe_load("\n".join(document)) == load_config(EXAMPLE, {}, {}).to_dict()


def test_check_config_in_a_pipe_prints_the_yaml_alone_or_json() -> None:
    piped = agent_process("check-config", EXAMPLE)
    assert piped.returncode == 0
    assert "# OK" not in piped.stdout
    assert yaml.safe_load(piped.stdout) == load_config(EXAMPLE, {}, {}).to_dict()
    as_json = agent_process("check-config", EXAMPLE, "--output", "json")
    assert json.loads(as_json.stdout) == load_config(EXAMPLE, {}, {}).to_dict()
    as_text = agent_process(
        "check-config", "--output", "text", "--secret", "db=projects/my-project/secrets/db"
    )
    assert as_text.stdout.splitlines()[-1] == (
        "# OK: a valid configuration (flags and environment only): 1 secret, 0 templates"
    )


def test_a_reader_that_stops_early_gets_no_traceback(tmp_path: Path) -> None:
    # `check-config | head -c 1`: the pipe closes while the normalised configuration is still being written
    # (more of it than a pipe's buffer holds, so the write does fail).
    config = tmp_path / "agent.yaml"
    entry = "  - {{name: s{0:04d}, ref: projects/my-project/secrets/s{0:04d}}}\n"
    entries = "".join(entry.format(i) for i in range(1500))
    config.write_text("secrets:\n" + entries)
    pipeline = subprocess.run(
        ["bash", "-c", '"$0" check-config "$1" | head -c 1', str(SECRETS_AGENT), str(config)],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert pipeline.stdout == "p"  # of "project: null", the first line of the YAML
    assert "Traceback" not in pipeline.stderr, pipeline.stderr
    assert "BrokenPipeError" not in pipeline.stderr, pipeline.stderr


@pytest.fixture
def typed_dotenv(tmp_path: Path) -> tuple[Path, Path]:
    """A .env with two secrets, and a rotation config that gives them types (no Secret Manager needed)."""
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"DB={VALUE_CANARY}\nAPI={VALUE_CANARY}-api\n")
    rotation = tmp_path / "rotation.yaml"
    rotation.write_text("secrets:\n  DB: {type: database}\n  API: {type: api-key}\n")
    return dotenv, rotation


def test_rotation_status_on_a_terminal_is_a_table_without_json_audit_lines(
    typed_dotenv: tuple[Path, Path],
) -> None:
    dotenv, rotation = typed_dotenv
    code, shown = on_a_terminal("rotation", "status", "--dotenv", dotenv, "-c", rotation)
    assert code == 0, shown
    lines = shown.splitlines()
    assert lines[0].split() == ["SECRET", "TYPE", "VERSION", "AGE", "NEXT", "DUE", "OVERDUE", "NOTE"]
    assert [line.split()[:2] for line in lines[1:3]] == [["API", "api-key"], ["DB", "database"]]
    assert lines[-1] == "2 secrets under rotation, none overdue"
    assert "{" not in shown
    assert "agent.audit" not in shown
    assert VALUE_CANARY not in shown
    # Asked for, the audit events show, as text lines on the terminal.
    code, verbose = on_a_terminal(
        "rotation", "status", "--dotenv", dotenv, "-c", rotation, "--log-level", "info"
    )
    assert code == 0
    assert "agent.audit: secrets api: list * ok" in verbose
    assert '{"' not in verbose


def test_rotation_status_in_a_pipe_is_json_with_json_audit_lines(typed_dotenv: tuple[Path, Path]) -> None:
    dotenv, rotation = typed_dotenv
    done = agent_process("rotation", "status", "--dotenv", dotenv, "-c", rotation)
    assert done.returncode == 0, done.stderr
    assert [row["secret"] for row in json.loads(done.stdout)["secrets"]] == ["API", "DB"]
    audit = [json.loads(line) for line in done.stderr.splitlines()]
    assert {line["logger"] for line in audit} == {"agent.audit"}
    as_text = agent_process("rotation", "status", "--dotenv", dotenv, "-c", rotation, "--output", "text")
    assert as_text.stdout.splitlines()[0].startswith("SECRET  TYPE")
    code, forced = on_a_terminal("rotation", "status", "--dotenv", dotenv, "-c", rotation, "--output", "json")
    assert code == 0
    assert json.loads(forced)["secrets"][0]["secret"] == "API"


# 5. shell completion


@pytest.mark.parametrize("shell", ["bash", "zsh", "tcsh"])
def test_completion_prints_a_script_from_the_real_parser(shell: str) -> None:
    done = agent_process("completion", shell)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    for word in ("output-dir", "allow-empty", "check-config", "dry-run", "tls-cert-file", "status"):
        assert word in done.stdout, word  # tcsh's script lists the long options without their dashes


def test_the_bash_completion_completes_commands_options_and_choices(tmp_path: Path) -> None:
    script = tmp_path / "secrets-agent.bash"
    script.write_text(agent_process("completion", "bash").stdout)

    def complete(*words: str) -> list[str]:
        line = " ".join(words)
        shell = (
            f"source {script}; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; COMP_LINE='{line}'; "
            'COMP_POINT=${#COMP_LINE}; _shtab_secrets_agent; printf "%s\\n" "${COMPREPLY[@]}"'
        )
        done = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=60, check=True)
        return done.stdout.split()

    assert complete("secrets-agent", "rot") == ["rotate", "rotation"]
    assert complete("secrets-agent", "init", "--ou") == ["--output-dir"]
    assert complete("secrets-agent", "rotation", "status", "--output", "''") == ["text", "json", "table"]
    assert complete("secrets-agent", "completion", "''") == ["bash", "zsh", "tcsh"]


def test_completion_for_an_unknown_shell_is_a_usage_error() -> None:
    assert_usage_error(
        agent_process("completion", "bsh"), "argument shell: invalid choice 'bsh'; did you mean bash?"
    )


# 6. grammar


def test_counts_are_singular_or_plural() -> None:
    assert (
        agent_process("check-config", "--output", "text")
        .stdout.splitlines()[-1]
        .endswith("0 secrets, 0 templates")
    )


# 7. help: a description and examples for every command


HELP_COMMANDS = [
    [],
    ["init"],
    ["run"],
    ["dev"],
    ["exec"],
    ["check-config"],
    ["completion"],
    ["rotate"],
    ["rotation"],
    ["rotation", "status"],
    ["webhook"],
]


@pytest.mark.parametrize("command", HELP_COMMANDS, ids=lambda words: " ".join(words) or "program")
def test_every_help_has_a_description_and_examples(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    description = out.split("\n\n")[1]
    assert len(description.split()) >= 8, out  # a paragraph, not a title
    examples = out.split("\nexamples:\n", 1)[1].splitlines()
    name = " ".join(["secrets-agent", *command[:1]])
    assert examples, out
    assert all("secrets-agent" in line for line in examples), out
    assert any(line.startswith(f"  {name}") for line in examples), out


@pytest.mark.parametrize("command", HELP_COMMANDS[1:], ids=" ".join)
def test_every_example_in_the_help_parses(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Each example line is a valid command line for its parser (files it names aside)."""
    import shlex

    with pytest.raises(SystemExit):
        main([*command, "--help"])
    examples = capsys.readouterr().out.split("\nexamples:\n", 1)[1].splitlines()
    for example in examples:
        words = shlex.split(example.split("  #")[0].split(" > ")[0].split(" | ")[0].split(" && ")[0])
        if words[0] == "source":
            continue
        assert words[0] == "secrets-agent"
        words = [w for w in words[1:] if not w.startswith("<(")]
        if words[0] in ("rotate", "rotation", "webhook", "completion"):
            parse(words, {})  # the parser accepts it (a SystemExit would fail the test)
        else:
            with contextlib.suppress(ConfigError):  # a file that does not exist here
                parse([*words, *(["--allow-empty"] if words[0] == "init" else [])], {})
