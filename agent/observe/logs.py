"""Structured logging: JSON lines for Cloud Logging or compact text, and a redaction safety net.

``configure_logging(level, fmt)`` sets up the root logger once per call (calling it again replaces the
previous setup, never stacks handlers). ``fmt`` is ``json``, ``text`` or ``auto``: text when the stream is
a terminal (a person is reading), JSON otherwise (a pod's log collector, a pipe, a file).

* ``json`` writes one object per line: ``severity``, ``message``, ``time`` (RFC 3339, UTC, milliseconds),
  ``logger``, the caller's structured fields, and ``stack_trace`` when an exception is logged. Cloud Logging
  reads ``severity``/``message``/``time`` natively and Error Reporting picks up ``stack_trace``.
* ``text`` writes ``12:34:56.789 INFO    agent.sync: message key=value`` for terminals.

Structured fields go in the ``fields`` key of ``extra`` (``FIELDS_KEY``); ``fields()`` builds it::

    log.info("rotated", extra=fields(secret="db", version="7"))

The rule is that secret values are never logged. As a safety net for accidents (a third-party exception
quoting a payload, a careless ``%r``), every value registered with ``register_secret_values()`` is replaced
by ``[REDACTED]`` in the message, its arguments, the fields and the exception text before a line is
written. Limits: only values of at least ``MIN_REDACTED_LENGTH`` characters are matched (a value such as
``"1"`` or ``"yes"`` would otherwise blank every line), only whole values are matched (a fragment of a
multi-line value is not), and the forms matched are the text itself, the text without surrounding
whitespace, and its escaped forms in a Python ``repr`` or a JSON string.

Redaction happens where records are made (a wrapper around the log record factory), so every handler,
not only ours, gets the redacted message and exception text; structured fields are redacted by our
handler, and our handler passes each finished line through ``redact()`` once more.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

REDACTED = "[REDACTED]"
"""What a registered secret value is replaced with."""
MIN_REDACTED_LENGTH = 4
"""Text forms shorter than this are not redacted (see the module docstring)."""
FIELDS_KEY = "fields"
"""The ``extra`` key whose mapping becomes structured fields of a log line."""
NOISY_LOGGERS = ("grpc", "urllib3", "asyncio", "google", "watchfiles")
"""Libraries that are held at WARNING whatever the level, because their INFO/DEBUG chatter drowns ours."""

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
# Cloud Logging's LogSeverity names; Python's standard level names already match them.
_SEVERITIES = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


def fields(**values: object) -> dict[str, dict[str, object]]:
    """``extra=`` for structured fields: ``log.info("swapped", extra=fields(count=3))``."""
    return {FIELDS_KEY: values}


# --------------------------------------------------------------------------------------------------
# Redaction
# --------------------------------------------------------------------------------------------------


def _text_forms(value: bytes) -> set[str]:
    """The ways ``value`` can show up in a log line, each at least MIN_REDACTED_LENGTH long."""
    forms = {repr(value)[2:-1]}  # as inside b'...' (non-UTF-8 bytes show up only like this)
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        for candidate in (text, text.strip()):
            forms.add(candidate)
            forms.add(repr(candidate)[1:-1])  # as inside '...' of a str repr
            forms.add(json.dumps(candidate, ensure_ascii=False)[1:-1])  # as inside a JSON string
    return {form for form in forms if len(form) >= MIN_REDACTED_LENGTH}


class _SecretRegistry:
    """Counts registered values (two secrets may share one) and keeps one compiled pattern of them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[bytes] = Counter()
        self.pattern: re.Pattern[str] | None = None
        """Read without the lock: rebinding an attribute is atomic, so readers see old or new."""

    def update(self, added: Iterable[bytes] = (), removed: Iterable[bytes] = ()) -> None:
        """Count ``added`` in and ``removed`` out, then build the pattern once for both."""
        with self._lock:
            self._counts.update(added)
            self._counts.subtract(removed)
            self._counts = +self._counts  # drop counts that reached zero
            self._rebuild()

    def clear(self) -> None:
        with self._lock:
            self._counts.clear()
            self._rebuild()

    def _rebuild(self) -> None:
        forms: set[str] = set()
        for value in self._counts:
            forms |= _text_forms(value)
        # Longest first, so that a value containing another registered value is replaced whole.
        ordered = sorted(forms, key=lambda form: (-len(form), form))
        self.pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        # re keeps the last 512 compiled patterns in its own cache; each of ours holds every value and a new
        # one is made at every rotation, so an agent rotating often would hold hundreds of them.
        re.purge()


_registry = _SecretRegistry()


def register_secret_values(values: Iterable[bytes]) -> None:
    """Redact these values from every log record from now on (call as values are fetched)."""
    _install_record_factory()
    _registry.update(added=values)


def unregister_secret_values(values: Iterable[bytes]) -> None:
    """Stop redacting values registered earlier (e.g. replaced by a rotation); counted per registration."""
    _registry.update(removed=values)


def clear_secret_values() -> None:
    """Forget every registered value."""
    with _served_lock:
        _served.clear()
    _registry.clear()


SERVED_GENERATIONS = 2
"""``register_served_values`` keeps the values of this many snapshots: the one served and the one before
(a line about a rotation may still quote the value it replaced)."""
_served: deque[list[bytes]] = deque()
_served_lock = threading.Lock()


def register_served_values(values: Iterable[bytes]) -> None:
    """Redact the values of the snapshot now served, and stop redacting those of snapshots older than
    ``SERVED_GENERATIONS``: registering every value ever fetched would grow without bound in an agent that
    rotates often."""
    current = list(values)
    _install_record_factory()
    with _served_lock:
        _served.append(current)
        expired = [_served.popleft() for _ in range(len(_served) - SERVED_GENERATIONS)]
    # One rebuild of the pattern (of every value) per snapshot, not one to add and one to remove.
    _registry.update(added=current, removed=[value for old in expired for value in old])


def redact(text: str) -> str:
    """``text`` with every registered secret value replaced by ``[REDACTED]``."""
    pattern = _registry.pattern
    return text if pattern is None else pattern.sub(REDACTED, text)


def _redact_field(value: object) -> object:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact(value)
    text = (
        json.dumps(value, default=str, ensure_ascii=False) if isinstance(value, dict | list) else str(value)
    )
    cleaned = redact(text)
    return value if cleaned == text else cleaned


def _scrub(record: logging.LogRecord) -> None:
    """Redact the message (formatted with its arguments), the exception text and the stack of ``record``.

    A message whose arguments do not match its format is replaced by the bare format plus a note: logging's
    own "--- Logging error ---" report would otherwise print the raw arguments to stderr.
    """
    try:
        message = record.getMessage()
    except Exception:  # any formatting error, whatever the arguments' types raise
        record.msg, record.args = redact(f"{record.msg} (log arguments did not match the format)"), None
    else:
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
    if _registry.pattern is None:
        return
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


class RedactingFilter(logging.Filter):
    """On our handler: redacts the record again, including the structured fields (which ``extra`` adds
    after the record factory ran)."""

    def filter(self, record: logging.LogRecord) -> bool:
        _scrub(record)
        extra = getattr(record, FIELDS_KEY, None)
        if isinstance(extra, dict):
            setattr(record, FIELDS_KEY, {str(key): _redact_field(value) for key, value in extra.items()})
        return True


class _RedactingRecordFactory:
    """Wraps the log record factory, so that *every* handler (including ones installed before ours, like
    pytest's) only ever sees redacted records."""

    def __init__(self, inner: Callable[..., logging.LogRecord]) -> None:
        self.inner = inner

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.inner(*args, **kwargs)
        _scrub(record)
        return record


def _install_record_factory() -> None:
    if not isinstance(logging.getLogRecordFactory(), _RedactingRecordFactory):
        logging.setLogRecordFactory(_RedactingRecordFactory(logging.getLogRecordFactory()))


# --------------------------------------------------------------------------------------------------
# Formats
# --------------------------------------------------------------------------------------------------


def _record_fields(record: logging.LogRecord) -> dict[str, Any]:
    extra = getattr(record, FIELDS_KEY, None)
    return dict(extra) if isinstance(extra, dict) else {}


def _exception_text(record: logging.LogRecord) -> str:
    parts = [part for part in (record.exc_text, record.stack_info) if part]
    return "\n".join(parts)


class JsonFormatter(logging.Formatter):
    """One JSON object per line in Cloud Logging's structured-logging shape."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = _record_fields(record)
        # The standard keys win over a field of the same name: the line must stay parseable by Cloud Logging.
        entry.update(
            severity=record.levelname if record.levelname in _SEVERITIES else "DEFAULT",
            message=record.getMessage(),
            time=datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
            logger=record.name,
        )
        entry["logging.googleapis.com/sourceLocation"] = {
            "file": record.pathname,
            "line": record.lineno,
            "function": record.funcName,
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        trace = _exception_text(record)
        if trace:
            entry["stack_trace"] = trace
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``12:34:56.789 INFO    agent.sync: message key=value``, then any traceback."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created).strftime("%H:%M:%S.%f")[:-3]
        line = f"{moment} {record.levelname:<7} {record.name}: {record.getMessage()}"
        for key, value in _record_fields(record).items():
            shown = (
                value
                if isinstance(value, int | float) or _is_bare(value)
                else json.dumps(value, default=str, ensure_ascii=False)
            )
            line += f" {key}={shown}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        trace = _exception_text(record)
        return f"{line}\n{trace}" if trace else line


def _is_bare(value: object) -> bool:
    """A string that reads unambiguously without quotes in ``key=value``."""
    return isinstance(value, str) and value != "" and not any(c.isspace() or c in "\"'=" for c in value)


class _AgentHandler(logging.StreamHandler[TextIO]):
    """Our handler on the root logger; its type marks it so that reconfiguring replaces it."""

    def format(self, record: logging.LogRecord) -> str:
        # A last pass over the finished line catches what the filter could not see (a formatter of
        # someone else's, an object whose str() holds a value).
        return redact(super().format(record))


LogFormat = Literal["auto", "json", "text"]
"""The ``log_format`` setting: ``auto`` is decided per stream by ``resolve_format``."""


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal (False for anything that cannot tell, or is closed)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, OSError, ValueError):
        return False


def resolve_format(fmt: str, stream: TextIO) -> Literal["json", "text"]:
    """``fmt`` with ``auto`` decided for ``stream``: ``text`` on a terminal, ``json`` otherwise."""
    if fmt == "auto":
        return "text" if is_terminal(stream) else "json"
    if fmt not in ("json", "text"):
        raise ValueError(f"unknown log format {fmt!r}; expected auto, json or text")
    return "json" if fmt == "json" else "text"


def configure_logging(level: str, fmt: LogFormat, stream: TextIO | None = None) -> None:
    """Log to ``stream`` (default: the current ``sys.stderr``) at ``level`` in ``fmt``, with redaction.
    ``auto`` is text when the stream is a terminal, JSON otherwise.

    Idempotent: replaces the handler a previous call installed, leaves other handlers alone.
    """
    numeric = _LEVELS.get(level.lower())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(_LEVELS)}")
    target = sys.stderr if stream is None else stream
    chosen = resolve_format(fmt, target)
    _install_record_factory()
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _AgentHandler)]:
        root.removeHandler(old)
    handler = _AgentHandler(target)
    handler.setFormatter(JsonFormatter() if chosen == "json" else TextFormatter())
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, numeric))
    # google-api-core switches propagation of the "google" logger off when a client is first built, unless
    # that logger already looks configured (a level set, as above). Switch it back on in case a client was
    # built before us, so the libraries' warnings become our JSON lines instead of raw text.
    logging.getLogger("google").propagate = True
