"""translate(): every gRPC status and every other failure a Secret Manager call can raise, as a table."""

from __future__ import annotations

import grpc
import pytest
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc

from agent.errors import PermanentSourceError, SourceError, TransientSourceError
from agent.sources.errors import NO_CREDENTIALS, STATUS_RULES, TRANSLATABLE, translate

REF = "projects/p/secrets/db/versions/latest"
PERMANENT, TRANSIENT = PermanentSourceError, TransientSourceError

# The policy, written out independently of the implementation's table.
EXPECTED: list[tuple[grpc.StatusCode, type[SourceError], str]] = [
    (grpc.StatusCode.NOT_FOUND, PERMANENT, "does the secret/version exist?"),
    (grpc.StatusCode.PERMISSION_DENIED, PERMANENT, "roles/secretmanager.secretAccessor"),
    (grpc.StatusCode.FAILED_PRECONDITION, PERMANENT, "disabled or destroyed"),
    (grpc.StatusCode.INVALID_ARGUMENT, PERMANENT, "reference"),
    (grpc.StatusCode.UNAUTHENTICATED, PERMANENT, "application-default login"),
    (grpc.StatusCode.ALREADY_EXISTS, PERMANENT, ""),
    (grpc.StatusCode.OUT_OF_RANGE, PERMANENT, ""),
    (grpc.StatusCode.UNIMPLEMENTED, PERMANENT, "endpoint"),
    (grpc.StatusCode.UNAVAILABLE, TRANSIENT, "unreachable or overloaded"),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, TRANSIENT, "quota"),
    (grpc.StatusCode.DEADLINE_EXCEEDED, TRANSIENT, "timeout"),
    (grpc.StatusCode.INTERNAL, TRANSIENT, "retry"),
    (grpc.StatusCode.UNKNOWN, TRANSIENT, "retry"),
    (grpc.StatusCode.ABORTED, TRANSIENT, "retry"),
    (grpc.StatusCode.CANCELLED, TRANSIENT, "cancelled"),
    (grpc.StatusCode.DATA_LOSS, TRANSIENT, "checksum did not match"),
]


def test_the_table_covers_every_grpc_status_but_ok() -> None:
    assert {code for code, _, _ in EXPECTED} == set(grpc.StatusCode) - {grpc.StatusCode.OK}
    assert set(STATUS_RULES) == {code.name for code, _, _ in EXPECTED}


@pytest.mark.parametrize(("code", "kind", "hint"), EXPECTED, ids=lambda v: getattr(v, "name", None))
def test_google_api_errors_by_status(code: grpc.StatusCode, kind: type[SourceError], hint: str) -> None:
    google_error = gexc.from_grpc_status(code, "Secret [projects/p/secrets/db] says so.")
    error = translate(google_error, REF)
    assert type(error) is kind
    assert error.code == code.name
    assert error.ref == REF
    assert str(error) == f"{REF}: {code.name}: Secret [projects/p/secrets/db] says so."
    assert hint in error.hint


@pytest.mark.parametrize(("code", "kind", "hint"), EXPECTED, ids=lambda v: getattr(v, "name", None))
def test_raw_grpc_aio_errors_by_status(code: grpc.StatusCode, kind: type[SourceError], hint: str) -> None:
    rpc_error = grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="from the wire")
    error = translate(rpc_error, REF)
    assert type(error) is kind
    assert (error.code, str(error)) == (code.name, f"{REF}: {code.name}: from the wire")


@pytest.mark.parametrize(
    ("raised", "kind", "code"),
    [
        (TimeoutError(), TRANSIENT, "DEADLINE_EXCEEDED"),
        (ConnectionResetError(), TRANSIENT, "UNAVAILABLE"),
        (gexc.from_http_status(404, "gone"), PERMANENT, "NOT_FOUND"),
        (gexc.from_http_status(429, "slow down"), TRANSIENT, "RESOURCE_EXHAUSTED"),
        (gexc.from_http_status(418, "teapot"), TRANSIENT, "UNKNOWN"),
        (gexc.RetryError("gave up", gexc.ServiceUnavailable("down")), TRANSIENT, "UNAVAILABLE"),
        (auth_exc.TransportError("metadata server unreachable"), TRANSIENT, "UNAVAILABLE"),
        (auth_exc.RefreshError("not ready yet", retryable=True), TRANSIENT, "UNAVAILABLE"),
        (auth_exc.RefreshError("account disabled", retryable=False), PERMANENT, "UNAUTHENTICATED"),
        (auth_exc.DefaultCredentialsError("long text\nwith a URL"), PERMANENT, "UNAUTHENTICATED"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else None,
)
def test_other_failures(raised: BaseException, kind: type[SourceError], code: str) -> None:
    assert isinstance(raised, TRANSLATABLE)
    error = translate(raised, REF)
    assert type(error) is kind
    assert error.code == code
    assert "\n" not in str(error)


def test_missing_credentials_read_as_one_clear_line() -> None:
    error = translate(auth_exc.DefaultCredentialsError("Your default credentials were not found.\n..."), REF)
    assert str(error) == NO_CREDENTIALS
    assert "\n" not in str(error)
    for advice in (
        "Workload Identity",
        "gcloud auth application-default login",
        "SECRET_MANAGER_EMULATOR_HOST",
    ):
        assert advice in str(error)


def test_service_messages_are_folded_to_one_bounded_line() -> None:
    noisy = "first line\n  second line\t" + "x" * 1000
    error = translate(gexc.from_grpc_status(grpc.StatusCode.INTERNAL, noisy), REF)
    assert "\n" not in str(error)
    assert str(error).startswith(f"{REF}: INTERNAL: first line second line xxx")
    assert len(str(error)) < len(REF) + 340


def test_an_empty_service_message_leaves_ref_and_status() -> None:
    error = translate(gexc.from_grpc_status(grpc.StatusCode.UNAVAILABLE, ""), REF)
    assert str(error) == f"{REF}: UNAVAILABLE"


def test_source_errors_pass_through_unchanged() -> None:
    original = TransientSourceError("x", code="DATA_LOSS")
    assert translate(original, REF) is original


def test_unexpected_exceptions_are_not_in_the_catch_list() -> None:
    # A programming error must surface as itself, not be retried forever as an outage.
    assert not isinstance(TypeError("bug"), TRANSLATABLE)
    assert not isinstance(KeyError("bug"), TRANSLATABLE)
