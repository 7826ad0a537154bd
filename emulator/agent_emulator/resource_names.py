"""Secret Manager resource names, global and regional, parsed and validated as the service does.

The project segment is kept exactly as the client sent it (id or number): the emulator has no project
registry to translate one into the other, so names come back the way they went in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import grpc

from agent_emulator.errors import EmulatorError

SECRET_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")
"""A secret id: 1-255 letters, digits, hyphens and underscores."""
ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,62}")
"""A version alias: a letter, then up to 62 letters, digits, hyphens or underscores."""

_PROJECT = r"(?P<project>[^/\s]+)"
_LOCATION = r"(?P<location>[a-z][a-z0-9-]*)"
_PARENT = re.compile(rf"projects/{_PROJECT}(?:/locations/{_LOCATION})?")
_SECRET = re.compile(rf"projects/{_PROJECT}(?:/locations/{_LOCATION})?/secrets/(?P<secret>[^/]+)")
_VERSION = re.compile(
    rf"projects/{_PROJECT}(?:/locations/{_LOCATION})?/secrets/(?P<secret>[^/]+)/versions/(?P<version>[^/]+)"
)
_NUMBER = re.compile(r"[0-9]{1,18}")


@dataclass(frozen=True, order=True)
class Parent:
    """Where secrets live: ``projects/P`` or ``projects/P/locations/L``."""

    project: str
    location: str | None = None

    def __str__(self) -> str:
        if self.location is None:
            return f"projects/{self.project}"
        return f"projects/{self.project}/locations/{self.location}"


@dataclass(frozen=True, order=True)
class SecretName:
    """``projects/P/secrets/S`` or ``projects/P/locations/L/secrets/S``."""

    parent: Parent
    secret_id: str

    def __str__(self) -> str:
        return f"{self.parent}/secrets/{self.secret_id}"

    def version(self, number: int) -> str:
        """The full name of version ``number`` of this secret."""
        return f"{self}/versions/{number}"


@dataclass(frozen=True)
class VersionName:
    """A version reference: a number, ``latest`` or an alias, under a secret."""

    secret: SecretName
    version: str

    def __str__(self) -> str:
        return f"{self.secret}/versions/{self.version}"

    @property
    def number(self) -> int | None:
        """The version number when the reference is numeric, else None."""
        return int(self.version) if _NUMBER.fullmatch(self.version) else None

    @property
    def is_latest(self) -> bool:
        return self.version == "latest"


def _pattern(regional: bool, tail: str) -> str:
    return f"[projects/*/locations/*/{tail}]" if regional else f"[projects/*/{tail}]"


def _invalid(kind: str, value: str, expected: str) -> EmulatorError:
    return EmulatorError(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"The provided {kind} [{value}] does not match the expected format {expected}",
    )


def parse_parent(value: str) -> Parent:
    """``projects/P`` or ``projects/P/locations/L``; INVALID_ARGUMENT otherwise."""
    match = _PARENT.fullmatch(value)
    if match is None:
        expected = "[projects/*/locations/*]" if "/locations/" in value else "[projects/*]"
        raise _invalid("Project ID", value, expected)
    return Parent(match["project"], match["location"])


def parse_secret_name(value: str) -> SecretName:
    """A secret's full name; INVALID_ARGUMENT (in the service's words) when malformed."""
    match = _SECRET.fullmatch(value)
    if match is None or not SECRET_ID.fullmatch(match["secret"]):
        raise _invalid("Secret ID", value, _pattern("/locations/" in value, "secrets/*"))
    return SecretName(Parent(match["project"], match["location"]), match["secret"])


def parse_version_name(value: str) -> VersionName:
    """A version's full name (number, ``latest`` or alias); INVALID_ARGUMENT when malformed."""
    match = _VERSION.fullmatch(value)
    if (
        match is None
        or not SECRET_ID.fullmatch(match["secret"])
        or not (_NUMBER.fullmatch(match["version"]) or ALIAS.fullmatch(match["version"]))
    ):
        raise _invalid("Secret ID", value, _pattern("/locations/" in value, "secrets/*/versions/*"))
    return VersionName(
        SecretName(Parent(match["project"], match["location"]), match["secret"]), match["version"]
    )


def parse_numbered_version_name(value: str) -> tuple[VersionName, int]:
    """A version name that must carry a number (Enable/Disable/Destroy take no ``latest`` or alias)."""
    name = parse_version_name(value)
    number = name.number
    if number is None:
        raise _invalid("Secret Version ID", value, _pattern("/locations/" in value, "secrets/*/versions/*"))
    return name, number
