"""The configuration model: frozen dataclasses whose fields say how they are read and printed.

Every field of a config dataclass carries a ``Setting`` in its metadata that says how to parse it (and how
to print it back), a ``Section`` marker for a nested dataclass, or ``Items`` for a list of them. The reader
in ``agent.config.loader`` walks these fields, so adding a setting is adding one field, and adding a section
is adding one dataclass field marked ``section()``. Each field's docstring is its documentation: what it
does, its unit and its default.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import urlsplit

from agent.config.refs import SecretRef
from agent.config.values import (
    _DAY,
    LABEL_ANY,
    _at_least,
    _auto_delay,
    _auto_duration,
    _boolean,
    _choice,
    _command_line,
    _dump_auto,
    _dump_labels,
    _dump_token,
    _dump_url,
    _env_prefix,
    _env_var_name,
    _fraction,
    _host_list,
    _id_prefix,
    _id_regex,
    _labels,
    _list,
    _listen_address,
    _local_name,
    _optional_endpoint,
    _optional_id_number,
    _optional_id_regex,
    _optional_location,
    _optional_path,
    _optional_regex,
    _optional_signal,
    _optional_str,
    _optional_timestamp,
    _optional_token,
    _optional_url,
    _path,
    _reference_text,
    _replacement,
    _seconds,
    _secret_ids,
    _string,
    _subscription_ttl,
    _version,
    _words,
    describe,
    env_name_for,
    format_mode,
    is_loopback,
    optional_project,
    parse_delay,
    parse_duration,
    parse_mode,
    parse_signal,
    pubsub_name,
)

ENV_PREFIX = "SECRETS_AGENT_"
"""Prefix of the variables that set settings: ``SECRETS_AGENT_<PATH>`` (``SECRETS_AGENT_GCP_ENDPOINT``).
Kubernetes' service-link variables of a Service whose name starts with ``secrets-agent``
(``SECRETS_AGENT_WEBHOOK_SERVICE_HOST``...) share the prefix; the loader ignores them."""
TOKEN_FILE_NAME = ".token"  # noqa: S105 - a file name
"""Where a generated endpoint token is written, under ``output_dir``: no secret's file may take it."""
NOTIFIED_FILE_NAME = ".notified"
"""The versions the app was last told about (``agent.notify.notified``); reserved like the token file."""
SELECTION_FILE_NAME = ".selection"
"""What each selection matched at its last listing (``agent.discovery``): ids and times, never a value; a
restarted agent starts from it instead of listing. Reserved like the token file."""
RESERVED_FILE_NAMES = frozenset({TOKEN_FILE_NAME, NOTIFIED_FILE_NAME, SELECTION_FILE_NAME})
"""Names at the top of ``output_dir`` the agent writes itself, besides every name starting with ``..``
(``..data``, ``..manifest.json``, the ``..<timestamp>`` snapshots): no configured file may take them."""


def reserved_name_reason(relative: str) -> str | None:
    """Why a file the configuration places at ``relative`` (a POSIX path inside ``output_dir``) would
    collide with one the agent writes there itself (``names starting with '..' are reserved...``), or
    None. For secret files, the env file and any later destination under ``output_dir``."""
    parts = PurePosixPath(relative).parts
    if any(part.startswith("..") for part in parts):
        # kubelet-style atomic snapshots keep `..data` and `..<timestamp>` directories next to the files.
        return "names starting with '..' are reserved for the atomic writer"
    if relative == TOKEN_FILE_NAME:
        return "reserved for the local endpoint's token"
    if relative == NOTIFIED_FILE_NAME:
        return "reserved for the record of what the app was told"
    if relative == SELECTION_FILE_NAME:
        return "reserved for the record of what the selections matched"
    return None


SELECT_NEEDS_GCP = (
    "select needs the Secret Manager source (source: gcp): a .env file has no labels to select by, and dev "
    "serves every key of it already"
)
"""The problem of selections with the ``.env`` source."""

CONFIG_FILE_ENV = "SECRETS_AGENT_CONFIG"
"""Environment variable naming the configuration file when none is given on the command line."""
CONFIG_YAML_ENV = "SECRETS_AGENT_CONFIG_YAML"
"""Environment variable holding the whole configuration file's text (YAML or JSON, same schema), for
containers that get no file (the webhook injects it). It takes the file's place in the precedence, so it
cannot be combined with a file."""

LogLevel = Literal["debug", "info", "warning", "error"]
LOG_LEVELS: tuple[LogLevel, ...] = ("debug", "info", "warning", "error")
LogFormat = Literal["auto", "json", "text"]
"""``auto``: ``text`` when standard error is a terminal, ``json`` otherwise (decided when logging starts)."""
LOG_FORMATS: tuple[LogFormat, ...] = ("auto", "json", "text")
SourceChoice = Literal["auto", "gcp", "dotenv"]
"""``auto``: ``gcp`` for init/run/exec, ``dotenv`` for dev (see ``Config.source_for``)."""
SourceName = Literal["gcp", "dotenv"]
Environment = Literal["production", "development"]
Strategy = Literal["access", "metadata"]
Command = Literal["init", "run", "exec", "dev"]

DEFAULT_OUTPUT_DIR = Path("/secrets")
"""Where ``init`` and ``run`` write when ``output_dir`` is not set: the volume a pod mounts."""
DEV_OUTPUT_DIR = Path(".secrets")
"""Where ``dev`` writes when ``output_dir`` is not set: ``.secrets`` in the working directory, next to the
``.env`` it serves (never ``/secrets`` on a laptop)."""


# --------------------------------------------------------------------------------------------------
# Converters that depend on the names above (the reserved files, the log levels)
# --------------------------------------------------------------------------------------------------


def _log_level(value: object) -> str:
    text = _string(value).lower()
    if text not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}, got {describe(value)}")
    return text


def _relative_file(value: object) -> str:
    text = _string(value)
    path = PurePosixPath(text)
    if path.is_absolute():
        raise ValueError(f"file {text!r} must be relative to output_dir, not absolute")
    if any(part == ".." for part in path.parts):
        raise ValueError(f"file {text!r} must not contain '..'")
    if str(path) == ".":
        raise ValueError(f"file {text!r} names output_dir itself; give a file name")
    if (reason := reserved_name_reason(str(path))) is not None:
        separator = ":" if reason.startswith("names") else " is"
        raise ValueError(f"file {text!r}{separator} {reason}")
    if "\\" in text:
        raise ValueError(f"file {text!r} must not contain backslashes")
    return str(path)


MAX_KEY_PATH_CHARS = 1024
MAX_TEMPLATE_CHARS = 256 * 1024
"""Largest template text, inline or from ``source`` (a template is a page of text, not a data set)."""
MAX_TEMPLATE_SECRETS = 1024


def _key_path(value: object) -> str:
    # The syntax is checked where keys are understood (agent.render.keys, through check_outputs); here only
    # what any key text must be.
    text = _string(value)
    if not text:
        raise ValueError("expected a key such as password or db.primary.password, got an empty string")
    if len(text) > MAX_KEY_PATH_CHARS:
        raise ValueError(f"a key is at most {MAX_KEY_PATH_CHARS} characters, got {len(text)}")
    return text


def _optional_key_path(value: object) -> str | None:
    return None if value is None else _key_path(value)


def _optional_relative_file(value: object) -> str | None:
    return None if value is None else _relative_file(value)


def _optional_env_var_name(value: object) -> str | None:
    return None if value is None else _env_var_name(value)


def _optional_mode(value: object) -> int | None:
    return None if value is None else parse_mode(value)


def _optional_mode_text(mode: int | None) -> str | None:
    return None if mode is None else format_mode(mode)


def _optional_template_text(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"expected the template's text as a string, got {describe(value)}")
    if len(value) > MAX_TEMPLATE_CHARS:
        raise ValueError(
            f"a template is at most {MAX_TEMPLATE_CHARS // 1024} KiB, got {len(value)} characters"
        )
    # Newlines and tabs are the template's own; other control characters are refused as in every string.
    return _string(value, allow="\n\t\r")


def _optional_choice(*options: str) -> Callable[[object], object]:
    choose = _choice(*options)
    return lambda value: None if value is None else choose(value)


def _names(value: object, what: str) -> tuple[str, ...]:
    """A template's list of ``what`` names (secrets, selections): local names, at most
    MAX_TEMPLATE_SECRETS, none twice."""
    if not isinstance(value, list | tuple):
        raise ValueError(f"expected a list of {what} names, got {describe(value)}")
    if len(value) > MAX_TEMPLATE_SECRETS:
        raise ValueError(f"at most {MAX_TEMPLATE_SECRETS} names, got {len(value)}")
    names = tuple(_local_name(item) for item in value)
    if len(set(names)) != len(names):
        raise ValueError("a name is listed twice")
    return names


def _name_list(value: object) -> tuple[str, ...]:
    return _names(value, "secret")


def _selection_list(value: object) -> tuple[str, ...]:
    return _names(value, "selection")


def parse_relative_file(value: object) -> str:
    """A file path inside ``output_dir`` as the loader checks ``secrets[].file`` (relative, no ``..``, no
    reserved name, no backslash), normalised; ValueError naming what is wrong."""
    return _relative_file(value)


def _file_prefix(value: object) -> str:
    """What every file of a selection starts with (``payments/``, ``app-``), or "" for none: the local name
    is appended as it is, so a directory needs its ``/``."""
    if value == "":
        return ""
    text = _string(value)
    try:
        _relative_file(text + "x")
    except ValueError as error:
        raise ValueError(str(error).replace(repr(text + "x"), repr(text))) from None
    return text


SELECT_PLACEHOLDERS = ("{name}", "{env}")
"""What a selection's ``keys[].file`` and ``keys[].env`` are written with: the selected secret's local name
and its env name, so that every selected secret has outputs of its own."""
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")


def expand_placeholders(pattern: str, name: str, env: str) -> str:
    """``pattern`` with ``{name}`` and ``{env}`` replaced (the pattern was checked when it was read)."""
    return pattern.replace("{name}", name).replace("{env}", env)


def _placeholder_problem(text: str) -> str | None:
    unknown = [found for found in _PLACEHOLDER.findall(text) if found not in SELECT_PLACEHOLDERS]
    if unknown:
        return f"unknown placeholder {unknown[0]!r}: write {{name}} or {{env}}"
    rest = _PLACEHOLDER.sub("", text)
    if "{" in rest or "}" in rest:
        return "a brace outside {name} and {env}"
    if not any(placeholder in text for placeholder in SELECT_PLACEHOLDERS):
        return (
            "must contain {name} or {env}: every secret the selection matches gets this output, "
            "so each needs a place of its own"
        )
    return None


def _optional_key_file_pattern(value: object) -> str | None:
    """A selection key's file: a path relative to ``output_dir`` with ``{name}`` or ``{env}``."""
    if value is None:
        return None
    text = _string(value)
    if (problem := _placeholder_problem(text)) is not None:
        raise ValueError(f"file {text!r}: {problem}")
    _relative_file(expand_placeholders(text, "name", "ENV"))
    return text


def _optional_key_env_pattern(value: object) -> str | None:
    """A selection key's env name with ``{name}`` or ``{env}`` (``{env}_PASSWORD``)."""
    if value is None:
        return None
    text = _string(value)
    if (problem := _placeholder_problem(text)) is not None:
        raise ValueError(f"env {text!r}: {problem}")
    if not _ENV_NAME_PATTERN.fullmatch(expand_placeholders(text, "NAME", "ENV")):
        raise ValueError(
            f"{text!r} does not make a valid environment variable name "
            "(letters, digits and '_', not starting with a digit)"
        )
    return text


_ENV_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# --------------------------------------------------------------------------------------------------
# Identity: service accounts, delegation chains, the IAM Credentials endpoint
# --------------------------------------------------------------------------------------------------

SERVICE_ACCOUNT_RESOURCE = "projects/-/serviceAccounts/"
"""How IAM Credentials names an account in a delegation chain (``projects/-/serviceAccounts/EMAIL``)."""
MAX_DELEGATES = 16
"""Longest delegation chain accepted (Google documents none; a chain longer than this is a mistake)."""
IAM_ENDPOINT_PATH = "/projects/-/serviceAccounts/{}:generateAccessToken"
"""What ``gcp.iam_endpoint`` given as a base URL is completed with (after ``/v1``): google-auth's
``iam_endpoint_override`` is the full URL, the account in place of ``{}``."""
_EMAIL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._%+-]{0,127}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_EXAMPLE_ACCOUNT = "reader@my-project.iam.gserviceaccount.com"


def _service_account(value: object) -> str:
    """A service account email; ``projects/-/serviceAccounts/EMAIL`` and ``serviceAccount:EMAIL`` (the
    forms gcloud and IAM policies print) are accepted and stored as the email."""
    text = _string(value).strip()
    email = text.removeprefix(SERVICE_ACCOUNT_RESOURCE).removeprefix("serviceAccount:")
    if len(email) > 254 or not _EMAIL.fullmatch(email):
        raise ValueError(
            f"expected a service account email such as {_EXAMPLE_ACCOUNT}, got {describe(value)}"
        )
    return email


def _optional_service_account(value: object) -> str | None:
    return None if value is None else _service_account(value)


def _service_account_list(value: object) -> tuple[str, ...]:
    """A YAML list of service account emails, or one string of them separated by commas or spaces (an
    environment variable)."""
    raw = _words(value, "a list of service account emails")
    if len(raw) > MAX_DELEGATES:
        raise ValueError(f"at most {MAX_DELEGATES} accounts in a delegation chain, got {len(raw)}")
    accounts: list[str] = []
    for index, item in enumerate(raw):
        try:
            account = _service_account(item)
        except ValueError as error:
            raise ValueError(f"item {index}: {error}") from None
        if account in accounts:
            raise ValueError(f"item {index}: {account} is already in the chain")
        accounts.append(account)
    return tuple(accounts)


def _optional_iam_endpoint(value: object) -> str | None:
    """The IAM Credentials ``generateAccessToken`` URL, ``{}`` standing for the account: a base URL
    (``http://127.0.0.1:8781``, ``https://iamcredentials.googleapis.com/v1``) is completed with
    ``/v1/projects/-/serviceAccounts/{}:generateAccessToken``. Plain ``http`` only to a loopback host: the
    request carries the source credentials' access token."""
    if value is None:
        return None
    url = _string(value).strip()
    expected = (
        "expected an http(s) URL such as https://iamcredentials.googleapis.com or http://127.0.0.1:8781"
    )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError:
        raise ValueError(f"{expected}, got {describe(value)}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
        raise ValueError(f"{expected}, got {describe(value)}")
    if "@" in parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"{expected}, without user info, query or fragment")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ValueError(
            f"http:// only to a loopback address ({parts.hostname} is not one): the request carries an "
            "access token, use https://"
        )
    if "{}" in url:
        if url.count("{}") != 1 or url.replace("{}", "").count("{") or url.replace("{}", "").count("}"):
            raise ValueError("expected one {} where the service account goes, and no other braces")
        return url
    if "{" in url or "}" in url:
        raise ValueError("expected one {} where the service account goes, and no other braces")
    base = url.rstrip("/")
    return (base if base.endswith("/v1") else base + "/v1") + IAM_ENDPOINT_PATH


def _optional_boolean(value: object) -> bool | None:
    return None if value is None else _boolean(value)


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
    credential: bool = False
    """The value may be (or carry) a credential: its parser never echoes it, ``to_dict`` hides it, and its
    ``SECRETS_AGENT_*`` variable is kept from the commands the agent runs (``CREDENTIAL_ENV``)."""
    omit_default: bool = False
    """``to_dict`` (what ``check-config`` prints) leaves the setting out while it has its default: for
    settings of every secret that few secrets set (a secret's own identity)."""


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
    credential: bool = False,
    omit_default: bool = False,
) -> dict[str, object]:
    """Field metadata for a scalar setting (use as ``field(default=..., metadata=setting(...))``)."""
    return {_META_KEY: Setting(parse, dump, from_env, fallback_env, credential, omit_default)}


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


PayloadFormat = Literal["auto", "json", "yaml"]
PayloadDecode = Literal["none", "base64"]
OutputFormat = Literal["json", "yaml", "properties", "dotenv"]
OUTPUT_FORMATS: tuple[OutputFormat, ...] = ("json", "yaml", "properties", "dotenv")


@dataclass(frozen=True)
class KeySpec:
    """One more output taken from a secret's JSON/YAML payload (an item of a secret's ``keys``)."""

    key: str = field(metadata=setting(_key_path, from_env=False))
    """The field to deliver, in the syntax of the secret's ``key``. Required."""
    file: str | None = field(default=None, metadata=setting(_optional_relative_file, from_env=False))
    """File path relative to ``output_dir``. At least one of ``file`` and ``env``."""
    env: str | None = field(default=None, metadata=setting(_optional_env_var_name, from_env=False))
    """Environment variable name (env file, ``exec``)."""
    mode: int | None = field(
        default=None, metadata=setting(_optional_mode, dump=_optional_mode_text, from_env=False)
    )
    """Permission bits of the file. Default: the secret's ``mode``."""
    uid: int | None = field(default=None, metadata=setting(_optional_id_number, from_env=False))
    """Owner user id of the file. Default: the secret's ``uid``."""
    gid: int | None = field(default=None, metadata=setting(_optional_id_number, from_env=False))
    """Owner group id of the file. Default: the secret's ``gid``."""


@dataclass(frozen=True)
class TemplateSpec:
    """One rendered output built from several secrets (an item of ``templates``): a Jinja2 template run in a
    sandbox, or a whole set of secrets in one ``format``."""

    name: str = field(metadata=setting(_local_name, from_env=False))
    """Name of the template (``[A-Za-z0-9_.-]``), unique among templates; in logs, metrics and errors."""
    file: str | None = field(default=None, metadata=setting(_optional_relative_file, from_env=False))
    """File path relative to ``output_dir``. At least one of ``file`` and ``env``."""
    env: str | None = field(default=None, metadata=setting(_optional_env_var_name, from_env=False))
    """Environment variable that carries the rendered text (env file, ``exec``)."""
    text: str | None = field(default=None, metadata=setting(_optional_template_text, from_env=False))
    """The template, inline (Jinja2 syntax; it sees ``secrets.<name>.value``, ``.data``, ``.version``,
    ``.bytes``). Exactly one of ``text``, ``source`` and ``format``."""
    source: Path | None = field(
        default=None, metadata=setting(_optional_path, dump=_optional_str, from_env=False)
    )
    """A file holding the template (relative to the working directory; read once at start, up to 256 KiB)."""
    format: OutputFormat | None = field(
        default=None, metadata=setting(_optional_choice(*OUTPUT_FORMATS), from_env=False)
    )
    """No template to write: the ``secrets`` as one ``json``, ``yaml`` or ``properties`` file (keys: the
    secrets' names) or ``dotenv`` (keys: their env names)."""
    secrets: tuple[str, ...] = field(default=(), metadata=setting(_name_list, dump=_list, from_env=False))
    """The secrets this template may see (a list of names of ``secrets``). With neither ``secrets`` nor
    ``select``: every configured secret, those of ``secrets`` and every secret a selection delivers."""
    select: tuple[str, ...] = field(
        default=(), metadata=setting(_selection_list, dump=_list, from_env=False, omit_default=True)
    )
    """Names of selections (``select[].name``) whose secrets this template also sees, whatever they turn
    out to be as secrets appear and go. Default: none (see ``secrets``)."""
    mode: int = field(default=0o440, metadata=setting(parse_mode, dump=format_mode, from_env=False))
    """Permission bits of the file. Default ``0440``."""
    uid: int | None = field(default=None, metadata=setting(_optional_id_number, from_env=False))
    """Owner user id of the file. Default: unchanged."""
    gid: int | None = field(default=None, metadata=setting(_optional_id_number, from_env=False))
    """Owner group id of the file. Default: unchanged."""


@dataclass(frozen=True)
class SecretSpec:
    """One secret the agent delivers: where it comes from and where it goes."""

    name: str = field(metadata=setting(_local_name, from_env=False))
    """Local name (``[A-Za-z0-9_.-]``), unique in the config. Required. Default for ``env`` and ``file``."""
    ref: SecretRef = field(metadata=setting(_reference_text, dump=str, from_env=False, credential=True))
    """Secret Manager reference in any form ``agent.config.refs`` accepts; short forms use ``project``.
    Required. (A credential by accident: a secret's value pasted in place of its reference is the likeliest
    mistake of all, so errors describe a reference that does not look like one instead of quoting it.)"""
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
    key: str | None = field(default=None, metadata=setting(_optional_key_path, from_env=False))
    """Deliver one field of a JSON or YAML payload instead of the whole payload: ``password``,
    ``db.primary.password``, ``hosts[0]``, ``labels["app.kubernetes.io/name"]`` for keys with dots, or a JSON
    Pointer (``/db/key.with.dots``). A missing key fails the snapshot (the last good one stays). Default:
    none (the whole payload)."""
    format: PayloadFormat = field(
        default="auto", metadata=setting(_choice("auto", "json", "yaml"), from_env=False)
    )
    """How ``key``, ``keys`` and templates' ``.data`` read the payload: ``json``, ``yaml`` or ``auto``
    (default: JSON when it starts with ``{`` or ``[``, else YAML)."""
    decode: PayloadDecode = field(default="none", metadata=setting(_choice("none", "base64"), from_env=False))
    """``base64``: the payload is stored base64-encoded (standard or URL-safe, padding optional); it is
    decoded before anything else (files, keys, templates). Default ``none``."""
    deliver: bool = field(default=True, metadata=setting(_boolean, from_env=False))
    """Write this secret's own file and env variable (default true). ``false``: it only feeds its ``keys``
    and the templates, and the endpoint does not serve it."""
    impersonate_service_account: str | None = field(
        default=None, metadata=setting(_optional_service_account, from_env=False, omit_default=True)
    )
    """Fetch this secret as this service account (an email), for a secret another team owns: the agent's
    own credentials (``gcp.credentials_file``, else Application Default Credentials) impersonate it, in
    place of ``gcp.impersonate_service_account``; they need ``roles/iam.serviceAccountTokenCreator`` on it.
    Secrets naming the same account (and ``delegates``) share one client. Default: none (the agent's
    identity)."""
    delegates: tuple[str, ...] = field(
        default=(), metadata=setting(_service_account_list, dump=_list, from_env=False, omit_default=True)
    )
    """With ``impersonate_service_account``: the delegation chain to it (emails, in order; each holds
    ``roles/iam.serviceAccountTokenCreator`` on the next, the last on the impersonated account). Not
    inherited from ``gcp.delegates``. Default: none (the agent's credentials impersonate it directly)."""
    keys: tuple[KeySpec, ...] = field(default=(), metadata=items(KeySpec))
    """More outputs from the same payload, fetched once: each a ``key`` with its own ``file`` and/or
    ``env`` (and ``mode``, ``uid``, ``gid``, defaulting to the secret's)."""

    def __post_init__(self) -> None:
        # Derived defaults, so code and tests can build a spec from just name and ref.
        if not self.env:
            object.__setattr__(self, "env", env_name_for(self.name))
        if not self.file:
            object.__setattr__(self, "file", self.name)


@dataclass(frozen=True)
class RewriteRule:
    """One step from a selected secret's id to its local name (an item of ``select[].rewrite``)."""

    regex: str = field(metadata=setting(_id_regex, from_env=False))
    """Regular expression (Python syntax, bounded like ``name_regex``) searched in the name so far: the
    secret id, rewritten by the rules before this one. Required."""
    replace: str = field(default="", metadata=setting(_replacement, from_env=False))
    """What every match is replaced with (``re.sub``: ``\\1`` or ``\\g<name>`` for a group); empty (the
    default) cuts the match out, so ``regex: ^payments-`` turns ``payments-db`` into ``db``."""


@dataclass(frozen=True)
class SelectKeySpec:
    """One more output taken from the payload of each selected secret (an item of ``select[].keys``):
    like a secret's ``keys``, with ``{name}`` (the local name) or ``{env}`` (its env name) in ``file`` and
    ``env`` so that each selected secret writes its own."""

    key: str = field(metadata=setting(_key_path, from_env=False))
    """The field to deliver, in the syntax of ``secrets[].key``. Required."""
    file: str | None = field(default=None, metadata=setting(_optional_key_file_pattern, from_env=False))
    """File path relative to ``output_dir`` with ``{name}`` or ``{env}`` (``{name}/password``). At least
    one of ``file`` and ``env``."""
    env: str | None = field(default=None, metadata=setting(_optional_key_env_pattern, from_env=False))
    """Environment variable name with ``{name}`` or ``{env}`` (``{env}_PASSWORD``)."""
    mode: int | None = field(
        default=None, metadata=setting(_optional_mode, dump=_optional_mode_text, from_env=False)
    )
    """Permission bits of the file. Default: the selection's ``mode``."""
    uid: int | None = field(default=None, metadata=setting(_optional_id_number, from_env=False))
    """Owner user id of the file. Default: the selection's ``uid``."""
    gid: int | None = field(default=None, metadata=setting(_optional_id_number, from_env=False))
    """Owner group id of the file. Default: the selection's ``gid``."""

    def for_secret(self, name: str, env: str) -> KeySpec:
        """The KeySpec of one selected secret (local name ``name``, env name ``env``), checked as the loader
        checks a secret's keys; ValueError naming what is wrong."""
        file = None if self.file is None else _relative_file(expand_placeholders(self.file, name, env))
        key_env = None if self.env is None else _env_var_name(expand_placeholders(self.env, name, env))
        return KeySpec(key=self.key, file=file, env=key_env, mode=self.mode, uid=self.uid, gid=self.gid)


@dataclass(frozen=True)
class SelectSpec:
    """Secrets chosen by what they are instead of by name (an item of ``select``): every secret of
    ``project`` (and ``location``) whose labels and id match is delivered like a configured secret, named
    by ``rewrite``, ``env_prefix`` and ``file_prefix`` and shaped by the settings below, which are those
    of ``secrets[]``. Give ``labels``, ``name_prefix``, ``name_regex`` or several (all must match). Only
    with the Secret Manager source. A secret that is also configured in ``secrets`` is that secret's
    (explicit wins); a secret, name, env or file two selections would both take goes to the earlier one;
    each collision is reported naming both sides, and the loser is skipped."""

    name: str = field(default="", metadata=setting(_local_name, from_env=False))
    """Name of the selection (``[A-Za-z0-9_.-]``), unique among selections: in logs, metrics and errors,
    and what ``templates[].select`` names. When omitted, ``select-<i>`` after its position (``select-0``)."""
    labels: tuple[tuple[str, str], ...] = field(
        default=(), metadata=setting(_labels, dump=_dump_labels, from_env=False)
    )
    """Labels the secret must have: a mapping ``{app: payments, team: "*"}``, or the text
    ``app=payments,team=*``. A value must be equal; ``"*"`` (quoted in YAML) means "has the label, any
    value". Keys and values follow Google's label rules. Default: none."""
    name_prefix: str = field(default="", metadata=setting(_id_prefix, from_env=False))
    """What the secret id must start with (``payments-``). Default: any id."""
    name_regex: str = field(default="", metadata=setting(_optional_id_regex, from_env=False))
    """Regular expression (Python syntax) searched in the secret id: anchor it (``^payments-.*-db$``) to
    match the whole id. At most 1,000 characters and 3 repetitions (``*``, ``+``, ``{m,n}``; one more
    counts for a pattern without ``^``), none nested in another or around an alternation, and no
    back-references: the cost of matching a 255-character id stays bounded. Default: any id."""
    project: str | None = field(default=None, metadata=setting(optional_project, from_env=False))
    """Project whose secrets are listed (id or number). Default: the top-level ``project``; one of them is
    required."""
    location: str | None = field(default=None, metadata=setting(_optional_location, from_env=False))
    """Location of regional secrets to list (``us-central1``). Default: none (global secrets)."""
    version: str = field(default="latest", metadata=setting(_version, from_env=False))
    """Version delivered of each selected secret: ``latest``, a number or an alias. Default ``latest``."""
    rewrite: tuple[RewriteRule, ...] = field(default=(), metadata=items(RewriteRule))
    """Rules applied in order to the secret id to make the local name (``regex`` and ``replace``, as
    ``re.sub``). A result that is not a valid local name skips that secret, with a warning. Default: none
    (the local name is the id)."""
    env_prefix: str = field(default="", metadata=setting(_env_prefix, from_env=False))
    """Each secret's env name is this followed by its local name in UPPER_SNAKE_CASE (``PAY_`` and
    ``db-main`` give ``PAY_DB_MAIN``). Default: none (``DB_MAIN``)."""
    file_prefix: str = field(default="", metadata=setting(_file_prefix, from_env=False))
    """Each secret's file is this followed by its local name, relative to ``output_dir``: end it with ``/``
    for a directory (``payments/``). Default: none (the file is the local name)."""
    required: bool = field(default=False, metadata=setting(_boolean, from_env=False))
    """If true, a selection that matches no secret is an error (``init``, ``check-config``) instead of a
    warning, and each secret it delivers is required as ``secrets[].required`` is (a failed fetch fails
    ``init``). Default false."""
    mode: int = field(default=0o440, metadata=setting(parse_mode, dump=format_mode, from_env=False))
    """Permission bits of each file, as ``secrets[].mode``. Default ``0440``."""
    uid: int | None = field(default=None, metadata=setting(_optional_id_number, from_env=False))
    """Owner user id of each file. Default: unchanged (the agent's own user)."""
    gid: int | None = field(default=None, metadata=setting(_optional_id_number, from_env=False))
    """Owner group id of each file. Default: unchanged (the agent's own group)."""
    key: str | None = field(default=None, metadata=setting(_optional_key_path, from_env=False))
    """Deliver one field of each payload, as ``secrets[].key``. Default: none (the whole payload)."""
    format: PayloadFormat = field(
        default="auto", metadata=setting(_choice("auto", "json", "yaml"), from_env=False)
    )
    """How ``key``, ``keys`` and templates read the payloads, as ``secrets[].format``. Default ``auto``."""
    decode: PayloadDecode = field(default="none", metadata=setting(_choice("none", "base64"), from_env=False))
    """``base64``: the payloads are stored base64-encoded, as ``secrets[].decode``. Default ``none``."""
    deliver: bool = field(default=True, metadata=setting(_boolean, from_env=False))
    """Write each secret's own file and env variable (default true). ``false``: they only feed ``keys``
    and the templates."""
    impersonate_service_account: str | None = field(
        default=None, metadata=setting(_optional_service_account, from_env=False, omit_default=True)
    )
    """Fetch (and list) these secrets as this service account, as ``secrets[].impersonate_service_account``.
    Default: none (the agent's identity)."""
    delegates: tuple[str, ...] = field(
        default=(), metadata=setting(_service_account_list, dump=_list, from_env=False, omit_default=True)
    )
    """With ``impersonate_service_account``: the delegation chain to it, as ``secrets[].delegates``.
    Default: none."""
    keys: tuple[SelectKeySpec, ...] = field(default=(), metadata=items(SelectKeySpec))
    """More outputs from each payload, fetched once: each a ``key`` with its own ``file`` and/or ``env``
    written with ``{name}`` or ``{env}``."""
    known: tuple[str, ...] = field(
        default=(), metadata=setting(_secret_ids, dump=_list, from_env=False, omit_default=True)
    )
    """Secret ids this selection is known to match, resolved ahead of time by whatever deploys the pod: the
    admission webhook writes them for the pods it injects when it runs with ``--resolve-selections`` (one
    listing per distinct selection, shared by the fleet), or a deployment tool does. The agent starts with
    them instead of listing, so a fleet restarting at once does not spend the read quota. Default: none."""
    known_at: float | None = field(
        default=None, metadata=setting(_optional_timestamp, from_env=False, omit_default=True)
    )
    """When the listing ``known`` comes from was made, in seconds since the epoch (the webhook writes the
    time its listing started, which may be up to ``--selection-cache-ttl`` old or more). Default: none."""

    @property
    def label_selector(self) -> dict[str, str]:
        """``labels`` as a mapping, ``"*"`` for "has the label"."""
        return dict(self.labels)

    @property
    def presence_labels(self) -> tuple[str, ...]:
        """The label keys that only need to be present (value ``"*"``)."""
        return tuple(key for key, value in self.labels if value == LABEL_ANY)


@dataclass(frozen=True)
class GcpConfig:
    """How the ``gcp`` source talks to Secret Manager (YAML section ``gcp``)."""

    endpoint: str | None = field(
        default=None,
        metadata=setting(_optional_endpoint, dump=_optional_str, fallback_env="SECRET_MANAGER_EMULATOR_HOST"),
    )
    """``HOST:PORT`` of a Secret Manager emulator spoken to over plaintext gRPC (TLS with ``endpoint_tls``),
    without credentials unless an identity is configured (see ``endpoint_credentials``). Env
    ``SECRETS_AGENT_GCP_ENDPOINT``; when nothing of ours sets it, ``SECRET_MANAGER_EMULATOR_HOST``. Default:
    none (the real service, with Application Default Credentials)."""
    endpoint_tls: bool = field(default=False, metadata=setting(_boolean))
    """Speak TLS to ``endpoint``, checking its certificate against the system's roots (or the PEM file named
    by ``GRPC_DEFAULT_SSL_ROOTS_FILE_PATH``). Needed to send credentials to an endpoint that is not on a
    loopback address. Default false (plaintext)."""
    endpoint_credentials: bool | None = field(default=None, metadata=setting(_optional_boolean))
    """Send the agent's Google credentials (an ``authorization`` access token, refreshed as they expire) to
    ``endpoint``, as to Google: over plaintext only to a loopback address (gRPC local credentials),
    otherwise only with ``endpoint_tls``; a token bound for another host is refused when the configuration
    is read. ``true``: always (Application Default Credentials too); ``false``: never. Default: when an
    identity is configured explicitly (``credentials_file``, or ``impersonate_service_account`` here or on
    a secret)."""
    credentials_file: Path | None = field(default=None, metadata=setting(_optional_path, dump=_optional_str))
    """A Google credential configuration or key file, read by google-auth: an ``external_account`` file
    (Workload Identity Federation, as ``gcloud iam workload-identity-pools create-cred-config`` writes it;
    its ``credential_source.file`` is the pod's projected Kubernetes service account token, re-read at every
    token refresh), a service account key, or any other type google-auth loads. Read when the first secret
    is fetched (``check-config`` describes it). Default: none (Application Default Credentials:
    ``GOOGLE_APPLICATION_CREDENTIALS``, gcloud's ADC file, the metadata server of GKE or GCE)."""
    impersonate_service_account: str | None = field(default=None, metadata=setting(_optional_service_account))
    """Call Secret Manager as this service account (an email), impersonated with the agent's credentials
    (``credentials_file`` or Application Default Credentials) through IAM Credentials' generateAccessToken;
    they need ``roles/iam.serviceAccountTokenCreator`` (permission ``iam.serviceAccounts.getAccessToken``)
    on it. Tokens are refreshed before they expire. A secret's own ``impersonate_service_account`` takes its
    place for that secret. Default: none."""
    delegates: tuple[str, ...] = field(default=(), metadata=setting(_service_account_list, dump=_list))
    """The delegation chain to ``impersonate_service_account``: service account emails in order, each
    holding ``roles/iam.serviceAccountTokenCreator`` on the next, the last on the impersonated account. A
    YAML list, or in ``SECRETS_AGENT_GCP_DELEGATES`` emails separated by commas or spaces. Default: none."""
    iam_endpoint: str | None = field(default=None, metadata=setting(_optional_iam_endpoint))
    """Where impersonation asks for tokens, instead of ``https://iamcredentials.googleapis.com`` (the
    emulator, a private endpoint): a base URL such as ``http://127.0.0.1:8781``, completed with
    ``/v1/projects/-/serviceAccounts/{}:generateAccessToken`` and stored so, or that full URL with ``{}``
    for the account (google-auth's ``iam_endpoint_override``). ``http://`` only to a loopback address.
    Default: none (Google's)."""
    quota_project: str | None = field(
        default=None, metadata=setting(optional_project, fallback_env="GOOGLE_CLOUD_QUOTA_PROJECT")
    )
    """The project Secret Manager calls count against (quota and billing), sent as ``x-goog-user-project``;
    the caller needs ``roles/serviceusage.serviceUsageConsumer`` on it. Env
    ``SECRETS_AGENT_GCP_QUOTA_PROJECT``; when nothing of ours sets it, ``GOOGLE_CLOUD_QUOTA_PROJECT`` (as
    google-auth reads it). Default: none (each call counts against the project of its secret)."""
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

    def explicit_identity(self, secrets: Sequence[SecretSpec | SelectSpec] = ()) -> bool:
        """Whether an identity is configured on purpose: a credentials file, or an impersonated account
        (here or on one of ``secrets``, which may be selections too)."""
        return (
            self.credentials_file is not None
            or self.impersonate_service_account is not None
            or any(spec.impersonate_service_account is not None for spec in secrets)
        )

    def endpoint_gets_credentials(self, secrets: Sequence[SecretSpec | SelectSpec] = ()) -> bool:
        """Whether the agent sends credentials to ``endpoint`` (False without one): ``endpoint_credentials``,
        or by default when an identity is configured explicitly."""
        if self.endpoint is None:
            return False
        if self.endpoint_credentials is not None:
            return self.endpoint_credentials
        return self.explicit_identity(secrets)


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
    token: str | None = field(
        default=None, metadata=setting(_optional_token, dump=_dump_token, credential=True)
    )
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
    allowed_hosts: tuple[str, ...] = field(default=(), metadata=setting(_host_list, dump=_list))
    """Host names the endpoint answers besides ``127.0.0.1``, ``localhost`` and ``[::1]`` (any port): a
    request whose ``Host`` header names anything else is refused, so a DNS-rebinding web page cannot reach
    it. Each a DNS name or an IP address, without a port (at most 64); a YAML list, or in
    ``SECRETS_AGENT_SERVER_ALLOWED_HOSTS`` names separated by commas or spaces. Stored lower case, IPv6
    without brackets. Default: none."""


@dataclass(frozen=True)
class ProbesConfig:
    """The second listener: ``/healthz``, ``/readyz`` and ``/metrics`` (YAML section ``probes``)."""

    enabled: bool = field(default=True, metadata=setting(_boolean))
    """Serve probes and metrics. Default true."""
    listen: str = field(default="0.0.0.0:8731", metadata=setting(_listen_address))
    """``HOST:PORT``. Default ``0.0.0.0:8731``: the kubelet and Prometheus must reach it; it serves no
    secret data and needs no token."""
    allowed_hosts: tuple[str, ...] = field(default=(), metadata=setting(_host_list, dump=_list))
    """DNS names the probes listener answers besides IP literals (which the kubelet and Prometheus use,
    reaching the pod by its IP): a request whose ``Host`` header names any other DNS name is refused, so a
    DNS-rebinding web page cannot read ``/metrics``. Same syntax as ``server.allowed_hosts`` (env
    ``SECRETS_AGENT_PROBES_ALLOWED_HOSTS``). Default: none."""
    max_connections: int = field(default=32, metadata=setting(_at_least(1)))
    """Most probe connections open at once (the kubelet and Prometheus need a few). At the cap a new
    connection evicts the one idle the longest; only when every one has a request in flight is the newcomer
    answered 503. Lowered, with a warning, when the file-descriptor limit cannot hold it. Default 32."""


@dataclass(frozen=True)
class DotenvConfig:
    """The ``dotenv`` source: values from a ``.env`` file, watched for edits (YAML section ``dotenv``)."""

    file: Path = field(default=Path(".env"), metadata=setting(_path, dump=str))
    """The ``.env`` file (``dev``, or the fallback in development). With no ``secrets`` configured, ``dev``
    serves every key in it. Env ``SECRETS_AGENT_DOTENV_FILE``, flag ``--dotenv`` (dev). Default ``.env`` in
    the working directory."""
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
    url: str | None = field(default=None, metadata=setting(_optional_url, dump=_dump_url, credential=True))
    """``http://`` or ``https://`` URL that gets an empty POST after each swap. Its user info and query may
    hold credentials: errors never quote it, and ``check-config`` prints them as ``<redacted>``. Default:
    none."""
    url_timeout: float = field(default=5.0, metadata=setting(parse_duration, dump=_seconds))
    """Deadline of each POST, in seconds (a duration). Default 5."""
    url_retries: int = field(default=3, metadata=setting(_at_least(0)))
    """Extra attempts of a failed POST within one notification (>= 0). Default 3."""
    command: tuple[str, ...] = field(default=(), metadata=setting(_command_line, dump=_list, credential=True))
    """Command run after each swap: a YAML list of arguments, or one string split like a shell would
    (``shlex``; no variables, no pipes). Default: none."""
    command_timeout: float = field(default=30.0, metadata=setting(parse_duration, dump=_seconds))
    """The command is killed after this many seconds (a duration). Default 30."""
    max_attempts: int = field(default=5, metadata=setting(_at_least(1)))
    """Attempts of one notification (signal, POST round or command) before it is given up and logged
    (>= 1). Files are never rolled back. Default 5."""


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

    topic: str | None = field(default=None, metadata=setting(pubsub_name("topics")))
    """``projects/P/topics/T``: the topic Secret Manager publishes to (``Secret.topics``). The agent creates
    its own subscription on it at start (``secrets-agent-<hostname>-<random>``, filtered on
    ``attributes.secretId`` to its secrets, expiring after ``subscription_ttl`` unused) and deletes it on a
    graceful shutdown. Flag ``--events-topic``. Default: none."""
    subscription: str | None = field(default=None, metadata=setting(pubsub_name("subscriptions")))
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

    def spread_seconds(self, fleet: FleetConfig) -> float:
        """The delay spread actually used on an event: ``max_delay``, or longer when the fleet's fetches of
        one new version would not fit in its share of the access quota in that time
        (``fleet.event_spread_seconds()``)."""
        return max(self.max_delay, fleet.event_spread_seconds())


RELIST_FLOOR_EVENTS = 3600.0
"""Shortest automatic re-list interval while events flow (they carry every change; the re-list is a safety
net): 1 hour."""
RELIST_FLOOR_POLLING = 600.0
"""Shortest automatic re-list interval without events (the re-list is how new secrets are found): 10
minutes. Also the cap of the automatic start jitter."""


@dataclass(frozen=True)
class FleetConfig:
    """How many agents share the project's quotas, so that each paces itself (YAML section ``fleet``; read
    by the agent and by ``rotate``). Set ``size`` to the number of pods sharing the project."""

    size: int = field(default=1, metadata=setting(_at_least(1)))
    """Pods (agents) that list and fetch from the same project at once (>= 1): set it in the fleet's
    configuration, or let the admission webhook write it (``--fleet-size``) into every pod with a selection.
    Default 1."""
    reads_per_minute: int = field(default=300, metadata=setting(_at_least(1)))
    """Share of Secret Manager's read quota (600 requests per minute per project: listings, metadata)
    the fleet's listings may use together (>= 1). Default 300."""
    access_per_minute: int = field(default=45000, metadata=setting(_at_least(1)))
    """Share of the access quota (90,000 per minute per project) the fleet's fetches of one new version
    may use together (>= 1). Default 45000."""

    def event_spread_seconds(self) -> float:
        """Seconds over which the fleet's fetches of one new version must spread to stay within
        ``access_per_minute``: 60 * size / access_per_minute."""
        return 60.0 * self.size / self.access_per_minute

    def listing_spread_seconds(self, listings: int = 1) -> float:
        """Seconds in which the fleet can make ``listings`` listings each within ``reads_per_minute``:
        60 * size * listings / reads_per_minute."""
        return 60.0 * self.size * max(1, listings) / self.reads_per_minute


@dataclass(frozen=True)
class DiscoveryConfig:
    """How selections (``select``) follow the secrets they match (YAML section ``discovery``): events add
    and remove secrets as they come, a listing now and then catches what events missed, both paced to the
    fleet's share of the read quota (``fleet``)."""

    grace_period: float = field(default=300.0, metadata=setting(parse_delay, dump=_seconds))
    """A secret that stops matching (relabelled, deleted) leaves the outputs this long after it was seen
    to go, in seconds (a duration, 0 allowed), so that a relabelling in two steps does not pull a file
    from under the app. Default 300 (5m)."""
    relist_interval: float | None = field(default=None, metadata=setting(_auto_duration, dump=_dump_auto))
    """Seconds between safety listings of each selection (a duration), jittered by +/-10%; or ``auto``
    (default): 1 hour with events, 10 minutes without, or longer when the fleet's listings would not fit
    in ``fleet.reads_per_minute`` (60 * fleet.size * listings / reads_per_minute)."""
    start_jitter: float | None = field(default=None, metadata=setting(_auto_delay, dump=_dump_auto))
    """When the agent must list at start (no ``known`` ids), it first waits a random delay in [0,
    start_jitter] seconds (a duration, 0 allowed), so that a fleet starting at once spreads its listings;
    explicit secrets do not wait. ``auto`` (default): the time the fleet's listings take within
    ``fleet.reads_per_minute``, at most 10 minutes."""

    def relist_seconds(self, fleet: FleetConfig, events_on: bool, *, listings: int = 1) -> float:
        """The re-list interval: ``relist_interval``, or for ``auto`` the floor (1 hour with events, 10
        minutes without) or, when longer, the time the fleet's ``listings`` (one agent's listing calls per
        round) take within ``fleet.reads_per_minute``."""
        if self.relist_interval is not None:
            return self.relist_interval
        floor = RELIST_FLOOR_EVENTS if events_on else RELIST_FLOOR_POLLING
        return max(floor, fleet.listing_spread_seconds(listings))

    def start_jitter_seconds(self, fleet: FleetConfig, *, listings: int = 1) -> float:
        """The start jitter: ``start_jitter``, or for ``auto`` the time the fleet's first listings take
        within ``fleet.reads_per_minute``, capped at 10 minutes (past it the retries of quota errors,
        with backoff, spread the rest)."""
        if self.start_jitter is not None:
            return self.start_jitter
        return min(RELIST_FLOOR_POLLING, fleet.listing_spread_seconds(listings))


@dataclass(frozen=True)
class Config:
    """The whole agent configuration. Build it with ``load_config()``; never mutate it."""

    project: str | None = field(
        default=None, metadata=setting(optional_project, fallback_env="GOOGLE_CLOUD_PROJECT")
    )
    """Default project for short secret references (``S``, ``S@V``). Env ``SECRETS_AGENT_PROJECT``; when no
    flag, variable or file sets it, ``GOOGLE_CLOUD_PROJECT``. Default: none (short references are errors)."""
    log_level: LogLevel = field(default="info", metadata=setting(_log_level))
    """``debug``, ``info``, ``warning`` or ``error``. Default ``info``."""
    output_dir: Path | None = field(default=None, metadata=setting(_optional_path, dump=_optional_str))
    """Directory (ideally tmpfs) the secret files are written into. Default: ``/secrets`` for ``init`` and
    ``run``; ``.secrets`` in the working directory for ``dev`` (see ``output_dir_for``)."""
    env_file: Path | None = field(default=None, metadata=setting(_optional_path, dump=_optional_str))
    """Where to also write all secrets as a dotenv/POSIX-shell env file. A relative path (or one under
    ``output_dir``) lives inside ``output_dir`` and is swapped with the files; any other path is written
    atomically on its own right after the swap. Default: none."""
    poll_interval: float = field(default=300.0, metadata=setting(parse_duration, dump=_seconds))
    """Seconds between polls (``30s``, ``5m``, ``1h``, ``1500ms`` or a number). Default 300."""
    poll_jitter: float = field(default=0.1, metadata=setting(_fraction))
    """Random spread of each poll interval, as a fraction 0..1 of it (0.1 = +/-10%). Default 0.1."""
    refresh_min_interval: float = field(default=1.0, metadata=setting(parse_duration, dump=_seconds))
    """Least time between two forced checks of every secret (SIGHUP, ``POST /v1/refresh``): refreshes asked
    while one is queued join it, the endpoint answers 429 with ``Retry-After`` to one asked sooner, and a
    signal that comes sooner waits. Bounds what a local caller can make the agent ask Secret Manager.
    Default 1s."""
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
    warning (``init``, ``run``; ``dev``, on a laptop's disk by design, neither warns nor checks unless this
    is set). Default false."""
    log_format: LogFormat = field(default="auto", metadata=setting(_choice(*LOG_FORMATS)))
    """``json``: one JSON object per line for Cloud Logging; ``text``: compact lines for people; ``auto``
    (default): ``text`` when standard error is a terminal, ``json`` otherwise (a pod, a pipe, a file).
    Secret values are redacted in both."""
    timeout: float = field(default=60.0, metadata=setting(parse_duration, dump=_seconds))
    """Overall deadline of the bootstrap (``init``, the first fetch of ``run``/``exec``), in seconds (a
    duration). Default 60."""
    shutdown_grace: float = field(default=10.0, metadata=setting(parse_duration, dump=_seconds))
    """After SIGTERM, seconds (a duration) the agent's tasks get to finish before they are cancelled.
    Default 10."""
    concurrency: int = field(default=100, metadata=setting(_at_least(1)))
    """Most Secret Manager fetches in flight at once (>= 1). Default 100: one HTTP/2 connection's concurrent
    streams at Google's front end (more would only queue inside gRPC), so up to 100 secrets cost one round
    trip; the quota is per minute, so this does not change what a fleet restart asks of it."""
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
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig, metadata=section())
    """How selections follow the secrets they match."""
    fleet: FleetConfig = field(default_factory=FleetConfig, metadata=section())
    """The fleet of agents sharing the project's quotas."""
    secrets: tuple[SecretSpec, ...] = field(default=(), metadata=items(SecretSpec))
    """The secrets to deliver: the file's ``secrets`` followed by the ``--secret NAME=REF`` flags.
    Default: none; ``dev`` reading a ``.env`` file then serves every ``KEY=value`` line of it as a secret
    named ``KEY`` (file ``KEY``, env entry ``KEY``) and follows the file: a key added is served, a key
    removed leaves the outputs (there the file is the configuration; configured secrets keep their
    last-known-good value instead)."""
    select: tuple[SelectSpec, ...] = field(default=(), metadata=items(SelectSpec))
    """Secrets chosen by labels, id prefix or id pattern instead of by name, found by listing the project
    and followed as they appear and go (``discovery``). Only with the Secret Manager source. Default:
    none."""
    templates: tuple[TemplateSpec, ...] = field(default=(), metadata=items(TemplateSpec))
    """Outputs composed from several secrets (Jinja2 templates in a sandbox, or output formats), written in
    the same atomic swap as the secrets' files. Default: none."""

    def source_for(self, command: Command) -> SourceName:
        """The source ``command`` uses: ``source``, or for ``auto`` dotenv in ``dev`` and gcp otherwise.
        (The no-credentials fallback of ``fallback_file`` is decided at run time, not here.)"""
        if self.source != "auto":
            return self.source
        return "dotenv" if command == "dev" else "gcp"

    def select_problem(self, command: Command) -> str | None:
        """Why ``select`` cannot be served by ``command``, or None: selections list Secret Manager, and
        the source of ``command`` is the ``.env`` file (``dev`` with ``source: auto``; the loader refuses
        ``source: dotenv`` with selections itself)."""
        if self.select and self.source_for(command) == "dotenv":
            return SELECT_NEEDS_GCP
        return None

    def output_dir_for(self, command: Command) -> Path:
        """The directory ``command`` writes to: ``output_dir``, or when it is not set ``.secrets`` (relative
        to the working directory) for ``dev`` and ``/secrets`` for the others."""
        if self.output_dir is not None:
            return self.output_dir
        return DEV_OUTPUT_DIR if command == "dev" else DEFAULT_OUTPUT_DIR

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


def _credential_env(cls: type[Any], path: str) -> set[str]:
    names: set[str] = set()
    for f in dataclasses.fields(cls):
        meta, key_path = _meta(f), f"{path}.{f.name}" if path else f.name
        if isinstance(meta, Setting) and meta.credential and meta.from_env:
            names.add(ENV_PREFIX + key_path.upper().replace(".", "_"))
        elif isinstance(meta, Section) and isinstance(f.default_factory, type):
            names |= _credential_env(f.default_factory, key_path)
    return names


CREDENTIAL_ENV: frozenset[str] = frozenset({CONFIG_YAML_ENV, *_credential_env(Config, "")})
"""The ``SECRETS_AGENT_*`` variables that may hold a credential: every setting marked ``credential``
(``SECRETS_AGENT_SERVER_TOKEN``, ``..._NOTIFY_URL``, ``..._NOTIFY_COMMAND``) and the inline configuration
``SECRETS_AGENT_CONFIG_YAML``, which may hold all of them. The commands the agent runs never inherit them."""


def _dump(obj: Any) -> dict[str, object]:
    out: dict[str, object] = {}
    for f in dataclasses.fields(obj):
        meta, value = _meta(f), getattr(obj, f.name)
        if isinstance(meta, Setting):
            if meta.omit_default and value == f.default:
                continue
            out[f.name] = meta.dump(value)
        elif isinstance(meta, Section):
            out[f.name] = _dump(value)
        else:
            out[f.name] = [_dump(item) for item in value]
    return out


def written_files(
    secrets: tuple[SecretSpec, ...], templates: tuple[TemplateSpec, ...] = ()
) -> dict[str, str]:
    """Every file the configuration writes under ``output_dir`` -> who writes it (for messages)."""
    files: dict[str, str] = {}
    for spec in secrets:
        if spec.deliver:
            files[spec.file] = f"the file of secret {spec.name!r}"
        for key in spec.keys:
            if key.file is not None:
                files[key.file] = f"the file of key {key.key!r} of secret {spec.name!r}"
    for template in templates:
        if template.file is not None:
            files[template.file] = f"the file of template {template.name!r}"
    return files
