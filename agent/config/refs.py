"""Secret references: parsing every accepted spelling into one canonical Secret Manager name (pure).

Accepted forms (``V`` defaults to ``latest`` wherever it may be left out)::

    projects/P/secrets/S[/versions/V]              global secret, full resource name
    projects/P/locations/L/secrets/S[/versions/V]  regional secret, full resource name
    S   S@V   S#V                                   short forms, project from the configuration
    sm://P/S   sm://P/S#V   sm://P/S@V              URL-like form

``V`` is ``latest``, a version number (1, 2, ...) or a version alias. Ids are validated as the service
validates them, so a typo fails at start-up with a message naming the reference instead of as a
NOT_FOUND from Google minutes later.

A secret's value pasted in place of its reference is the likeliest mistake of all, and an error message
travels far (terminals, CI logs, Kubernetes events). So an invalid reference is quoted only when it is
*reference-shaped*: made only of the characters references use (letters, digits, ``/ _ . @ # : -``), at
most 300 characters, and without a long random-looking word (16 or more characters mixing letters and
digits, as API keys and hex tokens do). Any other invalid reference is described by its length and the
rule it broke, never shown (``HiddenReference``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.errors import ConfigError, InvalidReference, Problem

LATEST = "latest"

_SECRET_ID = re.compile(r"[A-Za-z0-9_-]+")
_PROJECT_ID = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]")
# Project numbers are what the service itself puts in the names it returns (e.g. in event payloads).
_PROJECT_NUMBER = re.compile(r"[1-9][0-9]{0,19}")
_LOCATION_ID = re.compile(r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?")
_VERSION_NUMBER = re.compile(r"[0-9]+")
_ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
# The service refuses these as alias names, case-insensitively.
_RESERVED_ALIASES = frozenset({"latest", "new"})

_FULL_NAME = re.compile(
    r"projects/(?P<project>[^/]*)"
    r"(?:/locations/(?P<location>[^/]*))?"
    r"/secrets/(?P<secret>[^/]*)"
    r"(?:/versions/(?P<version>[^/]*))?"
)
_SM_URL = re.compile(r"sm://(?P<project>[^/]*)/(?P<rest>[^/]*)")
_SM_PREFIX = "sm://"

_FORMS_HINT = (
    "expected projects/P/secrets/S[/versions/V], projects/P/locations/L/secrets/S[/versions/V], "
    "S, S@V, S#V or sm://P/S[#V]"
)


@dataclass(frozen=True)
class SecretRef:
    """One secret version in Secret Manager, always fully qualified (project and version resolved)."""

    project: str
    """Project id or project number."""
    secret: str
    """Secret id (1-255 of ``[A-Za-z0-9_-]``)."""
    version: str = LATEST
    """``latest``, a version number as text (``"3"``) or a version alias."""
    location: str | None = None
    """Region of a regional secret (``us-central1``); ``None`` for a global secret."""

    @property
    def secret_name(self) -> str:
        """``projects/P[/locations/L]/secrets/S``: the secret's resource name."""
        if self.location is None:
            return f"projects/{self.project}/secrets/{self.secret}"
        return f"projects/{self.project}/locations/{self.location}/secrets/{self.secret}"

    @property
    def version_name(self) -> str:
        """``projects/P[/locations/L]/secrets/S/versions/V``: the canonical name we ask the service for."""
        return f"{self.secret_name}/versions/{self.version}"

    def __str__(self) -> str:
        return self.version_name


_SHAPED_CHARS = re.compile(r"[A-Za-z0-9/_.@#:-]*")
_WORD_SEPARATORS = re.compile(r"[/_.@#:-]+")
_MAX_SHAPED_LENGTH = 300
_RANDOM_WORD_LENGTH = 16


def hidden_reason(text: str) -> str | None:
    """Why ``text`` is not reference-shaped (see the module docstring), or None when it may be quoted."""
    if len(text) > _MAX_SHAPED_LENGTH:
        return f"{len(text)} characters, longer than any reference"
    if not _SHAPED_CHARS.fullmatch(text):
        return f"{len(text)} characters, some of which no reference contains"
    for word in _WORD_SEPARATORS.split(text):
        if len(word) >= _RANDOM_WORD_LENGTH and not word.isdigit() and not word.isalpha():
            return f"{len(text)} characters, with a long run of mixed letters and digits like a key or token"
    return None


class HiddenReference(InvalidReference):
    """An invalid reference that is not quoted: it does not look like a reference, so it may be a secret's
    value pasted in its place. The message gives its length and why it is hidden, never its text."""

    def __init__(self, why: str, reason: str, path: str = "") -> None:
        self.reference = ""
        self.reason = reason
        message = (
            f"secret reference not shown ({why}: a secret value pasted in place of its reference?): {reason}"
        )
        ConfigError.__init__(self, Problem(path, message))


def _quotes_text(reason: str, text: str) -> bool:
    """Whether ``reason`` quotes a piece of ``text`` longer than one character (a part, an id...)."""
    return any(len(quoted) > 1 and quoted in text for quoted in re.findall(r"'([^']*)'", reason))


def parse_ref(text: str, default_project: str | None = None) -> SecretRef:
    """Parse any accepted spelling of a reference; short forms take ``default_project``.

    Raises InvalidReference naming ``text`` and what is wrong with it, or HiddenReference (without the text)
    when ``text`` does not look like a reference at all.
    """
    if not isinstance(text, str):
        raise HiddenReference(f"a {type(text).__name__}", "expected a string")
    try:
        return _parse(text, default_project)
    except ValueError as error:
        reason = str(error)
        why = hidden_reason(text)
        if why is None:
            raise InvalidReference(text, reason) from None
        # The reason too is shown only when it quotes no part of the text.
        raise HiddenReference(why, _FORMS_HINT if _quotes_text(reason, text) else reason) from None


def _parse(text: str, default_project: str | None) -> SecretRef:
    if text == "":
        raise ValueError("reference is empty")
    if text != text.strip():
        raise ValueError("leading or trailing whitespace")
    if text.startswith("projects/"):
        match = _FULL_NAME.fullmatch(text)
        if match is None:
            raise ValueError(f"not a secret or secret version name; {_FORMS_HINT}")
        return _build(
            project=match["project"],
            location=match["location"],
            secret=match["secret"],
            version=match["version"],
        )
    if text.startswith(_SM_PREFIX):
        match = _SM_URL.fullmatch(text)
        if match is None:
            raise ValueError(
                "expected sm://PROJECT/SECRET, sm://PROJECT/SECRET#VERSION or sm://PROJECT/SECRET@VERSION"
            )
        secret, version = _split_version(match["rest"])
        return _build(project=match["project"], location=None, secret=secret, version=version)
    if "/" in text:
        raise ValueError(f"unrecognised form; {_FORMS_HINT}")
    if default_project is None:
        raise ValueError(
            "short reference needs a default project: set 'project' (or SECRETS_AGENT_PROJECT / "
            "GOOGLE_CLOUD_PROJECT), or write the full name projects/P/secrets/S"
        )
    if (problem := project_problem(default_project)) is not None:
        raise ValueError(f"default {problem}")
    secret, version = _split_version(text)
    return _build(project=default_project, location=None, secret=secret, version=version)


def _split_version(text: str) -> tuple[str, str | None]:
    """``S@V`` and ``S#V`` -> (S, V); plain ``S`` -> (S, None). Ids cannot contain '@' or '#'."""
    cut = min((i for i in (text.find("@"), text.find("#")) if i >= 0), default=-1)
    if cut < 0:
        return text, None
    version = text[cut + 1 :]
    if version == "":
        raise ValueError(f"version after '{text[cut]}' is empty")
    return text[:cut], version


def _build(*, project: str, location: str | None, secret: str, version: str | None) -> SecretRef:
    problems = [
        problem
        for problem in (
            project_problem(project),
            None if location is None else location_problem(location),
            secret_id_problem(secret),
            None if version is None else version_problem(version),
        )
        if problem is not None
    ]
    if problems:
        raise ValueError("; ".join(problems))
    return SecretRef(project=project, secret=secret, version=version or LATEST, location=location)


def project_problem(project: str) -> str | None:
    """Why ``project`` is not a valid project id or number, or None if it is."""
    if project == "":
        return "project id is empty"
    if _PROJECT_ID.fullmatch(project) or _PROJECT_NUMBER.fullmatch(project):
        return None
    return (
        f"project id {project!r} is invalid: expected 6-30 lowercase letters, digits or '-', "
        "starting with a letter and not ending with '-' (or a project number)"
    )


def location_problem(location: str) -> str | None:
    """Why ``location`` is not a valid location id (``us-central1``), or None if it is."""
    if location == "":
        return "location is empty"
    if _LOCATION_ID.fullmatch(location):
        return None
    return (
        f"location {location!r} is invalid: expected lowercase letters, digits and '-' such as 'us-central1'"
    )


def secret_id_problem(secret: str) -> str | None:
    """Why ``secret`` is not a valid secret id, or None if it is."""
    if secret == "":
        return "secret id is empty"
    if len(secret) > 255:
        return f"secret id is {len(secret)} characters long, at most 255 are allowed"
    if not _SECRET_ID.fullmatch(secret):
        return "secret id may only contain letters, digits, '-' and '_'"
    return None


def version_problem(version: str) -> str | None:
    """Why ``version`` is neither ``latest``, a version number nor a valid alias, or None if it is fine."""
    if version == LATEST:
        return None
    if version == "":
        return "version is empty"
    if _VERSION_NUMBER.fullmatch(version):
        if int(version) == 0:
            return "version 0 does not exist: versions are numbered from 1"
        if version.startswith("0"):
            return f"version {version!r} has leading zeros; write {str(int(version))!r}"
        return None
    if version.lower() in _RESERVED_ALIASES:
        hint = f"; did you mean {LATEST!r}?" if version.lower() == LATEST else ""
        return f"version {version!r} is a reserved name, not a valid alias{hint}"
    if len(version) > 63:
        return f"version alias is {len(version)} characters long, at most 63 are allowed"
    if not _ALIAS.fullmatch(version):
        if not version[0].isascii() or not version[0].isalpha():
            return f"version alias {version!r} must start with a letter"
        return f"version alias {version!r} may only contain letters, digits, '-' and '_'"
    return None
