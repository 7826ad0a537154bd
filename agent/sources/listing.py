"""Listing a selection's candidates: ListSecrets of its project (and location), narrowed on Google's side
by ``server_filter`` and re-checked here by ``matches`` (``agent.sources.selection``).

Each listing costs READ quota: one call per page of up to 25,000 secrets, against 600 read requests per
minute per project that the whole fleet shares. Who lists when is ``agent.discovery``'s business (start
jitter, safety re-lists, backoff on RESOURCE_EXHAUSTED); this module only makes the calls, through the
``GcpSource`` that owns the client, the channel and the identity (a selection's
``impersonate_service_account`` lists as that account), and its errors are those of
``agent.sources.errors.translate``.

Secret Manager names projects by NUMBER in what it returns (``projects/123456/secrets/S``) and in its
Pub/Sub events; the emulator returns what was sent. ``GcpSource.list_secrets`` hands back listings that
name the project as the selection does, and remembers the number; ``ProjectNames`` maps an event's
number back the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Protocol

from agent.config import SelectSpec
from agent.sources.selection import SecretListing, matches, server_filter


class ListingSource(Protocol):
    """What lists secrets: ``agent.sources.gcp.GcpSource``."""

    async def list_secrets(
        self,
        project: str,
        location: str | None = None,
        filter: str = "",
        *,
        impersonate: str | None = None,
        delegates: tuple[str, ...] = (),
    ) -> list[SecretListing]: ...


class Lister(Protocol):
    """``await lister(select)``: the secrets ``select`` matches now. Raises SourceError."""

    async def __call__(self, select: SelectSpec) -> list[SecretListing]: ...


class SelectionLister:
    """A ``Lister`` on a source: one ListSecrets (every page) per call, filtered on Google's side, each
    answer checked locally (a filter Google reads more loosely never lets a secret in)."""

    def __init__(self, source: ListingSource) -> None:
        self.source = source
        self.calls = 0
        """Listings made (each at least one read request)."""

    async def __call__(self, select: SelectSpec) -> list[SecretListing]:
        if select.project is None:
            return []  # the loader fills it in; a selection without one lists nothing
        self.calls += 1
        listed = await self.source.list_secrets(
            select.project,
            select.location,
            server_filter(select),
            impersonate=select.impersonate_service_account,
            delegates=select.delegates,
        )
        return matched(select, listed)


def matched(select: SelectSpec, listed: Iterable[SecretListing]) -> list[SecretListing]:
    """The listings ``select`` takes, by (project, location, id). Listings carry their labels, so the
    selection's ``known`` ids play no part (only labels can say a listed secret matches)."""
    plain = dataclasses.replace(select, known=())
    unique = {listing.key: listing for listing in listed if matches(plain, listing)}
    return [unique[key] for key in sorted(unique, key=lambda k: (k[0], k[1] or "", k[2]))]


class ProjectNames:
    """Project numbers back to the project as the configuration names it (``123456`` -> ``my-project``),
    learned from what the service returned: listings (``GcpSource.listed_projects``) and fetches
    (``GcpSource.resolved_secret_names``). Read again at every lookup: the source learns as it goes."""

    def __init__(
        self,
        listed: Mapping[str, str] | None = None,
        resolved: Mapping[str, str] | None = None,
    ) -> None:
        self._listed = listed if listed is not None else {}
        self._resolved = resolved if resolved is not None else {}

    def numbers(self) -> dict[str, str]:
        """Service's name of a project -> ours, for every project whose number is known."""
        found: dict[str, str] = {}
        for configured, returned in self._resolved.items():
            ours, theirs = _project_of(configured), _project_of(returned)
            if ours and theirs and ours != theirs:
                found[theirs] = ours
        for ours, theirs in self._listed.items():
            if ours != theirs:
                found[theirs] = ours
        return found

    def number_of(self, project: str) -> str | None:
        """The service's name (number) of ``project`` when known and different, else None."""
        theirs = self._listed.get(project)
        if theirs is not None and theirs != project:
            return theirs
        for number, ours in self.numbers().items():
            if ours == project:
                return number
        return None

    def ours(self, listing: SecretListing) -> SecretListing:
        """``listing`` with the project as configured (unchanged when its number is not known)."""
        project = self.numbers().get(listing.project)
        return listing if project is None else dataclasses.replace(listing, project=project)


def _project_of(name: str) -> str | None:
    parts = name.split("/")
    return parts[1] if len(parts) > 1 and parts[0] == "projects" and parts[1] else None


__all__ = ["Lister", "ListingSource", "ProjectNames", "SelectionLister", "matched"]
