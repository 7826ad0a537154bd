"""The one configuration model, built in one place: ``load_config()``.

Precedence, highest first: flags > environment (``SECRETS_AGENT_*``) > YAML file > defaults. Where no file
can be mounted (an injected container), the file's text may come from ``SECRETS_AGENT_CONFIG_YAML`` instead.

The model is declarative: every field of a config dataclass carries a ``Setting`` in its metadata that says
how to parse it (and how to print it back). One generic reader walks the dataclass fields, so adding a
setting is adding one field, and adding a section is adding one dataclass field marked ``section()``:

* a setting at path ``a.b`` is read from the file key ``a: {b: ...}``, the environment variable
  ``SECRETS_AGENT_A_B`` and the flag key ``"a.b"`` (the CLI's ``--a-b``);
* unknown keys and unknown ``SECRETS_AGENT_*`` variables are errors (typos must not be silently ignored);
* every problem is collected and raised together in one ConfigError, each with its path.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import re
import shlex
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml

from agent.config.refs import SecretRef, parse_ref, project_problem
from agent.errors import ConfigError, InvalidReference, Problem

ENV_PREFIX = "SECRETS_AGENT_"
TOKEN_FILE_NAME = ".token"  # noqa: S105 - a file name
"""Where a generated endpoint token is written, under ``output_dir``: no secret's file may take it."""
NOTIFIED_FILE_NAME = ".notified"
"""The versions the app was last told about (``agent.notify.notified``); reserved like the token file."""
CONFIG_FILE_ENV = "SECRETS_AGENT_CONFIG"
"""Environment variable naming the configuration file when none is given on the command line."""
CONFIG_YAML_ENV = "SECRETS_AGENT_CONFIG_YAML"
"""Environment variable holding the whole configuration file's text (YAML or JSON, same schema), for
containers that get no file (the webhook injects it). It takes the file's place in the precedence, so it
cannot be combined with a file."""

LogLevel = Literal["debug", "info", "warning", "error"]
LOG_LEVELS: tuple[LogLevel, ...] = ("debug", "info", "warning", "error")
LogFormat = Literal["json", "text"]
SourceChoice = Literal["auto", "gcp", "dotenv"]
"""``auto``: ``gcp`` for init/run/exec, ``dotenv`` for dev (see ``Config.source_for``)."""
SourceName = Literal["gcp", "dotenv"]
Environment = Literal["production", "development"]
Strategy = Literal["access", "metadata"]
Command = Literal["init", "run", "exec", "dev"]


# --------------------------------------------------------------------------------------------------
# Converters: (raw value from YAML, an env string or a flag) -> typed value, or ValueError(message).
# They accept strings wherever a typed value is expected, because environment variables are strings.
# --------------------------------------------------------------------------------------------------


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


def _log_level(value: object) -> str:
    text = _string(value).lower()
    if text not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}, got {describe(value)}")
    return text


def _project(value: object) -> str:
    # A bare project number in YAML arrives as an int.
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else _string(value)
    problem = project_problem(text)
    if problem is not None:
        raise ValueError(problem)
    return text


def _optional_project(value: object) -> str | None:
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


def _relative_file(value: object) -> str:
    text = _string(value)
    path = PurePosixPath(text)
    if path.is_absolute():
        raise ValueError(f"file {text!r} must be relative to output_dir, not absolute")
    for part in path.parts:
        if part == "..":
            raise ValueError(f"file {text!r} must not contain '..'")
        if part.startswith(".."):
            # kubelet-style atomic snapshots keep `..data` and `..<timestamp>` directories next to the files.
            raise ValueError(f"file {text!r}: names starting with '..' are reserved for the atomic writer")
    if str(path) == TOKEN_FILE_NAME:
        raise ValueError(f"file {text!r} is reserved for the local endpoint's token")
    if str(path) == NOTIFIED_FILE_NAME:
        raise ValueError(f"file {text!r} is reserved for the record of what the app was told")
    if "\\" in text or "\0" in text:
        raise ValueError(f"file {text!r} must not contain backslashes or NUL")
    return str(path)


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


def _pubsub_name(kind: Literal["topics", "subscriptions"]) -> Callable[[object], object]:
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
# Declarative field metadata
# --------------------------------------------------------------------------------------------------

_META_KEY = "secrets_agent"


def _same(value: Any) -> object:
    return value


@dataclass(frozen=True)
class Setting:
    """How one scalar config field is read and printed."""

    parse: Callable[[object], object]
    """Raw value -> typed value; raises ValueError with a user-facing message."""
    dump: Callable[[Any], object] = _same
    """Typed value -> plain YAML value for ``to_dict()``."""
    from_env: bool = True
    """Whether ``SECRETS_AGENT_<PATH>`` may set it (false for list items, which have no stable path)."""
    fallback_env: str | None = None
    """A non-``SECRETS_AGENT_`` variable used when nothing else sets the field (below the file)."""


@dataclass(frozen=True)
class Section:
    """Marks a field whose value is a nested config dataclass (a YAML mapping)."""


@dataclass(frozen=True)
class Items:
    """Marks a field that is a list of config dataclasses; read by the section's own finishing code."""

    item: type[Any]


def setting(
    parse: Callable[[object], object],
    *,
    dump: Callable[[Any], object] = _same,
    from_env: bool = True,
    fallback_env: str | None = None,
) -> dict[str, object]:
    """Field metadata for a scalar setting (use as ``field(default=..., metadata=setting(...))``)."""
    return {_META_KEY: Setting(parse, dump, from_env, fallback_env)}


def section() -> dict[str, object]:
    """Field metadata for a nested section (use with ``field(default_factory=TheSection, ...)``)."""
    return {_META_KEY: Section()}


def items(item: type[Any]) -> dict[str, object]:
    """Field metadata for a list of sections, e.g. ``secrets``."""
    return {_META_KEY: Items(item)}


def _meta(f: dataclasses.Field[Any]) -> Setting | Section | Items:
    meta = f.metadata.get(_META_KEY)
    if not isinstance(meta, Setting | Section | Items):  # a developer forgot the metadata
        raise TypeError(f"config field {f.name!r} has no setting()/section()/items() metadata")
    return meta


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SecretSpec:
    """One secret the agent delivers: where it comes from and where it goes."""

    name: str = field(metadata=setting(_local_name, from_env=False))
    """Local name (``[A-Za-z0-9_.-]``), unique in the config. Required. Default for ``env`` and ``file``."""
    ref: SecretRef = field(metadata=setting(_string, dump=str, from_env=False))
    """Secret Manager reference in any form ``agent.config.refs`` accepts; short forms use ``project``.
    Required."""
    env: str = field(default="", metadata=setting(_env_var_name, from_env=False))
    """Environment variable name (env file, ``exec``). Default: ``name`` in UPPER_SNAKE_CASE. Unique."""
    file: str = field(default="", metadata=setting(_relative_file, from_env=False))
    """File path relative to ``output_dir``, no ``..``. Default: ``name``. Unique."""
    mode: int = field(default=0o440, metadata=setting(parse_mode, dump=format_mode, from_env=False))
    """Permission bits of the file; octal string like ``"0440"`` or an int. Default ``0440``."""
    uid: int | None = field(default=None, metadata=setting(_optional_id_number, from_env=False))
    """Owner user id of the file. Default: unchanged (the agent's own user)."""
    gid: int | None = field(default=None, metadata=setting(_optional_id_number, from_env=False))
    """Owner group id of the file. Default: unchanged (the agent's own group)."""
    required: bool = field(default=True, metadata=setting(_boolean, from_env=False))
    """If true (default), failing to fetch it fails ``init``; if false, it is skipped with a warning."""

    def __post_init__(self) -> None:
        # Derived defaults, so code and tests can build a spec from just name and ref.
        if not self.env:
            object.__setattr__(self, "env", env_name_for(self.name))
        if not self.file:
            object.__setattr__(self, "file", self.name)


@dataclass(frozen=True)
class GcpConfig:
    """How the ``gcp`` source talks to Secret Manager (YAML section ``gcp``)."""

    endpoint: str | None = field(
        default=None,
        metadata=setting(_optional_endpoint, dump=_optional_str, fallback_env="SECRET_MANAGER_EMULATOR_HOST"),
    )
    """``HOST:PORT`` of a Secret Manager emulator spoken to over plaintext gRPC, without credentials. Env
    ``SECRETS_AGENT_GCP_ENDPOINT``; when nothing of ours sets it, ``SECRET_MANAGER_EMULATOR_HOST``. Default:
    none (the real service, with Application Default Credentials)."""
    call_timeout: float = field(default=10.0, metadata=setting(parse_duration, dump=_seconds))
    """Deadline of each Secret Manager call, in seconds (a duration). Default 10."""
    strategy: Strategy = field(default="access", metadata=setting(_choice("access", "metadata")))
    """How ``run`` detects a new version. ``access`` (default): AccessSecretVersion of the polled version,
    which draws on the 90,000/min access quota. ``metadata``: GetSecretVersion first (no payload) and access
    only when the version moved; cheaper per change, but reads share a 600/min per-project quota."""
    backoff_initial: float = field(default=0.5, metadata=setting(parse_duration, dump=_seconds))
    """First retry delay after a transient error, in seconds (a duration); doubles per attempt, full
    jitter. Default 0.5."""
    backoff_max: float = field(default=30.0, metadata=setting(parse_duration, dump=_seconds))
    """Cap of the retry delay, in seconds (a duration); at least ``backoff_initial``. Default 30."""


@dataclass(frozen=True)
class ServerConfig:
    """The local HTTP endpoint apps fetch secrets from (YAML section ``server``); ``run`` and ``dev``."""

    enabled: bool = field(default=True, metadata=setting(_boolean))
    """Serve the endpoint. Default true."""
    listen: str = field(default="127.0.0.1:8730", metadata=setting(_listen_address))
    """``HOST:PORT``. Default ``127.0.0.1:8730``: loopback, reachable only from containers in the same pod.
    Any non-loopback address also needs ``allow_remote``."""
    allow_remote: bool = field(default=False, metadata=setting(_boolean))
    """Allow ``listen`` on an address other machines could reach (logged as a warning). Default false."""
    token: str | None = field(default=None, metadata=setting(_optional_token, dump=_dump_token))
    """The token every ``/v1`` request must carry in ``X-Secrets-Agent-Token`` (16+ characters). Prefer
    env ``SECRETS_AGENT_SERVER_TOKEN`` (from a Kubernetes Secret) or ``token_file``. Default: none, and
    then a random token is generated at start and written to ``<output_dir>/.token`` (mode 0440)."""
    token_file: Path | None = field(default=None, metadata=setting(_optional_path, dump=_optional_str))
    """Read the token from this file instead (trailing newline ignored). Default: none."""
    audit: bool = field(default=True, metadata=setting(_boolean))
    """Log every secret read (name, version, client, result; never the value). Default true."""
    max_connections: int = field(default=128, metadata=setting(_at_least(1)))
    """Most connections open at once. At the cap a new connection evicts the one idle the longest; only when
    every connection has a request in flight (long-polls, event streams) is the newcomer answered 503 with
    Retry-After. Default 128."""
    max_wait: float = field(default=300.0, metadata=setting(parse_duration, dump=_seconds))
    """Longest long-poll (``?wait=``) accepted, in seconds (a duration). Default 300 (5m)."""


@dataclass(frozen=True)
class ProbesConfig:
    """The second listener: ``/healthz``, ``/readyz`` and ``/metrics`` (YAML section ``probes``)."""

    enabled: bool = field(default=True, metadata=setting(_boolean))
    """Serve probes and metrics. Default true."""
    listen: str = field(default="0.0.0.0:8731", metadata=setting(_listen_address))
    """``HOST:PORT``. Default ``0.0.0.0:8731``: the kubelet and Prometheus must reach it; it serves no
    secret data and needs no token."""


@dataclass(frozen=True)
class DotenvConfig:
    """The ``dotenv`` source: values from a ``.env`` file, watched for edits (YAML section ``dotenv``)."""

    file: Path = field(default=Path(".env"), metadata=setting(_path, dump=str))
    """The ``.env`` file (``dev``, or the fallback in development). Env ``SECRETS_AGENT_DOTENV_FILE``, flag
    ``--dotenv`` (dev). Default ``.env`` in the working directory."""
    debounce: float = field(default=0.1, metadata=setting(parse_delay, dump=_seconds))
    """Edits within this many seconds (a duration, 0 allowed) are taken as one change. Default 0.1."""


@dataclass(frozen=True)
class NotifyConfig:
    """How the app is told to reload after each new snapshot (YAML section ``notify``). Any combination:
    a signal (when ``pid_file`` or ``process`` is set), an HTTP POST (``url``), a command (``command``)."""

    debounce: float = field(default=0.2, metadata=setting(parse_delay, dump=_seconds))
    """Snapshots swapped within this many seconds (a duration, 0 allowed) give one notification.
    Default 0.2: long enough to coalesce a burst, short enough for sub-second rotation with events."""
    signal: str = field(default="SIGHUP", metadata=setting(parse_signal))
    """Signal sent to the app's process: a name such as ``SIGHUP``, ``HUP`` or ``usr1``, stored as
    ``SIGHUP``. Default ``SIGHUP``."""
    pid_file: Path | None = field(default=None, metadata=setting(_optional_path, dump=_optional_str))
    """File holding the app's process id; re-read at every notification. Default: none."""
    process: str | None = field(default=None, metadata=setting(_optional_regex))
    """Regular expression searched in each process' command line (``/proc/*/cmdline``); the matching
    processes are signalled. Needs ``shareProcessNamespace: true`` in a pod. Default: none."""
    url: str | None = field(default=None, metadata=setting(_optional_url))
    """``http://`` or ``https://`` URL that gets an empty POST after each swap. Default: none."""
    url_timeout: float = field(default=5.0, metadata=setting(parse_duration, dump=_seconds))
    """Deadline of each POST, in seconds (a duration). Default 5."""
    url_retries: int = field(default=3, metadata=setting(_at_least(0)))
    """Extra attempts of a failed POST within one notification (>= 0). Default 3."""
    command: tuple[str, ...] = field(default=(), metadata=setting(_command_line, dump=_list))
    """Command run after each swap: a YAML list of arguments, or one string split like a shell would
    (``shlex``; no variables, no pipes). Default: none."""
    command_timeout: float = field(default=30.0, metadata=setting(parse_duration, dump=_seconds))
    """The command is killed after this many seconds (a duration). Default 30."""
    max_attempts: int = field(default=5, metadata=setting(_at_least(1)))
    """Attempts of one notification (signal, POST round or command) before it is given up and logged
    (>= 1). Files are never rolled back. Default 5."""

    @property
    def signals_process(self) -> bool:
        """Whether a signal notifier is configured (``pid_file`` or ``process`` is set)."""
        return self.pid_file is not None or self.process is not None


@dataclass(frozen=True)
class ExecConfig:
    """``secrets-agent exec``: how the child is looked after (YAML section ``exec``)."""

    watch: bool = field(default=False, metadata=setting(_boolean))
    """False (default): put the secrets into the environment and exec the command (the agent is gone).
    True (``--watch``): stay as a small supervisor that forwards signals, reaps zombies and, on rotation,
    restarts the child or sends it ``reload_signal``."""
    reload_signal: str | None = field(default=None, metadata=setting(_optional_signal))
    """With ``watch``: signal sent to the child on rotation instead of restarting it (names as for
    ``notify.signal``). Default: none (restart the child with the new environment)."""


@dataclass(frozen=True)
class EventsConfig:
    """Push instead of poll: Secret Manager's Pub/Sub notifications (YAML section ``events``; ``run`` with
    the gcp source). Set ``topic`` or ``subscription`` to switch events on; with neither, the agent polls."""

    topic: str | None = field(default=None, metadata=setting(_pubsub_name("topics")))
    """``projects/P/topics/T``: the topic Secret Manager publishes to (``Secret.topics``). The agent creates
    its own subscription on it at start (``secrets-agent-<hostname>-<random>``, filtered on
    ``attributes.secretId`` to its secrets, expiring after ``subscription_ttl`` unused) and deletes it on a
    graceful shutdown. Flag ``--events-topic``. Default: none."""
    subscription: str | None = field(default=None, metadata=setting(_pubsub_name("subscriptions")))
    """``projects/P/subscriptions/S``: an existing subscription to pull from instead (neither created nor
    deleted). It must be this agent's own: Pub/Sub gives each message of a subscription to ONE of its
    subscribers. Set ``topic`` or ``subscription``, not both. Flag ``--events-subscription``.
    Default: none."""
    max_delay: float = field(default=0.5, metadata=setting(parse_delay, dump=_seconds))
    """On an event, wait a random delay in [0, max_delay] seconds (a duration, 0 allowed) before fetching,
    so that the pods of a fleet that get the same event do not all call Secret Manager in the same
    millisecond. Default 0.5 (with notify.debounce 0.2, a rotation reaches the app in under a second)."""
    poll_interval: float = field(default=3600.0, metadata=setting(parse_duration, dump=_seconds))
    """While events flow, polling stays as a safety net at this interval (with ``poll_jitter``) instead
    of the top-level ``poll_interval``, which is used again while Pub/Sub is unreachable. Default 3600."""
    subscription_ttl: float = field(default=_DAY, metadata=setting(_subscription_ttl, dump=_seconds))
    """Expiration policy of a created subscription: Pub/Sub deletes it after this long without a
    subscriber, so an agent killed without cleanup leaves nothing behind for long (a duration, at least
    1 day, Pub/Sub's minimum). Default 86400 (1 day)."""

    @property
    def enabled(self) -> bool:
        """Whether events are configured (a topic or a subscription)."""
        return self.topic is not None or self.subscription is not None


@dataclass(frozen=True)
class Config:
    """The whole agent configuration. Build it with ``load_config()``; never mutate it."""

    project: str | None = field(
        default=None, metadata=setting(_optional_project, fallback_env="GOOGLE_CLOUD_PROJECT")
    )
    """Default project for short secret references (``S``, ``S@V``). Env ``SECRETS_AGENT_PROJECT``; when no
    flag, variable or file sets it, ``GOOGLE_CLOUD_PROJECT``. Default: none (short references are errors)."""
    log_level: LogLevel = field(default="info", metadata=setting(_log_level))
    """``debug``, ``info``, ``warning`` or ``error``. Default ``info``."""
    output_dir: Path = field(default=Path("/secrets"), metadata=setting(_path, dump=str))
    """Directory (ideally tmpfs) the secret files are written into. Default ``/secrets``."""
    env_file: Path | None = field(default=None, metadata=setting(_optional_path, dump=_optional_str))
    """Where to also write all secrets as a dotenv/POSIX-shell env file. A relative path (or one under
    ``output_dir``) lives inside ``output_dir`` and is swapped with the files; any other path is written
    atomically on its own right after the swap. Default: none."""
    poll_interval: float = field(default=300.0, metadata=setting(parse_duration, dump=_seconds))
    """Seconds between polls (``30s``, ``5m``, ``1h``, ``1500ms`` or a number). Default 300."""
    poll_jitter: float = field(default=0.1, metadata=setting(_fraction))
    """Random spread of each poll interval, as a fraction 0..1 of it (0.1 = +/-10%). Default 0.1."""
    max_staleness: float = field(default=3600.0, metadata=setting(parse_duration, dump=_seconds))
    """Seconds without a successful refresh after which the agent reports not ready. Default 3600 (1h)."""
    source: SourceChoice = field(default="auto", metadata=setting(_choice("auto", "gcp", "dotenv")))
    """Where values come from: ``gcp`` (Secret Manager), ``dotenv`` (a ``.env`` file) or ``auto`` (default):
    ``dotenv`` for ``dev``, ``gcp`` for ``init``, ``run`` and ``exec``."""
    env: Environment = field(default="production", metadata=setting(_choice("production", "development")))
    """``production`` (default) or ``development``. In development, ``init``/``run`` fall back to
    ``dotenv.file`` (loudly) when no Google credentials exist. Env ``SECRETS_AGENT_ENV``."""
    fallback_dotenv: Path | None = field(default=None, metadata=setting(_optional_path, dump=_optional_str))
    """Allows ``init``/``run`` to read this ``.env`` file, loudly, when no Google credentials exist, in any
    ``env``. Flag ``--fallback-dotenv``. Default: none (no fallback)."""
    require_tmpfs: bool = field(default=False, metadata=setting(_boolean))
    """Refuse to write when ``output_dir`` is not on tmpfs/ramfs (per ``/proc/mounts``) instead of only
    warning. Default false."""
    log_format: LogFormat = field(default="json", metadata=setting(_choice("json", "text")))
    """``json`` (default): one JSON object per line for Cloud Logging; ``text``: compact, for terminals."""
    timeout: float = field(default=60.0, metadata=setting(parse_duration, dump=_seconds))
    """Overall deadline of the bootstrap (``init``, the first fetch of ``run``/``exec``), in seconds (a
    duration). Default 60."""
    shutdown_grace: float = field(default=10.0, metadata=setting(parse_duration, dump=_seconds))
    """After SIGTERM, seconds (a duration) the agent's tasks get to finish before they are cancelled.
    Default 10."""
    concurrency: int = field(default=32, metadata=setting(_at_least(1)))
    """Most Secret Manager fetches in flight at once (>= 1). Default 32."""
    gcp: GcpConfig = field(default_factory=GcpConfig, metadata=section())
    """The Secret Manager source."""
    dotenv: DotenvConfig = field(default_factory=DotenvConfig, metadata=section())
    """The ``.env`` source."""
    notify: NotifyConfig = field(default_factory=NotifyConfig, metadata=section())
    """Reload notifiers."""
    exec: ExecConfig = field(default_factory=ExecConfig, metadata=section())
    """The ``exec`` command."""
    server: ServerConfig = field(default_factory=ServerConfig, metadata=section())
    """The local fetch endpoint (``run``, ``dev``)."""
    probes: ProbesConfig = field(default_factory=ProbesConfig, metadata=section())
    """Health, readiness and metrics listener (``run``, ``dev``)."""
    events: EventsConfig = field(default_factory=EventsConfig, metadata=section())
    """Secret Manager's Pub/Sub events (``run``)."""
    secrets: tuple[SecretSpec, ...] = field(default=(), metadata=items(SecretSpec))
    """The secrets to deliver: the file's ``secrets`` followed by the ``--secret NAME=REF`` flags.
    Default: none."""

    def source_for(self, command: Command) -> SourceName:
        """The source ``command`` uses: ``source``, or for ``auto`` dotenv in ``dev`` and gcp otherwise.
        (The no-credentials fallback of ``fallback_file`` is decided at run time, not here.)"""
        if self.source != "auto":
            return self.source
        return "dotenv" if command == "dev" else "gcp"

    @property
    def fallback_file(self) -> Path | None:
        """The ``.env`` file ``init``/``run`` may use when no Google credentials exist: ``fallback_dotenv``,
        else ``dotenv.file`` in development, else None (production never falls back silently)."""
        if self.fallback_dotenv is not None:
            return self.fallback_dotenv
        return self.dotenv.file if self.env == "development" else None

    def to_dict(self) -> dict[str, object]:
        """The normalised configuration as plain data: canonical refs, octal modes, durations in seconds."""
        return _dump(self)


def _dump(obj: Any) -> dict[str, object]:
    out: dict[str, object] = {}
    for f in dataclasses.fields(obj):
        meta, value = _meta(f), getattr(obj, f.name)
        if isinstance(meta, Setting):
            out[f.name] = meta.dump(value)
        elif isinstance(meta, Section):
            out[f.name] = _dump(value)
        else:
            out[f.name] = [_dump(item) for item in value]
    return out


# --------------------------------------------------------------------------------------------------
# The reader
# --------------------------------------------------------------------------------------------------


_Outcome = Literal["unset", "ok", "invalid"]


@dataclass
class _Reader:
    """Reads config dataclasses from the three layers, collecting every problem."""

    env: Mapping[str, str]
    flags: Mapping[str, object]
    flag_names: Mapping[str, str] = field(default_factory=dict)
    """Setting path -> the flag that sets it, when it is not ``--`` + the path (``gcp.endpoint`` ->
    ``--endpoint``); used to name the flag in problems."""
    problems: list[Problem] = field(default_factory=list)
    invalid: set[str] = field(default_factory=set)
    """Paths of settings that had an invalid value in some layer."""
    env_used: set[str] = field(default_factory=set)
    flags_used: set[str] = field(default_factory=set)

    def section(
        self, cls: type[Any], raw: Mapping[Any, object], path: str, *, layered: bool
    ) -> dict[str, Any]:
        """Parse the fields of ``cls`` from ``raw`` (plus env and flags when ``layered``).

        Returns the values that were set (unset ones are left to the dataclass defaults); Items fields
        are returned raw for the caller to finish. Unknown keys and missing required fields are problems.
        """
        fields = dataclasses.fields(cls)
        known = {f.name for f in fields}
        for key in raw:
            if key not in known:
                self._unknown_key(key, known, path)
        values: dict[str, Any] = {}
        for f in fields:
            meta, key_path = _meta(f), _join(path, f.name)
            if isinstance(meta, Setting):
                outcome, value = self._setting(f.name, meta, raw, key_path, layered=layered)
                if outcome == "ok":
                    values[f.name] = value
                elif outcome == "unset" and _is_required(f):
                    self.problems.append(Problem(key_path, "required"))
            elif isinstance(meta, Section):
                sub = raw.get(f.name)
                if sub is None:
                    sub = {}
                elif not isinstance(sub, Mapping):
                    self.problems.append(Problem(key_path, f"expected a mapping, got {describe(sub)}"))
                    sub = {}
                section_cls = _section_class(cls, f)
                before = len(self.problems)
                sub_values = self.section(section_cls, sub, key_path, layered=layered)
                if len(self.problems) == before:
                    values[f.name] = section_cls(**sub_values)
            elif f.name in raw:
                values[f.name] = raw[f.name]
        return values

    def _setting(
        self, name: str, meta: Setting, raw: Mapping[Any, object], path: str, *, layered: bool
    ) -> tuple[_Outcome, object]:
        # Lowest precedence first. Every layer that is present gets validated (a bad variable is a bug
        # waiting for the day the flag is removed); the highest one wins.
        candidates: list[tuple[str, object]] = []
        if name in raw:
            candidates.append((path, raw[name]))
        if layered and meta.from_env:
            env_name = ENV_PREFIX + path.upper().replace(".", "_")
            self.env_used.add(env_name)
            # An empty variable counts as unset: Kubernetes manifests often template them to "".
            if self.env.get(env_name):
                candidates.append((f"env {env_name}", self.env[env_name]))
        if layered and path in self.flags:
            self.flags_used.add(path)
            if self.flags[path] is not None:
                candidates.append((self.flag_name(path), self.flags[path]))
        # The fallback (an ambient variable such as GOOGLE_CLOUD_PROJECT) is only consulted, and so only
        # validated, when nothing of ours sets the value.
        if layered and not candidates and meta.fallback_env and self.env.get(meta.fallback_env):
            candidates.append((f"env {meta.fallback_env}", self.env[meta.fallback_env]))
        outcome: _Outcome = "unset"
        result: object = None
        for where, value in candidates:
            try:
                result = meta.parse(value)
            except ValueError as error:
                self.problems.append(Problem(where, str(error)))
                self.invalid.add(path)
                outcome = "invalid"
            else:
                outcome = "ok"
        return outcome, result

    def flag_name(self, path: str) -> str:
        """The command-line flag of a setting path, as the user typed it."""
        return self.flag_names.get(path) or "--" + path.replace(".", "-").replace("_", "-")

    def _unknown_key(self, key: object, known: set[str], path: str) -> None:
        hint = ""
        if isinstance(key, str) and (close := difflib.get_close_matches(key, sorted(known), n=1)):
            hint = f" (did you mean {close[0]!r}?)"
        label = key if isinstance(key, str) else describe(key)
        self.problems.append(Problem(_join(path, label), f"unknown key{hint}"))

    def check_leftovers(self) -> None:
        """Unknown ``SECRETS_AGENT_*`` variables are typos until proven otherwise."""
        for name in sorted(self.env):
            if name.startswith(ENV_PREFIX) and name not in _NOT_SETTINGS and name not in self.env_used:
                self.problems.append(Problem(f"env {name}", "unknown setting"))
        for key in self.flags:
            if key not in self.flags_used:
                raise TypeError(f"load_config: flag {key!r} is not a config setting")  # a bug in the CLI


_NOT_SETTINGS = frozenset({CONFIG_FILE_ENV, CONFIG_YAML_ENV})
"""``SECRETS_AGENT_*`` variables that hold the configuration's source, not a setting."""


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _is_required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _section_class(owner: type[Any], f: dataclasses.Field[Any]) -> type[Any]:
    default_factory = f.default_factory
    if isinstance(default_factory, type):
        return default_factory
    raise TypeError(f"section {owner.__name__}.{f.name} needs default_factory=<its dataclass>")


# --------------------------------------------------------------------------------------------------
# Secrets: per-item parsing plus the cross-item rules
# --------------------------------------------------------------------------------------------------

# A valid project used only to validate the other parts of short references when `project` itself is
# invalid: that problem is reported once already, and one "no project" error per secret would bury it.
_PLACEHOLDER_PROJECT = "placeholder-project"


SECRET_FLAG = "--secret"  # noqa: S105 - a flag name, not a password
"""The compact command-line form of a secret: ``--secret NAME=REF`` (flag key ``"secrets"``)."""


def _secret_entries(reader: _Reader, from_file: object, from_flags: object) -> list[tuple[str, object]]:
    """(path, raw item) of every secret: the file's ``secrets[i]`` then the flags' ``--secret[i]``."""
    entries: list[tuple[str, object]] = []
    if isinstance(from_file, list):
        entries += [(f"secrets[{index}]", item) for index, item in enumerate(from_file)]
    elif from_file is not None:
        reader.problems.append(Problem("secrets", f"expected a list of secrets, got {describe(from_file)}"))
    if from_flags is None:
        return entries
    if isinstance(from_flags, str) or not isinstance(from_flags, Sequence):
        raise TypeError("load_config: flags['secrets'] must be a list of 'NAME=REF' strings")  # a CLI bug
    for index, text in enumerate(from_flags):
        path = f"{SECRET_FLAG}[{index}]"
        name, equals, ref = text.partition("=") if isinstance(text, str) else ("", "", "")
        if not equals:
            reader.problems.append(
                Problem(
                    path, f"expected NAME=REF such as db-password=projects/P/secrets/S, got {describe(text)}"
                )
            )
            continue
        entries.append((path, {"name": name, "ref": ref}))
    return entries


def _read_secrets(
    reader: _Reader, from_file: object, from_flags: object, project: str | None, project_ok: bool
) -> tuple[SecretSpec, ...]:
    specs: list[SecretSpec] = []
    # (path, {"name"|"env"|"file": value}) for every item, valid or not, so that a duplicate is reported
    # even next to other problems: users fix everything in one round.
    claims: list[_Claim] = []
    for path, item in _secret_entries(reader, from_file, from_flags):
        if not isinstance(item, Mapping):
            reader.problems.append(
                Problem(path, f"expected a mapping with name and ref, got {describe(item)}")
            )
            continue
        before = len(reader.problems)
        values = reader.section(SecretSpec, item, path, layered=False)
        if isinstance(values.get("ref"), str):
            try:
                values["ref"] = parse_ref(values["ref"], project if project_ok else _PLACEHOLDER_PROJECT)
            except InvalidReference as error:
                reader.problems.append(Problem(f"{path}.ref", error.problems[0].message))
        claim = _Claim(path, {key: values[key] for key in ("name", "env", "file") if key in values})
        if "name" in values:
            if "file" not in item:
                claim.values["file"] = values["name"]
                claim.derived.add("file")
            derived_env = env_name_for(values["name"])
            if "env" in item:
                pass  # explicit, already checked (or reported) by the reader
            elif _ENV_NAME.fullmatch(derived_env):
                claim.values["env"] = derived_env
                claim.derived.add("env")
            else:
                reader.problems.append(
                    Problem(
                        f"{path}.env",
                        f"the default {derived_env!r} (from name {values['name']!r}) is not a valid "
                        "environment variable name; set env explicitly",
                    )
                )
        claims.append(claim)
        if len(reader.problems) == before:
            specs.append(SecretSpec(**values))
    _check_unique(reader, claims)
    return tuple(specs)


@dataclass
class _Claim:
    """The name, env and file one secret takes, including defaults derived from its name."""

    path: str
    """Where the secret was configured: ``secrets[2]`` or ``--secret[0]``."""
    values: dict[str, str]
    derived: set[str] = field(default_factory=set)


def _check_unique(reader: _Reader, claims: list[_Claim]) -> None:
    duplicate_names: set[str] = set()
    for key in ("name", "env", "file"):
        owners: dict[str, str] = {}
        for claim in claims:
            value = claim.values.get(key)
            if value is None:
                continue
            first = owners.setdefault(value, claim.path)
            # A duplicate name already explains the duplicate env and file derived from it.
            if first != claim.path and not (key in claim.derived and claim.path in duplicate_names):
                if key == "name":
                    duplicate_names.add(claim.path)
                source = " (derived from name)" if key in claim.derived else ""
                reader.problems.append(
                    Problem(
                        f"{claim.path}.{key}",
                        f"duplicate {key} {value!r}{source}: also used by {first}",
                    )
                )
    # "db" and "db/password" cannot both exist: one path would have to be a file and a directory.
    files: dict[str, str] = {}
    for claim in claims:
        if "file" in claim.values:
            files.setdefault(claim.values["file"], claim.path)
    for claim in claims:
        for parent in PurePosixPath(claim.values.get("file", ".")).parents:
            if (other := files.get(str(parent))) is not None:
                reader.problems.append(
                    Problem(
                        f"{claim.path}.file",
                        f"file {claim.values['file']!r} would be inside file {str(parent)!r} of {other}",
                    )
                )


# --------------------------------------------------------------------------------------------------
# Rules that involve more than one setting
# --------------------------------------------------------------------------------------------------


def _check_across(reader: _Reader, values: Mapping[str, Any]) -> None:
    """Problems no single setting shows. Each rule runs only when the settings it reads are valid."""
    gcp, notify, exec_ = values.get("gcp"), values.get("notify"), values.get("exec")
    server, probes = values.get("server"), values.get("probes")
    if isinstance(server, ServerConfig):
        host, _ = split_listen(server.listen)
        if not is_loopback(host) and not server.allow_remote:
            reader.problems.append(
                Problem(
                    "server.listen",
                    f"{host} is not a loopback address: anyone who can reach it could try the token; "
                    "set server.allow_remote (--allow-remote) to listen there anyway",
                )
            )
        if server.token is not None and server.token_file is not None:
            reader.problems.append(
                Problem("server.token_file", "set either server.token or server.token_file")
            )
        # Port 0 means "any free port" (tests): two listeners never collide then.
        if isinstance(probes, ProbesConfig) and server.enabled and probes.enabled:
            address = split_listen(server.listen)
            if address == split_listen(probes.listen) and address[1] != 0:
                reader.problems.append(
                    Problem("probes.listen", f"{probes.listen} is also server.listen: use two ports")
                )
    if isinstance(gcp, GcpConfig) and gcp.backoff_initial > gcp.backoff_max:
        reader.problems.append(
            Problem(
                "gcp.backoff_initial",
                f"{_seconds(gcp.backoff_initial)}s is more than "
                f"gcp.backoff_max ({_seconds(gcp.backoff_max)}s)",
            )
        )
    events = values.get("events")
    if isinstance(events, EventsConfig) and events.topic is not None and events.subscription is not None:
        reader.problems.append(
            Problem("events.subscription", "set either events.topic or events.subscription, not both")
        )
    if isinstance(notify, NotifyConfig) and notify.pid_file is not None and notify.process is not None:
        # Two ways to find the app would mean guessing which one the user meant when they disagree.
        reader.problems.append(
            Problem("notify.process", "set either notify.pid_file or notify.process, not both")
        )
    if isinstance(exec_, ExecConfig) and exec_.reload_signal is not None and not exec_.watch:
        reader.problems.append(
            Problem(
                "exec.reload_signal",
                "only used with exec.watch (--watch): without it the agent execs the command and is gone",
            )
        )


# --------------------------------------------------------------------------------------------------
# YAML
# --------------------------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys, which PyYAML would otherwise silently overwrite."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[object] = set()
    for key_node, _value_node in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:  # unhashable key; construct_mapping reports it properly
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r}",
                key_node.start_mark,
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml_file(file: Path) -> Mapping[Any, object]:
    """The file's top-level mapping; every failure is a ConfigError naming the file (and line)."""
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(Problem(str(file), "no such file")) from None
    except UnicodeDecodeError:
        raise ConfigError(Problem(str(file), "not UTF-8 text")) from None
    except OSError as error:
        raise ConfigError(Problem(str(file), error.strerror or type(error).__name__)) from None
    return read_yaml_text(text, str(file))


def read_yaml_text(text: str, where: str) -> Mapping[Any, object]:
    """The top-level mapping of configuration ``text``; failures are ConfigErrors located at ``where``
    (a file name, or ``env SECRETS_AGENT_CONFIG_YAML``) and its line."""
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        located = f"{where}:{mark.line + 1}" if mark is not None else where
        raise ConfigError(Problem(located, f"invalid YAML: {error.problem or error.context}")) from None
    except yaml.YAMLError as error:
        raise ConfigError(Problem(where, f"invalid YAML: {error}")) from None
    if data is None:  # an empty file is a valid, all-defaults configuration
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            Problem(f"{where}:1", f"expected a mapping of settings at the top level, got {describe(data)}")
        )
    return data


def _read_layer(file: Path | None, env: Mapping[str, str]) -> Mapping[Any, object]:
    """The file layer: ``file``, else ``$SECRETS_AGENT_CONFIG``, else the text of
    ``$SECRETS_AGENT_CONFIG_YAML``, else nothing. A file and the inline text together are an error: which
    one the user meant cannot be guessed, and merging them would hide half of one."""
    if file is None and env.get(CONFIG_FILE_ENV):
        file = Path(env[CONFIG_FILE_ENV])
    inline = env.get(CONFIG_YAML_ENV)
    if inline and file is not None:
        raise ConfigError(
            Problem(
                f"env {CONFIG_YAML_ENV}",
                f"set either a configuration file ({file}) or {CONFIG_YAML_ENV}, not both",
            )
        )
    if inline:
        return read_yaml_text(inline, f"env {CONFIG_YAML_ENV}")
    return read_yaml_file(file) if file is not None else {}


# --------------------------------------------------------------------------------------------------
# The one entry point
# --------------------------------------------------------------------------------------------------


def load_config(
    file: Path | None,
    env: Mapping[str, str],
    flags: Mapping[str, object],
    *,
    flag_names: Mapping[str, str] | None = None,
) -> Config:
    """Build the Config: flags > environment (``SECRETS_AGENT_*``) > YAML ``file`` > defaults.

    ``file`` None means ``$SECRETS_AGENT_CONFIG``, else the configuration text in
    ``$SECRETS_AGENT_CONFIG_YAML``, or no file at all. ``flags`` maps setting paths
    (``"poll_interval"``, ``"gcp.endpoint"``) to raw values; None values are ignored (flag not given).
    ``flags["secrets"]`` is a list of ``NAME=REF`` strings (``--secret``), appended to the file's secrets.
    ``flag_names`` maps a path to its flag when that is not ``--`` + the path (``"gcp.endpoint"`` ->
    ``"--endpoint"``), so problems name what the user typed. Raises ConfigError with every problem found.
    """
    raw = _read_layer(file, env)
    reader = _Reader(env=env, flags=flags, flag_names=flag_names or {})
    values = reader.section(Config, raw, "", layered=True)
    project_ok = "project" not in reader.invalid
    reader.flags_used.add("secrets")
    values["secrets"] = _read_secrets(
        reader, values.get("secrets"), flags.get("secrets"), values.get("project"), project_ok
    )
    _check_across(reader, values)
    reader.check_leftovers()
    if reader.problems:
        raise ConfigError(reader.problems)
    return Config(**values)
