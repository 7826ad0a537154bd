"""A pod's selections resolved at admission: each ``select`` item of the injected configuration gets the ids
it matches now (``known``) and when they were listed (``known_at``), so that its agent starts without
listing (pure but for the ``Resolver`` it is given: ``agent.webhook.listings.ListingCache``).

The ids are the agent's own answer: the cache is keyed by what a listing depends on (project, location and
``agent.sources.selection.server_filter``), and each selection takes from a listing what the agent's
``matches`` takes (``agent.sources.listing.matched``), so the webhook and the agent never disagree.

A selection that cannot be resolved (resolution off, a failed or late listing, the rate used up, too many
ids for a pod) is admitted without ``known``: its agent lists it itself after its start jitter. The pod's
creator gets one warning line per such selection, naming it and saying why. A required selection that
matches nothing is a warning too, not a refusal: the secret may well be created before the pod needs it,
and the agent's ``init`` is the one that fails when it is still missing then.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from agent.config import SelectSpec
from agent.sources.listing import matched
from agent.sources.selection import server_filter
from agent.webhook.agent_config import dump
from agent.webhook.annotations import Injection
from agent.webhook.limits import MAX_KNOWN_CHARS
from agent.webhook.listings import Listed, ListingKey, Resolver, Unresolved
from agent.webhook.problems import prefixed
from agent.webhook.shaping import SELECT_KEY

OFF = "the webhook runs without --resolve-selections"


@dataclass(frozen=True)
class Resolved:
    """What resolving a pod's selections did: the injection with the ids, and for the log line the names of
    the selections resolved and of those left to their agent."""

    injection: Injection
    resolved: tuple[str, ...] = ()
    unresolved: tuple[str, ...] = ()


def listing_key(select: SelectSpec) -> ListingKey:
    """What the listing of ``select`` depends on: (project, location, server filter)."""
    assert select.project is not None  # the loader fills it in (or refuses the selection)
    return select.project, select.location or None, server_filter(select)


def with_known(injection: Injection, resolver: Resolver | None) -> Resolved:
    """``injection`` with ``known`` and ``known_at`` on every selection ``resolver`` resolves (None: off),
    and a warning for each one it cannot."""
    if not injection.selections:
        return Resolved(injection)
    config: dict[str, Any] = dict(injection.config)
    items = [dict(item) for item in config["select"]]
    warnings = list(injection.warnings)
    resolved: list[str] = []
    unresolved: list[str] = []
    budget = MAX_KNOWN_CHARS
    keys = [listing_key(select) for select in injection.selections]
    answers = [Unresolved(OFF) for _ in keys] if resolver is None else resolver.resolve(keys)
    for item, select, found in zip(items, injection.selections, answers, strict=True):
        annotation = prefixed(SELECT_KEY + select.name)
        if isinstance(found, Listed):
            ids = [listing.secret_id for listing in matched(select, found.listings)]
            size = sum(len(secret_id) + 1 for secret_id in ids)
            if size > budget:
                found = Unresolved(
                    f"it matches {len(ids)} secrets, more ids than the webhook writes into a pod "
                    f"({MAX_KNOWN_CHARS} characters in all)"
                )
            else:
                budget -= size
                item["known"] = ids
                item["known_at"] = round(found.listed_at, 3)
                resolved.append(select.name)
                if not ids and select.required:
                    warnings.append(
                        f"secrets-agent: {annotation}: the selection is required and matches no secret now; "
                        "the agent's init fails unless a matching secret exists when the pod starts"
                    )
                continue
        unresolved.append(select.name)
        warnings.append(
            f"secrets-agent: {annotation}: not resolved at admission ({found.reason}); the agent lists it "
            "itself at start"
        )
    config["select"] = items
    text = dump(config) if resolved else injection.config_text
    changed = dataclasses.replace(injection, config_text=text, config=config, warnings=tuple(warnings))
    return Resolved(changed, tuple(resolved), tuple(unresolved))


__all__ = ["OFF", "Resolved", "listing_key", "with_known"]
