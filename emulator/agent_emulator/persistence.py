"""Seed files (``--seed``: secrets to create at start) and the data file (``--data``: everything, kept).

Seed file, YAML or JSON::

    project: demo-project                  # the project of short secret ids
    secrets:
      db-password:                         # -> projects/demo-project/secrets/db-password
        versions: [s3cret-v1, s3cret-v2]   # oldest first; each a UTF-8 string or a mapping (below)
        labels: {team: payments}
      api-key: abc                         # a scalar: one version with that value
      projects/other/locations/europe-west1/secrets/tls:   # full names, global or regional
        versions:
          - {data_base64: TUlJQk...}       # binary payloads
          - {value: old, state: DISABLED}  # state: ENABLED (default), DISABLED or DESTROYED
        aliases: {current: 1}
        annotations: {owner: platform}
        topics: [projects/other/topics/secret-events]
        rotation: {period: 30d}            # next_rotation_time defaults to now + period

A secret that already exists (loaded from the data file) is left as it is. Problems are reported all
together, each naming its entry, and never quote a value.

Data file: the JSON of :meth:`SecretStore.dump`, rewritten atomically (temp file, fsync, rename) after every
change, readable only by its owner because it holds payloads.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from google.cloud.secretmanager_v1 import types
from google.protobuf import field_mask_pb2

from agent.core.atomicfile import write_atomically
from agent.errors import ConfigError, Problem
from agent_emulator import bounded
from agent_emulator.errors import EmulatorError
from agent_emulator.resource_names import SECRET_ID, parse_secret_name
from agent_emulator.store import SecretStore

log = logging.getLogger(__name__)

MAX_SEED_BYTES = 16 * 1024 * 1024
"""Largest seed file read (a seed is written by hand; 16 MiB is thousands of secrets)."""
MAX_DATA_BYTES = 1024 * 1024 * 1024
"""Largest data file read (it holds every payload; 1 GiB is far beyond any development store)."""

_SECRET_KEYS = {"value", "versions", "labels", "annotations", "aliases", "topics", "rotation"}
_VERSION_KEYS = {"value", "data_base64", "state"}
_STATES = ("ENABLED", "DISABLED", "DESTROYED")
_DURATION = re.compile(r"([0-9]+)([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass
class SeedVersion:
    data: bytes
    state: str = "ENABLED"


@dataclass
class SeedSecret:
    """One secret of a seed file, validated for shape; the store judges the rest."""

    entry: str
    """Where it came from (``secrets.db-password``), for error messages."""
    name: str
    versions: list[SeedVersion] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, int] = field(default_factory=dict)
    topics: list[str] = field(default_factory=list)
    rotation_period: dt.timedelta | None = None
    next_rotation_time: dt.datetime | None = None


class _Problems:
    def __init__(self, source: Path) -> None:
        self.source = source
        self.found: list[Problem] = []

    def add(self, where: str, message: str) -> None:
        self.found.append(Problem(f"{self.source}: {where}" if where else str(self.source), message))

    def raise_if_any(self) -> None:
        if self.found:
            raise ConfigError(self.found)


def _parse_document(path: Path) -> Any:
    try:
        text = bounded.read_text(path, MAX_SEED_BYTES)
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(Problem(str(path), f"cannot read the seed file: {error}")) from None
    except bounded.InputError as error:
        raise ConfigError(Problem(str(path), f"seed file refused: {error.reason}")) from None
    if path.suffix.lower() == ".json":
        try:
            return bounded.loads_json(text)
        except json.JSONDecodeError as error:
            # msg + position only: the exception's text never includes the document itself.
            raise ConfigError(
                Problem(str(path), f"invalid JSON: {error.msg} at line {error.lineno} column {error.colno}")
            ) from None
        except bounded.InputError as error:
            raise ConfigError(Problem(str(path), f"seed file refused: {error.reason}")) from None
    try:
        return bounded.load_yaml(text)
    except bounded.InputError as error:
        raise ConfigError(Problem(str(path), f"seed file refused: {error.reason}")) from None
    except yaml.YAMLError as error:
        # PyYAML's own message quotes the offending line, which may be a secret value: keep the position.
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or "malformed document"
        raise ConfigError(Problem(str(path), f"invalid YAML: {problem}{where}")) from None


def _string_map(value: Any, where: str, problems: _Problems) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        problems.add(where, "must be a mapping of names to strings")
        return {}
    if not all(isinstance(v, str | int | float | bool) for v in value.values()):
        problems.add(where, "values must be strings")
        return {}
    return {
        k: v if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)
        for k, v in value.items()
    }


def _duration(value: Any) -> dt.timedelta | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return dt.timedelta(seconds=value)
    if isinstance(value, str) and (match := _DURATION.fullmatch(value.strip())):
        return dt.timedelta(seconds=int(match[1]) * _UNIT_SECONDS[match[2]])
    return None


def _version(value: Any, where: str, problems: _Problems) -> SeedVersion | None:
    if isinstance(value, str):
        return SeedVersion(value.encode())
    if not isinstance(value, dict):
        problems.add(where, "must be a string or a mapping with value or data_base64 (and state)")
        return None
    unknown = sorted(set(value) - _VERSION_KEYS)
    if unknown:
        problems.add(
            where, f"unknown key(s) {', '.join(map(str, unknown))}; allowed: value, data_base64, state"
        )
        return None
    state = value.get("state", "ENABLED")
    if state not in _STATES:
        problems.add(f"{where}.state", f"must be one of {', '.join(_STATES)}")
        return None
    if ("value" in value) == ("data_base64" in value):
        problems.add(where, "needs exactly one of value or data_base64")
        return None
    if "value" in value:
        if not isinstance(value["value"], str):
            problems.add(f"{where}.value", "must be a string (quote numbers and booleans)")
            return None
        return SeedVersion(value["value"].encode(), state)
    try:
        return SeedVersion(base64.b64decode(str(value["data_base64"]), validate=True), state)
    except (binascii.Error, ValueError):
        problems.add(f"{where}.data_base64", "is not valid base64")
        return None


def _secret_name(key: Any, project: str | None, where: str, problems: _Problems) -> str | None:
    if not isinstance(key, str) or not key:
        problems.add(where, "secret names must be non-empty strings")
        return None
    if key.startswith("projects/"):
        try:
            return str(parse_secret_name(key))
        except EmulatorError as error:
            problems.add(where, error.message)
            return None
    if not SECRET_ID.fullmatch(key):
        problems.add(where, "a secret id is 1-255 letters, digits, hyphens or underscores")
        return None
    if project is None:
        problems.add(where, "a short secret id needs a top-level 'project' (or use projects/P/secrets/S)")
        return None
    return f"projects/{project}/secrets/{key}"


def _seed_secret(key: Any, spec: Any, project: str | None, problems: _Problems) -> SeedSecret | None:
    where = f"secrets.{key}"
    name = _secret_name(key, project, where, problems)
    if spec is None:
        spec = {}
    elif isinstance(spec, str):
        spec = {"value": spec}
    if not isinstance(spec, dict):
        problems.add(where, "must be a string (one version) or a mapping")
        return None
    unknown = sorted(set(spec) - _SECRET_KEYS)
    if unknown:
        problems.add(
            where,
            f"unknown key(s) {', '.join(map(str, unknown))}; allowed: {', '.join(sorted(_SECRET_KEYS))}",
        )
        return None
    if "value" in spec and "versions" in spec:
        problems.add(where, "use either value or versions, not both")
        return None
    raw_versions = [spec["value"]] if "value" in spec else spec.get("versions") or []
    if not isinstance(raw_versions, list):
        problems.add(f"{where}.versions", "must be a list")
        raw_versions = []
    versions = [_version(v, f"{where}.versions[{i}]", problems) for i, v in enumerate(raw_versions)]
    aliases = spec.get("aliases") or {}
    if not isinstance(aliases, dict) or not all(
        isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= len(raw_versions)
        for n in aliases.values()
    ):
        problems.add(f"{where}.aliases", "must map alias names to version numbers of this secret (1 = first)")
        aliases = {}
    topics = spec.get("topics") or []
    if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
        problems.add(f"{where}.topics", "must be a list of topic names (projects/P/topics/T)")
        topics = []
    seed = SeedSecret(
        entry=where,
        name=name or "",
        versions=[v for v in versions if v is not None],
        labels=_string_map(spec.get("labels"), f"{where}.labels", problems),
        annotations=_string_map(spec.get("annotations"), f"{where}.annotations", problems),
        aliases={str(k): int(v) for k, v in aliases.items()},
        topics=list(topics),
    )
    rotation = spec.get("rotation")
    if rotation is not None:
        _seed_rotation(rotation, seed, f"{where}.rotation", problems)
    return seed if name else None


def _seed_rotation(rotation: Any, seed: SeedSecret, where: str, problems: _Problems) -> None:
    if not isinstance(rotation, dict) or set(rotation) - {"period", "next_rotation_time"}:
        problems.add(where, "must be a mapping with period and/or next_rotation_time")
        return
    if "period" in rotation:
        seed.rotation_period = _duration(rotation["period"])
        if seed.rotation_period is None:
            problems.add(f"{where}.period", "must be a duration like 3600, 3600s, 90m, 12h or 30d")
    if "next_rotation_time" in rotation:
        raw = rotation["next_rotation_time"]
        try:
            when = raw if isinstance(raw, dt.datetime) else dt.datetime.fromisoformat(str(raw))
        except ValueError:
            problems.add(f"{where}.next_rotation_time", "must be an RFC 3339 time like 2030-01-01T00:00:00Z")
            return
        seed.next_rotation_time = when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def load_seed(path: Path) -> list[SeedSecret]:
    """Parse and check a seed file; ConfigError listing every problem (never a value)."""
    document = _parse_document(path)
    problems = _Problems(path)
    if document is None:
        return []
    if not isinstance(document, dict):
        raise ConfigError(Problem(str(path), "must be a mapping with 'project' and 'secrets'"))
    unknown = sorted(set(document) - {"project", "secrets"})
    if unknown:
        problems.add(
            "", f"unknown top-level key(s) {', '.join(map(str, unknown))}; allowed: project, secrets"
        )
    project = document.get("project")
    if project is not None and (not isinstance(project, str) or not re.fullmatch(r"[^/\s]+", project)):
        problems.add("project", "must be a project id or number")
        project = None
    secrets = document.get("secrets") or {}
    if not isinstance(secrets, dict):
        problems.add("secrets", "must be a mapping of secret names to their versions and settings")
        secrets = {}
    seeds = [seed for key, spec in secrets.items() if (seed := _seed_secret(key, spec, project, problems))]
    problems.raise_if_any()
    return seeds


def apply_seed(store: SecretStore, seeds: list[SeedSecret], source: Path, now: dt.datetime) -> int:
    """Create every seeded secret the store does not have yet; return how many. ConfigError otherwise.

    Everything goes through the store's ordinary methods, so a seed is held to the service's rules.
    """
    problems = _Problems(source)
    created = 0
    for seed in seeds:
        if seed.name in store:
            continue
        try:
            _create(store, seed, now)
            created += 1
        except EmulatorError as error:
            problems.add(seed.entry, error.message)
    problems.raise_if_any()
    return created


def _create(store: SecretStore, seed: SeedSecret, now: dt.datetime) -> None:
    name = parse_secret_name(seed.name)
    secret = types.Secret(
        labels=seed.labels, annotations=seed.annotations, topics=[types.Topic(name=t) for t in seed.topics]
    )
    if seed.rotation_period is not None or seed.next_rotation_time is not None:
        rotation = types.Rotation()
        if seed.rotation_period is not None:
            rotation.rotation_period = seed.rotation_period
        next_time = seed.next_rotation_time or (now + (seed.rotation_period or dt.timedelta(0)))
        rotation.next_rotation_time = next_time
        secret.rotation = rotation
    store.create_secret(
        types.CreateSecretRequest(parent=str(name.parent), secret_id=name.secret_id, secret=secret)
    )
    for number, version in enumerate(seed.versions, start=1):
        store.add_secret_version(
            types.AddSecretVersionRequest(parent=seed.name, payload=types.SecretPayload(data=version.data))
        )
        version_name = f"{seed.name}/versions/{number}"
        if version.state == "DISABLED":
            store.disable_secret_version(types.DisableSecretVersionRequest(name=version_name))
        elif version.state == "DESTROYED":
            store.destroy_secret_version(types.DestroySecretVersionRequest(name=version_name))
    if seed.aliases:
        store.update_secret(
            types.UpdateSecretRequest(
                secret=types.Secret(name=seed.name, version_aliases=seed.aliases),
                update_mask=field_mask_pb2.FieldMask(paths=["version_aliases"]),
            )
        )


def read_data(path: Path) -> dict[str, Any] | None:
    """The data file's content, or None when it does not exist yet. ConfigError when unreadable."""
    try:
        text = bounded.read_text(path, MAX_DATA_BYTES)
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(Problem(str(path), f"cannot read the data file: {error}")) from None
    except bounded.InputError as error:
        raise ConfigError(Problem(str(path), f"data file refused: {error.reason}")) from None
    try:
        data = bounded.loads_json(text)
    except json.JSONDecodeError as error:
        raise ConfigError(
            Problem(str(path), f"not an emulator data file: {error.msg} at line {error.lineno}")
        ) from None
    except bounded.InputError as error:
        raise ConfigError(Problem(str(path), f"not an emulator data file: {error.reason}")) from None
    if not isinstance(data, dict):
        raise ConfigError(Problem(str(path), "not an emulator data file"))
    return data


def load_data(store: SecretStore, path: Path) -> bool:
    """Load the data file into the store if it exists; ConfigError (naming the entry) when malformed."""
    data = read_data(path)
    if data is None:
        return False
    try:
        store.load(data)
    except ValueError as error:
        raise ConfigError(Problem(str(path), str(error))) from None
    return True


def write_data(path: Path, data: dict[str, Any]) -> None:
    """Replace the data file atomically: a reader sees the old file or the new one, never half of one.
    New files are 0600: the data file holds payloads."""
    write_atomically(path, json.dumps(data, indent=1, sort_keys=True).encode())


def persister(store: SecretStore, path: Path) -> Callable[[], None]:
    """A ``store.on_change`` callback that rewrites the data file; failures are logged, not raised.

    The change has already happened in memory and the client has been answered: failing the RPC because
    the disk is full would tell the client something untrue.
    """

    def persist() -> None:
        try:
            write_data(path, store.dump())
        except OSError as error:
            log.error("could not write the emulator data file %s: %s", path, error)
        except Exception:
            log.exception("could not write the emulator data file %s", path)

    return persist
