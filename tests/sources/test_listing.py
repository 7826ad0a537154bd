"""Listing a selection's secrets: GcpSource.list_secrets and SelectionLister against the emulator, through
the official asyncio client's channel: Google's filter, every page, regional secrets, errors as the one
translation says, project numbers mapped back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from google.cloud import secretmanager_v1

from agent.config import SelectSpec
from agent.errors import PermanentSourceError, TransientSourceError
from agent.sources import gcp
from agent.sources.gcp import GcpSource
from agent.sources.listing import ProjectNames, SelectionLister, matched
from agent.sources.selection import SecretListing
from agent_emulator.server import EmulatorEndpoints

AsyncClient = secretmanager_v1.SecretManagerServiceAsyncClient
PROJECT = "listing-project"


async def create(
    client: AsyncClient, secret_id: str, labels: dict[str, str] | None = None, location: str | None = None
) -> None:
    parent = f"projects/{PROJECT}" + (f"/locations/{location}" if location else "")
    await client.create_secret(
        parent=parent, secret_id=secret_id, secret=secretmanager_v1.Secret(labels=labels or {})
    )


async def admin(emulator: EmulatorEndpoints, method: str, path: str, body: Any = None) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"{emulator.admin_url}{path}", json=body) as response,
    ):
        assert response.status == 200, await response.text()
        return await response.json()


@pytest.fixture
async def source(emulator: EmulatorEndpoints) -> AsyncIterator[GcpSource]:
    made = GcpSource(endpoint=emulator.grpc_target, call_timeout=5.0)
    yield made
    await made.close()


@pytest.fixture
async def seeded(aclient: AsyncClient) -> None:
    await create(aclient, "payments-db", {"app": "payments", "env": "prod"})
    await create(aclient, "payments-api", {"app": "payments", "env": "dev"})
    await create(aclient, "payments-key", {"app": "payments"})
    await create(aclient, "billing-db", {"app": "billing", "env": "prod"})
    await create(aclient, "plain")


def select(**settings: Any) -> SelectSpec:
    return SelectSpec(name="s", project=PROJECT, **settings)


def ids(listings: list[SecretListing]) -> list[str]:
    return [listing.secret_id for listing in listings]


async def test_list_secrets_follows_the_filter_and_returns_the_labels(
    seeded: None, source: GcpSource
) -> None:
    listed = await source.list_secrets(PROJECT, None, "labels.app=payments AND labels.env:*")
    assert sorted(ids(listed)) == ["payments-api", "payments-db"]
    by_id = {listing.secret_id: listing for listing in listed}
    assert by_id["payments-db"].labels == {"app": "payments", "env": "prod"}
    assert by_id["payments-db"].key == (PROJECT, None, "payments-db")
    assert len(await source.list_secrets(PROJECT)) == 5


async def test_every_page_is_followed(
    seeded: None, source: GcpSource, emulator: EmulatorEndpoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gcp, "LIST_PAGE_SIZE", 2)
    await admin(emulator, "POST", "/counters:reset", {})
    listed = await source.list_secrets(PROJECT)
    assert sorted(ids(listed)) == ["billing-db", "payments-api", "payments-db", "payments-key", "plain"]
    counters = await admin(emulator, "GET", "/counters")
    assert counters["methods"]["ListSecrets"] == {"OK": 3}  # 2 + 2 + 1


async def test_selection_lister_checks_labels_prefix_and_pattern_locally(
    seeded: None, source: GcpSource
) -> None:
    lister = SelectionLister(source)
    assert ids(await lister(select(labels=(("app", "payments"), ("env", "prod"))))) == ["payments-db"]
    assert ids(await lister(select(labels=(("app", "payments"), ("env", "*"))))) == [
        "payments-api",
        "payments-db",
    ]
    assert ids(await lister(select(name_prefix="payments-"))) == [
        "payments-api",
        "payments-db",
        "payments-key",
    ]
    assert ids(await lister(select(name_regex=r"-db$"))) == ["billing-db", "payments-db"]
    assert ids(await lister(select(labels=(("app", "nobody"),)))) == []
    assert lister.calls == 5


async def test_regional_secrets_are_listed_at_their_location(aclient: AsyncClient, source: GcpSource) -> None:
    await create(aclient, "eu-db", {"app": "payments"}, location="europe-west1")
    await create(aclient, "global-db", {"app": "payments"})
    regional = await SelectionLister(source)(select(labels=(("app", "payments"),), location="europe-west1"))
    assert [listing.key for listing in regional] == [(PROJECT, "europe-west1", "eu-db")]
    everywhere = await SelectionLister(source)(select(labels=(("app", "payments"),)))
    assert ids(everywhere) == ["global-db"]


async def test_quota_exhausted_is_transient_and_a_bad_filter_permanent(
    seeded: None, source: GcpSource, emulator: EmulatorEndpoints
) -> None:
    await admin(emulator, "PUT", "/faults", {"faults": {}, "quotas": {"read_per_minute": 1}})
    await source.list_secrets(PROJECT)
    with pytest.raises(TransientSourceError) as exhausted:
        await source.list_secrets(PROJECT)
    assert exhausted.value.code == "RESOURCE_EXHAUSTED"
    assert exhausted.value.ref == f"projects/{PROJECT}"
    assert "quota" in exhausted.value.hint
    await admin(emulator, "PUT", "/faults", {"faults": {}, "quotas": False})
    with pytest.raises(PermanentSourceError) as invalid:
        await source.list_secrets(PROJECT, None, "labels.app=")
    assert invalid.value.code == "INVALID_ARGUMENT"


async def test_unavailable_is_transient(seeded: None, source: GcpSource, emulator: EmulatorEndpoints) -> None:
    await admin(emulator, "PUT", "/faults", {"faults": {"ListSecrets": {"fail_next": 1}}})
    with pytest.raises(TransientSourceError) as failed:
        await source.list_secrets(PROJECT)
    assert failed.value.code == "UNAVAILABLE"
    assert len(await source.list_secrets(PROJECT)) == 5


def test_project_numbers_map_back_to_the_configured_project() -> None:
    listed = {"my-project": "123456"}
    resolved = {"projects/other/secrets/db": "projects/987/secrets/db"}
    names = ProjectNames(listed, resolved)
    assert names.numbers() == {"123456": "my-project", "987": "other"}
    assert names.number_of("my-project") == "123456"
    assert names.number_of("other") == "987"
    assert names.number_of("unknown") is None
    event = SecretListing("123456", None, "db", {"app": "x"})
    assert names.ours(event) == SecretListing("my-project", None, "db", {"app": "x"})
    assert names.ours(SecretListing("unknown", None, "db")).project == "unknown"
    listed["third"] = "555"  # learned later: read again at every lookup
    assert names.ours(SecretListing("555", None, "x")).project == "third"


def test_matched_ignores_known_ids_for_listings_with_labels() -> None:
    chosen = select(labels=(("app", "payments"),), known=("relabelled",))
    listings = [
        SecretListing(PROJECT, None, "relabelled", {"app": "other"}),
        SecretListing(PROJECT, None, "b", {"app": "payments"}),
        SecretListing(PROJECT, None, "a", {"app": "payments"}),
        SecretListing(PROJECT, None, "a", {"app": "payments"}),
    ]
    assert ids(matched(chosen, listings)) == ["a", "b"]
