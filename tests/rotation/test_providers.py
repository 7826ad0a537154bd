"""Rotation providers without a database: registry, settings errors, labels, symmetric, password, command
(real child processes), manual (real files and a real stdin)."""

from __future__ import annotations

import base64
import json
import logging
import os
import string
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.rotation.providers.base import (
    ProviderConfigError,
    ProviderError,
    RotationContext,
    ValidationFailed,
)
from agent.rotation.providers.command import CommandProvider
from agent.rotation.providers.manual import ManualProvider
from agent.rotation.providers.password import DEFAULT_SYMBOLS, PasswordPolicy, PasswordProvider
from agent.rotation.providers.postgres import PostgresProvider
from agent.rotation.providers.registry import (
    PROVIDERS,
    build_provider,
    default_settings_for,
    settings_from_labels,
)
from agent.rotation.providers.symmetric import ENCODINGS, SymmetricProvider, decode, encode
from agent.secrets.types import SecretType
from testing.apps import wait_until

CANARY = b"canary-provider-7Qx2-if-you-read-this-it-leaked"
PY = sys.executable


def ctx(
    old_value: bytes | None = CANARY,
    *,
    secret_id: str = "billing-key",
    secret_type: SecretType | None = SecretType.API_KEY,
    old_version: str | None = "4",
) -> RotationContext:
    return RotationContext(secret_id, secret_type, old_version, old_value)


def py(code: str) -> list[str]:
    """argv running ``code`` in a fresh Python (a real child process, no shell)."""
    return [PY, "-c", textwrap.dedent(code)]


@pytest.fixture(autouse=True)
def _all_logs(caplog: pytest.LogCaptureFixture) -> Any:
    """Every test captures every logger at DEBUG and proves the canary never reached a log line."""
    caplog.set_level(logging.DEBUG)
    yield
    assert CANARY.decode() not in caplog.text


# --- registry --------------------------------------------------------------------------------------------


def test_every_provider_is_registered() -> None:
    assert set(PROVIDERS) == {"symmetric", "password", "postgres", "command", "manual"}


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"provider": "symmetric"}, SymmetricProvider),
        ({"provider": "password", "length": 20}, PasswordProvider),
        ({"provider": "postgres", "role": "app", "admin_dsn_env": "PG_ADMIN_DSN"}, PostgresProvider),
        ({"provider": "command", "generate": ["mint"], "validate": ["check"]}, CommandProvider),
        ({"provider": "manual", "file": "/run/new-key"}, ManualProvider),
    ],
)
def test_build_provider(settings: dict[str, Any], expected: type) -> None:
    provider = build_provider(settings, SecretType.API_KEY)
    assert isinstance(provider, expected)
    assert provider.name == settings["provider"]


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({}, "'provider' is required"),
        ({"provider": "vault"}, "unknown provider 'vault'"),
        ({"provider": 7}, "unknown provider 7"),
        ({"provider": "symmetric", "length": 8}, "'length' must be a whole number from 16 to 1024 (got 8)"),
        ({"provider": "symmetric", "length": 2048}, "'length' must be a whole number from 16 to 1024"),
        ({"provider": "symmetric", "length": "32"}, "'length' must be a whole number"),
        ({"provider": "symmetric", "length": True}, "'length' must be a whole number"),
        (
            {"provider": "symmetric", "encoding": "base32"},
            "'encoding' must be one of base64, base64url, hex, raw",
        ),
        ({"provider": "symmetric", "lenght": 32}, "unknown setting 'lenght' (known: encoding, length)"),
        ({"provider": "password", "length": 15}, "'length' must be a whole number from 16"),
        ({"provider": "password", "symbols": "a!"}, "'symbols' may only hold ASCII punctuation (got 'a')"),
        ({"provider": "password", "symbols": "!!"}, "'symbols' lists a character twice"),
        ({"provider": "password", "symbols": 3}, "'symbols' must be a non-empty string"),
        ({"provider": "postgres", "admin_dsn_env": "X"}, "'role' is required"),
        ({"provider": "postgres", "role": "app"}, "'admin_dsn_env' or 'admin_dsn_file' (exactly one)"),
        (
            {"provider": "postgres", "role": "app", "admin_dsn_env": "X", "admin_dsn_file": "/f"},
            "'admin_dsn_env' or 'admin_dsn_file' (exactly one)",
        ),
        (
            {"provider": "postgres", "role": "r" * 64, "admin_dsn_env": "X"},
            "'role' must be a role name of at most 63",
        ),
        (
            {"provider": "postgres", "role": "app", "admin_dsn_env": "X", "format": "uri"},
            "'format' must be one of",
        ),
        (
            {"provider": "postgres", "role": "app", "admin_dsn_env": "X", "dsn": "mysql://h/db"},
            "'dsn' is not a postgresql:// URL",
        ),
        (
            {"provider": "postgres", "role": "app", "admin_dsn_env": "X", "dsn": "postgresql://other@h/db"},
            "'dsn' logs in as 'other', not the role 'app'",
        ),
        (
            {"provider": "postgres", "role": "app", "admin_dsn_env": "X", "connect_timeout": 0},
            "'connect_timeout' must be a number above 0",
        ),
        ({"provider": "command", "validate": ["check"]}, "'generate' is required: a command as a list"),
        ({"provider": "command", "generate": ["mint"]}, "'validate' is required"),
        (
            {"provider": "command", "generate": [], "validate": ["c"]},
            "'generate' must be a command as a non-empty",
        ),
        ({"provider": "command", "generate": ["m", 1], "validate": ["c"]}, "'generate' must be a command"),
        (
            {"provider": "command", "generate": ["m"], "validate": ["c"], "timeout": -1},
            "'timeout' must be a number",
        ),
        (
            {"provider": "command", "generate": ["m"], "validate": ["c"], "shell": True},
            "unknown setting 'shell'",
        ),
        ({"provider": "manual", "file": ""}, "'file' must be a non-empty string"),
    ],
)
def test_config_errors_name_the_setting(settings: dict[str, Any], named: str) -> None:
    with pytest.raises(ProviderConfigError) as raised:
        build_provider(settings, SecretType.API_KEY)
    assert named in str(raised.value)


def test_config_error_lists_every_problem_at_once() -> None:
    with pytest.raises(ProviderConfigError) as raised:
        build_provider({"provider": "symmetric", "length": 1, "encoding": "rot13", "size": 3}, None)
    message = str(raised.value)
    assert message.startswith("rotation provider 'symmetric': ")
    assert "'length'" in message
    assert "'encoding'" in message
    assert "'size'" in message
    assert "\n" not in message


def test_config_errors_never_quote_credentials() -> None:
    """A DSN with a password, or a command written as one string with a token, is refused without echo."""
    secret = CANARY.decode()
    for bad in (
        {
            "provider": "postgres",
            "role": "app",
            "admin_dsn_env": "X",
            "dsn": f"postgresql://app:{secret}@h/db",
        },
        {"provider": "command", "generate": f"mint --token {secret}", "validate": ["check"]},
    ):
        with pytest.raises(ProviderConfigError) as raised:
            build_provider(bad, None)
        assert secret not in str(raised.value)
        assert secret[:12] not in str(raised.value)


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://admin:{secret}/x@db:5432/app",
        "postgresql://admin:{secret}?x@db:5432/app",
        "postgresql://admin:12/{secret}@db/app",
    ],
)
def test_a_password_with_an_unencoded_delimiter_is_refused_without_echo(
    monkeypatch: pytest.MonkeyPatch, dsn: str
) -> None:
    """``user:pa/ss@host`` would otherwise leave ``user:pa`` where the host is: in every message and log."""
    secret = CANARY.decode()
    monkeypatch.setenv("PG_ADMIN_TEST", dsn.format(secret=secret))
    with pytest.raises(ProviderConfigError) as raised:
        PostgresProvider("app", admin_dsn_env="PG_ADMIN_TEST")._admin_url()
    assert "admin:" not in str(raised.value)
    assert secret[:12] not in str(raised.value)


def test_tls_certificates_are_never_rotated_by_a_provider() -> None:
    with pytest.raises(ProviderConfigError, match="rotated elsewhere"):
        build_provider({"provider": "symmetric"}, SecretType.TLS_CERT)


@pytest.mark.parametrize(
    ("secret_type", "expected"),
    [
        (SecretType.ENCRYPTION_KEY, {"provider": "symmetric", "length": 32, "encoding": "base64"}),
        (SecretType.JWT_SECRET, {"provider": "symmetric", "length": 64, "encoding": "base64url"}),
        (SecretType.SESSION_SECRET, {"provider": "symmetric", "length": 32, "encoding": "base64url"}),
        (SecretType.DATABASE, None),
        (SecretType.API_KEY, None),
        (SecretType.OAUTH_TOKEN, None),
        (SecretType.TLS_CERT, None),
        (None, None),
    ],
)
def test_default_settings_for(secret_type: SecretType | None, expected: dict[str, Any] | None) -> None:
    assert default_settings_for(secret_type) == expected


@pytest.mark.parametrize(
    "secret_type", [SecretType.ENCRYPTION_KEY, SecretType.JWT_SECRET, SecretType.SESSION_SECRET]
)
async def test_defaults_build_and_produce_valid_values(secret_type: SecretType) -> None:
    settings = default_settings_for(secret_type)
    assert settings is not None
    provider = build_provider(settings, secret_type)
    value = await provider.generate(ctx(secret_type=secret_type))
    await provider.validate(ctx(secret_type=secret_type), value)
    assert isinstance(provider, SymmetricProvider)
    assert len(decode(value, provider.encoding)) == settings["length"]


def test_default_settings_are_copies() -> None:
    first = default_settings_for(SecretType.JWT_SECRET)
    assert first is not None
    first["length"] = 16
    assert default_settings_for(SecretType.JWT_SECRET) == {
        "provider": "symmetric",
        "length": 64,
        "encoding": "base64url",
    }


@pytest.mark.parametrize(
    ("labels", "secret_type", "expected"),
    [
        ({}, SecretType.JWT_SECRET, None),
        ({"secret-type": "jwt-secret", "team": "payments"}, SecretType.JWT_SECRET, None),
        ({"rotation-provider": "password"}, SecretType.DATABASE, {"provider": "password"}),
        (
            {"rotation-provider": "symmetric", "rotation-length": "48", "rotation-encoding": "hex"},
            None,
            {"provider": "symmetric", "length": 48, "encoding": "hex"},
        ),
        (
            {"rotation-length": "128"},
            SecretType.JWT_SECRET,
            {"provider": "symmetric", "length": 128, "encoding": "base64url"},
        ),
        (
            {"rotation-encoding": "hex"},
            SecretType.ENCRYPTION_KEY,
            {"provider": "symmetric", "length": 32, "encoding": "hex"},
        ),
        ({"rotation-provider": "manual"}, SecretType.OAUTH_TOKEN, {"provider": "manual"}),
    ],
)
def test_settings_from_labels(
    labels: dict[str, str], secret_type: SecretType | None, expected: dict[str, Any] | None
) -> None:
    assert settings_from_labels(labels, secret_type) == expected
    if expected is not None:
        build_provider(expected, secret_type)  # what labels can express, builds


@pytest.mark.parametrize(
    ("labels", "secret_type", "named"),
    [
        ({"rotation-length": "64"}, SecretType.API_KEY, "label rotation-provider is missing"),
        ({"rotation-length": "64"}, None, "label rotation-provider is missing"),
        ({"rotation-provider": "symmetric", "rotation-length": "big"}, None, "label rotation-length"),
        ({"rotation-provider": "symmetric", "rotation-length": "-1"}, None, "label rotation-length"),
    ],
)
def test_bad_labels_are_named(labels: dict[str, str], secret_type: SecretType | None, named: str) -> None:
    with pytest.raises(ProviderConfigError, match=named):
        settings_from_labels(labels, secret_type)


def test_label_values_still_go_through_the_settings_checks() -> None:
    settings = settings_from_labels({"rotation-provider": "symmetric", "rotation-length": "8"})
    assert settings is not None
    with pytest.raises(ProviderConfigError, match="'length' must be a whole number from 16 to 1024"):
        build_provider(settings, SecretType.ENCRYPTION_KEY)


# --- symmetric -------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(length=st.integers(16, 1024), encoding=st.sampled_from(ENCODINGS))
async def test_symmetric_values_decode_to_their_length(length: int, encoding: Any) -> None:
    provider = SymmetricProvider(length, encoding)
    value = await provider.generate(ctx(secret_type=SecretType.ENCRYPTION_KEY))
    await provider.validate(ctx(), value)
    assert len(decode(value, encoding)) == length
    if encoding != "raw":
        assert value.isascii()
        assert b"\n" not in value
    if encoding == "base64url":
        assert b"=" not in value  # as secrets.token_urlsafe: no padding
        assert base64.urlsafe_b64decode(value + b"=" * (-len(value) % 4)) == decode(value, encoding)


@settings(max_examples=80, deadline=None)
@given(raw=st.binary(min_size=0, max_size=300), encoding=st.sampled_from(ENCODINGS))
def test_encode_decode_round_trip(raw: bytes, encoding: Any) -> None:
    assert decode(encode(raw, encoding), encoding) == raw


@settings(max_examples=60, deadline=None)
@given(
    length=st.integers(16, 200),
    other=st.integers(0, 250),
    encoding=st.sampled_from(ENCODINGS),
)
async def test_symmetric_rejects_other_lengths(length: int, other: int, encoding: Any) -> None:
    provider = SymmetricProvider(length, encoding)
    value = encode(os.urandom(other), encoding)
    if other == length:
        await provider.validate(ctx(), value)
    else:
        with pytest.raises(ValidationFailed, match=f"decodes to {other} bytes, expected {length}"):
            await provider.validate(ctx(), value)


@pytest.mark.parametrize(
    ("encoding", "value", "reason"),
    [
        ("base64", base64.b64encode(bytes(32)) + b"\n", "is not valid base64"),
        ("base64", base64.b64encode(bytes(32)).rstrip(b"="), "is not valid base64"),
        ("base64", base64.urlsafe_b64encode(b"\xfb" * 32), "is not valid base64"),
        ("base64url", base64.b64encode(b"\xfb" * 32), "is not valid base64url"),
        ("base64url", b"A" * 43 + b"!", "is not valid base64url"),
        ("hex", bytes(32).hex().encode() + b"0", "is not valid hex"),
        ("hex", b"zz" * 32, "is not valid hex"),
        ("raw", bytes(31), "decodes to 31 bytes, expected 32"),
    ],
)
async def test_symmetric_validation_reasons(encoding: Any, value: bytes, reason: str) -> None:
    with pytest.raises(ValidationFailed) as raised:
        await SymmetricProvider(32, encoding).validate(ctx(secret_id="enc-key"), value)
    assert reason in str(raised.value)
    assert "'enc-key'" in str(raised.value)


async def test_symmetric_validation_accepts_padded_base64url_and_uppercase_hex() -> None:
    raw = os.urandom(32)
    await SymmetricProvider(32, "base64url").validate(ctx(), base64.urlsafe_b64encode(raw))
    await SymmetricProvider(32, "hex").validate(ctx(), raw.hex().upper().encode())


async def test_symmetric_values_differ_and_apply_rollback_change_nothing() -> None:
    provider = SymmetricProvider()
    values = {await provider.generate(ctx()) for _ in range(20)}
    assert len(values) == 20
    value = values.pop()
    await provider.apply(ctx(), value)
    await provider.rollback(ctx(), value)
    await provider.rollback(ctx(None), value)  # twice, and with no old value: still fine
    await provider.validate(ctx(), value)


# --- password --------------------------------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(
    length=st.integers(16, 300),
    symbols=st.sets(st.sampled_from(string.punctuation)).map("".join),
)
async def test_passwords_have_every_class_and_only_the_alphabet(length: int, symbols: str) -> None:
    policy = PasswordPolicy(length, symbols)
    provider = PasswordProvider(policy)
    value = await provider.generate(ctx())
    await provider.validate(ctx(), value)
    text = value.decode("ascii")
    assert len(text) == length
    assert set(text) <= set(string.ascii_letters + string.digits + symbols)
    assert any(c.islower() for c in text)
    assert any(c.isupper() for c in text)
    assert any(c.isdigit() for c in text)
    assert any(c in symbols for c in text) == bool(symbols)


def test_default_password_symbols_need_no_quoting_in_urls() -> None:
    from urllib.parse import quote

    assert quote(DEFAULT_SYMBOLS, safe="") == DEFAULT_SYMBOLS


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"aB3-" * 4 + b"x", "has 17 characters, expected 16"),
        (b"ab3-" * 4, "has no uppercase letter"),
        (b"AB3-" * 4, "has no lowercase letter"),
        (b"aBc-" * 4, "has no digit"),
        (b"aB3x" * 4, "has no symbol"),
        (b"aB3!" * 4, "outside the alphabet"),
        (b"aB3-" * 3 + b"aB3\xc3", "is not ASCII"),
    ],
)
async def test_password_validation_reasons(value: bytes, reason: str) -> None:
    with pytest.raises(ValidationFailed) as raised:
        await PasswordProvider(PasswordPolicy(16)).validate(ctx(), value)
    assert reason in str(raised.value)
    assert value.decode("utf-8", "replace") not in str(raised.value)


# --- command ---------------------------------------------------------------------------------------------


async def test_command_generate_strips_one_newline_and_sees_the_rotation_env() -> None:
    provider = CommandProvider(
        py(
            """
            import os, sys
            sys.stdout.write("key-" + os.environ["SECRET_ID"] + "-" + os.environ["SECRET_TYPE"]
                             + "-" + os.environ["OLD_VERSION"] + "\\n\\n")
            """
        ),
        ["true"],
    )
    value = await provider.generate(ctx(secret_id="billing-key", old_version="4"))
    assert value == b"key-billing-key-api-key-4\n"  # one newline stripped, as $(...) would not keep two


@pytest.mark.parametrize("step", ["generate", "validate"])
async def test_command_programs_do_not_inherit_the_agents_credentials(
    step: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ADMIN_DSN and the agent's credential settings stay with the agent (the postgres provider reads the
    DSN in-process); a credentials file's name and the rotation variables still reach the program."""
    withheld = {
        "ADMIN_DSN": "postgresql://admin:dsn-canary@db/postgres",
        "SECRETS_AGENT_SERVER_TOKEN": "token-canary-4f1b2b0b822cd15d",
        "SECRETS_AGENT_CONFIG_YAML": "server: {token: yaml-canary-0b822cd15d6c}",
    }
    for name, value in withheld.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/var/run/adc.json")
    out = tmp_path / "env.json"
    dump = py(
        f"import json, os, sys; open({str(out)!r}, 'w').write(json.dumps(dict(os.environ))); print('v')"
    )
    provider = CommandProvider(dump, ["true"]) if step == "generate" else CommandProvider(["true"], dump)
    if step == "generate":
        await provider.generate(ctx())
    else:
        await provider.validate(ctx(), b"new-value")
    seen = json.loads(out.read_text())
    assert not set(withheld) & set(seen)
    assert seen["GOOGLE_APPLICATION_CREDENTIALS"] == "/var/run/adc.json"
    assert seen["SECRET_ID"] == "billing-key"


async def test_command_generate_without_output_or_failing_is_an_error() -> None:
    with pytest.raises(ProviderError, match="printed nothing"):
        await CommandProvider(py("print()"), ["true"]).generate(ctx())
    failing = CommandProvider(py("import sys; sys.stderr.write('quota exceeded\\n'); sys.exit(3)"), ["true"])
    with pytest.raises(ProviderError) as raised:
        await failing.generate(ctx())
    assert str(raised.value).endswith("exited with status 3: quota exceeded")
    assert "generate command" in str(raised.value)
    with pytest.raises(ProviderError, match="'/nonexistent/mint-key' not found"):
        await CommandProvider(["/nonexistent/mint-key"], ["true"]).generate(ctx())


async def test_a_failing_generate_keeps_what_it_printed_out_of_the_reason() -> None:
    """A minter that printed the new key, then failed to register it and said so with the key on stderr."""
    minted = "minted-7Qx2-if-you-read-this-it-leaked"
    failing = CommandProvider(
        py(
            f"""
            import sys
            print({minted!r})
            sys.stderr.write("could not register {minted}: quota exceeded\\n")
            sys.exit(3)
            """
        ),
        ["true"],
    )
    with pytest.raises(ProviderError) as raised:
        await failing.generate(ctx())
    assert str(raised.value).endswith("exited with status 3: could not register [REDACTED]: quota exceeded")


async def test_command_validate_gets_the_value_on_stdin_never_in_argv_or_env(tmp_path: Path) -> None:
    """The child checks its own /proc/self/cmdline and environ, then writes what it read on stdin."""
    report = tmp_path / "report"
    checker = py(
        f"""
        import sys
        value = sys.stdin.buffer.read()
        cmdline = open("/proc/self/cmdline", "rb").read()
        environ = open("/proc/self/environ", "rb").read()
        with open({str(report)!r}, "wb") as out:
            out.write(value + b"|" + str(value in cmdline).encode() + b"|" + str(value in environ).encode())
        """
    )
    provider = CommandProvider(["true"], checker, apply=checker)
    new_value = b"new-" + CANARY
    await provider.apply(ctx(), new_value)
    assert report.read_bytes() == new_value + b"|False|False"
    report.unlink()
    await provider.validate(ctx(), new_value)
    assert report.read_bytes() == new_value + b"|False|False"


async def test_command_failing_validate_gives_the_last_stderr_line_as_reason() -> None:
    validate = py(
        """
        import sys
        sys.stdin.read()
        sys.stderr.write("calling the billing API\\nGET /v1/me -> 401 Unauthorized\\n\\n")
        sys.exit(1)
        """
    )
    with pytest.raises(ValidationFailed) as raised:
        await CommandProvider(["true"], validate).validate(ctx(secret_id="billing-key"), b"new-key")
    message = str(raised.value)
    assert "'billing-key'" in message
    assert "validate command" in message
    assert message.endswith("exited with status 1: GET /v1/me -> 401 Unauthorized")


async def test_command_reason_never_carries_the_value() -> None:
    """A careless checker that prints the key it rejected: the reason keeps the words, not the key."""
    validate = py(
        """
        import sys
        key = sys.stdin.read()
        sys.stderr.write(f"key {key} was rejected\\n")
        sys.exit(2)
        """
    )
    new_value = b"new-" + CANARY
    with pytest.raises(ValidationFailed) as raised:
        await CommandProvider(["true"], validate).validate(ctx(), new_value)
    assert str(raised.value).endswith("key [REDACTED] was rejected")
    assert CANARY.decode() not in str(raised.value)


async def test_command_timeout_kills_the_whole_session(tmp_path: Path) -> None:
    """A validator stuck on the network: killed after `timeout`, together with what it started."""
    pidfile = tmp_path / "grandchild.pid"
    # The grandchild lets go of the pipes, so only killing the whole session can stop it.
    hanging = ["sh", "-c", f"sleep 60 </dev/null >/dev/null 2>&1 & echo $! > {pidfile}; cat >/dev/null; wait"]
    provider = CommandProvider(["true"], hanging, timeout=0.5)
    with pytest.raises(ProviderError, match=r"validate command 'sh' did not finish within 0.5 s; killed"):
        await provider.validate(ctx(), b"value")
    grandchild = int(pidfile.read_text())
    # Reaped by init (or a zombie until then): either way no longer a running `sleep`. The group's SIGKILL is
    # sent before the provider returns, but the grandchild (not our child: nothing to wait on) acts on it when
    # it next gets a CPU, which on a busy machine can be a moment later, still "R". So wait for that, with a
    # deadline: a `sleep 60` the kill missed stays "S" and fails here.
    await wait_until(lambda: _process_state(grandchild) in {None, "Z", "X"}, within=10, what="its end")


def _process_state(pid: int) -> str | None:
    """The state letter from /proc/PID/stat (R, S, Z...), or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


async def test_command_apply_gets_new_value_and_rollback_gets_old(tmp_path: Path) -> None:
    log = tmp_path / "calls"
    recorder = py(
        f"""
        import os, sys
        with open({str(log)!r}, "ab") as out:
            out.write(sys.argv[1].encode() + b"=" + sys.stdin.buffer.read() + b"\\n")
        """
    )
    provider = CommandProvider(
        ["true"], ["true"], apply=[*recorder, "apply"], rollback=[*recorder, "rollback"], timeout=30
    )
    await provider.apply(ctx(b"old-key"), b"new-key")
    await provider.rollback(ctx(b"old-key"), b"new-key")
    await provider.rollback(ctx(None), b"new-key")  # nothing to restore: the command is not run
    assert log.read_bytes() == b"apply=new-key\nrollback=old-key\n"


async def test_command_failing_rollback_is_reported_without_values() -> None:
    rollback = py("import sys; print(sys.stdin.read(), file=sys.stderr); sys.exit(5)")
    provider = CommandProvider(["true"], ["true"], rollback=rollback)
    with pytest.raises(ProviderError) as raised:
        await provider.rollback(ctx(), b"new-key")
    assert "rollback command" in str(raised.value)
    assert "exited with status 5: [REDACTED]" in str(raised.value)


async def test_command_without_apply_or_rollback_does_nothing() -> None:
    provider = CommandProvider(["true"], ["true"])
    await provider.apply(ctx(), b"new-key")
    await provider.rollback(ctx(), b"new-key")
    await provider.validate(ctx(), b"new-key")


# --- manual ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"tok-123\n", b"tok-123"),
        (b"tok-123\r\n", b"tok-123"),
        (b"tok-123", b"tok-123"),
        (b"tok-123\n\n", b"tok-123\n"),
        (b"line1\nline2\n", b"line1\nline2"),
    ],
)
async def test_manual_from_file(tmp_path: Path, content: bytes, expected: bytes) -> None:
    path = tmp_path / "new-token"
    path.write_bytes(content)
    provider = build_provider({"provider": "manual", "file": str(path)}, SecretType.OAUTH_TOKEN)
    value = await provider.generate(ctx())
    assert value == expected
    await provider.validate(ctx(), value)


async def test_manual_refuses_empty_and_missing(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"\n")
    with pytest.raises(ProviderError, match="is empty"):
        await ManualProvider(str(tmp_path / "empty")).generate(ctx())
    with pytest.raises(ProviderError, match=r"cannot read the new value from .*/missing: No such file"):
        await ManualProvider(str(tmp_path / "missing")).generate(ctx())
    with pytest.raises(ValidationFailed):
        await ManualProvider().validate(ctx(), b"")


@pytest.mark.parametrize("settings", [{"provider": "manual"}, {"provider": "manual", "file": "-"}])
async def test_manual_from_stdin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    piped = tmp_path / "stdin"
    piped.write_bytes(CANARY + b"\n")
    with piped.open("r") as stdin:
        monkeypatch.setattr(sys, "stdin", stdin)
        value = await build_provider(settings, SecretType.API_KEY).generate(ctx())
    assert value == CANARY
