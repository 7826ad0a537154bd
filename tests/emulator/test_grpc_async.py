"""The emulator over gRPC with the official asyncio client (grpc_asyncio), as the agent itself uses it."""

from __future__ import annotations

import asyncio

import google_crc32c
import pytest
from google.api_core import exceptions as gexc
from google.cloud import secretmanager_v1
from google.protobuf import field_mask_pb2

from agent_emulator.store import ETAG_MISMATCH

AsyncClient = secretmanager_v1.SecretManagerServiceAsyncClient
State = secretmanager_v1.SecretVersion.State
PROJECT = "projects/async-project"


async def test_every_method_round_trips(aclient: AsyncClient) -> None:
    secret = await aclient.create_secret(parent=PROJECT, secret_id="db", secret={"labels": {"team": "a"}})
    assert secret.create_time is not None
    assert await aclient.get_secret(name=secret.name) == secret

    added = [
        await aclient.add_secret_version(parent=secret.name, payload={"data": f"v{i}".encode()})
        for i in (1, 2)
    ]
    assert [v.name for v in added] == [f"{secret.name}/versions/1", f"{secret.name}/versions/2"]

    accessed = await aclient.access_secret_version(name=f"{secret.name}/versions/latest")
    assert accessed.name == f"{secret.name}/versions/2"
    assert accessed.payload.data == b"v2"
    assert accessed.payload.data_crc32c == google_crc32c.value(b"v2")

    got = await aclient.get_secret_version(name=f"{secret.name}/versions/1")
    assert got.state == State.ENABLED
    disabled = await aclient.disable_secret_version(name=got.name)
    assert disabled.state == State.DISABLED
    enabled = await aclient.enable_secret_version(name=got.name)
    assert enabled.state == State.ENABLED
    destroyed = await aclient.destroy_secret_version(name=got.name)
    assert destroyed.state == State.DESTROYED

    updated = await aclient.update_secret(
        secret={"name": secret.name, "etag": secret.etag, "version_aliases": {"current": 2}},
        update_mask=field_mask_pb2.FieldMask(paths=["version_aliases"]),
    )
    assert dict(updated.version_aliases) == {"current": 2}
    by_alias = await aclient.access_secret_version(name=f"{secret.name}/versions/current")
    assert by_alias.name == f"{secret.name}/versions/2"

    versions = [v async for v in await aclient.list_secret_versions(parent=secret.name)]
    assert [(v.name.rsplit("/", 1)[1], v.state) for v in versions] == [
        ("2", State.ENABLED),
        ("1", State.DESTROYED),
    ]
    assert [s.name async for s in await aclient.list_secrets(parent=PROJECT)] == [secret.name]

    await aclient.delete_secret(request={"name": secret.name, "etag": updated.etag})
    with pytest.raises(gexc.NotFound):
        await aclient.get_secret(name=secret.name)


async def test_async_pager_walks_every_page(aclient: AsyncClient) -> None:
    for secret_id in ("e", "d", "c", "b", "a"):
        await aclient.create_secret(parent=PROJECT, secret_id=secret_id, secret={})
    pager = await aclient.list_secrets(request={"parent": PROJECT, "page_size": 2})
    assert [s.name.rsplit("/", 1)[1] async for s in pager] == ["a", "b", "c", "d", "e"]


async def test_errors_carry_the_service_codes_and_messages(aclient: AsyncClient) -> None:
    secret = await aclient.create_secret(parent=PROJECT, secret_id="errs", secret={})
    await aclient.add_secret_version(parent=secret.name, payload={"data": b"v1"})
    await aclient.disable_secret_version(name=f"{secret.name}/versions/1")

    with pytest.raises(gexc.FailedPrecondition) as precondition:
        await aclient.access_secret_version(name=f"{secret.name}/versions/latest")
    assert precondition.value.message == f"Secret Version [{secret.name}/versions/1] is in DISABLED state."
    with pytest.raises(gexc.NotFound) as missing:
        await aclient.get_secret_version(name=f"{secret.name}/versions/9")
    assert missing.value.message == f"Secret Version [{secret.name}/versions/9] not found."
    with pytest.raises(gexc.AlreadyExists):
        await aclient.create_secret(parent=PROJECT, secret_id="errs", secret={})
    with pytest.raises(gexc.FailedPrecondition) as stale:
        await aclient.enable_secret_version(request={"name": f"{secret.name}/versions/1", "etag": '"0"'})
    assert stale.value.message == ETAG_MISMATCH
    with pytest.raises(gexc.InvalidArgument):
        await aclient.add_secret_version(parent=secret.name, payload={"data": b"x" * 65537})
    with pytest.raises(gexc.MethodNotImplemented):
        await aclient.get_iam_policy(request={"resource": secret.name})


async def test_concurrent_adds_get_distinct_consecutive_numbers(aclient: AsyncClient) -> None:
    secret = await aclient.create_secret(parent=PROJECT, secret_id="busy", secret={})
    added = await asyncio.gather(
        *(aclient.add_secret_version(parent=secret.name, payload={"data": b"%d" % i}) for i in range(20))
    )
    assert sorted(int(v.name.rsplit("/", 1)[1]) for v in added) == list(range(1, 21))
