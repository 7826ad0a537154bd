"""GcpSource against the emulator through the official asyncio client: values, versions, failures, retries."""

from __future__ import annotations

import asyncio
import http.server
import logging
import threading
import time
import traceback
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from google.api_core import exceptions as google_exceptions
from google.cloud import secretmanager_v1
from google.protobuf import field_mask_pb2

from agent.config import SecretSpec
from agent.config.refs import parse_ref
from agent.core.model import crc32c
from agent.core.retry import Backoff, retry_transient
from agent.errors import PermanentSourceError, SourceError, TransientSourceError
from agent.sources.credentials import google_credentials_available, metadata_server_hinted
from agent.sources.errors import NO_CREDENTIALS
from agent.sources.gcp import GcpSource, emulator_client
from agent_emulator.options import EmulatorOptions
from agent_emulator.server import EmulatorEndpoints, running_emulator
from tests.conftest import async_client

AsyncClient = secretmanager_v1.SecretManagerServiceAsyncClient
PROJECT = "test-project"
CANARY = b"canary-7f3a9c-never-print-me"
FAST = Backoff(initial=0.01, maximum=0.05)


def spec(ref: str, name: str = "db") -> SecretSpec:
    return SecretSpec(name=name, ref=parse_ref(ref, PROJECT))


async def add_secret(client: AsyncClient, secret_id: str, *values: bytes, location: str | None = None) -> str:
    parent = f"projects/{PROJECT}" + (f"/locations/{location}" if location else "")
    secret = await client.create_secret(parent=parent, secret_id=secret_id, secret={})
    for value in values:
        await client.add_secret_version(parent=secret.name, payload={"data": value})
    return str(secret.name)


async def put_faults(emulator: EmulatorEndpoints, document: dict[str, Any]) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.put(f"{emulator.admin_url}/faults", json=document) as response,
    ):
        assert response.status == 200, await response.text()


async def counters(emulator: EmulatorEndpoints) -> dict[str, dict[str, int]]:
    async with aiohttp.ClientSession() as session, session.get(f"{emulator.admin_url}/counters") as response:
        assert response.status == 200
        methods: dict[str, dict[str, int]] = (await response.json())["methods"]
        return methods


async def reset_counters(emulator: EmulatorEndpoints) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{emulator.admin_url}/counters:reset", json={}) as response,
    ):
        assert response.status == 200


@pytest.fixture
async def source(emulator: EmulatorEndpoints) -> AsyncIterator[GcpSource]:
    gcp = GcpSource(endpoint=emulator.grpc_target, call_timeout=5.0)
    yield gcp
    await gcp.close()


# --- values and versions ---------------------------------------------------------------------------------


async def test_fetch_resolves_latest_numbers_and_aliases(aclient: AsyncClient, source: GcpSource) -> None:
    name = await add_secret(aclient, "db", b"one", b"two")
    secret = await aclient.get_secret(name=name)
    await aclient.update_secret(
        secret={"name": name, "etag": secret.etag, "version_aliases": {"stable": 1}},
        update_mask=field_mask_pb2.FieldMask(paths=["version_aliases"]),
    )

    latest = await source.fetch(spec("db"))
    assert (latest.name, latest.version, latest.data, latest.crc32c) == ("db", "2", b"two", crc32c(b"two"))
    pinned = await source.fetch(spec("db@1", name="old"))
    assert (pinned.name, pinned.version, pinned.data) == ("old", "1", b"one")
    aliased = await source.fetch(spec(f"sm://{PROJECT}/db#stable"))
    assert (aliased.version, aliased.data) == ("1", b"one")


async def test_a_new_version_is_seen_by_the_next_fetch(aclient: AsyncClient, source: GcpSource) -> None:
    name = await add_secret(aclient, "rotating", b"v1")
    assert (await source.fetch(spec("rotating"))).version == "1"
    await aclient.add_secret_version(parent=name, payload={"data": b"v2"})
    fetched = await source.fetch(spec("rotating"))
    assert (fetched.version, fetched.data) == ("2", b"v2")


async def test_regional_secrets(aclient: AsyncClient, source: GcpSource) -> None:
    await add_secret(aclient, "eu-db", b"bonjour", location="europe-west1")
    fetched = await source.fetch(spec(f"projects/{PROJECT}/locations/europe-west1/secrets/eu-db"))
    assert (fetched.version, fetched.data) == ("1", b"bonjour")
    assert (
        await source.current_version(spec(f"projects/{PROJECT}/locations/europe-west1/secrets/eu-db")) == "1"
    )


async def test_binary_and_large_values_arrive_intact(aclient: AsyncClient, source: GcpSource) -> None:
    blob = bytes(range(256)) * 256  # 64 KiB, the service's maximum payload size
    await add_secret(aclient, "blob", blob)
    fetched = await source.fetch(spec("blob"))
    assert fetched.data == blob
    assert fetched.crc32c == crc32c(blob)


async def test_current_version_reads_metadata_only(
    emulator: EmulatorEndpoints, aclient: AsyncClient, source: GcpSource
) -> None:
    await add_secret(aclient, "meta", b"a", b"b", b"c")
    await reset_counters(emulator)
    assert await source.current_version(spec("meta")) == "3"
    assert await source.current_version(spec("meta@2")) == "2"
    assert await counters(emulator) == {"GetSecretVersion": {"OK": 2}}


async def test_concurrent_fetches_all_succeed(aclient: AsyncClient, source: GcpSource) -> None:
    for i in range(20):
        await add_secret(aclient, f"s{i}", f"value-{i}".encode())
    fetched = await asyncio.gather(*(source.fetch(spec(f"s{i}", name=f"n{i}")) for i in range(20)))
    assert [f.data for f in fetched] == [f"value-{i}".encode() for i in range(20)]


async def test_calls_carry_the_metadata_the_official_client_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    # The source calls the client's channel directly; Google's front end still needs the routing header
    # (regional secrets) and the client's x-goog-api-client. Recorded before anything leaves the process.
    sent: list[tuple[str, tuple[tuple[str, str], ...]]] = []

    class Record(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
        async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
            sent.append((details.method.decode().rsplit("/", 1)[-1], tuple(details.metadata or ())))
            raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata())

    insecure_channel = grpc.aio.insecure_channel
    monkeypatch.setattr(
        grpc.aio, "insecure_channel", lambda target: insecure_channel(target, interceptors=[Record()])
    )
    regional = spec(f"projects/{PROJECT}/locations/europe-west1/secrets/eu-db")
    gcp = GcpSource(endpoint="127.0.0.1:1")
    client = emulator_client("127.0.0.1:1")
    try:
        for call in (gcp.fetch, gcp.current_version):
            with pytest.raises(TransientSourceError):
                await call(regional)
        name = str(regional.ref)
        for method in (client.access_secret_version, client.get_secret_version):
            with pytest.raises(google_exceptions.ServiceUnavailable):
                await method(request={"name": name}, retry=None, timeout=1)
    finally:
        await gcp.close()
        await client.transport.close()
    assert [method for method, _ in sent] == ["AccessSecretVersion", "GetSecretVersion"] * 2
    ours, official = [metadata for _, metadata in sent[:2]], [metadata for _, metadata in sent[2:]]
    assert ours == official
    assert ("x-goog-request-params", f"name={name}") in ours[0]


# --- integrity ---------------------------------------------------------------------------------------------


async def test_a_corrupted_checksum_is_transient_and_never_shows_the_value(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    options = EmulatorOptions(grpc_port=0, http_port=0, fault_specs=("AccessSecretVersion:corrupt_crc=1",))
    with running_emulator(options) as emulator:
        client = async_client(emulator.grpc_target)
        gcp = GcpSource(endpoint=emulator.grpc_target)
        try:
            await add_secret(client, "canary", CANARY)
            with pytest.raises(TransientSourceError) as raised:
                await gcp.fetch(spec("canary"))
        finally:
            await gcp.close()
            await client.transport.close()

    error = raised.value
    assert error.code == "DATA_LOSS"
    assert error.hint == "the payload's checksum did not match: the value was discarded"
    assert (
        str(error)
        == f"projects/{PROJECT}/secrets/canary/versions/latest: DATA_LOSS: payload data_crc32c mismatch"
    )
    everything = "\n".join(
        [str(error), repr(error), error.hint, caplog.text, *traceback.format_exception(error)]
    )
    assert CANARY.decode() not in everything


@pytest.mark.parametrize("declared", [None, 0], ids=["no-checksum", "zero-checksum"])
async def test_a_payload_without_its_checksum_is_refused(declared: int | None) -> None:
    # The emulator always sends one; a server that leaves it out (or sends 0 for data whose CRC32C is not 0)
    # must not get its bytes served. 0 is a valid checksum: presence is what is tested, not truth.
    async def access(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        payload = secretmanager_v1.SecretPayload(data=CANARY)
        if declared is not None:
            payload.data_crc32c = declared
        name = f"projects/{PROJECT}/secrets/canary/versions/1"
        response = secretmanager_v1.AccessSecretVersionResponse(name=name, payload=payload)
        return bytes(secretmanager_v1.AccessSecretVersionResponse.serialize(response))

    handler = grpc.method_handlers_generic_handler(
        "google.cloud.secretmanager.v1.SecretManagerService",
        {"AccessSecretVersion": grpc.unary_unary_rpc_method_handler(access)},
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([handler])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    gcp = GcpSource(endpoint=f"127.0.0.1:{port}")
    try:
        with pytest.raises(TransientSourceError) as raised:
            await gcp.fetch(spec("canary"))
    finally:
        await gcp.close()
        await server.stop(None)
    problem = "carries no data_crc32c" if declared is None else "data_crc32c mismatch"
    assert raised.value.code == "DATA_LOSS"
    assert str(raised.value).endswith(f"DATA_LOSS: payload {problem}")
    assert CANARY.decode() not in str(raised.value)


async def test_error_paths_never_show_a_value(
    emulator: EmulatorEndpoints, aclient: AsyncClient, source: GcpSource, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    name = await add_secret(aclient, "canary", CANARY, CANARY + b"-2")
    await aclient.disable_secret_version(name=f"{name}/versions/2")
    errors: list[SourceError] = []
    for ref in ("canary", "canary@9", "missing"):
        with pytest.raises(SourceError) as raised:
            await source.fetch(spec(ref))
        errors.append(raised.value)
    with pytest.raises(SourceError) as raised:
        await source.current_version(spec("canary"))
    errors.append(raised.value)
    text = "\n".join(
        [caplog.text, *(f"{e} {e!r} {e.hint} {''.join(traceback.format_exception(e))}" for e in errors)]
    )
    assert [e.code for e in errors] == [
        "FAILED_PRECONDITION",
        "NOT_FOUND",
        "NOT_FOUND",
        "FAILED_PRECONDITION",
    ]
    assert CANARY.decode() not in text


# --- permanent failures ------------------------------------------------------------------------------------


async def test_not_found_is_permanent_with_a_hint(aclient: AsyncClient, source: GcpSource) -> None:
    await add_secret(aclient, "exists", b"x")
    for ref in ("nope", "exists@7"):
        with pytest.raises(PermanentSourceError) as raised:
            await source.fetch(spec(ref))
        assert raised.value.code == "NOT_FOUND"
        assert raised.value.ref == str(parse_ref(ref, PROJECT))
        assert str(raised.value).startswith(f"{parse_ref(ref, PROJECT)}: NOT_FOUND: ")
        assert "does the secret/version exist?" in raised.value.hint
    with pytest.raises(PermanentSourceError, match="NOT_FOUND"):
        await source.current_version(spec("nope"))


@pytest.mark.parametrize("action", ["disable", "destroy"])
async def test_a_disabled_or_destroyed_latest_is_failed_precondition(
    aclient: AsyncClient, source: GcpSource, action: str
) -> None:
    name = await add_secret(aclient, "db", b"v1", b"v2")
    if action == "disable":
        await aclient.disable_secret_version(name=f"{name}/versions/2")
    else:
        await aclient.destroy_secret_version(name=f"{name}/versions/2")
    state = "DISABLED" if action == "disable" else "DESTROYED"

    with pytest.raises(PermanentSourceError) as accessed:
        await source.fetch(spec("db"))
    with pytest.raises(PermanentSourceError) as checked:
        await source.current_version(spec("db"))
    for error in (accessed.value, checked.value):
        assert error.code == "FAILED_PRECONDITION"
        assert state in str(error)
        assert "enable it, or pin an enabled version" in error.hint
    # The version before it is still there for whoever pins it.
    assert (await source.fetch(spec("db@1"))).data == b"v1"


async def test_permission_denied_is_permanent_with_the_iam_hint(
    emulator: EmulatorEndpoints, aclient: AsyncClient, source: GcpSource
) -> None:
    await add_secret(aclient, "locked", b"x")
    await put_faults(
        emulator, {"faults": {"AccessSecretVersion": {"fail_next": 1, "fail_code": "PERMISSION_DENIED"}}}
    )
    with pytest.raises(PermanentSourceError) as raised:
        await retry_transient(lambda: source.fetch(spec("locked")), backoff=FAST, attempts=5)
    assert raised.value.code == "PERMISSION_DENIED"
    assert "roles/secretmanager.secretAccessor" in raised.value.hint
    assert (await counters(emulator))["AccessSecretVersion"] == {"PERMISSION_DENIED": 1}  # not retried


# --- transient failures and our retries ---------------------------------------------------------------------


async def test_our_retries_not_the_clients_recover_from_unavailable(
    emulator: EmulatorEndpoints, aclient: AsyncClient, source: GcpSource
) -> None:
    await add_secret(aclient, "flaky", b"finally")
    await reset_counters(emulator)
    await put_faults(
        emulator, {"faults": {"AccessSecretVersion": {"fail_next": 2, "fail_code": "UNAVAILABLE"}}}
    )
    retries: list[tuple[str, int]] = []

    fetched = await retry_transient(
        lambda: source.fetch(spec("flaky")),
        backoff=FAST,
        attempts=5,
        on_retry=lambda error, attempt, _delay: retries.append((error.code, attempt)),
    )

    assert fetched.data == b"finally"
    assert retries == [("UNAVAILABLE", 1), ("UNAVAILABLE", 2)]
    assert await counters(emulator) == {"AccessSecretVersion": {"OK": 1, "UNAVAILABLE": 2}}


async def test_the_client_does_not_retry_on_its_own(
    emulator: EmulatorEndpoints, aclient: AsyncClient, source: GcpSource
) -> None:
    # The official client's default policy retries RESOURCE_EXHAUSTED on access; ours must be the only one.
    await add_secret(aclient, "quota", b"x")
    await reset_counters(emulator)
    await put_faults(
        emulator, {"faults": {"AccessSecretVersion": {"fail_next": 1, "fail_code": "RESOURCE_EXHAUSTED"}}}
    )
    with pytest.raises(TransientSourceError) as raised:
        await source.fetch(spec("quota"))
    assert raised.value.code == "RESOURCE_EXHAUSTED"
    assert "quota" in raised.value.hint
    assert await counters(emulator) == {"AccessSecretVersion": {"RESOURCE_EXHAUSTED": 1}}

    await put_faults(
        emulator, {"faults": {"AccessSecretVersion": {"fail_next": 1, "fail_code": "RESOURCE_EXHAUSTED"}}}
    )
    fetched = await retry_transient(lambda: source.fetch(spec("quota")), backoff=FAST, attempts=3)
    assert fetched.data == b"x"
    assert await counters(emulator) == {"AccessSecretVersion": {"OK": 1, "RESOURCE_EXHAUSTED": 2}}


async def test_a_slow_call_times_out_as_deadline_exceeded(
    emulator: EmulatorEndpoints, aclient: AsyncClient
) -> None:
    await add_secret(aclient, "slow", b"x")
    await put_faults(emulator, {"faults": {"AccessSecretVersion": {"latency_ms": 3000}}})
    gcp = GcpSource(endpoint=emulator.grpc_target, call_timeout=0.2)
    try:
        started = time.monotonic()
        with pytest.raises(TransientSourceError) as raised:
            await gcp.fetch(spec("slow"))
        elapsed = time.monotonic() - started
    finally:
        await gcp.close()
    assert raised.value.code == "DEADLINE_EXCEEDED"
    assert elapsed < 2.0


async def test_an_unreachable_endpoint_is_transient() -> None:
    gcp = GcpSource(endpoint="127.0.0.1:1", call_timeout=2.0)
    try:
        with pytest.raises(TransientSourceError) as raised:
            await gcp.fetch(spec("anything"))
    finally:
        await gcp.close()
    assert raised.value.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED")


# --- credentials -------------------------------------------------------------------------------------------


@pytest.fixture
def no_adc(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """An environment without Application Default Credentials: empty HOME, no hints, metadata unreachable."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in (
        "GOOGLE_APPLICATION_CREDENTIALS",
        "CLOUDSDK_CONFIG",
        "KUBERNETES_SERVICE_HOST",
        "GCE_METADATA_HOST",
        "GCE_METADATA_ROOT",
        "K_SERVICE",
        "CLOUD_RUN_JOB",
    ):
        monkeypatch.delenv(name, raising=False)
    # google-auth pings the metadata server's IP at call time: point it at a closed local port.
    monkeypatch.setenv("GCE_METADATA_IP", "127.0.0.1:1")
    return {"HOME": str(tmp_path)}


async def test_missing_credentials_give_one_clear_line(
    no_adc: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    assert not google_credentials_available(environ=no_adc)
    gcp = GcpSource(endpoint=None, call_timeout=1.0)
    try:
        with pytest.raises(PermanentSourceError) as raised:
            await gcp.fetch(spec("db"))
        # The verdict is remembered: the next secret fails at once instead of probing again.
        started = time.monotonic()
        with pytest.raises(PermanentSourceError) as again:
            await gcp.current_version(spec("other"))
        assert time.monotonic() - started < 0.5
    finally:
        await gcp.close()
    assert str(raised.value) == NO_CREDENTIALS
    assert "\n" not in str(raised.value)
    assert raised.value.code == again.value.code == "UNAUTHENTICATED"
    assert again.value.ref == f"projects/{PROJECT}/secrets/other/versions/latest"


class MetadataServer:
    """A stand-in metadata server on 127.0.0.1 that counts requests (real HTTP, real socket)."""

    def __init__(self, flavor: str | None) -> None:
        self.requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                self.send_response(200)
                if flavor is not None:
                    self.send_header("Metadata-Flavor", flavor)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def metadata_server() -> Iterator[MetadataServer]:
    server = MetadataServer(flavor="Google")
    yield server
    server.close()


def test_adc_detection_from_files(tmp_path: Path) -> None:
    key = tmp_path / "key.json"
    key.write_text("{}")
    assert google_credentials_available(environ={"GOOGLE_APPLICATION_CREDENTIALS": str(key)})
    # Set to a missing file: google-auth fails on it, so it does not count.
    assert not google_credentials_available(
        environ={"GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "gone.json"), "HOME": str(tmp_path)}
    )
    home = tmp_path / "home"
    assert not google_credentials_available(environ={"HOME": str(home)})
    (home / ".config" / "gcloud").mkdir(parents=True)
    (home / ".config" / "gcloud" / "application_default_credentials.json").write_text("{}")
    assert google_credentials_available(environ={"HOME": str(home)})
    sdk = tmp_path / "sdk"
    sdk.mkdir()
    (sdk / "application_default_credentials.json").write_text("{}")
    assert google_credentials_available(environ={"HOME": str(tmp_path), "CLOUDSDK_CONFIG": str(sdk)})


def test_metadata_server_is_probed_only_when_hinted(tmp_path: Path, metadata_server: MetadataServer) -> None:
    env = {"HOME": str(tmp_path), "GCE_METADATA_HOST": metadata_server.host}
    assert google_credentials_available(environ=env | {"KUBERNETES_SERVICE_HOST": "10.0.0.1"})
    assert metadata_server.requests == 1
    # No hint at all: nothing goes on the network (the default host is never contacted).
    assert not google_credentials_available(environ={"HOME": str(tmp_path)}, dmi_product_name=tmp_path / "x")
    assert not google_credentials_available(environ=env, probe_metadata=False)
    assert metadata_server.requests == 1


def test_a_server_that_is_not_a_metadata_server_does_not_count(tmp_path: Path) -> None:
    impostor = MetadataServer(flavor=None)
    try:
        env = {
            "HOME": str(tmp_path),
            "KUBERNETES_SERVICE_HOST": "10.0.0.1",
            "GCE_METADATA_HOST": impostor.host,
        }
        assert not google_credentials_available(environ=env)
        assert impostor.requests == 1
    finally:
        impostor.close()
    closed = {
        "HOME": str(tmp_path),
        "KUBERNETES_SERVICE_HOST": "10.0.0.1",
        "GCE_METADATA_HOST": "127.0.0.1:1",
    }
    assert not google_credentials_available(environ=closed)


def test_a_google_dmi_product_name_hints_at_a_metadata_server(tmp_path: Path) -> None:
    product = tmp_path / "product_name"
    product.write_text("Google Compute Engine\n")
    assert metadata_server_hinted({}, product)
    product.write_text("Standard PC (Q35 + ICH9, 2009)\n")
    assert not metadata_server_hinted({}, product)
    assert not metadata_server_hinted({}, tmp_path / "missing")
