"""Config values: parsing what a user wrote (in YAML, an environment variable or a flag) and printing it back.

Every converter takes the raw value and returns the typed one, or raises ValueError with a user-facing
message that never repeats a secret: the converters of settings that may hold a credential (the token, the
notify URL and command, secret references) describe a bad value by its kind and shape, never echo it.
Converters accept strings wherever a typed value is expected, because environment variables are strings.
No string setting may hold a NUL byte or a control character (paths, names, URLs: none has a use for one,
and a NUL makes every system call fail later, far from the setting that caused it).

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
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from agent.config.refs import location_problem, project_problem, version_problem

_SHOWN_CHARS = 200
"""Longest rendering of a value in a message; longer ones are cut (a message is one readable line)."""


def describe(value: object) -> str:
    """A short, user-facing rendering of a raw config value for error messages (not for credentials: use
    ``describe_kind``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = repr(value)
        return (
            shown
            if len(shown) <= _SHOWN_CHARS
            else f"{shown[: _SHOWN_CHARS - 4]}...' ({len(value)} characters)"
        )
    if isinstance(value, int):
        # str() of an int of more than 4300 digits raises ValueError (CVE-2020-10735's limit).
        return str(value) if value.bit_length() <= 64 else f"a {value.bit_length()}-bit integer"
    if isinstance(value, float):
        return str(value)
    return describe_kind(value)


def describe_kind(value: object) -> str:
    """What kind of value ``value`` is, without any of its content: for settings that may hold a credential
    (a YAML ``token: 12345678901234567890`` is a number, and the number is the token)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return f"a string of {len(value)} characters"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
"""C0 and C1 control characters and DEL."""
_LINE_CONTROLS = "\t\n\r"


def control_character_problem(text: str, *, allow: str = "") -> str | None:
    """Why ``text`` cannot be a setting's value (a NUL byte or control character, named by its code point
    and position, never by the text around it), or None."""
    for match in _CONTROL.finditer(text):
        char = match[0]
        if char in allow:
            continue
        what = "a NUL byte" if char == "\0" else f"a control character (U+{ord(char):04X})"
        return f"must not contain {what} (at character {match.start() + 1})"
    return None


def _string(value: object, *, allow: str = "") -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {describe(value)}")
    return _checked_text(value, allow=allow)


def _credential_string(value: object, *, allow: str = "") -> str:
    """``_string`` for a setting that may hold a credential: a bad value is described, never shown."""
    if not isinstance(value, str):
        raise ValueError(
            f"expected a string, got {describe_kind(value)} (a YAML number or boolean must be quoted)"
        )
    return _checked_text(value, allow=allow)


def _reference_text(value: object) -> str:
    """A secret reference's raw text (``agent.config.refs`` parses it): a pasted value is never shown."""
    return _credential_string(value)


def _checked_text(value: str, *, allow: str) -> str:
    if value == "":
        raise ValueError("must not be empty")
    if (problem := control_character_problem(value, allow=allow)) is not None:
        raise ValueError(problem)
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
        raise ValueError(f"{describe(pattern)} is not a valid regular expression: {error}") from None
    except RecursionError:  # thousands of nested groups: the compiler's stack, not a traceback
        raise ValueError("the regular expression is nested too deeply") from None
    return pattern


def _optional_url(value: object) -> str | None:
    # A URL may carry user:password or a token in its query: a bad one is described, never shown.
    if value is None:
        return None
    url = _credential_string(value).strip()
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
        raise ValueError(f"expected an http:// or https:// URL with a host, got {_url_shape(url)}")
    return url


def _url_shape(url: str) -> str:
    """A bad URL for a message: its scheme and host at most (user info, path and query may hold a
    password or a webhook's token), else only its length."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return f"a string of {len(url)} characters, not shown (a URL may carry a password)"
    if parts.scheme and host and parts.scheme.isascii() and parts.scheme.isalnum():
        rest = " (the rest not shown)" if url.rstrip("/") != f"{parts.scheme}://{host}" else ""
        return f"{f'{parts.scheme}://{host}'!r}{rest}"
    return f"a string of {len(url)} characters, not shown (a URL may carry a password)"


REDACTED = "<redacted>"
"""What printed configuration shows in place of credentials in a URL (user info, query, fragment)."""


def redacted_url(url: str) -> str:
    """``url`` with its user info, query and fragment replaced by ``REDACTED``: the shape stays visible
    (there is a password, there is a query) and the result is still a valid ``notify.url``."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return REDACTED
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    if "@" in parts.netloc:
        netloc = f"{REDACTED}@{netloc}"
    query = REDACTED if parts.query else ""
    fragment = REDACTED if parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def _dump_url(value: str | None) -> str | None:
    return None if value is None else redacted_url(value)


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
    if isinstance(value, str) and value and _CONTROL.search(value):
        raise ValueError("a token must not contain spaces or control characters")
    token = _credential_string(value)
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
    """A YAML list of arguments, or one string split like a POSIX shell would (no expansion).

    A command line may carry a token (``curl -H 'Authorization: ...'``): problems never quote it. Tabs and
    newlines are allowed (a ``sh -c`` script); NUL and other control characters are not (exec refuses a
    NUL, far from here)."""
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("must not be empty")
        if (problem := control_character_problem(value, allow=_LINE_CONTROLS)) is not None:
            raise ValueError(problem)
        return tuple(shlex.split(value))  # ValueError ("No closing quotation") is reported as is
    if isinstance(value, list | tuple):
        if not all(isinstance(arg, str) for arg in value):
            raise ValueError("expected a list of strings")
        if value and not value[0]:
            raise ValueError("the program name must not be empty")
        for index, arg in enumerate(value):
            if (problem := control_character_problem(arg, allow=_LINE_CONTROLS)) is not None:
                raise ValueError(f"argument {index}: {problem}")
        return tuple(value)
    raise ValueError(f"expected a list of arguments or a command string, got {describe_kind(value)}")


def _list(value: tuple[str, ...]) -> list[str]:
    return list(value)


_DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
MAX_ALLOWED_HOSTS = 64
"""Most names one ``allowed_hosts`` setting may list (each Host header is compared against them)."""


def host_name(text: str) -> str:
    """A DNS name or IP literal as a Host header names it, normalised: DNS names lower case without a
    trailing dot, IP addresses in their compressed form, IPv6 without brackets. ValueError (quoting
    ``text``: host names are not secrets) for anything else, a port included."""
    candidate = text.strip()
    if candidate.startswith("[") and candidate.endswith("]"):
        candidate = candidate[1:-1]
        try:
            return str(ipaddress.IPv6Address(candidate))
        except ValueError:
            raise ValueError(f"{text!r} is not an IPv6 address") from None
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        pass
    name = candidate.lower().removesuffix(".")
    if re.fullmatch(r"[^:]+:[0-9]*", name) or name.count(":") > 1:
        raise ValueError(f"{text!r}: write the host name only, without a port (any port is accepted)")
    if not name or len(name) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in name.split(".")):
        raise ValueError(
            f"{text!r} is neither a DNS name (labels of letters, digits and '-', not starting or ending "
            "with '-') nor an IP address"
        )
    return name


def _words(value: object, expected: str) -> list[object]:
    """The items of a YAML list, or the words of one string separated by commas or spaces (what an
    environment variable can hold); ValueError ``expected {expected}`` for anything else."""
    if isinstance(value, str):
        return [part for part in re.split(r"[,\s]+", value) if part]
    if isinstance(value, list | tuple):
        return list(value)
    raise ValueError(f"expected {expected}, got {describe(value)}")


def _host_list(value: object) -> tuple[str, ...]:
    """A YAML list of host names, or one string of names separated by commas or spaces (environment)."""
    raw = _words(value, "a list of host names")
    if len(raw) > MAX_ALLOWED_HOSTS:
        raise ValueError(f"at most {MAX_ALLOWED_HOSTS} host names, got {len(raw)}")
    names: list[str] = []
    for index, item in enumerate(raw):
        if not isinstance(item, str):
            raise ValueError(f"item {index}: expected a host name, got {describe(item)}")
        try:
            name = host_name(_string(item))
        except ValueError as error:
            raise ValueError(f"item {index}: {error}") from None
        if name not in names:
            names.append(name)
    return tuple(names)


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


# --------------------------------------------------------------------------------------------------
# Selections: label selectors, secret id patterns, "auto" durations
# --------------------------------------------------------------------------------------------------

MAX_ID_REGEX_CHARS = 1000
"""Longest ``name_regex`` or rewrite ``regex`` accepted."""
MAX_REGEX_LOOPS = 3
"""Most repetitions (``*``, ``+``, ``{m,n}``) one id pattern may have, counting one more when it is not
anchored with ``^`` (a search tries every start). Python's regular expressions backtrack: a pattern of k
repetitions that can match the same characters costs up to n^(k+1) steps on an id of n characters, and
with ids of at most 255 characters 3 keep the worst case near 10 ms, 4 near a second."""
MAX_LABELS = 64
"""Most labels one selector may name (Google allows 64 labels on a secret)."""
LABEL_ANY = "*"
"""The label value that means "has the label, whatever its value" (no label value can contain ``*``)."""
_LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")
_SECRET_ID_CHARS = re.compile(r"[A-Za-z0-9_-]{1,255}")


def parse_local_name(value: object) -> str:
    """A secret's local name (``[A-Za-z0-9_.-]``, not ``.`` nor starting with ``..``), as the loader checks
    ``secrets[].name``; ValueError naming what is wrong."""
    return _local_name(value)


def parse_env_name(value: object) -> str:
    """An environment variable name (``[A-Za-z_][A-Za-z0-9_]*``), as the loader checks ``secrets[].env``."""
    return _env_var_name(value)


def _label_pair(key: object, value: object, where: str) -> tuple[str, str]:
    if not isinstance(key, str) or not _LABEL_KEY.fullmatch(key):
        raise ValueError(
            f"{where}label key {describe(key)} is invalid: 1-63 lowercase letters, digits, '_' or '-', "
            "starting with a letter"
        )
    if value is None:
        raise ValueError(
            f"{where}label {key!r} has no value: write '' for an empty value, or '*' for any value"
        )
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # `tier: 1` in YAML
    if not isinstance(value, str):
        raise ValueError(f"{where}label {key!r}: expected a string value, got {describe(value)} (quote it)")
    if value != LABEL_ANY and not _LABEL_VALUE.fullmatch(value):
        raise ValueError(
            f"{where}label {key!r}: value {describe(value)} is invalid: 0-63 lowercase letters, digits, "
            "'_' or '-', or '*' for any value"
        )
    return key, value


def _labels(value: object) -> tuple[tuple[str, str], ...]:
    """A label selector: a YAML mapping ``{app: payments, team: "*"}``, or one string
    ``app=payments,team=*`` (an environment variable, an annotation). Stored as sorted (key, value) pairs;
    the value ``*`` means "has the label"."""
    pairs: list[tuple[str, str]] = []
    if isinstance(value, str):
        if (problem := control_character_problem(value)) is not None:
            raise ValueError(problem)
        for index, part in enumerate(p.strip() for p in value.split(",")):
            if not part:
                continue
            key, equals, text = part.partition("=")
            if not equals:
                raise ValueError(
                    f"item {index}: expected KEY=VALUE (or KEY=* for any value), got {describe(part)}"
                )
            pairs.append(_label_pair(key.strip(), text.strip(), f"item {index}: "))
    elif isinstance(value, Mapping):
        pairs = [_label_pair(key, text, "") for key, text in value.items()]
    else:
        raise ValueError(f"expected a mapping of labels or KEY=VALUE,KEY=* text, got {describe(value)}")
    if len(pairs) > MAX_LABELS:
        raise ValueError(f"at most {MAX_LABELS} labels, got {len(pairs)}")
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        twice = sorted({key for key in keys if keys.count(key) > 1})
        raise ValueError(f"label {twice[0]!r} is given twice")
    return tuple(sorted(pairs))


def _dump_labels(value: tuple[tuple[str, str], ...]) -> dict[str, str]:
    return dict(value)


def regex_cost_problem(pattern: str) -> str | None:
    """Why the regular expression ``pattern`` (already compiled once) could take too long on a secret id,
    or None. Refused: a repetition inside another (``(a+)+``), an alternation inside a repetition
    (``(a|ab)+``: both are exponential when backtracking), back-references, and more than
    ``MAX_REGEX_LOOPS`` repetitions (see there)."""
    import importlib

    parser: Any = importlib.import_module("re._parser")  # the stdlib's own parse tree, no stubs
    tree = parser.parse(pattern)
    loops = 0

    def walk(items: Any, in_loop: bool) -> str | None:
        nonlocal loops
        for op, argument in items:
            name, children, looping = str(op), [], False
            if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
                looping = argument[1] > 1  # (min, max, body): {0,1} is no loop
                if looping and in_loop:
                    return "a repetition inside a repetition (such as (a+)+) can take exponential time"
                loops += looping
                children = [argument[2]]
            elif name == "BRANCH":
                if in_loop:
                    return (
                        "an alternation inside a repetition (such as (a|ab)+) can take exponential time; "
                        "use a character class ([ab]+) or repeat outside the group"
                    )
                children = list(argument[1])
            elif name in ("GROUPREF", "GROUPREF_EXISTS"):
                return "back-references are not supported in id patterns"
            elif name == "SUBPATTERN":
                children = [argument[3]]
            elif name in ("ASSERT", "ASSERT_NOT"):
                children = [argument[1]]
            elif name == "ATOMIC_GROUP":
                children = [argument]
            for child in children:
                if (problem := walk(child, in_loop or looping)) is not None:
                    return problem
        return None

    if (problem := walk(tree, False)) is not None:
        return problem
    first = list(tree)[:1]
    anchored = bool(first) and str(first[0][0]) == "AT" and str(first[0][1]).startswith("AT_BEGINNING")
    cost = loops + (0 if anchored else 1)
    if cost > MAX_REGEX_LOOPS:
        shown = f"{loops} repetitions" + ("" if anchored else " and no ^ anchor")
        return (
            f"{shown}: at most {MAX_REGEX_LOOPS} repetitions, counting one for a pattern not anchored "
            "with ^ (backtracking would make a long id cost too much)"
        )
    return None


def _id_regex(value: object) -> str:
    """A regular expression on secret ids: compiled once here, bounded in length and in cost."""
    pattern = _string(value)
    if len(pattern) > MAX_ID_REGEX_CHARS:
        raise ValueError(f"a pattern is at most {MAX_ID_REGEX_CHARS} characters, got {len(pattern)}")
    try:
        re.compile(pattern)
    except re.error as error:
        raise ValueError(f"{describe(pattern)} is not a valid regular expression: {error}") from None
    except RecursionError:
        raise ValueError("the regular expression is nested too deeply") from None
    if (problem := regex_cost_problem(pattern)) is not None:
        raise ValueError(f"{describe(pattern)}: {problem}")
    return pattern


def _optional_id_regex(value: object) -> str:
    """``_id_regex``, or "" (no pattern: the default, as ``to_dict`` prints it)."""
    return "" if value == "" else _id_regex(value)


def _replacement(value: object) -> str:
    """The replacement of a rewrite rule (``re.sub``'s: ``\\1``, ``\\g<name>``); may be empty."""
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {describe(value)} (quote it)")
    if len(value) > MAX_ID_REGEX_CHARS:
        raise ValueError(f"a replacement is at most {MAX_ID_REGEX_CHARS} characters, got {len(value)}")
    if (problem := control_character_problem(value)) is not None:
        raise ValueError(problem)
    return value


def _id_prefix(value: object) -> str:
    """The start of a secret id (``[A-Za-z0-9_-]``), or "" for none."""
    if value == "":
        return ""
    text = _string(value)
    if not _SECRET_ID_CHARS.fullmatch(text):
        raise ValueError(f"{describe(text)} cannot start a secret id: 1-255 letters, digits, '-' or '_'")
    return text


def _env_prefix(value: object) -> str:
    """What every env name of a selection starts with (``PAYMENTS_``), or "" for none."""
    if value == "":
        return ""
    name = _string(value)
    if not _ENV_NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} cannot start an environment variable name "
            "(letters, digits and '_', not starting with a digit)"
        )
    return name


def _secret_ids(value: object) -> tuple[str, ...]:
    """Secret ids: a YAML list, or one string of ids separated by commas or spaces."""
    raw = _words(value, "a list of secret ids")
    if len(raw) > MAX_KNOWN_IDS:
        raise ValueError(f"at most {MAX_KNOWN_IDS} ids, got {len(raw)}")
    ids: list[str] = []
    for index, item in enumerate(raw):
        if not isinstance(item, str) or not _SECRET_ID_CHARS.fullmatch(item):
            raise ValueError(
                f"item {index}: expected a secret id (1-255 letters, digits, '-' or '_'), "
                f"got {describe(item)}"
            )
        if item not in ids:
            ids.append(item)
    return tuple(ids)


MAX_KNOWN_IDS = 10_000
"""Most secret ids a selection's ``known`` list may hold."""


def _optional_timestamp(value: object) -> float | None:
    """Epoch seconds (a number >= 0), or None."""
    if value is None:
        return None
    number = _number(value)
    if not 0 <= number < float("inf"):
        raise ValueError(f"expected seconds since the epoch (a number >= 0), got {describe(value)}")
    return number


AUTO = "auto"


def _auto_duration(value: object) -> float | None:
    """A duration (> 0), or ``auto`` (stored as None: computed from the fleet, see the setting)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == AUTO):
        return None
    return parse_duration(value)


def _auto_delay(value: object) -> float | None:
    """A duration that may be 0, or ``auto`` (stored as None)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == AUTO):
        return None
    return parse_delay(value)


def _dump_auto(value: float | None) -> int | float | str:
    return AUTO if value is None else _seconds(value)


def _optional_location(value: object) -> str | None:
    """A Secret Manager location (``us-central1``) of regional secrets, or None (global secrets)."""
    if value is None:
        return None
    text = _string(value).strip()
    if (problem := location_problem(text)) is not None:
        raise ValueError(problem)
    return text


def _version(value: object) -> str:
    """``latest``, a version number (a YAML number arrives as an int) or a version alias."""
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else _string(value).strip()
    if (problem := version_problem(text)) is not None:
        raise ValueError(problem)
    return text
