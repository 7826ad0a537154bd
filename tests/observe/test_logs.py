"""Structured logging: the JSON shape Cloud Logging reads, the text format, and the redaction safety net."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from agent.observe.logs import (
    REDACTED,
    SERVED_GENERATIONS,
    clear_secret_values,
    configure_logging,
    fields,
    redact,
    register_secret_values,
    register_served_values,
    resolve_format,
    unregister_secret_values,
)

CANARY = "canary-Zq8-secret-value"
log = logging.getLogger("agent.test")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Each test configures the root logger; put it back so other tests (and caplog) are unaffected."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    noisy = {name: logging.getLogger(name).level for name in ("grpc", "urllib3", "asyncio", "google")}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, old in noisy.items():
        logging.getLogger(name).setLevel(old)
    clear_secret_values()


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def configured(fmt: str = "json", level: str = "debug") -> io.StringIO:
    stream = io.StringIO()
    configure_logging(level, fmt, stream)  # type: ignore[arg-type]
    return stream


# --- JSON -------------------------------------------------------------------------------------------------


def test_json_lines_have_the_fields_cloud_logging_reads() -> None:
    stream = configured("json")
    before = datetime.now(UTC)
    log.info("fetched %d secrets", 3, extra=fields(secret="db", version="7", count=3))
    after = datetime.now(UTC)
    (entry,) = json_lines(stream)
    assert entry["severity"] == "INFO"
    assert entry["message"] == "fetched 3 secrets"
    assert entry["logger"] == "agent.test"
    assert (entry["secret"], entry["version"], entry["count"]) == ("db", "7", 3)
    time = str(entry["time"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", time), time
    stamp = datetime.fromisoformat(time.replace("Z", "+00:00"))
    assert before - timedelta(milliseconds=1) <= stamp <= after
    location = entry["logging.googleapis.com/sourceLocation"]
    assert isinstance(location, dict)
    assert location["file"] == __file__
    assert location["function"] == "test_json_lines_have_the_fields_cloud_logging_reads"


@pytest.mark.parametrize(
    ("emit", "severity"),
    [
        (log.debug, "DEBUG"),
        (log.info, "INFO"),
        (log.warning, "WARNING"),
        (log.error, "ERROR"),
        (log.critical, "CRITICAL"),
    ],
)
def test_severity_names_are_cloud_loggings(emit: object, severity: str) -> None:
    stream = configured("json")
    emit("x")  # type: ignore[operator]
    assert [e["severity"] for e in json_lines(stream)] == [severity]


def test_a_field_cannot_hide_the_standard_keys() -> None:
    stream = configured("json")
    log.warning("real message", extra=fields(message="fake", severity="DEBUG", other="kept"))
    (entry,) = json_lines(stream)
    assert (entry["message"], entry["severity"], entry["other"]) == ("real message", "WARNING", "kept")


def test_exceptions_become_a_stack_trace_field() -> None:
    stream = configured("json")
    try:
        raise RuntimeError("backend exploded")
    except RuntimeError:
        log.exception("refresh failed")
    (entry,) = json_lines(stream)
    assert entry["message"] == "refresh failed"
    trace = str(entry["stack_trace"])
    assert trace.startswith("Traceback (most recent call last):")
    assert trace.endswith("RuntimeError: backend exploded")
    assert "\n" not in stream.getvalue().rstrip("\n"), "one JSON object per line"


def test_the_level_filters_and_noisy_libraries_stay_at_warning() -> None:
    stream = configured("json", level="info")
    log.debug("hidden")
    log.info("shown")
    logging.getLogger("grpc._cython.cygrpc").info("chatter")
    logging.getLogger("urllib3.connectionpool").info("chatter")
    logging.getLogger("asyncio").debug("chatter")
    logging.getLogger("grpc").warning("a real grpc problem")
    assert [e["message"] for e in json_lines(stream)] == ["shown", "a real grpc problem"]


def test_google_library_warnings_become_our_json_lines_even_after_a_client_is_built() -> None:
    from google.api_core import client_logging
    from google.cloud import secretmanager_v1

    from tests.conftest import grpc_client

    stream = configured("json", level="info")
    # Building an official client runs google-api-core's logging set-up, which would cut "google" off.
    grpc_client("127.0.0.1:9").transport.close()
    client_logging.setup_logging()
    assert secretmanager_v1  # the client module is loaded, as in the agent
    logging.getLogger("google.api_core.retry").warning("deadline exceeded, retrying")
    logging.getLogger("google.cloud.secretmanager").info("library chatter")
    assert [e["message"] for e in json_lines(stream)] == ["deadline exceeded, retrying"]


def test_configuring_again_replaces_the_handler_instead_of_adding_one() -> None:
    first = configured("json")
    second = configured("text", level="warning")
    log.warning("once")
    log.info("filtered out by the new level")
    assert first.getvalue() == ""
    assert second.getvalue().count("once") == 1
    assert len(second.getvalue().splitlines()) == 1


def test_other_handlers_are_left_alone(caplog: pytest.LogCaptureFixture) -> None:
    configured("json")
    configured("json")
    caplog.set_level(logging.INFO)
    log.info("seen by caplog too")
    assert "seen by caplog too" in caplog.messages


@pytest.mark.parametrize(("level", "fmt"), [("loud", "json"), ("info", "xml")])
def test_bad_arguments_are_refused(level: str, fmt: str) -> None:
    with pytest.raises(ValueError, match="unknown log"):
        configure_logging(level, fmt, io.StringIO())  # type: ignore[arg-type]


# --- text ---------------------------------------------------------------------------------------------------


def test_text_is_one_compact_line_with_the_fields() -> None:
    stream = configured("text")
    log.warning("poll failed", extra=fields(secret="db", status="UNAVAILABLE", hint="try later", attempt=2))
    line = stream.getvalue()
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d\.\d{3} WARNING agent\.test: poll failed "
        r'secret=db status=UNAVAILABLE hint="try later" attempt=2\n',
        line,
    ), line


def test_text_shows_the_traceback_after_the_line() -> None:
    stream = configured("text")
    try:
        raise KeyError("missing")
    except KeyError:
        log.error("lookup failed", exc_info=True)
    first, *rest = stream.getvalue().splitlines()
    assert first.endswith("ERROR   agent.test: lookup failed")
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "KeyError: 'missing'"


# --- auto: text for a person, JSON for a collector ---------------------------------------------------------


class Terminal(io.StringIO):
    """A stream that says it is a terminal, as ``sys.stderr`` does in an interactive shell."""

    def isatty(self) -> bool:
        return True


class Closed(io.StringIO):
    def isatty(self) -> bool:
        raise ValueError("I/O operation on closed file")


@pytest.mark.parametrize(
    ("stream", "fmt", "chosen"),
    [
        (Terminal(), "auto", "text"),
        (io.StringIO(), "auto", "json"),
        (Closed(), "auto", "json"),
        (Terminal(), "json", "json"),
        (io.StringIO(), "text", "text"),
    ],
)
def test_auto_is_text_on_a_terminal_and_json_elsewhere(stream: io.StringIO, fmt: str, chosen: str) -> None:
    assert resolve_format(fmt, stream) == chosen


def test_auto_on_a_terminal_writes_text_lines_still_redacted() -> None:
    stream = Terminal()
    configure_logging("info", "auto", stream)
    register_secret_values([CANARY.encode()])
    log.info("served %s", CANARY)
    line = stream.getvalue()
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} INFO    agent\.test: served \[REDACTED\]\n", line), line


def test_auto_on_a_pipe_writes_json_lines() -> None:
    stream = configured("auto")
    log.info("hello")
    assert json_lines(stream)[0]["message"] == "hello"


# --- redaction ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_a_registered_value_is_redacted_from_message_args_fields_and_exceptions(
    fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = configured(fmt)
    register_secret_values([CANARY.encode()])
    log.info("in the message " + CANARY)
    log.info("in the arguments %s", CANARY)
    log.info("in a repr of bytes %r", b"prefix:" + CANARY.encode())
    log.info("in the fields", extra=fields(token=CANARY, nested={"deep": [CANARY]}))
    try:
        raise ValueError(f"third-party library quoting the payload {CANARY!r}")
    except ValueError:
        log.exception("in the exception")
    log.info("bad arguments %s %s", CANARY)  # a format/arguments mismatch must not leak either
    output = stream.getvalue() + "".join(capsys.readouterr())
    assert CANARY not in output
    assert output.count(REDACTED) >= 6
    assert "in the exception" in output
    assert "ValueError: third-party library quoting" in output


def test_the_redacted_record_is_what_other_handlers_see_too(caplog: pytest.LogCaptureFixture) -> None:
    configured("json")
    register_secret_values([CANARY.encode()])
    caplog.set_level(logging.INFO)
    log.info("value %s", CANARY)
    try:
        raise ValueError(CANARY)
    except ValueError:
        log.exception("failed")
    # caplog's handler was installed before ours and formats the record when it sees it.
    assert f"value {REDACTED}" in caplog.text
    assert f"ValueError: {REDACTED}" in caplog.text
    assert CANARY not in caplog.text


def test_escaped_forms_of_multiline_and_non_utf8_values_are_redacted() -> None:
    stream = configured("json")
    pem = "-----BEGIN KEY-----\nMIIEvQIBADANBg\n-----END KEY-----\n"
    binary = b"\xff\xfe-binary-secret"
    register_secret_values([pem.encode(), binary])
    log.info("raw %s", pem)
    log.info("repr %r", pem)
    log.info("stripped %s", pem.strip())
    log.info("bytes %r", binary)
    assert "MIIEvQIBADANBg" not in stream.getvalue()
    assert "binary-secret" not in stream.getvalue()
    assert [e["message"] for e in json_lines(stream)] == [
        f"raw {REDACTED}",
        f"repr '{REDACTED}'",
        f"stripped {REDACTED}",
        f"bytes b'{REDACTED}'",
    ]


def test_the_longest_registered_value_wins_when_one_contains_another() -> None:
    stream = configured("json")
    register_secret_values([b"hunter2-long", b"hunter2-long-er-value"])
    log.info("x hunter2-long-er-value y")
    assert json_lines(stream)[0]["message"] == f"x {REDACTED} y"


def test_values_shorter_than_four_characters_are_not_redacted() -> None:
    # The documented limit: a value like "1" or "yes" would otherwise blank every line that contains it.
    stream = configured("json")
    register_secret_values([b"yes", b"1"])
    log.info("retry 1 of 3: yes")
    assert json_lines(stream)[0]["message"] == "retry 1 of 3: yes"


def test_unregistering_is_counted_per_registration() -> None:
    stream = configured("json")
    register_secret_values([CANARY.encode()])
    register_secret_values([CANARY.encode()])  # two secrets share one value
    unregister_secret_values([CANARY.encode()])  # one of them rotated
    log.info(CANARY)
    unregister_secret_values([CANARY.encode()])
    log.info("old value no longer registered: " + CANARY)
    messages = [e["message"] for e in json_lines(stream)]
    assert messages == [REDACTED, "old value no longer registered: " + CANARY]


def test_nothing_registered_leaves_messages_untouched() -> None:
    stream = configured("json")
    log.info("100%% done with %s", "db")
    assert json_lines(stream)[0]["message"] == "100% done with db"


def test_served_values_are_redacted_for_two_snapshots_then_forgotten() -> None:
    """An agent rotating every second must not keep every value it ever served (nor a pattern of them)."""
    generations = [[f"{CANARY}-user-{n}".encode(), f"{CANARY}-password-{n}".encode()] for n in range(600)]
    for values in generations:
        register_served_values(values)

    assert SERVED_GENERATIONS == 2
    line = " ".join(v.decode() for values in generations[-3:] for v in values)
    redacted = redact(line).split()
    assert redacted[:2] == [v.decode() for v in generations[-3]]  # rotated out: no longer held
    assert redacted[2:] == [REDACTED] * 4  # the snapshot served and the one before


def test_a_value_kept_across_snapshots_stays_redacted() -> None:
    stable = f"{CANARY}-never-rotated".encode()
    for n in range(5):
        register_served_values([stable, f"{CANARY}-rotating-{n}".encode()])

    assert redact(stable.decode()) == REDACTED
