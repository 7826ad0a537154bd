"""SecretManager against the emulator, every result cross-checked with the official sync client."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import requests
from google.cloud import secretmanager_v1

from agent.core.retry import Backoff
from agent.secrets import (
    ConcurrentModification,
    SecretManager,
    SecretNotFound,
    SecretsError,
    SecretType,
    VersionNotEnabled,
)
from agent_emulator.server import EmulatorEndpoints
from testing.logs import logged_text
from tests.secrets.conftest import CALLER, PROJECT, TOPIC, audit_events, put_faults

CANARY = "canary-9c1f-secret-value-never-logged"
State = secretmanager_v1.SecretVersion.State


def name(secret_id: str) -> str:
    return f"projects/{PROJECT}/secrets/{secret_id}"


async def test_create_secret_sets_type_label_replication_topics_and_rotation_policy(
    sm: SecretManager, client: secretmanager_v1.SecretManagerServiceClient
) -> None:
    before = datetime.now(UTC)
    version = await sm.create_secret(
        "db-password", CANARY, SecretType.DATABASE, labels={"team": "payments"}, annotations={"owner": "ops"}
    )
    assert (version.secret_id, version.version, version.state) == ("db-password", "1", "ENABLED")

    secret = client.get_secret(name=name("db-password"))
    assert dict(secret.labels) == {"team": "payments", "secret-type": "database"}
    assert dict(secret.annotations) == {"owner": "ops"}
    assert "automatic" in secret.replication
    assert [t.name for t in secret.topics] == [TOPIC]
    assert secret.rotation.rotation_period == timedelta(days=90)
    next_time = secret.rotation.next_rotation_time
    assert before + timedelta(days=90) <= next_time <= datetime.now(UTC) + timedelta(days=90)
    assert (
        client.access_secret_version(name=f"{name('db-password')}/versions/1").payload.data == CANARY.encode()
    )

    info = await sm.get_secret_info("db-password")
    assert info.secret_type is SecretType.DATABASE
    assert info.rotation_period == timedelta(days=90)
    assert info.next_rotation_time is not None
    assert abs(info.next_rotation_time - next_time) < timedelta(seconds=1)
    assert info.topics == (TOPIC,)
    assert info.etag == secret.etag
    assert info.create_time is not None
    assert info.create_time.tzinfo is UTC


@pytest.mark.parametrize(
    ("secret_type", "days"),
    [(SecretType.API_KEY, 30), (SecretType.ENCRYPTION_KEY, 180), (SecretType.OAUTH_TOKEN, 30)],
)
async def test_rotation_period_comes_from_the_type(
    sm: SecretManager,
    client: secretmanager_v1.SecretManagerServiceClient,
    secret_type: SecretType,
    days: int,
) -> None:
    await sm.create_secret("s", "v", secret_type)
    secret = client.get_secret(name=name("s"))
    assert secret.rotation.rotation_period == timedelta(days=days)
    assert secret.labels["secret-type"] == secret_type.value


async def test_tls_certificates_get_no_rotation_policy(
    sm: SecretManager, client: secretmanager_v1.SecretManagerServiceClient
) -> None:
    await sm.create_secret("tls", "-----BEGIN CERTIFICATE-----", SecretType.TLS_CERT)
    secret = client.get_secret(name=name("tls"))
    assert "rotation" not in secret
    assert [t.name for t in secret.topics] == [TOPIC]
    assert secret.labels["secret-type"] == "tls-cert"


async def test_without_topics_no_rotation_policy_is_stored(
    sm_no_topics: SecretManager, client: secretmanager_v1.SecretManagerServiceClient
) -> None:
    await sm_no_topics.create_secret("db", "v", SecretType.DATABASE)
    secret = client.get_secret(name=name("db"))
    assert "rotation" not in secret
    assert not secret.topics
    # Moving the schedule is then a no-op rather than an error the service would raise.
    info = await sm_no_topics.set_next_rotation_time("db", datetime.now(UTC) + timedelta(days=3))
    assert info.next_rotation_time is None
    assert info.secret_type is SecretType.DATABASE


async def test_values_versions_and_states(
    sm: SecretManager, client: secretmanager_v1.SecretManagerServiceClient
) -> None:
    await sm.create_secret("api", "one", SecretType.API_KEY)
    added = await sm.add_version("api", b"two")
    assert added.version == "2"
    assert client.access_secret_version(name=f"{name('api')}/versions/2").payload.data == b"two"
    assert await sm.get_secret("api") == "two"
    assert await sm.get_secret("api", "1") == "one"
    assert await sm.get_secret_bytes("api") == b"two"

    versions = await sm.list_versions("api")
    assert [(v.version, v.state) for v in versions] == [("2", "ENABLED"), ("1", "ENABLED")]
    assert all(v.create_time.tzinfo is UTC for v in versions)

    disabled = await sm.disable_version("api", "2")
    assert disabled.state == "DISABLED"
    assert client.get_secret_version(name=f"{name('api')}/versions/2").state == State.DISABLED
    # Latest is the newest version, even when disabled (as the service has it).
    with pytest.raises(VersionNotEnabled) as excinfo:
        await sm.get_secret("api")
    assert excinfo.value.code == "FAILED_PRECONDITION"
    assert (await sm.resolve_version("api")).version == "2"
    assert (await sm.resolve_version("api")).state == "DISABLED"

    assert (await sm.enable_version("api", "2")).state == "ENABLED"
    assert client.get_secret_version(name=f"{name('api')}/versions/2").state == State.ENABLED

    destroyed = await sm.destroy_version("api", "1")
    assert destroyed.state == "DESTROYED"
    assert client.get_secret_version(name=f"{name('api')}/versions/1").state == State.DESTROYED
    with pytest.raises(VersionNotEnabled):
        await sm.get_secret("api", "1")
    assert [(v.version, v.state) for v in await sm.list_versions("api")] == [
        ("2", "ENABLED"),
        ("1", "DESTROYED"),
    ]


async def test_missing_secret_and_version_are_not_found(sm: SecretManager) -> None:
    with pytest.raises(SecretNotFound) as excinfo:
        await sm.get_secret("nope")
    assert excinfo.value.code == "NOT_FOUND"
    assert excinfo.value.secret_id == "nope"
    assert str(excinfo.value).startswith("secret 'nope': NOT_FOUND:")
    assert "\n" not in str(excinfo.value)
    await sm.create_secret("there", "v", SecretType.API_KEY)
    with pytest.raises(SecretNotFound):
        await sm.get_secret("there", "7")
    with pytest.raises(SecretNotFound):
        await sm.get_secret_info("nope")
    with pytest.raises(SecretNotFound):
        await sm.add_version("nope", "v")


async def test_creating_an_existing_secret_fails_and_keeps_it(sm: SecretManager) -> None:
    await sm.create_secret("dup", "first", SecretType.API_KEY)
    with pytest.raises(SecretsError) as excinfo:
        await sm.create_secret("dup", CANARY, SecretType.API_KEY)
    assert excinfo.value.code == "ALREADY_EXISTS"
    assert CANARY not in str(excinfo.value)
    assert await sm.get_secret("dup") == "first"


async def test_non_utf8_values_need_the_bytes_variant(sm: SecretManager) -> None:
    await sm.create_secret("key", b"\xff\x00\xfe", SecretType.ENCRYPTION_KEY)
    assert await sm.get_secret_bytes("key") == b"\xff\x00\xfe"
    with pytest.raises(SecretsError) as excinfo:
        await sm.get_secret("key")
    assert excinfo.value.code == "INVALID_ARGUMENT"
    assert "get_secret_bytes" in str(excinfo.value)


async def test_update_annotations_is_guarded_by_the_etag(
    sm: SecretManager, client: secretmanager_v1.SecretManagerServiceClient
) -> None:
    await sm.create_secret("jwt", "v", SecretType.JWT_SECRET, annotations={"keep": "1", "drop": "2"})
    info = await sm.get_secret_info("jwt")
    updated = await sm.update_annotations("jwt", {"rotation-lock": "me"}, ["drop"], etag=info.etag)
    assert dict(updated.annotations) == {"keep": "1", "rotation-lock": "me"}
    assert updated.etag != info.etag
    secret = client.get_secret(name=name("jwt"))
    assert dict(secret.annotations) == {"keep": "1", "rotation-lock": "me"}
    assert secret.etag == updated.etag

    with pytest.raises(ConcurrentModification) as excinfo:
        await sm.update_annotations("jwt", {"rotation-lock": "someone-else"}, etag=info.etag)
    assert excinfo.value.code == "FAILED_PRECONDITION"
    assert client.get_secret(name=name("jwt")).annotations["rotation-lock"] == "me"


async def test_etag_race_has_exactly_one_winner(emulator: EmulatorEndpoints, sm: SecretManager) -> None:
    await sm.create_secret("race", "v", SecretType.SESSION_SECRET)
    etag = (await sm.get_secret_info("race")).etag
    others = [SecretManager(PROJECT, endpoint=emulator.grpc_target, caller=f"racer {i}") for i in range(6)]
    try:
        results = await asyncio.gather(
            *(m.update_annotations("race", {"lock": m.caller}, etag=etag) for m in others),
            return_exceptions=True,
        )
    finally:
        for m in others:
            await m.close()
    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, ConcurrentModification) for r in losers), losers
    assert (await sm.get_secret_info("race")).annotations["lock"] == winners[0].annotations["lock"]


async def test_a_write_by_another_client_makes_the_etag_stale(
    sm: SecretManager, client: secretmanager_v1.SecretManagerServiceClient
) -> None:
    """Any change to the secret (here labels, by another client) invalidates an etag read before it.
    (The race test above shows the service itself refusing the loser's UpdateSecret.)"""
    await sm.create_secret("guarded", "v", SecretType.API_KEY)
    stale = (await sm.get_secret_info("guarded")).etag
    client.update_secret(
        secret={"name": name("guarded"), "labels": {"secret-type": "api-key", "x": "y"}},
        update_mask={"paths": ["labels"]},
    )
    with pytest.raises(ConcurrentModification):
        await sm.update_annotations("guarded", {"a": "b"}, etag=stale)


async def test_set_next_rotation_time(
    sm: SecretManager, client: secretmanager_v1.SecretManagerServiceClient
) -> None:
    await sm.create_secret("db", "v", SecretType.DATABASE)
    when = datetime.now(UTC).replace(microsecond=0) + timedelta(days=7)
    info = await sm.set_next_rotation_time("db", when)
    assert info.next_rotation_time == when
    secret = client.get_secret(name=name("db"))
    assert secret.rotation.next_rotation_time == when
    assert secret.rotation.rotation_period == timedelta(days=90)
    with pytest.raises(ValueError, match="timezone"):
        await sm.set_next_rotation_time("db", datetime(2030, 1, 1))


async def test_list_secrets_by_type(
    sm: SecretManager, client: secretmanager_v1.SecretManagerServiceClient
) -> None:
    await sm.create_secret("b-db", "v", SecretType.DATABASE)
    await sm.create_secret("a-key", "v", SecretType.API_KEY)
    await sm.create_secret("c-enc", "v", SecretType.ENCRYPTION_KEY)
    await sm.create_secret("d-jwt", "v", SecretType.JWT_SECRET)
    # A secret made elsewhere, without our label, is listed with no type.
    client.create_secret(
        parent=f"projects/{PROJECT}", secret_id="e-plain", secret={"replication": {"automatic": {}}}
    )

    everything = await sm.list_secrets()
    assert [(i.secret_id, i.secret_type) for i in everything] == [
        ("a-key", SecretType.API_KEY),
        ("b-db", SecretType.DATABASE),
        ("c-enc", SecretType.ENCRYPTION_KEY),
        ("d-jwt", SecretType.JWT_SECRET),
        ("e-plain", None),
    ]
    symmetric = [t for t in SecretType if t.group == "symmetric"]
    assert [i.secret_id for i in await sm.list_secrets(symmetric)] == ["c-enc", "d-jwt"]
    assert [i.secret_id for i in await sm.list_secrets([SecretType.DATABASE])] == ["b-db"]
    assert await sm.list_secrets([SecretType.TLS_CERT]) == []
    assert await sm.list_secrets([]) == []


async def test_crc_corruption_is_an_error_without_the_value(
    emulator: EmulatorEndpoints, sm: SecretManager, logs: pytest.LogCaptureFixture
) -> None:
    await sm.create_secret("db", CANARY, SecretType.DATABASE)
    put_faults(emulator, {"faults": {"AccessSecretVersion": {"corrupt_crc": 1.0}}})
    with pytest.raises(SecretsError) as excinfo:
        await sm.get_secret("db")
    assert excinfo.value.code == "DATA_LOSS"
    assert "data_crc32c mismatch" in str(excinfo.value)
    assert CANARY not in str(excinfo.value)
    assert CANARY not in repr(excinfo.value.args)
    assert CANARY not in logged_text(logs)
    access = [e for e in audit_events(logs) if e["operation"] == "access"]
    assert access[-1]["result"] == "DATA_LOSS"
    assert access[-1]["version"] == "1"


def calls(emulator: EmulatorEndpoints, method: str) -> int:
    counters = requests.get(f"{emulator.admin_url}/counters", timeout=10).json()
    return sum(counters["methods"].get(method, {}).values())


@pytest.fixture
async def quick_retries(emulator: EmulatorEndpoints) -> AsyncIterator[SecretManager]:
    """A SecretManager whose retries wait milliseconds, not seconds."""
    backoff = Backoff(initial=0.01, maximum=0.02)
    async with SecretManager(
        PROJECT, endpoint=emulator.grpc_target, caller=CALLER, max_attempts=3, backoff=backoff
    ) as m:
        yield m


async def test_reads_ride_out_transient_failures(
    emulator: EmulatorEndpoints, quick_retries: SecretManager
) -> None:
    await quick_retries.create_secret("db", "v", SecretType.DATABASE)
    put_faults(emulator, {"faults": {"AccessSecretVersion": {"fail_next": 2, "fail_code": "UNAVAILABLE"}}})

    assert await quick_retries.get_secret("db") == "v"
    assert calls(emulator, "AccessSecretVersion") == 3


async def test_a_read_still_failing_after_every_attempt_is_raised_with_its_status(
    emulator: EmulatorEndpoints, quick_retries: SecretManager
) -> None:
    await quick_retries.create_secret("db", "v", SecretType.DATABASE)
    put_faults(emulator, {"faults": {"GetSecret": {"fail_next": 3, "fail_code": "UNAVAILABLE"}}})

    with pytest.raises(SecretsError) as excinfo:
        await quick_retries.get_secret_info("db")

    assert excinfo.value.code == "UNAVAILABLE"
    assert calls(emulator, "GetSecret") == 3
    assert (await quick_retries.get_secret_info("db")).secret_id == "db"  # and the next call works


async def test_a_write_is_not_repeated_after_unavailable_but_is_after_a_quota_refusal(
    emulator: EmulatorEndpoints, quick_retries: SecretManager
) -> None:
    await quick_retries.create_secret("db", "v1", SecretType.DATABASE)
    # UNAVAILABLE may come after the service added the version: adding again could add it twice.
    put_faults(emulator, {"faults": {"AddSecretVersion": {"fail_next": 1, "fail_code": "UNAVAILABLE"}}})
    with pytest.raises(SecretsError) as excinfo:
        await quick_retries.add_version("db", "v2")
    assert excinfo.value.code == "UNAVAILABLE"
    assert calls(emulator, "AddSecretVersion") == 2  # the create's first version, then one attempt

    # RESOURCE_EXHAUSTED is a refusal before anything happened: safe to repeat.
    put_faults(
        emulator, {"faults": {"AddSecretVersion": {"fail_next": 1, "fail_code": "RESOURCE_EXHAUSTED"}}}
    )
    added = await quick_retries.add_version("db", "v2")
    assert added.version == "2"
    assert [v.version for v in await quick_retries.list_versions("db")] == ["2", "1"]


async def test_first_version_failing_removes_the_new_secret(
    emulator: EmulatorEndpoints, sm: SecretManager, client: secretmanager_v1.SecretManagerServiceClient
) -> None:
    put_faults(emulator, {"faults": {"AddSecretVersion": {"fail_next": 1, "fail_code": "INTERNAL"}}})
    with pytest.raises(SecretsError) as excinfo:
        await sm.create_secret("half", CANARY, SecretType.API_KEY)
    assert excinfo.value.code == "INTERNAL"
    assert [s.name for s in client.list_secrets(parent=f"projects/{PROJECT}")] == []


async def test_audit_events_for_every_call_and_never_the_value(
    sm: SecretManager, logs: pytest.LogCaptureFixture
) -> None:
    await sm.create_secret("db", CANARY, SecretType.DATABASE)
    await sm.get_secret("db")
    await sm.add_version("db", CANARY + "-2")
    await sm.disable_version("db", "1")
    await sm.enable_version("db", "1")
    info = await sm.get_secret_info("db")
    await sm.update_annotations("db", {"k": "v"}, etag=info.etag)
    await sm.destroy_version("db", "1")
    with pytest.raises(VersionNotEnabled):
        await sm.get_secret("db", "1")
    with pytest.raises(SecretNotFound):
        await sm.get_secret("missing")

    events = [(e["operation"], e["secret"], e["version"], e["result"]) for e in audit_events(logs)]
    assert events == [
        ("create", "db", "1", "ok"),
        ("access", "db", "1", "ok"),
        ("add", "db", "2", "ok"),
        ("disable", "db", "1", "ok"),
        ("enable", "db", "1", "ok"),
        ("describe", "db", None, "ok"),
        ("annotate", "db", None, "ok"),
        ("destroy", "db", "1", "ok"),
        ("access", "db", "1", "FAILED_PRECONDITION"),
        ("access", "missing", "latest", "NOT_FOUND"),
    ]
    assert {e["caller"] for e in audit_events(logs)} == {CALLER}
    assert {e["backend"] for e in audit_events(logs)} == {"gcp"}
    assert CANARY not in logged_text(logs)


async def test_default_caller_names_user_host_and_pid(emulator: EmulatorEndpoints) -> None:
    m = SecretManager(PROJECT, endpoint=emulator.grpc_target)
    assert m.caller.endswith(f" pid {os.getpid()}")
    assert "@" in m.caller


async def test_rotate_secret_delegates_to_the_rotation_engine(sm: SecretManager) -> None:
    await sm.create_secret("enc", "initial-key-material", SecretType.ENCRYPTION_KEY)
    new_version = await sm.rotate_secret("enc")
    assert new_version == "2"
    assert await sm.get_secret("enc") != "initial-key-material"
