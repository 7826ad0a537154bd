"""Building the one Config: ``load_config()`` reads YAML, environment and flags, and reports every problem.

Precedence, highest first: flags > environment (``SECRETS_AGENT_*``) > YAML file > defaults. Where no file
can be mounted (an injected container), the file's text may come from ``SECRETS_AGENT_CONFIG_YAML`` instead.

One generic reader walks the fields of the ``agent.config.schema`` dataclasses:

* a setting at path ``a.b`` is read from the file key ``a: {b: ...}``, the environment variable
  ``SECRETS_AGENT_A_B`` and the flag key ``"a.b"`` (the CLI's ``--a-b``);
* unknown keys and unknown ``SECRETS_AGENT_*`` variables are errors (typos must not be silently ignored),
  each with the closest setting as a hint;
* except Kubernetes' service-link variables: for every Service in the namespace Kubernetes sets
  ``<SERVICE>_SERVICE_HOST``, ``<SERVICE>_SERVICE_PORT``, ``<SERVICE>_SERVICE_PORT_<NAME>``,
  ``<SERVICE>_PORT``, ``<SERVICE>_PORT_<N>_<PROTO>`` and its ``_PROTO``, ``_PORT`` and ``_ADDR``
  (https://kubernetes.io/docs/concepts/services-networking/service/#environment-variables), so a Service
  named ``secrets-agent-webhook`` (ours) gives every pod ``SECRETS_AGENT_WEBHOOK_SERVICE_HOST``. A
  ``SECRETS_AGENT_*`` variable whose name AND value have one of those shapes (an IP address, a port
  number, ``tcp://IP:PORT``, a protocol) is ignored; ``SECRETS_AGENT_SERVER_PORT=8730`` still is an error;
* every problem is collected and raised together in one ConfigError, each with its path.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal, TypeVar

from agent.config.refs import hidden_reason, parse_ref
from agent.config.schema import (
    CONFIG_FILE_ENV,
    CONFIG_YAML_ENV,
    ENV_PREFIX,
    MAX_TEMPLATE_CHARS,
    SELECT_NEEDS_GCP,
    Config,
    DotenvConfig,
    EventsConfig,
    ExecConfig,
    GcpConfig,
    KeySpec,
    NotifyConfig,
    ProbesConfig,
    RewriteRule,
    SecretSpec,
    Section,
    SelectKeySpec,
    SelectSpec,
    ServerConfig,
    Setting,
    TemplateSpec,
    _meta,
    reserved_name_reason,
    written_files,
)
from agent.config.values import (
    _ENV_NAME,
    _seconds,
    describe,
    describe_kind,
    env_name_for,
    is_loopback,
    split_listen,
)
from agent.config.yaml import read_yaml_file, read_yaml_text
from agent.errors import ConfigError, InvalidReference, Problem


def unknown_key(key: object, known: Collection[str], path: str) -> Problem:
    """The problem of a key that is not a setting at ``path``, with the closest known key as a hint."""
    import difflib  # only a configuration with a typo needs it

    hint = ""
    if isinstance(key, str) and (close := difflib.get_close_matches(key, sorted(known), n=1)):
        hint = f" (did you mean {close[0]!r}?)"
    label = key if isinstance(key, str) else describe(key)
    return Problem(_join(path, label), f"unknown key{hint}")


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
                self.problems.append(unknown_key(key, known, path))
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

    def check_leftovers(self) -> None:
        """Unknown ``SECRETS_AGENT_*`` variables are typos until proven otherwise (Kubernetes' service links
        of our own Services are proven otherwise: see the module docstring)."""
        # Compared without the prefix every name shares, which would make any two names look alike.
        known = sorted(name.removeprefix(ENV_PREFIX) for name in self.env_used | _NOT_SETTINGS)
        suggested = 0
        for name in sorted(self.env):
            if not name.startswith(ENV_PREFIX) or name in _NOT_SETTINGS or name in self.env_used:
                continue
            if is_service_link(name, self.env[name]):
                continue
            hint = ""
            # difflib is quadratic in the name's length: a bounded number of bounded names only.
            if suggested < _MAX_SUGGESTIONS and len(name) <= _MAX_SUGGESTED_NAME:
                import difflib  # only a typo needs it

                suggested += 1
                if close := difflib.get_close_matches(name.removeprefix(ENV_PREFIX), known, n=1, cutoff=0.75):
                    hint = f" (did you mean {ENV_PREFIX}{close[0]}?)"
            self.problems.append(Problem(f"env {name}", f"unknown setting{hint}"))
        for key in self.flags:
            if key not in self.flags_used:
                raise TypeError(f"load_config: flag {key!r} is not a config setting")  # a bug in the CLI


_NOT_SETTINGS = frozenset({CONFIG_FILE_ENV, CONFIG_YAML_ENV})
"""``SECRETS_AGENT_*`` variables that hold the configuration's source, not a setting."""
_MAX_SUGGESTIONS = 20
_MAX_SUGGESTED_NAME = 100

# Kubernetes' service-link variables (pkg/kubelet/envvars): <SERVICE> is the Service name upper-cased with
# '-' -> '_'; <NAME> a port's name likewise; <PROTO> TCP, UDP or SCTP.
_SERVICE_LINK = re.compile(
    r"[A-Z0-9_]+?_(?:"
    r"(?P<host>SERVICE_HOST)"
    r"|(?P<service_port>SERVICE_PORT(?:_[A-Z0-9_]+)?)"
    r"|(?P<url>PORT)"
    r"|(?P<port_url>PORT_[0-9]{1,5}_(?:TCP|UDP|SCTP))"
    r"|(?P<proto>PORT_[0-9]{1,5}_(?:TCP|UDP|SCTP)_PROTO)"
    r"|(?P<port>PORT_[0-9]{1,5}_(?:TCP|UDP|SCTP)_PORT)"
    r"|(?P<addr>PORT_[0-9]{1,5}_(?:TCP|UDP|SCTP)_ADDR)"
    r")"
)
_LINK_URL = re.compile(
    r"(?P<proto>tcp|udp|sctp)://(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<v4>[0-9.]+)):(?P<port>[0-9]{1,5})"
)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_port(text: str) -> bool:
    return text.isdigit() and 0 < int(text) < 65536


def is_service_link(name: str, value: str) -> bool:
    """Whether ``name=value`` is a Kubernetes service-link variable: the name's shape and the value's."""
    match = _SERVICE_LINK.fullmatch(name)
    if match is None:
        return False
    if match["host"] or match["addr"]:
        return _is_ip(value)
    if match["service_port"] or match["port"]:
        return _is_port(value)
    if match["proto"]:
        return value in ("tcp", "udp", "sctp")
    url = _LINK_URL.fullmatch(value)
    return url is not None and _is_ip(url["v6"] or url["v4"]) and _is_port(url["port"])


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
            # Perhaps a value pasted in place of NAME=REF: quoted only when it looks like a reference.
            shown = (
                describe(text)
                if isinstance(text, str) and hidden_reason(text) is None
                else (f"{describe_kind(text)}, not shown")
            )
            reader.problems.append(
                Problem(path, f"expected NAME=REF such as db-password=projects/P/secrets/S, got {shown}")
            )
            continue
        entries.append((path, {"name": name, "ref": ref}))
    return entries


def _read_secrets(
    reader: _Reader,
    from_file: object,
    from_flags: object,
    project: str | None,
    project_ok: bool,
    claims: list[_Claim],
) -> tuple[SecretSpec, ...]:
    """Every secret (file, then flags); ``claims`` collects the name, env and files each one takes, valid or
    not, so that a duplicate is reported even next to other problems: users fix everything in one round."""
    specs: list[SecretSpec] = []
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
        if values.get("delegates") and values.get("impersonate_service_account") is None:
            reader.problems.append(Problem(f"{path}.delegates", _DELEGATES_ALONE.format(where=path)))
        deliver = values.get("deliver", True)
        claimed = ("name", "env", "file") if deliver else ("name",)
        claim = _Claim(path, {key: values[key] for key in claimed if key in values})
        keys = _read_keys(reader, values, path, claims)
        if keys is not None:
            values["keys"] = keys
        if "name" in values and deliver:
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
    return tuple(specs)


def _read_keys(
    reader: _Reader, values: dict[str, Any], path: str, claims: list[_Claim]
) -> tuple[KeySpec, ...] | None:
    """The ``keys`` of one secret as KeySpecs (claiming their env and file), or None when absent/invalid."""

    def claim(where: str, key_values: Mapping[str, Any]) -> None:
        claims.append(_Claim(where, {k: v for k in ("env", "file") if (v := key_values.get(k)) is not None}))

    return _read_key_list(reader, values, path, KeySpec, claim)


_KeyItem = TypeVar("_KeyItem", KeySpec, SelectKeySpec)


def _read_key_list(
    reader: _Reader,
    values: dict[str, Any],
    path: str,
    kind: type[_KeyItem],
    claim: Callable[[str, Mapping[str, Any]], None] | None = None,
) -> tuple[_KeyItem, ...] | None:
    """``values["keys"]`` (popped) read as ``kind`` items, each with file or env; None when absent/invalid.
    ``claim`` is told each item's path and values (the env and file it takes), valid or not."""
    raw = values.pop("keys", None)
    if raw is None:
        return None
    if not isinstance(raw, list):
        reader.problems.append(Problem(f"{path}.keys", f"expected a list of keys, got {describe(raw)}"))
        return None
    keys: list[_KeyItem] = []
    for index, item in enumerate(raw):
        where = f"{path}.keys[{index}]"
        if not isinstance(item, Mapping):
            reader.problems.append(
                Problem(where, f"expected a mapping with key and file or env, got {describe(item)}")
            )
            continue
        before = len(reader.problems)
        key_values = reader.section(kind, item, where, layered=False)
        if (
            "key" in key_values
            and not ({"file", "env"} & key_values.keys())
            and len(reader.problems) == before
        ):
            reader.problems.append(Problem(where, "set file, env or both: where should this key go?"))
        if claim is not None:
            claim(where, key_values)
        if len(reader.problems) == before:
            keys.append(kind(**key_values))
    return tuple(keys)


# --------------------------------------------------------------------------------------------------
# Selections: per-item parsing plus the rules across them
# --------------------------------------------------------------------------------------------------

_SELECTORS = ("labels", "name_prefix", "name_regex")


def _read_selections(
    reader: _Reader, raw: object, project: str | None, project_ok: bool, source: object
) -> tuple[tuple[SelectSpec, ...], set[str]]:
    """The ``select`` list, every item checked; returns the valid selections and the names of all items
    (valid or not, so that a template naming a selection with a problem is not reported as well)."""
    if raw is None:
        return (), set()
    if not isinstance(raw, list):
        reader.problems.append(Problem("select", f"expected a list of selections, got {describe(raw)}"))
        return (), set()
    if source == "dotenv" and raw:
        reader.problems.append(Problem("select", SELECT_NEEDS_GCP))
    specs: list[SelectSpec] = []
    owners: dict[str, str] = {}
    for index, item in enumerate(raw):
        where = f"select[{index}]"
        if not isinstance(item, Mapping):
            reader.problems.append(
                Problem(
                    where, f"expected a mapping with labels, name_prefix or name_regex, got {describe(item)}"
                )
            )
            continue
        before = len(reader.problems)
        values = reader.section(SelectSpec, item, where, layered=False)
        derived_name = "name" not in item
        if derived_name:
            values["name"] = f"select-{index}"
        if "name" in values:
            first = owners.setdefault(values["name"], where)
            if first != where:
                default = " (the default after its position)" if derived_name else ""
                reader.problems.append(
                    Problem(
                        f"{where}.name",
                        f"duplicate selection name {values['name']!r}{default}: also used by {first}",
                    )
                )
        if not any(values.get(key) for key in _SELECTORS) and not any(
            f"{where}.{key}" in reader.invalid for key in _SELECTORS
        ):
            reader.problems.append(
                Problem(where, "give labels, name_prefix or name_regex: which secrets should it select?")
            )
        if values.get("project") is None and source != "dotenv" and f"{where}.project" not in reader.invalid:
            if project is not None and project_ok:
                values["project"] = project
            elif project_ok:
                reader.problems.append(
                    Problem(
                        f"{where}.project",
                        "no project to list: set it here or the top-level project (SECRETS_AGENT_PROJECT, "
                        "GOOGLE_CLOUD_PROJECT)",
                    )
                )
        if values.get("delegates") and values.get("impersonate_service_account") is None:
            reader.problems.append(Problem(f"{where}.delegates", _DELEGATES_ALONE.format(where=where)))
        rules = _read_rewrite(reader, values, where)
        if rules is not None:
            values["rewrite"] = rules
        keys = _read_select_keys(reader, values, where)
        if keys is not None:
            values["keys"] = keys
        if len(reader.problems) == before:
            specs.append(SelectSpec(**values))
    return tuple(specs), set(owners)


def _read_rewrite(reader: _Reader, values: dict[str, Any], where: str) -> tuple[RewriteRule, ...] | None:
    """A selection's ``rewrite`` rules, each replacement checked against its pattern's groups."""
    raw = values.pop("rewrite", None)
    if raw is None:
        return None
    if not isinstance(raw, list):
        reader.problems.append(Problem(f"{where}.rewrite", f"expected a list of rules, got {describe(raw)}"))
        return None
    if len(raw) > MAX_REWRITE_RULES:
        reader.problems.append(
            Problem(f"{where}.rewrite", f"at most {MAX_REWRITE_RULES} rules, got {len(raw)}")
        )
        return None
    rules: list[RewriteRule] = []
    for index, item in enumerate(raw):
        path = f"{where}.rewrite[{index}]"
        if not isinstance(item, Mapping):
            reader.problems.append(
                Problem(path, f"expected a mapping with regex and replace, got {describe(item)}")
            )
            continue
        before = len(reader.problems)
        rule_values = reader.section(RewriteRule, item, path, layered=False)
        if len(reader.problems) == before:
            try:
                # The replacement is parsed before anything is searched: a group it names that the
                # pattern lacks fails here, with no id to rewrite.
                re.compile(rule_values["regex"]).sub(rule_values.get("replace", ""), "")
            except (re.error, IndexError) as error:
                reader.problems.append(
                    Problem(f"{path}.replace", f"{describe(rule_values.get('replace', ''))}: {error}")
                )
            else:
                rules.append(RewriteRule(**rule_values))
    return tuple(rules)


MAX_REWRITE_RULES = 16
"""Most rewrite rules one selection may have."""


def _read_select_keys(
    reader: _Reader, values: dict[str, Any], where: str
) -> tuple[SelectKeySpec, ...] | None:
    """A selection's ``keys``, each with file or env."""
    return _read_key_list(reader, values, where, SelectKeySpec)


def _read_templates(
    reader: _Reader,
    raw: object,
    secrets: tuple[SecretSpec, ...],
    claims: list[_Claim],
    selections: Collection[str] = (),
) -> tuple[TemplateSpec, ...]:
    """The ``templates`` section: every item checked, its name, env and file claimed."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        reader.problems.append(Problem("templates", f"expected a list of templates, got {describe(raw)}"))
        return ()
    names = {spec.name for spec in secrets}
    templates: list[TemplateSpec] = []
    for index, item in enumerate(raw):
        where = f"templates[{index}]"
        if not isinstance(item, Mapping):
            reader.problems.append(
                Problem(
                    where,
                    "expected a mapping with name, file or env, and text, source or format, "
                    f"got {describe(item)}",
                )
            )
            continue
        before = len(reader.problems)
        values = reader.section(TemplateSpec, item, where, layered=False)
        given = [key for key in ("text", "source", "format") if values.get(key) is not None]
        if len(given) != 1 and len(reader.problems) == before:
            shown = " and ".join(given) if given else "none of them"
            reader.problems.append(
                Problem(where, f"set exactly one of text, source and format (got {shown})")
            )
        if values.get("file") is None and values.get("env") is None and len(reader.problems) == before:
            reader.problems.append(Problem(where, "set file, env or both: where should the output go?"))
        for position, name in enumerate(values.get("secrets", ())):
            if name not in names:
                reader.problems.append(
                    Problem(f"{where}.secrets[{position}]", f"no secret is named {name!r}")
                )
        for position, name in enumerate(values.get("select", ())):
            if name not in selections:
                reader.problems.append(
                    Problem(f"{where}.select[{position}]", f"no selection is named {name!r}")
                )
        if isinstance(values.get("source"), Path) and len(reader.problems) == before:
            text = _read_template_source(reader, values["source"], f"{where}.source")
            if text is not None:
                values["text"] = text
        claim = _Claim(where, {k: v for k in ("env", "file") if (v := values.get(k)) is not None})
        if "name" in values:
            claim.values["template"] = values["name"]
        claims.append(claim)
        if len(reader.problems) == before:
            templates.append(TemplateSpec(**values))
    return tuple(templates)


def _read_template_source(reader: _Reader, source: Path, where: str) -> str | None:
    """The text of a template file (bounded, UTF-8), or None with the problem recorded."""
    try:
        with source.open("rb") as stream:
            data = stream.read(MAX_TEMPLATE_CHARS + 1)
    except OSError as error:
        reader.problems.append(
            Problem(where, f"cannot read {str(source)!r}: {error.strerror or type(error).__name__}")
        )
        return None
    if len(data) > MAX_TEMPLATE_CHARS:
        reader.problems.append(
            Problem(where, f"{str(source)!r} is larger than {MAX_TEMPLATE_CHARS // 1024} KiB")
        )
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        reader.problems.append(Problem(where, f"{str(source)!r} is not UTF-8 text"))
        return None


@dataclass
class _Claim:
    """The name, env and file one secret takes, including defaults derived from its name."""

    path: str
    """Where the secret was configured: ``secrets[2]`` or ``--secret[0]``."""
    values: dict[str, str]
    derived: set[str] = field(default_factory=set)


def _check_unique(reader: _Reader, claims: list[_Claim]) -> None:
    duplicate_names: set[str] = set()
    for key in ("name", "template", "env", "file"):
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
                        f"{claim.path}.{'name' if key == 'template' else key}",
                        f"duplicate {key} {'name ' if key == 'template' else ''}{value!r}{source}: "
                        f"also used by {first}",
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
    if isinstance(gcp, GcpConfig):
        reader.problems += identity_problems(gcp, [*values.get("secrets", ()), *values.get("select", ())])
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


_DELEGATES_ALONE = (
    "only used with {where}.impersonate_service_account: a delegation chain leads to an impersonated account"
)


def identity_problems(
    gcp: GcpConfig, secrets: Sequence[SecretSpec | SelectSpec] = (), path: str = "gcp"
) -> list[Problem]:
    """What is wrong with the identity settings of ``gcp`` (at ``path``) together: a delegation chain or an
    IAM endpoint without impersonation, credentials bound for a non-loopback plaintext endpoint.
    ``secrets`` are the secrets and selections, whose own identities count as impersonation."""
    problems: list[Problem] = []
    if gcp.delegates and gcp.impersonate_service_account is None:
        problems.append(Problem(f"{path}.delegates", _DELEGATES_ALONE.format(where=path)))
    impersonates = gcp.impersonate_service_account is not None or any(
        spec.impersonate_service_account is not None for spec in secrets
    )
    if gcp.iam_endpoint is not None and not impersonates:
        problems.append(
            Problem(
                f"{path}.iam_endpoint",
                f"only used to impersonate a service account ({path}.impersonate_service_account, or a "
                "secret's impersonate_service_account)",
            )
        )
    if gcp.endpoint is not None and gcp.endpoint_gets_credentials(secrets) and not gcp.endpoint_tls:
        host, _ = split_listen(gcp.endpoint)
        if not is_loopback(host):
            problems.append(
                Problem(
                    f"{path}.endpoint",
                    f"{host} is not a loopback address, and the agent would send it access tokens in "
                    f"plaintext: set {path}.endpoint_tls, use a loopback address, or set "
                    f"{path}.endpoint_credentials: false",
                )
            )
    return problems


IDENTITY_KEYS = (
    "credentials_file",
    "impersonate_service_account",
    "delegates",
    "iam_endpoint",
    "quota_project",
)
"""The ``gcp`` settings that say who the caller is: what the rotation config's ``gcp`` section accepts."""


def read_identity_section(raw: object, path: str = "gcp") -> tuple[GcpConfig, list[Problem]]:
    """The identity settings of a ``gcp`` mapping read outside the agent's configuration (the rotation
    config), with the agent's own parsers and rules (``identity_problems``): ``IDENTITY_KEYS`` only, any
    other key is unknown. Returns the GcpConfig (defaults where unset, and all defaults when there are
    problems) and every problem, each with its path under ``path``."""
    if raw is None:
        return GcpConfig(), []
    if not isinstance(raw, Mapping):
        return GcpConfig(), [
            Problem(path, f"expected a mapping of {', '.join(IDENTITY_KEYS)}, got {describe(raw)}")
        ]
    reader = _Reader(env={}, flags={})
    reader.problems += [unknown_key(key, IDENTITY_KEYS, path) for key in raw if key not in IDENTITY_KEYS]
    values = reader.section(
        GcpConfig, {k: v for k, v in raw.items() if k in IDENTITY_KEYS}, path, layered=False
    )
    if reader.problems:
        return GcpConfig(), reader.problems
    gcp = GcpConfig(**values)
    problems = identity_problems(gcp, (), path)
    return (GcpConfig() if problems else gcp), problems


_S = TypeVar("_S")


def read_section(cls: type[_S], raw: object, path: str) -> tuple[_S, list[Problem]]:
    """A section of the agent's configuration read outside it (the rotation config's ``fleet``): the
    settings of the dataclass ``cls`` from the mapping ``raw``, with the agent's parsers; unknown keys are
    problems. Returns the section (defaults where unset, all defaults when there are problems) and every
    problem, each with its path under ``path``."""
    if raw is None:
        return cls(), []
    if not isinstance(raw, Mapping):
        return cls(), [Problem(path, f"expected a mapping, got {describe(raw)}")]
    reader = _Reader(env={}, flags={})
    values = reader.section(cls, raw, path, layered=False)
    if reader.problems:
        return cls(), reader.problems
    return cls(**values), []


def _inside(root: str, path: Path) -> str | None:
    """``path`` relative to ``root`` (POSIX, ``.`` for the root itself) when it lies inside it, else None.
    Lexical, like the sink's placement of the env file: relative paths are taken from the working
    directory, except the env file's (``base``)."""
    absolute = os.path.abspath(path)
    if absolute != root and not absolute.startswith(root.rstrip("/") + "/"):
        return None
    return PurePosixPath(os.path.relpath(absolute, root)).as_posix()


def _overlaps(a: str, b: str) -> bool:
    """Whether two paths inside one directory are the same file, or one would be inside the other."""
    pa, pb = PurePosixPath(a), PurePosixPath(b)
    return pa == pb or pa in pb.parents or pb in pa.parents


def _check_files(reader: _Reader, values: Mapping[str, Any]) -> None:
    """Files the configuration names inside ``output_dir`` must not be ones the agent writes there itself:
    the env file must not take a reserved name (``.token``, ``.notified``, ``.selection``, ``..data``,
    ``..manifest.json``, any ``..`` name) or a secret's file; a file the agent reads (the token file, the
    pid file, a ``.env``) must be neither of those nor the env file (the token would be a secret's value,
    the signalled pid a number from a secret)."""
    output_dir = values.get("output_dir")
    if not isinstance(output_dir, Path):
        return
    root = os.path.abspath(output_dir)
    written = written_files(values.get("secrets", ()), values.get("templates", ()))
    env_file = values.get("env_file")
    env_path: str | None = None
    if isinstance(env_file, Path):
        # A relative env file lives inside output_dir (see Config.env_file).
        env_path = os.path.abspath(os.path.join(root, env_file))
        relative = _inside(root, Path(env_path))
        if relative is not None:
            problem = _placement_problem(str(env_file), relative, written)
            if problem is not None:
                reader.problems.append(Problem("env_file", problem))
            else:
                written[relative] = "the env file"
    server, notify, dotenv = values.get("server"), values.get("notify"), values.get("dotenv")
    read: list[tuple[str, Path | None]] = [("fallback_dotenv", values.get("fallback_dotenv"))]
    if isinstance(server, ServerConfig):
        read.append(("server.token_file", server.token_file))
    if isinstance(notify, NotifyConfig):
        read.append(("notify.pid_file", notify.pid_file))
    if isinstance(dotenv, DotenvConfig):
        read.append(("dotenv.file", dotenv.file))
    for key, path in read:
        if path is None:
            continue
        if env_path is not None and os.path.abspath(path) == env_path:
            reader.problems.append(Problem(key, f"{str(path)!r} is the env file: the agent writes it"))
            continue
        relative = _inside(root, path)
        if relative is None:
            continue
        problem = _placement_problem(str(path), relative, written)
        if problem is not None:
            reader.problems.append(Problem(key, f"{problem}; the agent writes there, so it cannot read it"))


def _placement_problem(shown: str, relative: str, written: Mapping[str, str]) -> str | None:
    """Why a configured file (as the user wrote it: ``shown``) at ``relative`` inside output_dir collides
    with what the agent writes there, or None."""
    if relative == ".":
        return f"{shown!r} is output_dir itself"
    where = f"{shown!r} (in output_dir)" if shown == relative else f"{shown!r} ({relative!r} in output_dir)"
    if (reason := reserved_name_reason(relative)) is not None:
        return f"{where}: {reason}"
    for file, owner in written.items():
        if relative == file:
            return f"{where} is {owner}"
        if _overlaps(relative, file):
            return f"{where} overlaps {owner} ({file!r})"
    return None


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
    document: Mapping[Any, object] | None = None,
) -> Config:
    """Build the Config: flags > environment (``SECRETS_AGENT_*``) > YAML ``file`` > defaults.

    ``file`` None means ``$SECRETS_AGENT_CONFIG``, else the configuration text in
    ``$SECRETS_AGENT_CONFIG_YAML``, or no file at all. ``flags`` maps setting paths
    (``"poll_interval"``, ``"gcp.endpoint"``) to raw values; None values are ignored (flag not given).
    ``flags["secrets"]`` is a list of ``NAME=REF`` strings (``--secret``), appended to the file's secrets.
    ``flag_names`` maps a path to its flag when that is not ``--`` + the path (``"gcp.endpoint"`` ->
    ``"--endpoint"``), so problems name what the user typed. Raises ConfigError with every problem found.
    ``document``, when given, is the file layer already parsed (the webhook checks the configuration it
    injects without parsing its own YAML twice, in pure Python).
    """
    raw = _read_layer(file, env) if document is None else document
    reader = _Reader(env=env, flags=flags, flag_names=flag_names or {})
    values = reader.section(Config, raw, "", layered=True)
    project_ok = "project" not in reader.invalid
    reader.flags_used.add("secrets")
    claims: list[_Claim] = []
    values["secrets"] = _read_secrets(
        reader, values.get("secrets"), flags.get("secrets"), values.get("project"), project_ok, claims
    )
    values["select"], selection_names = _read_selections(
        reader, values.get("select"), values.get("project"), project_ok, values.get("source", "auto")
    )
    values["templates"] = _read_templates(
        reader, values.get("templates"), values["secrets"], claims, selection_names
    )
    _check_unique(reader, claims)
    _check_across(reader, values)
    _check_files(reader, values)
    reader.check_leftovers()
    if reader.problems:
        raise ConfigError(reader.problems)
    return Config(**values)
