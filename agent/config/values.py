"""Config values: parsing what a user wrote (in YAML, an environment variable or a flag) and printing it back.

Every converter takes the raw value and returns the typed one, or raises ValueError with a user-facing
message that never repeats a secret (a token is described, never echoed). Converters accept strings
wherever a typed value is expected, because environment variables are strings.

The public names are used across the agent (``parse_duration``, ``parse_delay``, ``split_listen``...). The
``_``-prefixed converters are the field parsers of ``agent.config.schema``: shared inside ``agent.config``
only, not an API for other packages.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from agent.config.refs import project_problem


def describe(value: object) -> str:
    """A short, user-facing rendering of a raw config value for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {describe(value)}")
    if value == "":
        raise ValueError("must not be empty")
    return value


def _integer(value: object) -> int:
    # bool is an int subclass in Python; `uid: true` is a mistake, not 1.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]+", value.strip()):
        return int(value)
    raise ValueError(f"expected an integer, got {describe(value)}")


def _optional_id_number(value: object) -> int | None:
    if value is None:
        return None
    number = _integer(value)
    if number < 0:
        raise ValueError(f"expected a non-negative integer, got {number}")
    return number


def _number(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ValueError(f"expected a number, got {describe(value)}")


def _boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "yes", "on", "1"):
            return True
        if lowered in ("false", "no", "off", "0"):
            return False
    raise ValueError(f"expected true or false, got {describe(value)}")


def _path(value: object) -> Path:
    return Path(_string(value))


def _optional_path(value: object) -> Path | None:
    return None if value is None else _path(value)


_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object) -> float:
    """``30s``, ``5m``, ``1h``, ``1500ms``, ``1h30m`` or a number of seconds -> seconds (must be > 0)."""
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION_PART.findall(text)
            if parts and "".join(n + u for n, u in parts) == text:
                seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    if seconds is None or seconds != seconds:  # NaN never equals itself
        raise ValueError(f"expected a duration such as 30s, 5m, 1h or 1500ms, got {describe(value)}")
    if seconds <= 0 or seconds == float("inf"):
        raise ValueError(f"expected a positive, finite duration, got {describe(value)}")
    return seconds


def _fraction(value: object) -> float:
    number = _number(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"expected a fraction between 0 and 1, got {describe(value)}")
    return number


def _project(value: object) -> str:
    # A bare project number in YAML arrives as an int.
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else _string(value)
    problem = project_problem(text)
    if problem is not None:
        raise ValueError(problem)
    return text


def optional_project(value: object) -> str | None:
    """A project id or number (a bare number in YAML arrives as an int), or None; stored as text."""
    return None if value is None else _project(value)


_LOCAL_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _local_name(value: object) -> str:
    name = _string(value)
    if not _LOCAL_NAME.fullmatch(name):
        raise ValueError(f"name {name!r} may only contain letters, digits, '.', '-' and '_'")
    if name.startswith(".."):
        # The name is the default file name, and `..`-prefixed names belong to the atomic writer.
        raise ValueError(f"name {name!r} must not start with '..'")
    if name == ".":
        raise ValueError("name '.' is not allowed")
    return name


def _env_var_name(value: object) -> str:
    name = _string(value)
    if not _ENV_NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a valid environment variable name "
            "(letters, digits and '_', not starting with a digit)"
        )
    return name


_OCTAL_MODE = re.compile(r"(?:0o?)?([0-7]{1,4})")


def parse_mode(value: object) -> int:
    """File mode: octal text (``"0440"``, ``"440"``, ``"0o440"``) or an int (YAML reads ``0440`` as octal)."""
    mode: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        mode = value
    elif isinstance(value, str) and (match := _OCTAL_MODE.fullmatch(value.strip())):
        mode = int(match[1], 8)
    if mode is None or not 0 <= mode <= 0o777:
        raise ValueError(f"expected an octal file mode such as '0440', got {describe(value)}")
    return mode


def format_mode(mode: int) -> str:
    """0o440 -> ``"0440"``."""
    return f"{mode:04o}"


def _seconds(value: float) -> int | float:
    return int(value) if value.is_integer() else value


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)


def env_name_for(local_name: str) -> str:
    """Default env variable of a secret: name in UPPER_SNAKE_CASE (``db.pass-word`` -> ``DB_PASS_WORD``)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", local_name).upper()


def _choice(*options: str) -> Callable[[object], object]:
    """A converter for a ``Literal`` setting: case-insensitive, stored lower case."""

    def parse(value: object) -> str:
        text = _string(value).strip().lower()
        if text not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {describe(value)}")
        return text

    return parse


def _at_least(minimum: int) -> Callable[[object], object]:
    def parse(value: object) -> int:
        number = _integer(value)
        if number < minimum:
            raise ValueError(f"expected an integer of at least {minimum}, got {number}")
        return number

    return parse


# Zero in every spelling parse_duration reads: 0, 0s, 0.0, .0s, 0ms...
_ZERO_DURATION = re.compile(r"(?:0+(?:\.0*)?|\.0+)(?:ms|s|m|h)?")


def parse_delay(value: object) -> float:
    """A duration that may also be 0 (for debounces: 0 means act at once)."""
    if (isinstance(value, int | float) and not isinstance(value, bool) and value == 0) or (
        isinstance(value, str) and _ZERO_DURATION.fullmatch(value.strip())
    ):
        return 0.0
    return parse_duration(value)


def parse_signal(value: object) -> str:
    """A signal name -> its canonical name: ``HUP``, ``hup``, ``SIGHUP`` -> ``"SIGHUP"``."""
    text = _string(value).strip().upper()
    name = text if text.startswith("SIG") else "SIG" + text
    member = signal.Signals.__members__.get(name)
    if member is None:
        raise ValueError(
            f"unknown signal {describe(value)} (expected a name such as SIGHUP, SIGUSR1, SIGTERM)"
        )
    return member.name


def _optional_signal(value: object) -> str | None:
    return None if value is None else parse_signal(value)


def _optional_regex(value: object) -> str | None:
    if value is None:
        return None
    pattern = _string(value)
    try:
        re.compile(pattern)
    except re.error as error:
        raise ValueError(f"{pattern!r} is not a valid regular expression: {error}") from None
    return pattern


def _optional_url(value: object) -> str | None:
    if value is None:
        return None
    url = _string(value).strip()
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or any(c.isspace() for c in url)
    ):
        raise ValueError(f"expected an http:// or https:// URL with a host, got {describe(value)}")
    return url


_ENDPOINT = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_.-]+)):(?P<port>[0-9]{1,5})")


def _optional_endpoint(value: object) -> str | None:
    if value is None:
        return None
    text = _string(value).strip()
    match = _ENDPOINT.fullmatch(text)
    if match is None or not 0 < int(match["port"]) < 65536:
        raise ValueError(f"expected HOST:PORT (e.g. 127.0.0.1:8085 or [::1]:8085), got {describe(value)}")
    return text


def _listen_address(value: object) -> str:
    """``HOST:PORT`` to listen on; port 0 picks a free one (tests)."""
    text = _string(value).strip()
    match = _ENDPOINT.fullmatch(text)
    if match is None or not 0 <= int(match["port"]) < 65536:
        raise ValueError(f"expected HOST:PORT to listen on (e.g. 127.0.0.1:8730), got {describe(value)}")
    return text


def split_listen(address: str) -> tuple[str, int]:
    """``"127.0.0.1:8730"`` -> ``("127.0.0.1", 8730)``; ``"[::1]:8730"`` -> ``("::1", 8730)``."""
    match = _ENDPOINT.fullmatch(address)
    if match is None:
        raise ValueError(f"not HOST:PORT: {address!r}")
    return match["v6"] or match["host"], int(match["port"])


def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1: addresses other machines and pods cannot reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _optional_token(value: object) -> str | None:
    if value is None:
        return None
    token = _string(value)
    if len(token) < 16:
        # The token is the only thing between a compromised neighbour process and every secret.
        raise ValueError("a token must be at least 16 characters long")
    if any(c.isspace() or not c.isprintable() for c in token):
        raise ValueError("a token must not contain spaces or control characters")
    return token


def _dump_token(value: str | None) -> str | None:
    # check-config prints the configuration: never the token itself.
    return None if value is None else "<set>"


def _command_line(value: object) -> tuple[str, ...]:
    """A YAML list of arguments, or one string split like a POSIX shell would (no expansion)."""
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("must not be empty")
        return tuple(shlex.split(value))  # ValueError ("No closing quotation") is reported as is
    if isinstance(value, list | tuple):
        if not all(isinstance(arg, str) for arg in value):
            raise ValueError("expected a list of strings")
        if value and not value[0]:
            raise ValueError("the program name must not be empty")
        return tuple(value)
    raise ValueError(f"expected a list of arguments or a command string, got {describe(value)}")


def _list(value: tuple[str, ...]) -> list[str]:
    return list(value)


# Pub/Sub resource ids: 3-255 characters, a letter first, then letters, digits and - _ . ~ + %; no "goog".
_PUBSUB_ID = re.compile(r"[A-Za-z][A-Za-z0-9._~+%-]{2,254}")
_PUBSUB_NAME = re.compile(r"projects/(?P<project>[^/]*)/(?P<kind>topics|subscriptions)/(?P<id>[^/]*)")


def pubsub_name(kind: Literal["topics", "subscriptions"]) -> Callable[[object], object]:
    """A converter for an optional ``projects/P/topics/T`` or ``projects/P/subscriptions/S`` name."""

    def parse(value: object) -> str | None:
        if value is None:
            return None
        text = _string(value).strip()
        example = f"projects/my-project/{kind}/secret-events"
        match = _PUBSUB_NAME.fullmatch(text)
        if match is None or match["kind"] != kind:
            raise ValueError(f"expected projects/PROJECT/{kind}/ID such as {example}, got {describe(value)}")
        if (problem := project_problem(match["project"])) is not None:
            raise ValueError(problem)
        noun = kind[:-1]
        if not _PUBSUB_ID.fullmatch(match["id"]) or match["id"].lower().startswith("goog"):
            raise ValueError(
                f"{noun} id {match['id']!r} is invalid: 3-255 letters, digits or - _ . ~ + %, starting with "
                "a letter and not with 'goog'"
            )
        return text

    return parse


_DAY = 86400.0


def _subscription_ttl(value: object) -> float:
    seconds = parse_duration(value)
    if seconds < _DAY:
        # Pub/Sub refuses an expiration policy below one day (CreateSubscription fails INVALID_ARGUMENT).
        raise ValueError(f"expected at least 1 day (Pub/Sub's minimum), got {describe(value)}")
    return seconds
