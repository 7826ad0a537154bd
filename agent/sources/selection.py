"""Choosing secrets by what they are (``select``): which listed secrets a selection matches, what each is
named and where it goes, and who wins when two claims meet. Pure: no I/O, no clock, no Google library.

The discovery that lists and follows secrets is built on these pieces:

* ``SecretListing`` is one secret seen in a listing (ListSecrets) or an event: its place and its labels,
  never a value (a listing carries none);
* ``matches`` and ``server_filter`` say which secrets a selection takes: the filter narrows the listing
  on Google's side (labels, and the id prefix as a substring of the name), and ``matches`` re-checks every
  listed secret locally, so a filter Google reads more loosely never lets a secret in;
* ``local_name`` and ``spec_for`` turn a matched secret into the ``SecretSpec`` a configured secret would
  be (the same checks of its name, env and file as the loader makes);
* ``resolve`` does it for every selection at once against the explicit ``secrets``: explicit secrets win,
  then the earlier selection; every collision names both sides, and a secret that cannot be delivered
  (an invalid rewritten name) is skipped with its reason. It never raises.

Regular expressions are only ever run on valid secret ids (at most 255 characters) and only when they
pass the cost check of the loader (``agent.config.values.regex_cost_problem``), so matching a listing
costs a bounded time whatever the configuration.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Literal

from agent.config import (
    SecretRef,
    SecretSpec,
    SelectSpec,
    TemplateSpec,
    env_name_for,
    parse_env_name,
    parse_local_name,
    parse_relative_file,
)
from agent.config.refs import location_problem, project_problem, secret_id_problem
from agent.config.values import LABEL_ANY, MAX_ID_REGEX_CHARS, regex_cost_problem

MAX_LOCAL_NAME_CHARS = 255
"""Longest local name a rewrite may produce (a file name is at most 255 bytes)."""


@dataclass(frozen=True)
class SecretListing:
    """One secret seen in a listing or an event: where it is and its labels (no value, no version)."""

    project: str
    """The project as the selection names it: a caller that lists ``projects/P`` gives ``P`` even when
    Google answers with the project number (a number and an id cannot be compared here)."""
    location: str | None
    """Location of a regional secret, None (or "") for a global one."""
    secret_id: str
    """The secret's id."""
    labels: Mapping[str, str] | None = field(default=None, hash=False)
    """The secret's labels; None when they are not known: an id from a selection's ``known`` list, which
    matches that selection's labels by being listed there (and no other selection's)."""

    @property
    def key(self) -> tuple[str, str | None, str]:
        """(project, location or None, id): what identifies the secret."""
        return self.project, self.location or None, self.secret_id

    @classmethod
    def from_name(cls, name: str, labels: Mapping[str, str] | None = None) -> SecretListing | None:
        """A listing from a secret's resource name ``projects/P[/locations/L]/secrets/S`` (as ListSecrets
        and events give it), or None when ``name`` is not one."""
        match = _SECRET_NAME.fullmatch(name) if isinstance(name, str) else None
        if match is None or any(
            problem is not None
            for problem in (
                project_problem(match["project"]),
                None if match["location"] is None else location_problem(match["location"]),
                secret_id_problem(match["secret"]),
            )
        ):
            return None
        return cls(match["project"], match["location"], match["secret"], labels)


_SECRET_NAME = re.compile(
    r"projects/(?P<project>[^/]+)(?:/locations/(?P<location>[^/]+))?/secrets/(?P<secret>[^/]+)"
)


def known_listings(selections: Iterable[SelectSpec]) -> list[SecretListing]:
    """The listings of every selection's ``known`` ids (labels unknown): what the agent starts with when
    the webhook resolved the selections at admission, without listing."""
    found: list[SecretListing] = []
    for select in selections:
        if select.project is None:
            continue
        found += [
            SecretListing(select.project, select.location, secret_id, None) for secret_id in select.known
        ]
    return found


# --------------------------------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str] | None:
    """``pattern`` compiled, or None when the loader would refuse it (invalid, too long, too costly)."""
    if len(pattern) > MAX_ID_REGEX_CHARS:
        return None
    try:
        compiled = re.compile(pattern)
        if regex_cost_problem(pattern) is not None:
            return None
    except (re.error, RecursionError, OverflowError):
        return None
    return compiled


def matches(select: SelectSpec, listing: SecretListing) -> bool:
    """Whether ``select`` takes the secret of ``listing``: its project (when the selection names one) and
    location, then its id (``name_prefix``, ``name_regex``) and labels (equal, or present for ``"*"``).
    A listing without labels matches a selection with labels only if its id is in the ``known`` list. An
    invalid id never matches (so no pattern ever runs on more than 255 characters)."""
    if secret_id_problem(listing.secret_id) is not None:
        return False
    if select.project is not None and listing.project != select.project:
        return False
    if (select.location or None) != (listing.location or None):
        return False
    if not listing.secret_id.startswith(select.name_prefix):
        return False
    if select.labels:
        if listing.labels is None:
            if listing.secret_id not in select.known:
                return False
        else:
            for key, value in select.labels:
                have = listing.labels.get(key)
                if have is None or (value != LABEL_ANY and have != value):
                    return False
    if select.name_regex:
        compiled = _compiled(select.name_regex)
        if compiled is None or compiled.search(listing.secret_id) is None:
            return False
    return True


_BARE_VALUE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")


def _filter_value(text: str) -> str:
    # Ids and label values are made of letters, digits, '_' and '-'; a leading '-' would read as NOT.
    return text if _BARE_VALUE.fullmatch(text) else '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def server_filter(select: SelectSpec) -> str:
    """The ListSecrets ``filter`` that narrows the listing to (a superset of) what ``select`` matches,
    in Google's list-filter syntax: ``labels.app=payments AND labels.team:*`` (``:*``: has the label),
    plus ``name:<prefix>`` for ``name_prefix`` (a substring of the resource name, so every secret whose id
    starts with the prefix is in). An empty label value is asked as presence and checked here; the regular
    expression is checked here only (the API has none). "" when nothing narrows it."""
    parts: list[str] = []
    for key, value in select.labels:
        if value in (LABEL_ANY, ""):
            parts.append(f"labels.{key}:*")
        else:
            parts.append(f"labels.{key}={_filter_value(value)}")
    if select.name_prefix:
        parts.append(f"name:{_filter_value(select.name_prefix)}")
    return " AND ".join(parts)


# --------------------------------------------------------------------------------------------------
# Naming: secret id -> local name, env, file
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Skipped:
    """A matched secret that cannot be delivered as its selection says, and why (no value in it)."""

    selection: str
    secret_id: str
    reason: str

    @property
    def message(self) -> str:
        """One line for the log: ``select 'payments' skips secret 'x': ...``."""
        return f"select {self.selection!r} skips secret {self.secret_id!r}: {self.reason}"


def _rewritten(select: SelectSpec, secret_id: str) -> tuple[str | None, str]:
    """(local name, "") or (None, why not)."""
    name = secret_id
    for index, rule in enumerate(select.rewrite):
        compiled = _compiled(rule.regex)
        if compiled is None:
            return None, f"rewrite[{index}]: the pattern is invalid or too costly"
        try:
            name = compiled.sub(rule.replace, name)
        except (re.error, IndexError) as error:
            return None, f"rewrite[{index}]: {error}"
        if len(name) > MAX_LOCAL_NAME_CHARS:
            return None, f"rewrite[{index}] makes a name longer than {MAX_LOCAL_NAME_CHARS} characters"
    try:
        return parse_local_name(name), ""
    except ValueError as error:
        how = "rewritten to" if select.rewrite else "its id is"
        return None, f"{how} {name[:80]!r}, not a valid local name: {error}"


def local_name(select: SelectSpec, secret_id: str) -> str | None:
    """The local name ``select`` gives the secret ``secret_id``: the id through the ``rewrite`` rules in
    order (each ``re.sub``), or None when the result is not a valid local name (``spec_for`` says why)."""
    name, _ = _rewritten(select, secret_id)
    return name


def default_env(select: SelectSpec, name: str) -> str:
    """The env name of a selected secret named ``name``: ``env_prefix`` + ``name`` in UPPER_SNAKE_CASE
    (what a configured secret's env defaults to, prefixed). Not checked: see ``spec_for``."""
    return select.env_prefix + env_name_for(name)


def default_file(select: SelectSpec, name: str) -> str:
    """The file of a selected secret named ``name``: ``file_prefix`` + ``name``. Not checked."""
    return select.file_prefix + name


def spec_for(select: SelectSpec, listing: SecretListing) -> SecretSpec | Skipped:
    """The SecretSpec of one secret ``select`` matched, built as the loader builds a configured secret's:
    name from ``local_name``; when delivered, env ``env_prefix`` + UPPER_SNAKE(name) and file
    ``file_prefix`` + name, each checked as ``secrets[].env`` and ``secrets[].file`` are; the keys with
    ``{name}`` and ``{env}`` filled in; the shaping settings copied. Skipped (with the reason) when any of
    it is invalid or the secret's outputs collide with each other."""

    def skip(reason: str) -> Skipped:
        return Skipped(select.name, listing.secret_id, reason)

    for problem in (
        project_problem(listing.project),
        None if not listing.location else location_problem(listing.location),
        secret_id_problem(listing.secret_id),
    ):
        if problem is not None:
            return skip(problem)
    name, reason = _rewritten(select, listing.secret_id)
    if name is None:
        return skip(reason)
    env, file = default_env(select, name), ""
    if select.deliver:
        try:
            env = parse_env_name(env)
        except ValueError:
            return skip(
                f"the env name {env[:80]!r} (from name {name!r}) is not a valid environment variable name; "
                "set env_prefix"
            )
        try:
            file = parse_relative_file(default_file(select, name))
        except ValueError as error:
            return skip(f"its file is invalid: {error}")
    keys = []
    for index, key in enumerate(select.keys):
        try:
            keys.append(key.for_secret(name, default_env(select, name)))
        except ValueError as error:
            return skip(f"keys[{index}]: {error}")
    ref = SecretRef(
        project=listing.project,
        secret=listing.secret_id,
        version=select.version,
        location=listing.location or None,
    )
    spec = SecretSpec(
        name=name,
        ref=ref,
        env=env if select.deliver else "",
        file=file,
        mode=select.mode,
        uid=select.uid,
        gid=select.gid,
        required=select.required,
        key=select.key,
        format=select.format,
        decode=select.decode,
        deliver=select.deliver,
        impersonate_service_account=select.impersonate_service_account,
        delegates=select.delegates,
        keys=tuple(keys),
    )
    own = _Claims()
    for kind, value, _ in _outputs(spec, "it"):
        if own.conflict(kind, value) is not None:
            return skip(f"two of its own outputs take {kind} {value!r}")
        own.add(kind, value, "it")
    return spec


# --------------------------------------------------------------------------------------------------
# Resolution: every selection against the explicit secrets and each other
# --------------------------------------------------------------------------------------------------

ClaimKind = Literal["secret", "name", "env", "file"]


@dataclass(frozen=True)
class Collision:
    """A selected secret that loses to an earlier claim: the explicit ``secrets`` (always first), a
    template or a reserved file, or an earlier selection. Both sides are named."""

    selection: str
    """The losing selection's name."""
    secret_id: str
    """The secret it matched."""
    kind: ClaimKind
    """What collided: the secret itself (configured already), or its name, env or file."""
    value: str
    """The name, env or file the loser would have taken (the secret id for ``secret``)."""
    other: str
    """Who has it: ``secrets[1] 'db'``, ``select 'a' (secret 'payments-db')``, ``template 'app'``..."""
    other_value: str = ""
    """For a file inside another's file (or around it), that other file; else ""."""

    @property
    def message(self) -> str:
        """One line naming both sides, e.g. ``select 'payments' maps secret 'payments-db' to name 'db',
        which secrets[1] 'db' already uses``."""
        head = f"select {self.selection!r}"
        if self.kind == "secret":
            return f"{head} matches secret {self.secret_id!r}, which {self.other} already delivers"
        where = f"{head} maps secret {self.secret_id!r} to {self.kind} {self.value!r}"
        if self.other_value and self.other_value != self.value:
            if PurePosixPath(self.other_value) in PurePosixPath(self.value).parents:
                return f"{where}, which would be inside file {self.other_value!r} of {self.other}"
            return f"{where}, which would contain file {self.other_value!r} of {self.other}"
        return f"{where}, which {self.other} already uses"


@dataclass(frozen=True)
class Resolution:
    """What the selections deliver: for each selection (by name, in configuration order) its secrets in a
    stable order (by project, location, id), and what was left out: collisions and skipped secrets."""

    specs: dict[str, list[SecretSpec]]
    collisions: list[Collision] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def all_specs(self) -> list[SecretSpec]:
        """Every selected secret, selection after selection."""
        return [spec for specs in self.specs.values() for spec in specs]


class _Claims:
    """Who took each secret, name, env and file (and each directory a file lies in)."""

    def __init__(self) -> None:
        self.taken: dict[ClaimKind, dict[str, str]] = {"secret": {}, "name": {}, "env": {}, "file": {}}
        self.dirs: dict[str, tuple[str, str]] = {}
        """Directory -> (a file inside it, its owner): a file there would have to be a directory too."""

    def conflict(self, kind: ClaimKind, value: str) -> tuple[str, str] | None:
        """(owner, their value) of a claim ``value`` would collide with, or None."""
        owner = self.taken[kind].get(value)
        if owner is not None:
            return owner, value
        if kind != "file":
            return None
        if value in self.dirs:
            inner, owner = self.dirs[value]
            return owner, inner
        for parent in PurePosixPath(value).parents:
            if (owner := self.taken["file"].get(str(parent))) is not None:
                return owner, str(parent)
        return None

    def add(self, kind: ClaimKind, value: str, owner: str) -> None:
        self.taken[kind].setdefault(value, owner)
        if kind == "file":
            for parent in PurePosixPath(value).parents:
                if str(parent) != ".":
                    self.dirs.setdefault(str(parent), (value, owner))


def _identity(ref: SecretRef) -> str:
    return ref.secret_name


def _outputs(spec: SecretSpec, owner: str) -> list[tuple[ClaimKind, str, str]]:
    """(kind, value, owner) of every name, env and file ``spec`` takes (its secret is claimed apart)."""
    claims: list[tuple[ClaimKind, str, str]] = [("name", spec.name, owner)]
    if spec.deliver:
        claims += [("env", spec.env, owner), ("file", spec.file, owner)]
    for key in spec.keys:
        key_owner = f"key {key.key!r} of {owner}"
        if key.env is not None:
            claims.append(("env", key.env, key_owner))
        if key.file is not None:
            claims.append(("file", key.file, key_owner))
    return claims


def resolve(
    selections: Sequence[SelectSpec],
    explicit: Sequence[SecretSpec],
    listings: Iterable[SecretListing],
    *,
    templates: Sequence[TemplateSpec] = (),
    reserved_files: Mapping[str, str] | None = None,
) -> Resolution:
    """The secrets every selection delivers, given what was listed.

    Claims are taken in order: the ``explicit`` secrets (their secret, name, env, file and keys' outputs),
    the ``templates``' env and file, ``reserved_files`` (path inside ``output_dir`` -> who writes it, e.g.
    the env file), then each selection in order, its matched secrets by (project, location, id). A
    selected secret that would take something already taken is left out with a Collision naming both
    sides; one that cannot be delivered is left out as Skipped. A secret listed twice counts once. Never
    raises: every input a caller can build gives a Resolution."""
    claims = _Claims()
    for index, spec in enumerate(explicit):
        owner = f"secrets[{index}] {spec.name!r}"
        claims.add("secret", _identity(spec.ref), owner)
        for kind, value, who in _outputs(spec, owner):
            claims.add(kind, value, who)
    for template in templates:
        owner = f"template {template.name!r}"
        if template.env is not None:
            claims.add("env", template.env, owner)
        if template.file is not None:
            claims.add("file", template.file, owner)
    for path, owner in (reserved_files or {}).items():
        claims.add("file", path, owner)

    unique: dict[tuple[str, str | None, str], SecretListing] = {}
    for listing in listings:
        unique.setdefault(listing.key, listing)
    ordered = [unique[key] for key in sorted(unique, key=lambda k: (k[0], k[1] or "", k[2]))]

    result = Resolution(specs={select.name: [] for select in selections})
    for select in selections:
        for listing in ordered:
            if not matches(select, listing):
                continue
            made = spec_for(select, listing)
            if isinstance(made, Skipped):
                result.skipped.append(made)
                continue
            owner = f"select {select.name!r} (secret {listing.secret_id!r})"
            collision = _first_collision(claims, select, listing, made)
            if collision is not None:
                result.collisions.append(collision)
                continue
            claims.add("secret", _identity(made.ref), owner)
            for kind, value, who in _outputs(made, owner):
                claims.add(kind, value, who)
            result.specs[select.name].append(made)
    return result


def _first_collision(
    claims: _Claims, select: SelectSpec, listing: SecretListing, spec: SecretSpec
) -> Collision | None:
    """The first claim of ``spec`` that is taken (the secret itself, then its name, env, file, keys)."""
    wanted: list[tuple[ClaimKind, str]] = [("secret", _identity(spec.ref))]
    wanted += [(kind, value) for kind, value, _ in _outputs(spec, "")]
    for kind, value in wanted:
        found = claims.conflict(kind, value)
        if found is not None:
            owner, theirs = found
            shown = listing.secret_id if kind == "secret" else value
            return Collision(
                select.name, listing.secret_id, kind, shown, owner, theirs if kind == "file" else ""
            )
    return None


__all__ = [
    "MAX_LOCAL_NAME_CHARS",
    "Collision",
    "Resolution",
    "SecretListing",
    "Skipped",
    "default_env",
    "default_file",
    "known_listings",
    "local_name",
    "matches",
    "resolve",
    "server_filter",
    "spec_for",
]
